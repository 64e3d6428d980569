"""Run built modules in the VM: insert them, run a workload, remove them.

:func:`plan_run` orders the modules (a module after the ones it depends on,
read from each .ko's ``depends=``), finds the in-tree modules they need, and
writes the guest script; :func:`run_modules` boots the VM and turns what came
back into a :class:`RunReport`: one :class:`Step` per insmod / workload / rmmod
with its status, the driver's kernel log, and a one-line verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

from kedr_build import interrupt
from kedr_build.atomic import write_atomic
from kedr_build.checks import suppress
from kedr_build.devices import binding
from kedr_build.devices.attach import Attachment
from kedr_build.devices.binding import Binding
from kedr_build.checks.leaks import LeakReport, parse as parse_leaks, target_resolver
from kedr_build.vm import packed
from kedr_build.vm import shm as shm_mod
from kedr_build.vm.console import KernelProblem, clean_lines
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel, by_release
from kedr_build.ko.module import ModuleRef, load_order
from kedr_build.resources import template_env
from kedr_build.vm.trace import Symbolizer, parse_trace, summary
from kedr_build.vm.qemu import CRASHES, GuestJob, Stall, Verdict, VmResult, run_guest
from kedr_build.vm.qmp import DeviceEvent, device_args

BEGIN_MARK = "kedr-build: modules begin"
TRACE_BEGIN = "--- trace of "
STATS_BEGIN = "--- ring buffer stats ---"
TRACE_END = "--- end of trace ---"
KALLSYMS_BEGIN = "--- kallsyms of loaded modules ---"
KALLSYMS_END = "--- end of kallsyms ---"
LEAKS_BEGIN = "--- leak report of "
LEAKS_END = "--- end of leak report ---"
FAULTS_BEGIN = "--- fault point "
FAULTS_END = "--- end of fault points ---"
END_MARK = "kedr-build: modules end"
IFACE_BEGIN = "--- new interfaces ---"
IFACE_END = "--- end of new interfaces ---"
FUZZ_BEGIN = "--- fuzz ---"
FUZZ_END = "--- end of fuzz ---"
REDUCE_BEGIN = "--- fuzz reduction ---"
REDUCE_END = "--- end of fuzz reduction ---"
SEQ_BEGIN = "--- fuzz sequence ---"
SEQ_END = "--- end of fuzz sequence ---"
CYCLE_BEGIN = "--- cycle leak report "
CYCLE_END = "--- end of cycle leak report ---"
# keep_log (a real machine): the judged run's kernel log, saved in the scratch directory
# before a fuzz reduction's replays (targets/machine.py reads it instead of dmesg).
JUDGED_LOG = "kernel-judged.log"
_STEP = re.compile(r"^KEDR-STEP (\S+) (\S+) (-?\d+)$")
_TAINT = re.compile(r"^KEDR-TAINT (\d+)$")


@dataclass(frozen=True)
class Step:
    action: str      # insmod, workload, rmmod
    target: str      # module name, or the workload's file name
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class FuzzPlan:
    """The guest fuzzer's run (replacements/guest/kfuzz.c): operations of all threads
    together, a time budget in seconds (0: none), threads at once, the seed."""

    seed: int
    count: int
    seconds: int = 0
    threads: int = 2
    reduce: int = 0         # attempts to reduce a failure's sequence (0: not reduced)
    sweep: int = 0          # ioctls a node to find the commands it answers (0: none)
    hang: int = 0           # seconds with no operation started that make a hang (0: none)
    race_replays: int = 0   # a race: concurrent replays a candidate (0: not reduced)


@dataclass(frozen=True)
class CycleLeaks:
    """The leak report read after one cycle's unload (the replacement module stays)."""

    cycle: int
    report: LeakReport | None
    error: str = ""


