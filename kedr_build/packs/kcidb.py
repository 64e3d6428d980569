"""``report/kcidb.json``: a pack session in KernelCI's KCIDB I/O format (schema v5.3, as
the ``kcidb-io`` package validates it), so a lab can submit a check to a KernelCI
dashboard (``kcidb-submit < kcidb.json``).

Per driver of the session:

* a **checkout**: the driver's source as checked (KCIDB's checkouts are what was
  tested; here the driver, not the kernel);
* a **build**: the driver built and cold-patched against the pinned kernel
  (``architecture``, ``config_name`` = the kernel), ``PASS``, or ``FAIL`` with the
  cause when a batch's driver was not built;
* **tests**: one per item, path ``kedr.<pack>.<test>.<check>``, and the roll-ups
  ``kedr.<pack>.<test>`` (one run of the test) and ``kedr.<pack>`` (the driver), each
  with the highest status of its children in KCIDB's order FAIL > ERROR > MISS > PASS >
  DONE > SKIP.

An item's status: passed ``PASS``; failed ``FAIL``; error (the harness raised) ``ERROR``;
not run ``MISS`` when its test is a blocker and ``SKIP`` when not: a non-blocker that
cannot run (no workload) is KCIDB's "not applicable", while a blocker that did not run
leaves the code's status unknown and must keep the roll-up from ``PASS``, as it keeps
our verdict from passed. Interrupted (a signal stopped the session) is ``MISS``: the
harness stopped, nothing of the test's own code failed (``ERROR`` would say it did).
The checks of a driver that was not built are ``MISS`` too (its build says ``FAIL``).
Flaky (``RETRIES=``) is ``PASS`` with the comment ``flaky: ...`` (the item's message) and
``misc.kedr_outcome = "flaky"``: never a plain pass. Every test carries our outcome,
message and blocker flag in ``misc``.

Ids are ``<origin>:<run>.<driver>[.<test>[.<check>]]``, ``<run>`` the session's start
time and a hash of what ran, so each check's objects are new to the database.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from kedr_build.errors import KedrError
from kedr_build.packs.results import NOT_BUILT, ItemResult, PackReport, TestRun

KCIDB_NAME = "kcidb.json"
DEFAULT_ORIGIN = "kedr"
SCHEMA_VERSION = {"major": 5, "minor": 3}
# KCIDB's statuses, highest priority first (kcidb-io schema v5.3, "status").
STATUSES = ("FAIL", "ERROR", "MISS", "PASS", "DONE", "SKIP")
_ORIGIN = re.compile(r"[a-z0-9_]+")
_PATH_PART = re.compile(r"[^A-Za-z0-9_-]")


def check_origin(origin: str) -> str:
    """KCIDB_ORIGIN=: KCIDB's origin syntax (lower-case letters, digits, '_')."""
    if not _ORIGIN.fullmatch(origin):
        raise KedrError(f"KCIDB_ORIGIN={origin}: a KCIDB origin is lower-case letters, "
                        "digits and '_' (e.g. my_lab)")
    return origin


def rollup(statuses: list[str]) -> str:
    """The summary status of several: the highest in KCIDB's priority order (SKIP for
    none)."""
    return min(statuses, key=STATUSES.index, default="SKIP")


def status_of(item: ItemResult, built: bool = True) -> str:
    if not built:
        return "MISS"
    return {"passed": "PASS", "flaky": "PASS", "failed": "FAIL", "error": "ERROR",
            "interrupted": "MISS"}.get(item.outcome,
                                       "MISS" if item.blocker else "SKIP")


def path_part(name: str) -> str:
    """A name as one node of a KCIDB test path ([A-Za-z0-9_-]+)."""
    return _PATH_PART.sub("_", name) or "_"


def run_id(rep: PackReport) -> str:
    digest = hashlib.sha256(json.dumps([rep.started, rep.pack, rep.kernel, rep.command,
                                        [i.driver for i in rep.items]]).encode())
    stamp = re.sub(r"[^0-9T]", "", rep.started.split(".")[0].split("+")[0])
    return f"{stamp or 'unknown'}-{digest.hexdigest()[:12]}"


def _kernel(name: str) -> dict[str, str]:
    from kedr_build.kernel import descriptions

    try:
        d = descriptions.describe(name)
    except KedrError:
        return {"name": name}
    return {"name": name, "release": d.release, "arch": d.arch, "summary": d.summary}


