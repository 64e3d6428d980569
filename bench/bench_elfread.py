"""Benchmark: why kedr-build reads ELF itself. Read every module's symbol table
(name, section index, value, size of each symbol) with our reader, pyelftools and
lief, over the same files in the same run, and print the ratios.

    python bench/bench_elfread.py [--kernel debian-6.1] [--limit N]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kedr_build.kernel import provision  # noqa: E402
from kedr_build.ko.container import read_module  # noqa: E402
from kedr_build.ko.elf import ElfRel  # noqa: E402


def ours(data: bytes) -> int:
    elf = ElfRel(data, "x")
    return len([(elf.symbol_name(s), s[3], s[4], s[5]) for s in elf.symbols])


def pyelftools(data: bytes) -> int:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    symtab = ELFFile(io.BytesIO(data)).get_section_by_name(".symtab")
    assert isinstance(symtab, SymbolTableSection)
    return len([(s.name, s["st_shndx"], s["st_value"], s["st_size"])
                for s in symtab.iter_symbols()])


def lief_reader(data: bytes) -> int:
    import lief

    binary = lief.ELF.parse(list(data))
    assert binary is not None
    return len([(s.name, s.shndx, s.value, s.size) for s in binary.symtab_symbols])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1")
    ap.add_argument("--limit", type=int, default=0, help="only the first N modules")
    args = ap.parse_args()
    kernel = provision.ensure(args.kernel)
    assert kernel.modules_dir is not None
    files = sorted(kernel.modules_dir.rglob("*.ko*"))[:args.limit or None]
    images = [read_module(f).elf for f in files]   # decompression is not what we time
    readers: list[tuple[str, Callable[[bytes], int]]] = [
        ("kedr_build.ko.elf", ours), ("pyelftools", pyelftools), ("lief", lief_reader)]
    times: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, fn in readers:
        fn(images[0])  # import and warm up outside the timing
        start = time.perf_counter()
        counts[name] = sum(fn(d) for d in images)
        times[name] = time.perf_counter() - start
    base = times["kedr_build.ko.elf"]
    print(f"{len(images)} modules of {args.kernel}, symbol tables read "
          f"({counts['kedr_build.ko.elf']} symbols):")
    for name, _ in readers:
        print(f"  {name:18} {times[name]:8.2f} s   {times[name] / base:7.1f}x ours"
              + ("" if counts[name] == counts["kedr_build.ko.elf"] else "  (count differs!)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