@dataclass(frozen=True)
class RunPlan:
    modules: tuple[ModuleRef, ...]     # ours, in load order
    intree: tuple[str, ...]            # in-tree modules they need
    workload: Path | None
    script: str
    trace_providers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunReport:
    verdict: Verdict
    reason: str
    steps: tuple[Step, ...]
    driver_log: tuple[str, ...]        # kernel log between load and unload
    workload_output: str
    problems: tuple[KernelProblem, ...]
    elapsed: float
    logs: Path
    trace_calls: dict[str, int] = field(default_factory=dict)   # function -> calls traced
    trace_lost: int = 0                                         # ring-buffer overruns
    trace_summary: tuple[str, ...] = ()
    leaks: LeakReport | None = None        # the leak payload's report, read before unload
    leaks_error: str = ""                  # why it could not be read
    suppressed: tuple[suppress.Suppressed, ...] = ()   # per suppression rule: findings matched
    taint: int | None = None               # /proc/sys/kernel/tainted after the unload
    taint_before: int | None = None        # ... before the load (a real machine: TARGET=)
    target: str = ""                       # TARGET= other than qemu: where it ran
    left_as_found: str = ""                # a real machine: how it was left (cleanup)
    power_cycles: tuple[str, ...] = ()     # ... when and how it was restarted (labgrid)
    faults: dict[str, str] = field(default_factory=dict)  # point -> its scenario and counters
    lost: bool = False                     # no status came back (steps after some point unknown)
    interfaces: tuple[str, ...] | None = None  # new snapshot lines (discover=True), else None
    fuzz_output: tuple[str, ...] = ()          # the fuzzer's KFUZZ lines
    reduction: tuple[str, ...] = ()            # kfuzz -M's lines (after the judged run)
    # a failure reduced across boots: "class hang|taint|unload-taint|race-CHECK", then
    # its recorded operations as a kfuzz sequence file (vm/reboots.py, vm/races.py)
    fuzz_sequence: tuple[str, ...] = ()
    cycles: tuple[CycleLeaks, ...] = ()        # per_cycle=True: each cycle's leak report
    devices: str = ""                      # DEVICES= attached, comma-separated
    bindings: tuple[Binding, ...] = ()     # which driver bound which device, after the load
    device_events: tuple[DeviceEvent, ...] = ()   # hot-unplug / re-plug the guest asked for

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.PASSED

    @property
    def checks_ok(self) -> bool:
        """No leaks and no bad frees (true when there was no report)."""
        return self.leaks is None or self.leaks.clean

    def to_json(self) -> str:
        data = asdict(self)
        if not self.target:
            # The QEMU guest's result.json as it always was: the real machine's part only
            # where there is one.
            for key in ("taint_before", "target", "left_as_found", "power_cycles"):
                del data[key]
        data["verdict"] = self.verdict.value
        data["logs"] = str(self.logs)
        data["problems"] = [{"kind": p.kind.value, "line": p.line, "excerpt": p.excerpt}
                            for p in self.problems]
        data["cycles"] = [{"cycle": c.cycle, "error": c.error,
                           "leaks": len(c.report.leaks) if c.report else None}
                          for c in self.cycles]
        return json.dumps(data, indent=2, default=str)


