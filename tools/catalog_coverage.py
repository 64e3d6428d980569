"""How much of a module corpus the function catalog covers.

    ./kedr-env python tools/catalog_coverage.py ~/.cache/kedr-build/kernels/debian-6.1/lib/modules
    ./kedr-env python tools/catalog_coverage.py --catalog OLD/replacements/catalog DIR

Counts module→import pairs (each module importing a name once) over every
``.ko``/``.ko.xz``/... under the directories given, and which of them a catalog
entry covers: any entry, and entries the leak payload tracks (``track``).
``--top N`` lists the N most imported names the catalog does not know.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kedr_build.errors import KedrError  # noqa: E402
from kedr_build.intercept import catalog  # noqa: E402
from kedr_build.ko.imports import inspect_module  # noqa: E402
from kedr_build.resources import CATALOG_DIR  # noqa: E402

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class Coverage:
    modules: int
    pairs: int
    names: int              # catalog names
    covered: int            # pairs whose name the catalog knows
    tracked_names: int
    tracked: int            # pairs whose name the leak payload tracks
    tracked_modules: int    # modules importing at least one tracked name

    def lines(self) -> list[str]:
        def pct(n: int) -> str:
            return f"{100 * n / self.pairs:.1f}%" if self.pairs else "-"
        return [f"{self.modules} modules, {self.pairs} module->import pairs",
                f"catalog: {self.names} names cover {self.covered} pairs ({pct(self.covered)})",
                f"tracked: {self.tracked_names} names cover {self.tracked} pairs "
                f"({pct(self.tracked)}); {self.tracked_modules} modules import one"]


def corpus_imports(dirs: list[Path]) -> dict[Path, frozenset[str]]:
    files = sorted(p for d in dirs for p in d.rglob("*.ko*") if p.name.endswith(SUFFIXES))
    return {p: frozenset(s.name for s in inspect_module(p).imports) for p in files}


def coverage(imports: dict[Path, frozenset[str]], cat: catalog.Catalog) -> Coverage:
    counts = Counter(n for names in imports.values() for n in names)
    names = set(cat.names())
    tracked = {e.name for e in cat.entries if e.track}
    return Coverage(modules=len(imports), pairs=sum(counts.values()), names=len(names),
                    covered=sum(counts[n] for n in names), tracked_names=len(tracked),
                    tracked=sum(counts[n] for n in tracked),
                    tracked_modules=sum(1 for ns in imports.values() if ns & tracked))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="directories of modules")
    ap.add_argument("--catalog", type=Path, default=CATALOG_DIR, help="catalog directory")
    ap.add_argument("--top", type=int, default=0, help="list the N most imported unknown names")
    args = ap.parse_args(argv)
    try:
        for d in args.dirs:
            if not d.is_dir():
                raise KedrError(f"{d}: not a directory")
        cat = catalog.load(args.catalog)
        imports = corpus_imports(args.dirs)
    except KedrError as e:
        print(f"kedr-build: {e}", file=sys.stderr)
        return 1
    print("\n".join(coverage(imports, cat).lines()))
    if args.top:
        known = set(cat.names())
        counts = Counter(n for names in imports.values() for n in names if n not in known)
        for name, n in counts.most_common(args.top):
            print(f"{n:6d} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
