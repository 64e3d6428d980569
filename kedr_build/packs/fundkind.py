"""The ``fuzz``, ``reload`` and ``chaos`` test kinds (driver fundamentals, as Windows
HLK's Device Fundamentals ask them of every driver). One boot each, judged with the
``vm`` kind's checks (:mod:`kedr_build.packs.vmkind`) and one of their own:

* ``fuzz``    the interfaces the driver registered are found from the kernel
              (:mod:`kedr_build.vm.discover`), and the guest fuzzer
              (``replacements/guest/kfuzz.c``) runs ``count`` operations (or
              ``seconds``) of ``threads`` threads on its character and block
              device nodes and its network interfaces, from ``seed``;
              ``FUZZ_SEED=`` replaces the seed (a failure's reproducer names it).
              A driver with none of them: the check is not run.
* ``reload``  ``cycles`` times load -> workload -> unload in one boot; the leak report
              is read after each unload, and what is still allocated must not grow
              from cycle to cycle; ``module_params`` gives the drivers' insmod
              arguments of each cycle (cycled through), shown in each cycle's line.
* ``chaos``   the fuzzer, the workload over and over and the driver unloaded and
              loaded again, all at once for ``seconds``; with DEVICES=, its devices
              hot-unplugged and plugged in again and the guest suspended and resumed
              meanwhile too (then a driver with no device node or network interface
              is not fuzzed, the rest runs). Its fuzzer sweeps the nodes' ioctls first, as ``fuzz``'s
              does (``sweep`` ioctls a node; 0: none).

Every check of a fuzz run that fails names the seed, and its ``reproduce`` is the
check command with ``TEST=`` and ``FUZZ_SEED=``: each thread's operations depend on
the seed and the thread's number only, so it replays them (the threads'
interleaving is the scheduler's). A failing ``kernel``, ``leaks`` or ``rules`` check
also carries the shortest sequence that still fails: after the judged run the guest
reduces the recorded operations (delta debugging, ``reduce`` attempts at most, each
a replay in one thread in a fresh load of the driver) and replays the result three
times (:mod:`kedr_build.vm.reduction`). A failed unload (``loads``) reduces too, in
the driver that stayed loaded: a replay fails when it leaves more references to the
module than it found. A WARN/BUG line at the drivers' unload reduces in the same boot
(each attempt unloads). A hang (no operation started for ``hang`` seconds: the ``fuzz``
check fails) and a taint without a WARN/BUG line while the fuzzer ran or at the
drivers' unload (``kernel``) are reduced across fresh boots, a boot per failing
attempt, within ``reduce`` attempts and ``reduce_seconds``
(:mod:`kedr_build.vm.reboots`), each boot with the run's DEVICES=. A ``kernel``,
``leaks`` or ``rules`` failure the one-thread replay does not show (a race) is replayed
concurrently, ``race_replays`` times a candidate, and reduced to the kinds of
operation and threads it needs, at a failure rate comparable to the whole
recording's, then verified (:mod:`kedr_build.vm.races`, within ``reduce`` attempts and
``race_seconds``). A guest lost in the fuzz step (a panic; cut after a crash report;
a lockup of the whole kernel, stopped when its heartbeat stopped) is reduced across
boots too, from the record kfuzz
kept in memory the host reads after the guest is gone (:mod:`kedr_build.vm.shm`):
class ``crash`` (the ``kernel`` check) when the console has an oops, BUG, GPF or panic,
else ``hang`` (``fuzz``). The other checks' failures after a failed unload (no fresh
load) are said not to reduce, and why.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from kedr_build.atomic import write_atomic
from kedr_build.checks import suppress
from kedr_build.errors import KedrError
from kedr_build.kernel import provision
from kedr_build.packs import vmkind
from kedr_build.packs.pack import PackTest
from kedr_build.packs.results import CheckResult, TestRun
from kedr_build.packs.session import DriverUnderTest, Session, attached
from kedr_build.vm import discover, raceboot, races, reboots, reduction
from kedr_build.vm.runner import FuzzPlan, RunReport, run_modules

SEED_MAX = 2**64 - 1
NO_INTERFACE = 100          # the guest's "fuzz none" status: nothing found to fuzz
RACE = "race-"             # the class of a failure the one-thread replay does not show
HUNG = 124                  # the guest's fuzz step status when the fuzzer hung
# A hang or a taint-only failure on a real machine (TARGET=): its reduction needs a
# fresh boot per attempt, which only QEMU gives cheaply (vm/reboots.py); the seed
# reproduces it there, or on the machine.
MACHINE_NOT_REDUCED = ("a hang, a taint or a race is reduced with a fresh boot per attempt, "
                       "in QEMU only: TARGET=qemu with the same seed")


def fuzz_seed(text: str) -> int:
    """FUZZ_SEED=: an integer from 0 to 2^64-1 (decimal or 0x...)."""
    try:
        value = int(text.strip(), 0)
    except ValueError:
        value = -1
    if not 0 <= value <= SEED_MAX:
        raise KedrError(f"FUZZ_SEED={text}: not a seed (an integer from 0 to 2^64-1, "
                        "e.g. FUZZ_SEED=1234)")
    return value


def _not_run(driver: DriverUnderTest, test: PackTest, message: str) -> TestRun:
    return TestRun(driver.name, test.name, test.kind, reason=f"not run: {message}",
                   checks=tuple(CheckResult(c, False, f"not run: {message}", skipped=True)
                                for c in test.checks))


def _boot(driver: DriverUnderTest, test: PackTest, logdir: Path, session: Session,
          **kwargs: object) -> RunReport:
    suppressions = suppress.load(Path(driver.suppress)) if driver.suppress else ()
    timeout = float(test.params["timeout"]) or session.vm_timeout
    if session.target:
        # A real machine (TARGET=ssh://, labgrid:): the same steps on its own kernel; a
        # crash is power-cycled where it can be (targets/machine.py).
        return vmkind.on_machine(driver, logdir, session, timeout, suppressions, **kwargs)
    kernel = provision.ensure(session.kernel)
    return run_modules(kernel, [Path(m) for m in driver.modules], logdir, timeout=timeout,
                       trace_providers=(driver.replacement,), intree=driver.modprobe,
                       cpus=session.vm_cpus, suppressions=suppressions,
                       devices=attached(driver, kernel), **kwargs)  # type: ignore[arg-type]


def run_fuzz(driver: DriverUnderTest, test: PackTest, logdir: Path,
             session: Session) -> TestRun:
    seed = test.params["seed"]
    if session.env.get("FUZZ_SEED"):
        seed = fuzz_seed(session.env["FUZZ_SEED"])
    plan = FuzzPlan(seed=seed, count=test.params["count"], seconds=test.params["seconds"],
                    threads=test.params["threads"], reduce=test.params["reduce"],
                    sweep=test.params["sweep"], hang=test.params["hang"],
                    race_replays=test.params["race_replays"])
    workload = Path(driver.workload) if driver.workload else None
    try:
        report = _boot(driver, test, logdir, session, fuzz=plan,
                       workload=workload if test.params["workload"] == "yes" else None)
    except KedrError as e:
        return TestRun(driver.name, test.name, test.kind, reason=str(e), logs=str(logdir),
                       checks=tuple(CheckResult(c, False, str(e)) for c in test.checks))
    found = discover.parse(report.interfaces or ())
    ioctls = discover.ioctl_commands(report.fuzz_output)
    base = _judge(driver, test, report)
    reproduce = f"{driver.command} TEST={test.name} FUZZ_SEED={seed}"
    reduced: dict[str, reduction.Reduction | races.RaceReduction] = dict(
        reduction.parse(report.reduction))
    lost_as = ""
    if plan.reduce and report.fuzz_sequence:
        cls, _ = reboots.split_sequence(report.fuzz_sequence)
        across: reduction.Reduction | races.RaceReduction
        if session.target:
            check = cls[len(RACE):] if cls.startswith(RACE) else reboots.CLASSES.get(
                cls, "kernel")
            across = reduction.Reduction(check, outcome=MACHINE_NOT_REDUCED)
        elif cls.startswith(RACE):
            across = _reduce_race(driver, test, logdir, session, report, plan)
        else:
            across = _reduce_across_boots(driver, test, logdir, session, report, plan)
        reduced[across.check] = across
        # a guest lost mid-fuzz: its record came back, reduced as a crash or a hang
        lost_as = across.check if report.lost else ""
    checks: list[CheckResult] = []
    for c in test.checks:
        result = _fuzz_check(report, found, plan) if c == "fuzz" else base.check(c)
        if not result.passed and not result.skipped:
            said = f"fuzz seed {seed}"
            r = reduced.get(c)
            if r and plan.reduce:
                said += f"; {r.describe()}"
            elif plan.reduce and c in reduction.CHECKS:
                said += "; " + reduction.why_not(
                    c, report.lost, any(s.action == "rmmod" and not s.ok
                                        for s in report.steps), bool(report.problems),
                    lost_as)
            result = CheckResult(result.check, False, f"{result.message} ({said})",
                                 result.skipped, reproduce)
        checks.append(result)
    fuzz_check = next((c for c in checks if c.check == "fuzz"), None)
    if fuzz_check is not None and fuzz_check.skipped:
        # No interface: nothing was fuzzed, so the other checks judged nothing either.
        return TestRun(driver.name, test.name, test.kind, reason=fuzz_check.message,
                       logs=str(report.logs), interfaces=found.describe(),
                       checks=tuple(c if c.check == "fuzz" else
                                    CheckResult(c.check, False, fuzz_check.message, True)
                                    for c in checks))
    return _with(base, tuple(checks), interfaces="; ".join(
                     s for s in (found.describe(), ioctls) if s),
                 fuzz=tuple(report.fuzz_output),
                 reduced=tuple(f"{c}: {r.describe()}" for c, r in sorted(reduced.items())))


def _reduce_across_boots(driver: DriverUnderTest, test: PackTest, logdir: Path,
                         session: Session, report: RunReport,
                         plan: FuzzPlan) -> reduction.Reduction:
    """A hang or a taint-only failure: reduced with a fresh boot per failing attempt,
    each with the run's DEVICES=."""
    kernel = provision.ensure(session.kernel)
    return reboots.reduce(kernel, [Path(m) for m in driver.modules],
                          (driver.replacement,), tuple(driver.modprobe),
                          report.fuzz_sequence, plan.hang,
                          reboots.Budget(plan.reduce, float(test.params["reduce_seconds"])),
                          logdir, session.vm_cpus, attached(driver, kernel))