def plan_run(modules: list[Path], workload: Path | None = None,
             trace_providers: tuple[str, ...] = (),
             faults: Mapping[str, str] | None = None, cycles: int = 1,
             copies: int = 1, attempt: int = 1, discover: bool = False,
             fuzz: FuzzPlan | None = None, per_cycle: bool = False,
             chaos: FuzzPlan | None = None,
             devices: Attachment | None = None,
             cycle_params: Sequence[str] = (), root: str = "/kedr", scratch: str = "/tmp",
             keep_log: bool = False, shm: bool = False) -> RunPlan:
    """Order the modules and write the guest script.

    ``root``: the directory the script finds its files in (modules/NAME.ko,
    workload.sh, kfuzz): /kedr in the QEMU guest, a fresh directory on a real machine.
    ``scratch``: where the script keeps its own files (the interface snapshots, the
    fuzzer's record): /tmp in the QEMU guest, ``root`` on a real machine (removed with
    it). ``keep_log``: never clear the kernel log (``dmesg -c``, as the QEMU guest does
    to count a step's WARN lines): on a real machine it is the run's evidence, read
    after the job (marker lines instead). ``shm``: the fuzzer records in the ivshmem's
    memory when the guest has the device (:mod:`kedr_build.vm.shm`).

    ``cycles``: the drivers (not the trace providers) are loaded and unloaded that
    many times in the one boot, the workload running after the last load.
    ``copies``: that many copies of the workload run at once (a stress).
    ``attempt``: which run of a pack test this is (RETRIES=), exported to the workload
    as ``KEDR_ATTEMPT``.

    ``trace_providers``: modules that define trace events (replacement modules).
    Their event system is switched on right after they load, so the driver's
    init is traced, and the trace is saved right before they unload.
    ``faults``: fault point -> scenario text, set in each provider right after it
    loads (kedr_faults.c), and read back with their counters before it unloads.
    ``discover``: print the interfaces new after the load (:mod:`kedr_build.vm.discover`);
    ``fuzz``: then run the guest fuzzer on the new character devices (implies discover);
    ``per_cycle``: the workload runs in every cycle, and the leak report is read after
    each cycle's unload.
    ``chaos``: the fuzzer for ``chaos.seconds``, the workload over and over and the
    drivers unloaded and loaded again, all at once (implies discover); with ``devices``,
    their hot-unplug and re-plug and a suspend to RAM too, round after round (then a
    driver without a character device runs chaos unfuzzed).
    ``cycle_params``: insmod arguments of the drivers (not the replacements) in each
    cycle, cycled through: cycle i uses entry (i - 1) mod N.
    """
    if cycles < 1:
        raise KedrError(f"cycles={cycles}: a run loads its modules at least once")
    if copies < 1:
        raise KedrError(f"copies={copies}: a workload runs at least once")
    ordered, intree = load_order(ModuleRef.read(m) for m in modules)
    drivers = [m.name for m in ordered if m.name not in trace_providers]
    if devices is not None:
        # The devices' controllers and other drivers load first, like the drivers' own
        # in-tree dependencies.
        intree = list(dict.fromkeys([*intree, *devices.intree(drivers)]))
    marks = {"begin": BEGIN_MARK, "end": END_MARK, "trace_begin": TRACE_BEGIN,
             "stats_begin": STATS_BEGIN, "trace_end": TRACE_END,
             "kallsyms_begin": KALLSYMS_BEGIN, "kallsyms_end": KALLSYMS_END,
             "leaks_begin": LEAKS_BEGIN, "leaks_end": LEAKS_END,
             "faults_begin": FAULTS_BEGIN, "faults_end": FAULTS_END,
             "iface_begin": IFACE_BEGIN, "iface_end": IFACE_END, "fuzz_begin": FUZZ_BEGIN,
             "fuzz_end": FUZZ_END,
             "reduce_begin": REDUCE_BEGIN, "reduce_end": REDUCE_END,
             "seq_begin": SEQ_BEGIN, "seq_end": SEQ_END, "cycle_begin": CYCLE_BEGIN, "cycle_end": CYCLE_END}
    marks.update(bind_begin=binding.BIND_BEGIN, bind_end=binding.BIND_END,
                 packed_begin=packed.BEGIN, packed_end=packed.END, judged_log=JUDGED_LOG)
    script = template_env().get_template("guest-run.sh.j2").render(
        modules=[m.name for m in ordered], intree=intree, trace_providers=trace_providers,
        drivers=drivers, cycles=cycles,
        copies=copies,
        workload=workload.name if workload is not None else None, marks=marks,
        tracefs=TRACEFS, faults=dict(faults or {}), discover=discover or fuzz is not None or chaos is not None,
        fuzz=fuzz, per_cycle=per_cycle, chaos=chaos, attempt=int(attempt),
        bindings=devices is not None and bool(devices.devices),
        cycle_params=list(cycle_params),
        chaos_devices=[f"{a.device.name},{a.device.qemu_id},{a.pci_address}"
                       for a in devices.devices] if chaos is not None and devices else [],
        root=root, scratch=scratch, keep_log=keep_log, shm=shm, shm_find=shm_mod.GUEST_FIND)
    return RunPlan(tuple(ordered), tuple(intree), workload, script, trace_providers)


TRACEFS = "/sys/kernel/tracing"
SUSPEND_REQUEST = "kedr-device suspend"   # in a WORKLOAD: boot what can resume from S3


