"""Random fault campaigns: N runs, each failing calls with probability P from its seed.

Run i uses seed ``seed + i``: every fault point's generator (kedr_faults.c, one
per point, taus113 seeded from the seed) starts from it, so a run is reproduced
by :func:`reproduce` with its seed, given the same driver, workload and kernel
(the same calls in the same order draw the same numbers). Runs share one boot
while the kernel stays healthy, a fresh one after a crash
(:mod:`kedr_build.faults.trials`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.faults.errors import NoFaultPoint
from kedr_build.faults.guest import Guest
from kedr_build.faults.scenario import Scenario, parse_scenario
from kedr_build.faults.trials import Outcome, Trial, TrialRecord, run_trials
from kedr_build.intercept.faultpoints import POINTS_FILE, load_points
from kedr_build.kernel.descriptions import ProvisionedKernel


@dataclass(frozen=True)
class CampaignRun:
    seed: int
    record: TrialRecord

    @property
    def outcome(self) -> Outcome:
        return self.record.outcome


@dataclass(frozen=True)
class CampaignResult:
    target: str
    probability: str
    points: tuple[str, ...]
    runs: tuple[CampaignRun, ...]
    boots: int
    elapsed: float
    logs: Path

    @property
    def ok(self) -> bool:
        return not any(r.outcome.bad for r in self.runs)

    def to_json(self) -> str:
        return json.dumps({
            "target": self.target, "ok": self.ok, "probability": self.probability,
            "points": list(self.points), "boots": self.boots, "elapsed": self.elapsed,
            "logs": str(self.logs),
            "runs": [dict(asdict(r.record), seed=r.seed, outcome=r.outcome.value,
                          verdict=r.record.verdict) for r in self.runs]}, indent=2)


def campaign(kernel: ProvisionedKernel, replacement: Path, target: Path, logdir: Path, *,
             runs: int = 10, probability: str = "0.1", seed: int = 1,
             points: Sequence[str] | None = None, workload: Path | None = None,
             module_args: Sequence[str] = (), intree: Sequence[str] = (),
             run_timeout: float = 60.0,
             progress: Callable[[str], None] | None = None,
             guest: Guest | None = None) -> CampaignResult:
    """``runs`` runs with seeds ``seed``, ``seed + 1``, ...; ``points``: the fault points
    to fail (default: every family point of the replacement module); ``guest``: where
    (a real machine: kedr_build/targets/trials.py; default QEMU boots)."""
    if runs < 1:
        raise KedrError(f"campaign: runs={runs}: at least one run")
    sc = parse_scenario(f"prob={probability} seed={seed + runs - 1}", "campaign scenario")
    known = load_points(replacement.parent / POINTS_FILE)
    chosen = tuple(points) if points is not None else tuple(p for p, fp in known.items()
                                                            if fp.family)
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise KedrError(f"campaign: unknown fault point {unknown[0]!r}; "
                        f"known: {', '.join(sorted(known)) or 'none'}")
    if not chosen:
        raise NoFaultPoint(f"campaign: {replacement.name} has no fault point: nothing can fail")
    trials = [Trial(f"seed={s}", tuple((p, Scenario(rule="always", prob=sc.prob, seed=s).text())
                                       for p in chosen))
              for s in range(seed, seed + runs)]
    run = run_trials(kernel, replacement, target, logdir, trials=trials, workload=workload,
                     module_args=module_args, intree=intree, trial_timeout=run_timeout,
                     progress=progress, what="campaign", unit="run", guest=guest)
    result = CampaignResult(target=run.target, probability=str(sc.prob), points=chosen,
                            runs=tuple(CampaignRun(seed + r.index - 1, r) for r in run.records),
                            boots=run.boots, elapsed=run.elapsed, logs=logdir)
    write_atomic(logdir / "campaign.json", result.to_json().encode())
    return result


def reproduce(kernel: ProvisionedKernel, replacement: Path, target: Path, logdir: Path,
              seed: int, *, probability: str = "0.1", points: Sequence[str] | None = None,
              workload: Path | None = None, module_args: Sequence[str] = (),
              intree: Sequence[str] = ()) -> CampaignRun:
    """Run a campaign's run again from its seed (pass the campaign's probability,
    points, workload and module arguments)."""
    return campaign(kernel, replacement, target, logdir, runs=1, seed=seed,
                    probability=probability, points=points, workload=workload,
                    module_args=module_args, intree=intree).runs[0]