def _reduce_race(driver: DriverUnderTest, test: PackTest, logdir: Path, session: Session,
                 report: RunReport, plan: FuzzPlan) -> races.RaceReduction:
    """A failure the one-thread replay does not show: reduced to the kinds of operation
    and the threads it needs, replayed concurrently (:mod:`kedr_build.vm.races`); the
    reduced sequence is kept beside the logs (race-CHECK.seq)."""
    cls, sequence = reboots.split_sequence(report.fuzz_sequence)
    check = cls[len(RACE):]
    kernel = provision.ensure(session.kernel)
    boot = raceboot.booter(kernel, [Path(m) for m in driver.modules],
                           (driver.replacement,), tuple(driver.modprobe), check, logdir,
                           session.vm_cpus, attached(driver, kernel))
    oracle = races.Oracle(boot, plan.race_replays, plan.reduce,
                          float(test.params["race_seconds"]))
    result = races.reduce(check, sequence, oracle)
    if result.reduced:
        saved = Path(logdir) / f"{cls}.seq"
        write_atomic(saved, result.sequence.encode())
        result = replace(result, saved=str(saved))
    return result


def _judge(driver: DriverUnderTest, test: PackTest, report: RunReport) -> TestRun:
    """The ``vm`` kind's checks of the run (this kind's own are judged here)."""
    return vmkind.judge(driver, replace(test, checks=tuple(
        c for c in test.checks if c in vmkind.CHECKS)), report)