def run_modules(kernel: ProvisionedKernel, modules: list[Path], logdir: Path,
                workload: Path | None = None, timeout: float = 300.0,
                stream: Callable[[str], None] | None = None,
                trace_providers: tuple[str, ...] = (),
                intree: tuple[str, ...] = (), cpus: int | None = None,
                suppressions: tuple[suppress.Suppression, ...] = (),
                faults: Mapping[str, str] | None = None, cycles: int = 1,
                copies: int = 1, discover: bool = False, fuzz: FuzzPlan | None = None,
                per_cycle: bool = False, extra_files: Mapping[str, Path] | None = None,
                chaos: FuzzPlan | None = None, attempt: int = 1,
                devices: Attachment | None = None,
                cycle_params: Sequence[str] = (), accel: str | None = None) -> RunReport:
    """Run the modules in the VM; ``intree``: more in-tree modules the workload may modprobe;
    ``faults``: fault point -> scenario; ``cycles``: how many times the drivers are loaded
    and unloaded; ``copies``: of the workload at once (see :func:`plan_run`);
    ``devices``: emulated devices attached (DEVICES=): their in-tree drivers are loaded
    unless one under test binds them, their default workloads run when ``workload`` is
    None, and each driver under test must bind one of them; ``accel``: QEMU's
    accelerator instead of the kernel description's (see :func:`run_guest`)."""
    logdir.mkdir(parents=True, exist_ok=True)
    devices_script: Path | None = None
    if devices is not None and devices.devices:
        # In the guest as /kedr/devices.sh, for a WORKLOAD to run too; the workload itself
        # when none is given.
        devices_script = logdir / "devices-workload.sh"
        write_atomic(devices_script, devices.workload().encode())
        workload = workload or devices_script
    # The fuzzer's record where the host reads it after the guest is gone (the device
    # after DEVICES=': they keep their slots).
    shm_file = logdir / shm_mod.FILE if fuzz is not None else None
    plan = plan_run(modules, workload, trace_providers, faults, cycles, copies, attempt,
                    discover, fuzz, per_cycle, chaos, devices, cycle_params,
                    shm=shm_file is not None)
    check_releases(plan.modules, kernel)
    files = {f"modules/{m.name}.ko": m.path for m in plan.modules}
    if workload is not None:
        if not workload.is_file():
            raise KedrError(f"WORKLOAD={workload}: no such file")
        files["workload.sh"] = workload
    if fuzz is not None or chaos is not None:
        from kedr_build.vm import fuzzer

        files["kfuzz"] = fuzzer.build()
    files.update(extra_files or {})
    if devices_script is not None:
        files["devices.sh"] = devices_script
    targets = [m.name for m in plan.modules if m.name not in trace_providers]
    qemu_args: list[str] = []
    hotplug: dict[str, dict[str, str]] = {}
    if devices is not None:
        devices.make_disks(logdir)
        qemu_args = devices.qemu_args(logdir)
        hotplug = device_args(qemu_args, {a.device.qemu_id for a in devices.devices})
    if shm_file is not None and fuzz is not None:
        qemu_args += shm_mod.qemu_args(shm_file, shm_mod.size(fuzz.threads))
    job = GuestJob(script=plan.script, files=files,
                   intree_modules=tuple(dict.fromkeys(plan.intree + intree)),
                   qemu_args=tuple(qemu_args), hotplug=hotplug,
                   resumable=bool(hotplug) and (chaos is not None or (
                       workload is not None
                       and SUSPEND_REQUEST in workload.read_text(errors="replace"))))
    try:
        # After an oops the crashed kernel may hang in what follows (the unload, the
        # reports): the verdict is "kernel problem" by then, and the wait is cut short.
        result = run_guest(kernel, job, logdir, timeout=timeout, stream=stream, cpus=cpus,
                           accel=accel, cut_after_crash=True, stall=Stall(
                               shm_mod.STALL, partial(shm_mod.beat, shm_file)) if shm_file else None)
    except interrupt.Interrupted as e:
        # No result: the run was stopped, and result.json says so (not an older run's).
        write_atomic(logdir / "result.json", json.dumps(
            {"verdict": "interrupted", "reason": str(e), "logs": str(logdir)},
            indent=2).encode())
        raise
    report = conclude(result, plan, logdir, suppressions,
                      devices=devices.names if devices is not None else "",
                      targets=tuple(targets))
    if shm_file is not None and report.lost:     # the record is read only when needed
        report = lost_mid_fuzz(report, shm_mod.read(shm_file))
    write_atomic(logdir / "result.json", report.to_json().encode())
    return report


