"""The systematic fault sweep: fail every fault site of a driver once, judge each.

A *site* is a distinct (function, caller) pair the driver reaches, the caller
named relative to the driver (``faulty_init+0x43``: function and offset, from
kallsyms while the call runs), so it is the same site after a reload at another
address. :func:`sweep` boots the VM once, discovers the sites reached in the
driver's init, the ``workload`` and its exit (the replacement module's
``faults/sites`` recorder, kedr_faults.c), then, in the same boot, fails each
site once (scenario ``caller=<site> nth=1`` on the site's function point) and
judges the run (:mod:`kedr_build.faults.trials`):

* the driver is reloaded for each site and the replacement module reset after
  it (debugfs ``reset``: what its rmmod and insmod would leave), so the leak
  report read before the reset covers that site's run only (no generations
  needed in the leak payload);
* init failed cleanly with an error code / the workload saw the error (non-zero
  status) / what leaked / an oops, WARN or lockup (kernel taint, the console) /
  a hang / whether the driver unloaded;
* after a taint, a hang, or a driver that would not unload, the VM is booted
  afresh and the sweep carries on with the next site.

On a real machine (``guest``: kedr_build/targets/trials.py) the same trials run one
a job, judged alike, and a machine such a site leaves tainted or lost is power-cycled;
one that cannot be stops the sweep there (``stopped`` says where and why).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kedr_build import interrupt
from kedr_build.atomic import write_atomic
from kedr_build.faults.errors import NoFaultPoint
from kedr_build.faults.guest import Guest
from kedr_build.devices.attach import Attachment
from kedr_build.faults.trials import Outcome, Site, TrialRecord, TrialsRun, run_trials
from kedr_build.intercept.faultpoints import POINTS_FILE, load_points
from kedr_build.kernel.descriptions import ProvisionedKernel

__all__ = ["Outcome", "Site", "SiteResult", "SweepResult", "sweep", "table"]


@dataclass(frozen=True)
class SiteResult:
    site: Site
    record: TrialRecord

    @property
    def index(self) -> int:
        return self.record.index

    @property
    def outcome(self) -> Outcome:
        return self.record.outcome


@dataclass(frozen=True)
class SweepResult:
    target: str
    sites: tuple[Site, ...]
    results: tuple[SiteResult, ...]
    boots: int
    elapsed: float
    discovery_seconds: float        # first boot's start to the first site's trial
    logs: Path
    interrupted: str = ""           # the signal that stopped it ("SIGINT"): results partial
    stopped: str = ""               # a machine lost or tainted for good: results partial

    @property
    def ok(self) -> bool:
        return (not self.interrupted and not self.stopped
                and not any(r.outcome.bad for r in self.results))

    @property
    def seconds_per_site(self) -> float:
        return (self.elapsed - self.discovery_seconds) / max(1, len(self.results))

    def to_json(self) -> str:
        data = {"target": self.target, "ok": self.ok, "interrupted": self.interrupted,
                "stopped": self.stopped,
                "boots": self.boots,
                "elapsed": self.elapsed, "discovery_seconds": self.discovery_seconds,
                "seconds_per_site": self.seconds_per_site, "logs": str(self.logs),
                "results": [dict(asdict(r.record), outcome=r.outcome.value,
                                 verdict=r.record.verdict, site=asdict(r.site))
                            for r in self.results]}
        return json.dumps(data, indent=2)


def sweep(kernel: ProvisionedKernel, replacement: Path, target: Path, logdir: Path, *,
          workload: Path | None = None, module_args: Sequence[str] = (),
          intree: Sequence[str] = (), site_timeout: float = 60.0,
          progress: Callable[[str], None] | None = None,
          devices: Attachment | None = None, guest: Guest | None = None) -> SweepResult:
    """Discover the fault sites of ``target`` (patched against ``replacement``) and fail
    each once; writes ``logdir/sweep.json``. A driver that reaches no function that
    can fail is a NoFaultPoint error ("nothing to sweep")."""
    points_file = replacement.parent / POINTS_FILE
    if points_file.is_file() and not load_points(points_file):
        raise NoFaultPoint(f"sweep of {target.name}: nothing to sweep: it imports no function that "
                        f"can fail ({points_file} lists no fault point)")
    try:
        run = run_trials(kernel, replacement, target, logdir, discover=True, workload=workload,
                         module_args=module_args, intree=intree, trial_timeout=site_timeout,
                         progress=progress, what="sweep", unit="site", devices=devices,
                         guest=guest)
    except interrupt.Interrupted as e:
        # sweep.json says so, with the sites judged before the signal; the caller stops.
        if isinstance(e.partial, TrialsRun):
            e.partial = _result(e.partial, logdir, interrupt.signal_name(e.signum))
            write_atomic(logdir / "sweep.json", e.partial.to_json().encode())
        raise
    result = _result(run, logdir)
    write_atomic(logdir / "sweep.json", result.to_json().encode())
    return result


def _result(run: TrialsRun, logdir: Path, interrupted: str = "") -> SweepResult:
    results = tuple(SiteResult(run.sites[r.index - 1], r) for r in run.records)
    return SweepResult(target=run.target, sites=run.sites, results=results, boots=run.boots,
                       elapsed=run.elapsed, discovery_seconds=run.setup_seconds, logs=logdir,
                       interrupted=interrupted, stopped=run.stopped)


def table(result: SweepResult) -> list[str]:
    """The sweep as a table, one site a line, and a last line with the totals."""
    rows = [("#", "site", "phase", "outcome", "what happened")]
    for r in result.results:
        rows.append((str(r.index), f"{r.site.function} at {r.site.caller}", r.site.phase,
                     r.outcome.value, r.record.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4]
             for row in rows]
    counts: dict[str, int] = {}
    for r in result.results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    lines.append(f"{len(result.results)} sites of {result.target}: "
                 + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
                 + f"; {result.boots} boot{'s' if result.boots != 1 else ''}, "
                 f"{result.elapsed:.1f} s ({result.seconds_per_site:.2f} s per site)"
                 + (f"; INTERRUPTED by {result.interrupted} after {len(result.results)} of "
                    f"{len(result.sites)} sites" if result.interrupted else ""))
    if result.stopped:
        lines.append(f"STOPPED: {result.stopped}")
    return lines