def _timed(obj: dict[str, Any], rep: PackReport) -> dict[str, Any]:
    if rep.started:
        obj["start_time"] = rep.started
    return obj


def document(rep: PackReport, origin: str = DEFAULT_ORIGIN) -> dict[str, Any]:
    """The KCIDB I/O data of a session's report."""
    run = run_id(rep)
    kernel = _kernel(rep.kernel)
    pack = path_part(rep.pack)
    where = f"machine {rep.target}" if rep.target else "QEMU guest"
    environment = {"comment": f"{where}, {kernel.get('summary', rep.kernel)}",
                   "misc": {"kernel": kernel, **({"target": rep.target} if rep.target else {})}}
    checkouts: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    for driver in dict.fromkeys(i.driver for i in rep.items):
        base = f"{origin}:{run}.{driver}"
        items = [i for i in rep.items if i.driver == driver]
        runs = {r.test: r for r in rep.runs if r.driver == driver}
        unbuilt = next((r.reason for r in runs.values() if r.reason.startswith(NOT_BUILT)), "")
        checkouts.append(_timed({"id": base, "origin": origin, "valid": True,
                                 "comment": f"driver {driver}",
                                 "misc": {"driver": driver}}, rep))
        build = _timed({"id": base, "origin": origin, "checkout_id": base,
                        "comment": f"{driver} built and cold-patched by kedr-build against "
                                   f"{kernel.get('release', rep.kernel)}",
                        "config_name": rep.kernel, "status": "FAIL" if unbuilt else "PASS",
                        "misc": {"driver": driver, "kernel": kernel,
                                 "tools": dict(rep.tools)}}, rep)
        if "arch" in kernel:
            build["architecture"] = kernel["arch"]
        if unbuilt:
            build["log_excerpt"] = unbuilt[:16384]
        builds.append(build)

        def test(ident: str, path: str, status: str, comment: str,
                 misc: dict[str, Any]) -> dict[str, Any]:
            return _timed({"id": ident, "origin": origin, "build_id": base, "path": path,
                           "status": status, "comment": comment, "environment": environment,
                           "misc": misc}, rep)

        statuses = []
        for name in dict.fromkeys(i.test for i in items):
            checks = [i for i in items if i.test == name]
            tid, tpath = f"{base}.{path_part(name)}", f"kedr.{pack}.{path_part(name)}"
            group = [status_of(i, not unbuilt) for i in checks]
            statuses += group
            tr: TestRun | None = runs.get(name)
            misc: dict[str, Any] = {"driver": driver, "test": name,
                                    "blocker": checks[0].blocker,
                                    "checks": {s: group.count(s) for s in STATUSES
                                               if s in group}}
            if tr is not None:
                misc.update(kind=tr.kind, logs=tr.logs, attempts=tr.attempts)
            obj = test(tid, tpath, rollup(group),
                       (tr.reason if tr is not None and tr.reason else f"{name}: "
                        + ", ".join(f"{n} {s}" for s, n in misc["checks"].items())), misc)
            if tr is not None:
                obj["duration"] = tr.elapsed
            tests.append(obj)
            for i, status in zip(checks, group):
                tests.append(test(f"{tid}.{path_part(i.check)}",
                                  f"{tpath}.{path_part(i.check)}", status,
                                  i.message or f"{i.check}: {i.outcome}",
                                  {"driver": driver, "test": name, "check": i.check,
                                   "kedr_outcome": i.outcome, "blocker": i.blocker,
                                   "reproduce": i.reproduce}))
        tests.append(test(base, f"kedr.{pack}", rollup(statuses),
                          f"pack {rep.pack} on {driver}: {rollup(statuses)}",
                          {"driver": driver, "pack": rep.pack, "verdict": rep.verdict}))
    return {"version": dict(SCHEMA_VERSION), "checkouts": checkouts, "builds": builds,
            "tests": tests}


def to_json(rep: PackReport, origin: str = DEFAULT_ORIGIN) -> str:
    return json.dumps(document(rep, origin), indent=2, sort_keys=True)


def origin_of(text: str) -> str:
    """The origin of an earlier kcidb.json (a shard's, when merging), else the default."""
    try:
        data = json.loads(text)
        return str(data["checkouts"][0]["origin"])
    except (ValueError, KeyError, IndexError, TypeError):
        return DEFAULT_ORIGIN