def lost_mid_fuzz(report: RunReport, record: shm_mod.Readback) -> RunReport:
    """A guest lost in the fuzz step (it died: a panic; or was stopped: cut after a
    crash report, or locked up, its heartbeat stopped): the operations the shared memory
    kept, as the sequence the host reduces across boots (:mod:`kedr_build.vm.reboots`),
    class ``crash`` when the console has an oops, BUG, GPF or panic, else ``hang``."""
    if (not report.lost or report.fuzz_sequence or not record.sequence or record.resume
            or any(s.action == "fuzz" for s in report.steps)):
        return report
    cls = "crash" if any(p.kind in CRASHES for p in report.problems) else "hang"
    return replace(report, fuzz_sequence=(f"class {cls}", *record.sequence.splitlines()))


def conclude(result: VmResult, plan: RunPlan, logdir: Path,
             suppressions: tuple[suppress.Suppression, ...] = (), *, devices: str = "",
             targets: tuple[str, ...] = ()) -> RunReport:
    """Judge what came back from the job script (:func:`interpret`) and keep its
    trace and leak report in ``logdir``: the same for the VM and a real machine."""
    report = interpret(result, {m.name: m.path for m in plan.modules}, suppressions,
                       devices=devices, targets=targets)
    if plan.trace_providers:
        trace_text, _ = split_trace(result.output, {m.name: m.path for m in plan.modules})
        (logdir / "trace.txt").write_text(trace_text)
        leaks_text = split_leaks(result.output)
        if leaks_text:
            (logdir / "leaks.txt").write_text(leaks_text)
        if report.leaks is not None:
            write_atomic(logdir / "leaks.json", report.leaks.to_json().encode())
    return report


def check_releases(modules: tuple[ModuleRef, ...], kernel: ProvisionedKernel) -> None:
    """Refuse, before booting, a module built for another kernel than the one booted.

    The kernel would refuse it too, but only with "disagrees about version of
    symbol module_layout" or "invalid module format" in its log; this names the
    two releases and which kernel to pick instead."""
    for m in modules:
        if m.release is not None and m.release != kernel.release:
            booted = (f"KERNEL={kernel.description.name} ({kernel.release})"
                      if kernel.description is not None else f"kernel {kernel.release}")
            pinned = by_release(m.release)
            other = f"KERNEL={pinned}" if pinned else f"kernel {m.release}"
            raise KedrError(f"{m.path}: built for kernel {m.release} (vermagic), but the VM "
                            f"boots {booted}: rebuild it for {kernel.release} or run it "
                            f"with {other}")


