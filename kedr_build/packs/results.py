"""Typed results of a pack session: what a test kind returns and what the reports show.

A :class:`TestRun` is one run of one pack test on one driver (one VM boot for the
``vm`` kind): its :class:`CheckResult` s (one pytest item each) and the evidence
behind them. A :class:`PackReport` is a whole session (or shards merged): it is
what ``report.json`` holds (JSON Schema: ``kedr_build/packs/schema/report-2.json``).

An item's outcome is ``passed``, ``failed``, ``error``, ``not-run`` (the test could
not run, e.g. no workload: the message says why), ``interrupted`` (the session was
stopped by a signal before the item was judged) or ``flaky`` (with ``RETRIES=N``: it
failed in one run of its test and passed in another; the message says which). The verdict is ``interrupted`` when
any item is, else ``failed`` when any item failed or erred or a *blocker* test's item
was not run (a pack test is a blocker unless its TOML says ``blocker = false``), else
``passed`` (flaky items do not fail it; every report says they were flaky).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from kedr_build.checks.suppress import Suppressed

SCHEMA_ID = "kedr-build/pack-report"
SCHEMA_VERSION = 2
OUTCOMES = ("passed", "failed", "error", "not-run", "interrupted", "flaky")
# The reason of a run whose driver was not built (a batch checks the others).
NOT_BUILT = "not built: "


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    message: str              # one line: what was found (or what was checked, when passed)
    skipped: bool = False     # not judged (why: message); the run's other checks say why
    reproduce: str = ""       # the command reproducing this finding alone, when narrower
                              # than the test's (a fault site's scenario, a campaign seed)
    flaky: str = ""           # RETRIES=: it failed in one run and passed in another (how)


def not_run(driver: str, test: str, kind: str, checks: tuple[str, ...],
            message: str) -> TestRun:
    """A run that did not happen (no workload, no device...): each check not run, why."""
    return TestRun(driver, test, kind, reason=f"not run: {message}",
                   checks=tuple(CheckResult(c, False, f"not run: {message}", skipped=True)
                                for c in checks))


@dataclass(frozen=True)
class LeakGroupInfo:
    count: int
    bytes: int
    function: str             # the allocator called
    caller: str               # frame 0
    stack: tuple[str, ...]


@dataclass(frozen=True)
class SweepRow:
    """One fault-sweep site and its outcome (filled by the ``faults`` kind)."""

    site: str                 # "kmalloc_trace at faulty_init+0x43"
    outcome: str              # kedr_build.faults.trials.Outcome's value: clean, leak, crash, ...
    detail: str = ""          # what the injected failure did
    phase: str = ""           # where the site was reached: init, workload, exit
    reproduce: str = ""       # the command that fails this site alone
    bad: bool = False         # the outcome fails the check (leak, crash, hang, lost, unload failed)


@dataclass(frozen=True)
class TestRun:
    driver: str
    test: str
    kind: str
    checks: tuple[CheckResult, ...]
    elapsed: float = 0.0
    logs: str = ""
    reason: str = ""                       # the run's own verdict line ("" when it passed)
    steps: tuple[str, ...] = ()            # "insmod kedr_chardev 0"
    leak_groups: tuple[LeakGroupInfo, ...] = ()
    bad_frees: tuple[str, ...] = ()
    violations: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    trace_calls: dict[str, int] = field(default_factory=dict)
    taint: int | None = None
    sweep: tuple[SweepRow, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()   # SUPPRESS= rules and what each hid in this run
    attempts: int = 1                      # runs of the test (RETRIES=: more after a failure)
    retried: tuple[str, ...] = ()          # why each earlier attempt was run again
    interfaces: str = ""                   # what the driver registered (fuzz, reload kinds)
    fuzz: tuple[str, ...] = ()             # the fuzzer's lines: its seed, rate, last ops
    cycles: tuple[str, ...] = ()           # reload: each cycle's leak totals, one line each
    reduced: tuple[str, ...] = ()          # fuzz: each failure's shortest failing sequence

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.check == name:
                return c
        return CheckResult(name, False, f"the {self.kind} run did not judge {name!r}")


@dataclass(frozen=True)
class ItemResult:
    """One pytest item: a check of a test on a driver, as pytest reported it."""

    driver: str
    test: str
    check: str
    outcome: str              # one of OUTCOMES
    message: str
    reproduce: str            # the one command that runs this test of this driver alone
    index: int = 0            # position in the whole (unsharded) session's collection
    blocker: bool = True      # its test blocks the verdict when it does not run

    @property
    def blocks(self) -> bool:
        """This item alone makes the verdict other than passed."""
        return (self.outcome in ("failed", "error", "interrupted")
                or (self.outcome == "not-run" and self.blocker))


@dataclass(frozen=True)
class PackReport:
    pack: str
    kernel: str
    verdict: str                          # passed, failed, interrupted
    items: tuple[ItemResult, ...]
    runs: tuple[TestRun, ...]
    tools: dict[str, str] = field(default_factory=dict)
    command: str = ""
    started: str = ""                     # when the session started (UTC, ISO 8601)
    target: str = ""                      # TARGET= where it ran: "" the QEMU guest

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema": SCHEMA_ID, "version": SCHEMA_VERSION, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def verdict_of(items: tuple[ItemResult, ...]) -> str:
    if any(i.outcome == "interrupted" for i in items):
        return "interrupted"
    return "failed" if not items or any(i.blocks for i in items) else "passed"


def from_dict(data: dict[str, Any]) -> PackReport:
    """A report read back from its JSON (for merging shards)."""
    return PackReport(pack=data["pack"], kernel=data["kernel"], verdict=data["verdict"],
                      items=tuple(ItemResult(**i) for i in data["items"]),
                      runs=tuple(run_from_dict(r) for r in data["runs"]),
                      tools=dict(data.get("tools", {})), command=data.get("command", ""),
                      started=data.get("started", ""), target=data.get("target", ""))


def run_from_dict(data: dict[str, Any]) -> TestRun:
    """A :class:`TestRun` from its ``asdict`` (a report's JSON, or an xdist worker's)."""
    r = dict(data)
    r["checks"] = tuple(CheckResult(**c) for c in r["checks"])
    r["leak_groups"] = tuple(LeakGroupInfo(**{**g, "stack": tuple(g["stack"])})
                             for g in r["leak_groups"])
    r["sweep"] = tuple(SweepRow(**s) for s in r["sweep"])
    r["suppressed"] = tuple(Suppressed(**s) for s in r.get("suppressed", ()))
    r.setdefault("retried", ())
    for key in ("steps", "bad_frees", "violations", "problems", "retried"):
        r[key] = tuple(r[key])
    for key in ("fuzz", "cycles", "reduced"):
        r[key] = tuple(r.get(key, ()))
    r["trace_calls"] = dict(r["trace_calls"])
    return TestRun(**r)