def _with(run: TestRun, checks: tuple[CheckResult, ...], **more: object) -> TestRun:
    return replace(run, checks=checks, **more)  # type: ignore[arg-type]


_HANG = re.compile(r"^KFUZZ hang seconds=(\d+) ops=(\d*)$")
_DONE = re.compile(r"^KFUZZ done ops=(\d+) syscalls=(\d+) elapsed_ms=(\d+) rate=(\d+)$")


def _fuzz_check(report: RunReport, found: discover.Interfaces, plan: FuzzPlan) -> CheckResult:
    step = next((s for s in report.steps if s.action == "fuzz"), None)
    if step is None and report.lost and report.fuzz_output:
        return CheckResult("fuzz", False, "the guest was lost while the fuzzer ran"
                           + (f": {report.reason}" if report.reason else ""))
    if step is None:
        return CheckResult("fuzz", False, "the fuzzer did not run"
                           + (f": {report.reason}" if report.reason else ""))
    if step.status == NO_INTERFACE:
        return CheckResult("fuzz", False, f"not run: the driver registered no device node "
                           f"or network interface to fuzz (found: {found.describe()})",
                           skipped=True)
    hung = next((m for m in map(_HANG.match, report.fuzz_output) if m), None)
    if step.status == HUNG and hung:
        return CheckResult("fuzz", False, f"the fuzzer hung: no operation started for "
                           f"{hung.group(1)} s (after {hung.group(2)} operations)")
    done = next((m for m in map(_DONE.match, report.fuzz_output) if m), None)
    if step.status != 0 or done is None:
        errors = [ln for ln in report.fuzz_output if ln.startswith("KFUZZ error")]
        return CheckResult("fuzz", False, f"the fuzzer exited with status {step.status}"
                           + (f": {errors[0]}" if errors else " before it finished"))
    ops, calls, ms, rate = (int(g) for g in done.groups())
    return CheckResult("fuzz", True, f"{ops} operations ({calls} syscalls, {rate}/s, "
                       f"{ms} ms, {plan.threads} threads, seed {plan.seed}) on "
                       f"{', '.join(fuzzed(found)) or found.describe()}")