def interpret(result: VmResult, modules: Mapping[str, Path] | None = None,
              suppressions: tuple[suppress.Suppression, ...] = (), *, devices: str = "",
              targets: tuple[str, ...] = ()) -> RunReport:
    """Judge a run; ``modules``: name -> .ko of the targets, to name their addresses;
    ``suppressions``: findings to leave out of the leak report (counted); ``devices``:
    DEVICES= attached, each of ``targets`` (drivers under test) must bind one of them."""
    steps: list[Step] = []
    # What each step printed: the lines between the previous step's line and its own
    # (rmmod says why before its step line). A failed step's reason quotes only these,
    # never a later step's words (fzref: the replacement module's rmmod error was
    # quoted as the driver's).
    said: list[list[str]] = []
    since: list[str] = []
    workload: list[str] = []
    in_workload = False
    taint: int | None = None
    trace_text, stats = split_trace(result.output, modules)
    output = _without_trace(result.output)
    for line in output.splitlines():
        m = _STEP.match(line.strip())
        if m:
            steps.append(Step(m.group(1), m.group(2), int(m.group(3))))
            said.append(since)
            since = []
            continue
        t = _TAINT.match(line.strip())
        if t:
            taint = int(t.group(1))
            continue
        if line == "--- workload ---":
            in_workload = True
        elif line == "--- end of workload ---":
            in_workload = False
        elif in_workload:
            workload.append(line)
        elif line.strip():
            since.append(line)
    log = driver_log(result.console)
    verdict = result.verdict
    reason = result.reason()
    index = next((i for i, s in enumerate(steps) if not s.ok), None)
    failed = steps[index] if index is not None else None
    if verdict is Verdict.FAILED and failed is not None and index is not None:
        reason = f"{failed.action} {failed.target} failed (status {failed.status})"
        why = _kernel_reason(log, failed.target) if failed.action == "insmod" else ""
        if why:
            reason += f": {why}"
        elif said[index]:
            reason += f": {said[index][-1].strip()}"
    faults = split_faults(result.output)
    if (verdict is Verdict.FAILED and failed is not None and failed.action == "insmod"
            and injected(faults)):
        # A driver's init failed because the scenario failed one of its calls: that is
        # the scenario's doing, not the finding. What the init's error path left behind
        # (leaks, bad frees, a crash) is: judged below, as the sweep judges a site.
        verdict = Verdict.PASSED
        reason = (f"insmod {failed.target} failed (status {failed.status}) under the "
                  "injected fault")
    bindings, listed = binding.parse(result.output)
    unbound = binding.unbound_targets(targets, bindings) if devices and listed else []
    if unbound and verdict in (Verdict.PASSED, Verdict.FAILED):
        # Before a workload's failure: with no device bound, that is why it failed.
        verdict = Verdict.FAILED
        reason = f"no device for {', '.join(unbound)}: DEVICES={devices}"
    trace = parse_trace(trace_text, stats)
    leaks: LeakReport | None = None
    leaks_error = ""
    suppressed: tuple[suppress.Suppressed, ...] = ()
    leaks_text = split_leaks(result.output)
    if leaks_text:
        try:
            leaks = parse_leaks(leaks_text, modules)
        except KedrError as e:
            leaks_error = str(e)
    if leaks is not None and suppressions:
        leaks, suppressed = suppress.apply(leaks, suppressions)
    iface = _section(result.output, IFACE_BEGIN, IFACE_END)
    cycles: list[CycleLeaks] = []
    for number, text in split_cycles(result.output):
        try:
            cycles.append(CycleLeaks(number, parse_leaks(text, modules)))
        except KedrError as e:
            cycles.append(CycleLeaks(number, None, str(e)))
    if leaks is not None and cycles:
        # The last cycle's report is the one read before the replacement unloads.
        cycles.append(CycleLeaks(cycles[-1].cycle + 1, leaks))
    return RunReport(verdict=verdict, reason=reason, steps=tuple(steps),
                     driver_log=tuple(log), workload_output="\n".join(workload),
                     problems=result.problems, elapsed=result.elapsed, logs=result.workdir,
                     trace_calls=dict(trace.calls()), trace_lost=trace.overruns,
                     trace_summary=tuple(summary(trace)) if trace_text else (),
                     leaks=leaks, leaks_error=leaks_error, suppressed=suppressed, taint=taint,
                     faults=faults, lost=result.lost, interfaces=tuple(iface) if iface is not None else None,
                     fuzz_output=tuple(_section(_without(result.output, SEQ_BEGIN, SEQ_END),
                                                FUZZ_BEGIN, FUZZ_END) or ()),
                     fuzz_sequence=tuple(_section(result.output, SEQ_BEGIN, SEQ_END) or ()),
                     reduction=tuple(_section(result.output, REDUCE_BEGIN, REDUCE_END) or ()),
                     cycles=tuple(cycles), devices=devices, bindings=bindings,
                     device_events=result.device_events)


def _without(output: str, begin: str, end: str) -> str:
    """``output`` without the lines from ``begin`` to ``end``."""
    kept: list[str] = []
    inside = False
    for line in output.splitlines():
        if line == begin:
            inside = True
        elif line == end:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def _section(output: str, begin: str, end: str) -> list[str] | None:
    """The lines between ``begin`` and ``end`` (None when ``begin`` never came)."""
    lines: list[str] | None = None
    inside = False
    for line in output.splitlines():
        if line == begin:
            inside, lines = True, []
        elif line == end:
            inside = False
        elif inside and lines is not None:
            lines.append(line)
    return lines


