"""Join the reports of a session's shards (``SHARD=k/N`` runs, e.g. a CI matrix) into
one report: the JSON items and runs in the unsharded session's order, one JUnit
testsuite with the shards' test cases (counts and time summed), and the HTML page.

    python -m kedr_build.packs.merge OUT_DIR SHARD_DIR...
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.packs import kcidb, report
from kedr_build.packs.results import PackReport, from_dict, verdict_of


def merge_reports(reports: list[PackReport]) -> PackReport:
    if not reports:
        raise KedrError("no shard reports to merge")
    first = reports[0]
    target = one_target([r.target for r in reports])
    for r in reports[1:]:
        if (r.pack, r.kernel) != (first.pack, first.kernel) or target is None:
            raise KedrError(f"shards of different sessions: pack {r.pack} on {r.kernel} "
                            f"{_where(r.target)} vs pack {first.pack} on {first.kernel} "
                            f"{_where(first.target)}")
    items = tuple(sorted((i for r in reports for i in r.items), key=lambda i: i.index))
    indexes = [i.index for i in items]
    if len(set(indexes)) != len(indexes):
        raise KedrError("the shards overlap: an item was run by two of them")
    order = {g: n for n, g in enumerate(dict.fromkeys((i.driver, i.test) for i in items))}
    runs = tuple(sorted((run for r in reports for run in r.runs),
                        key=lambda run: order.get((run.driver, run.test), len(order))))
    started = min((r.started for r in reports if r.started), default="")
    return PackReport(pack=first.pack, kernel=first.kernel, verdict=verdict_of(items),
                      items=items, runs=runs, tools=first.tools, command=first.command,
                      started=started, target=target or "")


def one_target(targets: list[str]) -> str | None:
    """Where shards that ran at ``targets`` ran, as one session's report says it: their
    TARGET= when they share it; the places of one labgrid environment when each ran
    on places of it (``labgrid:ENV:lab-a,lab-b``, as one ``check`` on both places
    names them: SHARD= k on place k of a lab); else None (other sessions)."""
    if len(set(targets)) == 1:
        return targets[0]
    envs: set[str] = set()
    places: list[str] = []
    for t in targets:
        # targets/spec.py's form: labgrid:ENV[:a,b,...]
        env, sep, place = t.removeprefix("labgrid:").partition(":")
        if not t.startswith("labgrid:") or not sep:
            return None
        envs.add(env)
        places += place.split(",")
    if len(envs) != 1:
        return None
    return f"labgrid:{envs.pop()}:{','.join(dict.fromkeys(places))}"


def _where(target: str) -> str:
    return f"at {target}" if target else "in the QEMU guest"


def merge_junit(files: list[Path], order: dict[str, int]) -> bytes:
    """One <testsuites><testsuite> with every shard's test cases, in ``order``
    (test case name -> position in the unsharded session)."""
    cases: list[ET.Element] = []
    totals = {"errors": 0, "failures": 0, "skipped": 0, "tests": 0}
    time = 0.0
    name = "pytest"
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (OSError, ET.ParseError) as e:
            raise KedrError(f"{f}: not a JUnit XML file ({e})") from None
        for suite in root.iter("testsuite"):
            name = suite.get("name", name)
            for key in totals:
                totals[key] += int(suite.get(key, "0"))
            time += float(suite.get("time", "0"))
            cases.extend(suite.findall("testcase"))
    cases.sort(key=lambda c: order.get(c.get("name", ""), len(order)))
    suite = ET.Element("testsuite", {"name": name, **{k: str(v) for k, v in totals.items()},
                                     "time": f"{time:.3f}"})
    suite.extend(cases)
    root = ET.Element("testsuites")
    root.append(suite)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def merge_dirs(out: Path, shards: list[Path]) -> PackReport:
    reports = []
    for d in shards:
        try:
            reports.append(from_dict(json.loads((d / report.JSON_NAME).read_text())))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KedrError(f"{d / report.JSON_NAME}: not a pack report ({e})") from None
    merged = merge_reports(reports)
    shard_kcidb = shards[0] / kcidb.KCIDB_NAME
    origin = (kcidb.origin_of(shard_kcidb.read_text()) if shard_kcidb.is_file()
              else kcidb.DEFAULT_ORIGIN)
    report.write(out, merged, origin)
    order = {f"{i.test}.{i.check}[{i.driver}]": i.index for i in merged.items}
    junit = [d / report.JUNIT_NAME for d in shards if (d / report.JUNIT_NAME).is_file()]
    if junit:
        write_atomic(out / report.JUNIT_NAME, merge_junit(junit, order))
    return merged


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m kedr_build.packs.merge OUT_DIR SHARD_DIR...", file=sys.stderr)
        return 2
    try:
        merged = merge_dirs(Path(argv[0]), [Path(a) for a in argv[1:]])
    except KedrError as e:
        print(f"kedr-build: {e}", file=sys.stderr)
        return 1
    print("\n".join(report.summary(merged, Path(argv[0]))))
    return 0 if merged.verdict == "passed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