def fuzzed(found: discover.Interfaces) -> tuple[str, ...]:
    """What the guest's fuzz step fuzzes (guest-run.sh.j2): the character and block
    device nodes, then the network interfaces (the first 32 in all)."""
    return (*found.char_nodes, *found.block_nodes, *(f"net:{n}" for n in found.net))[:32]


def run_reload(driver: DriverUnderTest, test: PackTest, logdir: Path,
               session: Session) -> TestRun:
    workload = Path(driver.workload) if driver.workload else None
    # With DEVICES= and no WORKLOAD=, the devices' own workloads run (vm.runner).
    if test.params["workload"] == "required" and workload is None and not driver.devices:
        return _not_run(driver, test, "no workload: give WORKLOAD=script.sh (or put "
                        "workload.sh in the driver)")
    try:
        report = _boot(driver, test, logdir, session, workload=workload, discover=True,
                       cycles=test.params["cycles"], per_cycle=True,
                       cycle_params=tuple(test.params["module_params"]))
    except KedrError as e:
        return TestRun(driver.name, test.name, test.kind, reason=str(e), logs=str(logdir),
                       checks=tuple(CheckResult(c, False, str(e)) for c in test.checks))
    base = _judge(driver, test, report)
    lines, growth = cycle_lines(report, tuple(test.params["module_params"]))
    checks = tuple(growth if c == "growth" else
                   _all_workloads(report, base.check(c)) if c == "workload" else base.check(c)
                   for c in test.checks)
    found = discover.parse(report.interfaces or ())
    return _with(base, checks, interfaces=found.describe(), cycles=tuple(lines))


