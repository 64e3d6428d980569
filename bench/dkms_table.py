"""Print the README's DKMS corpus table from the last test run's results.

    ./kedr-env pytest -m dkms tests/test_dkms_corpus.py   # writes build/test-results/dkms/
    ./kedr-env python bench/dkms_table.py [--write README.md]  # the markdown table

Columns: the package; Debian's own ``dkms build`` (modules built, seconds);
``scons DKMS=`` (modules, seconds for the whole pipeline: build, plan, generate,
patch); functions renamed across its modules; the VM column from
build/test-results/dkms-vm/ when the VM test ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from kedr_build.atomic import write_section  # noqa: E402

RESULTS = REPO / "build" / "test-results"


def _cell(side: dict[str, Any]) -> str:
    if not side["ok"]:
        # "kedr-build: /…/dkms.conf: MAKE failed …" -> "MAKE failed …"
        why = side.get("error", "").split("dkms.conf: ", 1)[-1].split(";")[0]
        return "fails" + (f": {why}" if why else "")
    return f"{len(side['modules'])} .ko, {side['seconds']:.0f} s"


BEGIN = "<!-- dkms-table -->"
END = "<!-- end of dkms-table -->"


def main() -> int:
    write = sys.argv[2] if len(sys.argv) == 3 and sys.argv[1] == "--write" else None
    out: list[str] = []
    status = render(out)
    if write is None or status:
        print("\n".join(out))
        return status
    write_section(Path(write), BEGIN, END, "\n".join(out) + "\n", "dkms-table")
    return 0


def render(out: list[str]) -> int:
    print = out.append  # noqa: A001 - the table is collected, then printed or written
    files = sorted((RESULTS / "dkms").glob("*.json"))
    if not files:
        sys.stderr.write(f"no results in {RESULTS / 'dkms'}: run the dkms tests first\n")
        return 1
    vm = {p.stem: json.loads(p.read_text()) for p in (RESULTS / "dkms-vm").glob("*.json")}
    rows = [json.loads(p.read_text()) for p in files]
    print("| package | `dkms build` | `scons DKMS=` | same .ko set | functions renamed | "
          "loads in the VM |")
    print("|---|---|---|---|---|---|")
    agree = 0
    for r in rows:
        d, k = r["dkms"], r["kedr"]
        same = d["ok"] == k["ok"] and (not d["ok"] or d["modules"] == k["modules"])
        agree += same
        run = vm.get(r["package"])
        print(f"| {r['package']} | {_cell(d)} | {_cell(k).replace('|', '/')} | "
              f"{'yes' if same else 'NO'} | {k['renamed'] if k['ok'] else '-'} | "
              f"{run['summary'] if run else '-'} |")
    built = sum(r["dkms"]["ok"] for r in rows)
    print("")
    print(f"{len(rows)} packages on {rows[0]['kernel']}: dkms builds {built}, kedr-build "
          f"builds {sum(r['kedr']['ok'] for r in rows)}; outcomes agree on {agree}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