def split_cycles(output: str) -> list[tuple[int, str]]:
    """(cycle, leak report text) for each cycle's report read after its unload."""
    out: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(CYCLE_BEGIN):
            words = line[len(CYCLE_BEGIN):].split()
            current = []
            out.append((int(words[0]) if words and words[0].isdigit() else len(out) + 1,
                        current))
        elif line == CYCLE_END:
            current = None
        elif current is not None:
            current.append(line)
    return [(n, "\n".join(lines) + "\n") for n, lines in out]


def injected(faults: Mapping[str, str]) -> int:
    """Faults injected, all points together (each point's ``injected=N``)."""
    return sum(int(m.group(1)) for text in faults.values()
               for m in re.finditer(r"\binjected=(\d+)", text))


def split_faults(output: str) -> dict[str, str]:
    """Fault point -> its scenario and counters, as the guest read them before unloading."""
    points: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(FAULTS_BEGIN):
            current = points.setdefault(line[len(FAULTS_BEGIN):].strip(), [])
        elif line == FAULTS_END:
            current = None
        elif current is not None:
            current.append(line)
    return {p: "\n".join(lines) for p, lines in points.items()}


def split_leaks(output: str) -> str:
    """The leak report the guest read before unloading the replacement module."""
    lines: list[str] = []
    inside = False
    for line in output.splitlines():
        if line.startswith(LEAKS_BEGIN):
            inside = True
        elif line == LEAKS_END:
            inside = False
        elif inside:
            lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def split_trace(output: str,
                modules: Mapping[str, Path] | None = None) -> tuple[str, str]:
    """The trace text (call sites resolved) and ring-buffer stats the guest dumped.

    ``modules`` (name -> .ko): call sites in those modules are named from their own
    symbols and the section addresses the leak payload recorded while they loaded,
    so calls from freed ``__init`` code get their real names."""
    trace: list[str] = []
    stats: list[str] = []
    kallsyms: list[str] = []
    where: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(TRACE_BEGIN):
            where = trace
        elif line == STATS_BEGIN:
            where = stats
        elif line == KALLSYMS_BEGIN:
            where = kallsyms
        elif line in (TRACE_END, KALLSYMS_END):
            where = None
        elif where is not None:
            where.append(line)
    text = "\n".join(trace) + ("\n" if trace else "")
    if kallsyms:
        leaks = split_leaks(output)
        first = target_resolver(leaks, modules) if leaks and modules else None
        text = Symbolizer("\n".join(kallsyms)).rewrite(text, first)
    return text, "\n".join(stats)


def _without_trace(output: str) -> str:
    kept: list[str] = []
    inside = False
    for line in output.splitlines():
        if (line.startswith((TRACE_BEGIN, LEAKS_BEGIN, FAULTS_BEGIN, CYCLE_BEGIN))
                or line in (KALLSYMS_BEGIN, IFACE_BEGIN, FUZZ_BEGIN, REDUCE_BEGIN,
                                SEQ_BEGIN, binding.BIND_BEGIN)):
            inside = True
        elif line in (TRACE_END, KALLSYMS_END, LEAKS_END, FAULTS_END, CYCLE_END, IFACE_END,
                      FUZZ_END, REDUCE_END, SEQ_END, binding.BIND_END):
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def driver_log(console: str) -> list[str]:
    """Kernel log lines between the load and the unload of our modules."""
    lines = clean_lines(console)
    out: list[str] = []
    inside = False
    for line in lines:
        if line.startswith(BEGIN_MARK):
            inside = True
        elif line.startswith(END_MARK):
            inside = False
        elif inside:
            out.append(line)
    return out


def _kernel_reason(log: list[str], module: str) -> str:
    """What the kernel said when it refused the module ('Unknown symbol X (err -2)')."""
    said: list[str] = []
    for ln in log:
        if ln.startswith(f"{module}:") and "taint" not in ln:
            msg = ln.split(":", 1)[1].strip()
            if msg not in said:   # busybox insmod retries init_module after finit_module
                said.append(msg)
    return "; ".join(said[:3])