def _all_workloads(report: RunReport, last: CheckResult) -> CheckResult:
    runs = [s for s in report.steps if s.action == "workload"]
    bad = [i for i, s in enumerate(runs) if not s.ok]
    if not runs or not last.passed:
        return last
    if bad:
        return CheckResult("workload", False, f"the workload failed in cycle {bad[0] + 1} "
                           f"(status {runs[bad[0]].status})")
    return CheckResult("workload", True, f"the workload exited 0 in each of {len(runs)} cycles")


def cycle_lines(report: RunReport,
                params: tuple[str, ...] = ()) -> tuple[list[str], CheckResult]:
    """One line per cycle (its module parameters, allocations, frees, still allocated
    after its unload) and the ``growth`` check: what is still allocated must not grow
    across the cycles."""
    lines: list[str] = []
    held: list[int] = []
    for c in report.cycles:
        if c.report is None:
            return lines, CheckResult("growth", False, f"cycle {c.cycle}: no leak report: "
                                      f"{c.error}")
        t = c.report.totals
        n, nbytes = len(c.report.leaks), sum(x.size for x in c.report.leaks)
        held.append(n)
        given = f" (module parameters: {params[(c.cycle - 1) % len(params)] or 'none'})" \
            if params else ""
        lines.append(f"cycle {c.cycle}{given}: {t.allocs} allocations, {t.frees} frees in all; "
                     f"{n} objects ({nbytes} bytes) still allocated after its unload")
    if len(held) < 2:
        return lines, CheckResult("growth", False, "fewer than 2 cycles were judged"
                                  + (f": {report.reason}" if report.reason else ""))
    per = ", ".join(map(str, held))
    if held[-1] > held[0]:
        step = (held[-1] - held[0]) / (len(held) - 1)
        return lines, CheckResult("growth", False, f"still allocated after each cycle's "
                                  f"unload: {per} objects: grows by {step:g} per cycle")
    return lines, CheckResult("growth", True, f"still allocated after each cycle's unload: "
                              f"{per} objects: no growth over {len(held)} cycles")


_CHAOS = re.compile(r"^KEDR-CHAOS unloads=(\d+) refused=(\d+) reloads=(\d+) failed=(\d+)$")
_CHAOS_WORKLOAD = re.compile(r"^KEDR-CHAOS-WORKLOAD runs=(\d+) failed=(\d+)$")
_CHAOS_DEVICES = re.compile(r"^KEDR-CHAOS-DEVICES names=(\S*) unplugs=(\d+) plugs=(\d+) "
                            r"suspends=(\d+) failed=(.*)$")
_CHAOS_UNBOUND = "KEDR-CHAOS-UNBOUND "
_CHAOS_NOFUZZ = "KEDR-CHAOS-NOFUZZ"


def run_chaos(driver: DriverUnderTest, test: PackTest, logdir: Path,
              session: Session) -> TestRun:
    seed = test.params["seed"]
    if session.env.get("FUZZ_SEED"):
        seed = fuzz_seed(session.env["FUZZ_SEED"])
    plan = FuzzPlan(seed=seed, count=10**9, seconds=test.params["seconds"],
                    threads=test.params["threads"], sweep=test.params["sweep"])
    workload = Path(driver.workload) if driver.workload else None
    try:
        report = _boot(driver, test, logdir, session, chaos=plan, workload=workload,
                       per_cycle=True)
    except KedrError as e:
        return TestRun(driver.name, test.name, test.kind, reason=str(e), logs=str(logdir),
                       checks=tuple(CheckResult(c, False, str(e)) for c in test.checks))
    found = discover.parse(report.interfaces or ())
    ioctls = discover.ioctl_commands(report.fuzz_output)
    base = _judge(driver, test, report)
    reproduce = f"{driver.command} TEST={test.name} FUZZ_SEED={seed}"
    checks: list[CheckResult] = []
    for c in test.checks:
        result = (chaos_check(report, found, plan, bool(driver.devices)) if c == "chaos"
                  else base.check(c))
        if not result.passed and not result.skipped:
            result = CheckResult(result.check, False, f"{result.message} (fuzz seed {seed})",
                                 result.skipped, reproduce)
        checks.append(result)
    first = checks[0] if checks and checks[0].check == "chaos" else None
    if first is not None and first.skipped:
        return TestRun(driver.name, test.name, test.kind, reason=first.message,
                       logs=str(report.logs), interfaces=found.describe(),
                       checks=tuple(c if c.check == "chaos" else
                                    CheckResult(c.check, False, first.message, True)
                                    for c in checks))
    return _with(base, tuple(checks), interfaces="; ".join(
                     s for s in (found.describe(), ioctls) if s),
                 fuzz=tuple(report.fuzz_output))


def chaos_check(report: RunReport, found: discover.Interfaces, plan: FuzzPlan,
                 devices: bool = False) -> CheckResult:
    """``devices``: DEVICES= was given, so the guest drove them too (hot-unplug, re-plug,
    suspend) and must say so."""
    step = next((s for s in report.steps if s.action == "chaos"), None)
    if step is None:
        return CheckResult("chaos", False, "the chaos run did not happen"
                           + (f": {report.reason}" if report.reason else ""))
    if step.status == NO_INTERFACE:
        return CheckResult("chaos", False, f"not run: the driver registered no device node "
                           f"or network interface to fuzz (found: {found.describe()})",
                           skipped=True)
    out = report.fuzz_output
    fuzzing = _CHAOS_NOFUZZ not in out
    done = next((m for m in map(_DONE.match, out) if m), None)
    chaos = next((m for m in map(_CHAOS.match, out) if m), None)
    wl = next((m for m in map(_CHAOS_WORKLOAD.match, out) if m), None)
    dev = next((m for m in map(_CHAOS_DEVICES.match, out) if m), None)
    if chaos is None or (fuzzing and done is None) or (devices and dev is None):
        return CheckResult("chaos", False, f"the chaos run ended with status {step.status} "
                           "before it reported")
    unloads, refused, reloads, failed = (int(g) for g in chaos.groups())
    said = (f"{plan.seconds} s: "
            + (f"{done.group(1)} fuzz operations ({plan.threads} threads, seed {plan.seed}) "
               f"on {', '.join(fuzzed(found)) or found.describe()}"
               if done else f"nothing fuzzed (no device node or network interface; found: "
               f"{found.describe()})")
            + (f", the workload {wl.group(1)} times" if wl else "")
            + f", {unloads} unloads ({reloads} loaded again), {refused} refused while in use")
    if dev:
        said += (f", {dev.group(2)} hot-unplugs of {dev.group(1) or 'no device'} "
                 f"({dev.group(3)} plugged in again), {dev.group(4)} suspends to RAM "
                 "(each resumed)")
    if failed:
        return CheckResult("chaos", False, f"an insmod failed after an unload; {said}")
    if dev and dev.group(5) != "none":
        return CheckResult("chaos", False, f"{dev.group(5)}; {said}")
    unbound = [ln[len(_CHAOS_UNBOUND):] for ln in out if ln.startswith(_CHAOS_UNBOUND)]
    if unbound:
        return CheckResult("chaos", False, f"not bound to its driver again after the chaos: "
                           f"{', '.join(unbound)}; {said}")
    if step.status != 0:
        return CheckResult("chaos", False, f"the fuzzer exited with status {step.status}; "
                           f"{said}")
    return CheckResult("chaos", True, said)
