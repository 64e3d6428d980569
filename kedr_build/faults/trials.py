"""Fault trials in the VM: the engine under the sweep and the random campaign.

A *trial* loads the driver afresh, sets some fault scenarios, runs the workload,
unloads the driver, reads the leak report and resets the replacement module
(its debugfs ``reset``: what an rmmod and insmod of it would leave, refused
while the driver is loaded), so each report covers that trial only. All
trials run in one boot while the kernel stays healthy; after an oops, WARN or
lockup (kernel taint), a hang, or a module that stays loaded, the VM is booted
afresh and the next trial runs there. On a real machine (a :class:`Guest` of
kedr_build/targets/trials.py) the trials run one a job, and after such a trial
the machine is power-cycled, or the trials stop there when it cannot be. The guest script is
``replacements/templates/guest-faults.sh.j2``; with ``discover`` it first finds
the driver's fault sites and makes one trial per site (the sweep).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from kedr_build import interrupt
from kedr_build.atomic import write_atomic
from kedr_build.checks.leaks import parse as parse_leaks, summary as leak_summary
from kedr_build.errors import KedrError
from kedr_build.faults.guest import Guest, QemuGuest
from kedr_build.faults.scenario import PointScenario, Scenario
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.module import ModuleRef, load_order
from kedr_build.resources import template_env
from kedr_build.vm import packed
from kedr_build.vm.console import find_problems, strip_prefix
from kedr_build.devices.attach import Attachment
from kedr_build.vm.qemu import GuestJob, result_from_logs

PROGRESS = "kedr-build: fault trial "
DISCOVERY = "kedr-build: fault discovery"
SITES_BEGIN = "--- fault sites ---"
SITES_END = "--- end of fault sites ---"
# /proc/sys/kernel/tainted: bad page (B, 32), oops/BUG (D, 128), WARN (W, 512),
# soft lockup (L, 16384) - kernel/panic.c taint_flags
TAINT_HURT = 32 | 128 | 512 | 16384
_TRIAL = re.compile(r"^KEDR-TRIAL (\d+) (.*)$")
_SITE_LINE = re.compile(r"^(init|workload|exit) (\S+) (\S+) (\S+)$")
_PROGRESS = re.compile(re.escape(PROGRESS) + r"(\d+) of (\d+) ")
KILLED = (137, 139)          # insmod/rmmod killed by an oops in the kernel


class Outcome(Enum):
    CLEAN = "clean"               # nothing left behind
    NOT_REACHED = "not reached"   # nothing was injected
    LEAK = "leak"                 # something leaked or was freed wrongly
    UNLOAD_FAILED = "unload failed"
    CRASH = "crash"               # oops, BUG, WARN, lockup
    HANG = "hang"                 # no status in time, or a machine that stopped answering
    LOST = "lost"                 # no status, no kernel report: the guest or the link went

    @property
    def bad(self) -> bool:
        return self in (Outcome.LEAK, Outcome.UNLOAD_FAILED, Outcome.CRASH, Outcome.HANG,
                        Outcome.LOST)


@dataclass(frozen=True)
class Site:
    phase: str          # where discovery first reached it: init, workload, exit
    function: str       # exported function called: "kmalloc_trace"
    point: str          # its family fault point: "kmalloc"
    caller: str         # "faulty_init+0x43", relative to the driver

    def __str__(self) -> str:
        return f"{self.function} at {self.caller} ({self.phase})"


@dataclass(frozen=True)
class Trial:
    label: str                                  # one word or a few, no "|"
    scenarios: tuple[tuple[str, str], ...]      # (point, scenario text)

    def line(self, index: int) -> str:
        parts = [str(index), self.label] + [f"{p}:{s}" for p, s in self.scenarios]
        if any("|" in x or "\n" in x for x in parts):
            raise KedrError(f"fault trial {self.label!r}: '|' or a newline in it")
        return "|".join(parts)


# Where the guest's discovery puts each site's caller in site_scenario()'s text.
CALLER_SLOT = "@CALLER@"


def site_fault(function: str, caller: str) -> PointScenario:
    """The scenario that fails a site's first call once, on the function's point (the
    sweep's trials, the guest's discovery and the reproduce commands all use it)."""
    return PointScenario(function, Scenario(rule="nth", n=1, caller=caller))


def site_scenario(caller: str) -> str:
    """:func:`site_fault`'s text, as the kernel reads it."""
    return site_fault("", caller).scenario.text()


def site_trial(site: Site) -> Trial:
    """Fail the site's first call once (the guest's discovery writes the same lines)."""
    return Trial(f"{site.function} {site.caller}", ((site.function, site_scenario(site.caller)),))


@dataclass(frozen=True)
class TrialRecord:
    """What one trial did, as the guest reported it."""

    index: int                      # 1-based
    outcome: Outcome
    injected: int                   # faults injected, all its points together
    init_status: int | None         # insmod's status: 0, or the errno init returned
    workload_status: int | None     # None: not run
    unload_status: int | None       # None: not loaded
    leaks: int = 0
    leaked_bytes: int = 0
    bad_frees: int = 0
    findings: tuple[str, ...] = ()  # the leak report's summary, the kernel's problem lines
    boot: int = 1

    @property
    def verdict(self) -> str:
        """One phrase: what the injected failures did."""
        parts: list[str] = []
        if self.init_status in KILLED:
            parts.append("insmod killed")
        elif self.init_status:
            parts.append(f"init failed (error {self.init_status})")
        elif self.init_status == 0:
            parts.append("init ok")
        if self.workload_status:
            parts.append(f"workload saw the error (status {self.workload_status})")
        elif self.workload_status == 0:
            parts.append("workload ok")
        if self.unload_status:
            parts.append("unload failed")
        elif self.unload_status == 0:
            parts.append("unloaded")
        if self.leaks or self.bad_frees:
            parts.append(f"{self.leaks} leaks ({self.leaked_bytes} bytes), "
                         f"{self.bad_frees} bad frees")
        if self.outcome in (Outcome.CRASH, Outcome.HANG, Outcome.LOST):
            parts.append(self.outcome.value + (f": {self.findings[-1]}" if self.findings
                                               else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class TrialsRun:
    target: str
    sites: tuple[Site, ...]             # discovered (empty unless discover)
    records: tuple[TrialRecord, ...]
    boots: int
    elapsed: float
    setup_seconds: float                # from the first boot's start to the first trial
    stopped: str = ""                   # why the trials stopped before the last one


@dataclass
class _Progress:
    start: float
    last: float
    current: int = 0                    # the trial running (0: none yet this boot)
    discovering: bool = False
    first_trial: float | None = None
    first_index: int = 0


class _Stalled(Exception):
    pass


def run_trials(kernel: ProvisionedKernel, replacement: Path, target: Path, logdir: Path, *,
               trials: Sequence[Trial] = (), discover: bool = False,
               workload: Path | None = None, module_args: Sequence[str] = (),
               intree: Sequence[str] = (), trial_timeout: float = 60.0,
               boot_timeout: float = 120.0, progress: Callable[[str], None] | None = None,
               what: str = "fault trials", unit: str = "trial",
               max_boots: int = 50, devices: Attachment | None = None,
               guest: Guest | None = None) -> TrialsRun:
    """Run ``trials`` (or, with ``discover``, one per fault site found) on ``target``;
    ``devices``: emulated devices attached to every boot (their other drivers loaded
    first, their default workloads run when ``workload`` is None), so the target's
    probe and remove are among the sites; ``guest``: where (``kernel`` in QEMU when
    None)."""
    guest = guest if guest is not None else QemuGuest(kernel)
    repl = ModuleRef.read(replacement)
    tgt = ModuleRef.read(target)
    _, needed = load_order([repl, tgt])         # in-tree modules they need (vfat: fat)
    qemu_args: tuple[str, ...] = ()
    if devices is not None and devices.devices:
        needed = list(dict.fromkeys([*needed, *devices.intree([tgt.name])]))
        logdir.mkdir(parents=True, exist_ok=True)
        if workload is None:
            workload = logdir / "devices-workload.sh"
            write_atomic(workload, devices.workload().encode())
        # One set of disk images for every boot: each boot's QEMU opens them afresh.
        devices.make_disks(logdir)
        qemu_args = tuple(devices.qemu_args(logdir))
    if workload is not None and not workload.is_file():
        raise KedrError(f"WORKLOAD={workload}: no such file")
    files = {f"modules/{repl.name}.ko": replacement, f"modules/{tgt.name}.ko": target}
    if workload is not None:
        files["workload.sh"] = workload
    say = progress or (lambda line: None)
    start = time.monotonic()
    state = _Progress(start=start, last=start)
    lines = [t.line(i + 1) for i, t in enumerate(trials)]
    records: list[TrialRecord] = []
    sites: tuple[Site, ...] = ()
    total = len(lines)
    boot = 0                       # runs of the script (QEMU: boots)
    next_trial = 1
    stopped = ""
    one = guest.one_at_a_time
    while True:
        boot += 1
        if guest.boots >= max_boots:
            raise KedrError(f"{what} of {tgt.name}: gave up after {max_boots} boots")
        first = discover and boot == 1
        script = str(template_env().get_template("guest-faults.sh.j2").render(
            repl=repl.name, target=tgt.name, module_args=shlex.join(module_args),
            workload=workload is not None, trials=lines, start=next_trial, discover=first,
            needed=needed, site_scenario=site_scenario(CALLER_SLOT), caller_slot=CALLER_SLOT,
            root=guest.root, scratch=guest.scratch,
            stop=(0 if first else next_trial) if one else None,
            taint_mask=TAINT_HURT, heartbeat=max(1, int(trial_timeout / 4)),
            marks={"sites_begin": SITES_BEGIN, "sites_end": SITES_END,
                   "progress": PROGRESS, "discovery": DISCOVERY,
                   "packed_begin": packed.BEGIN, "packed_end": packed.END}))
        workdir = logdir / (f"job-{boot}" if one else f"boot-{boot}")
        state.last = time.monotonic()
        state.current = 0          # armed by this boot's first progress line
        state.discovering = False

        def watch(line: str) -> None:
            m = _PROGRESS.search(line)
            now = time.monotonic()
            if DISCOVERY in line:
                state.discovering, state.last = True, now
            elif m:
                state.discovering = False
                k, n = int(m.group(1)), int(m.group(2))
                if state.first_trial is None:
                    state.first_trial, state.first_index = now, k - 1
                    if first:
                        say(f"{what}: {n} sites found in {now - start:.1f} s")
                state.current, state.last = k, now
                done = k - 1 - state.first_index
                left = (now - state.first_trial) / done * (n - k + 1) if done else 0.0
                say(f"{what}: {unit} {k} of {n} ({line[m.end():].strip()}), {now - start:.0f} s "
                    "elapsed" + (f", ~{left:.0f} s left" if done else ""))
            elif state.current and now - state.last > trial_timeout:
                raise _Stalled()
            elif state.discovering and now - state.last > 3 * trial_timeout:
                raise _Stalled()      # init, workload and exit: a trial's three steps

        remaining = max(1, total - next_trial + 1) if not first else 50
        bound = (boot_timeout + trial_timeout * remaining if not one
                 else trial_timeout * (3 if first else 1))
        job = GuestJob(script=script, files=files,
                       intree_modules=tuple(dict.fromkeys([*needed, *intree])),
                       qemu_args=qemu_args)
        stalled = False
        try:
            vm = guest.run(job, workdir, bound, watch)
        except _Stalled:
            stalled = True
            vm = result_from_logs(workdir, timed_out=True)
        except interrupt.Interrupted as e:
            # A signal ends the trials at once, with what ran so far; the trial it cut
            # short is not judged (it did not crash: it was stopped).
            e.partial = TrialsRun(target=tgt.name, sites=sites, records=tuple(records),
                                  boots=guest.boots, elapsed=time.monotonic() - start,
                                  setup_seconds=(state.first_trial or time.monotonic()) - start)
            raise
        fatal = re.search(r"^KEDR-FAULTS fatal (.*)$", vm.output, re.M)
        if first:
            sites = sites_from_logs(vm.output)
            total = len(sites)
            lines = [site_trial(site).line(i + 1) for i, site in enumerate(sites)]
            if stalled and not sites:
                raise KedrError(f"{what} of {tgt.name}: discovery hung: no progress for "
                                f"{3 * trial_timeout:.0f} s, with no fault injected "
                                f"(logs: {workdir})")
            if fatal or (vm.status is None and not sites):
                raise KedrError(f"{what} of {tgt.name}: discovery failed: "
                                f"{fatal.group(1) if fatal else vm.reason()} (logs: {workdir})")
            failed = re.search(r"^KEDR-FAULTS discover insmod ([1-9]\d*)$", vm.output, re.M)
            if not sites and failed:
                raise KedrError(f"{what} of {tgt.name}: discovery: insmod {tgt.name} failed "
                                f"(status {failed.group(1)}) with no fault injected "
                                f"(logs: {workdir})")
            if not sites:
                raise KedrError(f"{what} of {tgt.name}: nothing to sweep: the driver reached no "
                                f"function that can fail in init"
                                f"{', the workload' if workload else ''} or exit")
            if one:
                continue                # the sites' trials: one a run from here
        elif fatal:
            raise KedrError(f"{what} of {tgt.name}: boot {boot} failed: {fatal.group(1)} "
                            f"(logs: {workdir})")
        got = records_from_logs(vm.output, vm.console, total, tgt.name, target, guest.boots)
        records += got
        last = records[-1].index if records else 0
        if last >= total and not (one and vm.status != 0):
            break
        # The boot ended early. A trial the guest started (its progress line) but
        # never reported crashed or hung the VM; otherwise the guest stopped after
        # reporting one (taint, a module that stayed loaded): boot again after it.
        lost = next_trial if one else state.current
        if last < lost <= total:
            hung = stalled or vm.timed_out
            # One trial a run: its console is all the trial's (a machine's console need
            # not show the progress line: labgrid's ShellDriver sets dmesg -n 1).
            problems = tuple(p.line for p in find_problems(
                vm.console if one else console_of_trial(vm.console, lost)))
            outcome = (Outcome.CRASH if problems else Outcome.HANG if hung
                       else Outcome.LOST)
            records.append(TrialRecord(
                index=lost, outcome=outcome,
                injected=1, init_status=None, workload_status=None, unload_status=None,
                findings=problems or (vm.reason(),), boot=guest.boots))
        elif not got:
            raise KedrError(f"{what} of {tgt.name}: boot {boot} ran no trial "
                            f"({vm.reason() or 'no result'}; logs: {workdir})")
        next_trial = records[-1].index + 1
        if vm.status != 0:
            # A taint, a hang, a module left loaded, a machine that stopped answering.
            why = guest.recover()
            if why:
                stopped = (f"{what} of {tgt.name} stopped after {unit} {next_trial - 1} of "
                           f"{total} ({records[-1].outcome.value}): {why}")
                break
        if next_trial > total:
            break
    elapsed = time.monotonic() - start
    setup = (state.first_trial or time.monotonic()) - start
    return TrialsRun(target=tgt.name, sites=sites, records=tuple(records), boots=guest.boots,
                     elapsed=elapsed, setup_seconds=setup, stopped=stopped)


def sites_from_logs(output: str) -> tuple[Site, ...]:
    """The sites a discovery boot listed (its guest output)."""
    sites: list[Site] = []
    inside = False
    for line in output.splitlines():
        if line == SITES_BEGIN:
            inside = True
        elif line == SITES_END:
            inside = False
        elif inside:
            m = _SITE_LINE.match(line.strip())
            if m:
                sites.append(Site(*m.groups()))
    return tuple(sites)


def console_of_trial(console: str, k: int) -> str:
    """The console from trial k's progress line to the next trial's."""
    out: list[str] = []
    inside = False
    for line in console.splitlines():
        m = _PROGRESS.search(strip_prefix(line))
        if m:
            inside = int(m.group(1)) == k
        if inside:
            out.append(line)
    return "\n".join(out)


def _status(value: str | None) -> int | None:
    if value is None or value == "-":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def records_from_logs(output: str, console: str, total: int, target: str,
                      ko: Path | None = None, boot: int = 1) -> list[TrialRecord]:
    """The trials a boot reported (guest output and console; also how a saved boot is
    judged again). ``ko``: the target's .ko, to name addresses in its leak report."""
    leak_texts: dict[int, list[str]] = {}
    current: list[str] | None = None
    records: list[TrialRecord] = []
    for line in output.splitlines():
        if line.startswith("KEDR-LEAKS-END "):
            current = None
            continue
        if line.startswith("KEDR-LEAKS "):
            current = leak_texts.setdefault(int(line.split()[1]), [])
            continue
        if current is not None:
            current.append(line)
            continue
        m = _TRIAL.match(line.strip())
        if not m or not 1 <= int(m.group(1)) <= total:
            continue
        k = int(m.group(1))
        f = dict(w.split("=", 1) for w in m.group(2).split() if "=" in w)
        init, wl, unload = (_status(f.get(x)) for x in ("init", "workload", "unload"))
        injected = _status(f.get("injected")) or 0
        # Only what the trial added: a boot tainted before its first trial (a soft
        # lockup on a loaded host) once charged that trial with a crash.
        taint = (_status(f.get("taint")) or 0) & ~(_status(f.get("boot_taint")) or 0)
        findings: list[str] = []
        leaks = leaked = bad = 0
        try:
            report = parse_leaks("\n".join(leak_texts.get(k, [])) + "\n",
                                 {target: ko} if ko is not None else None)
            leaks, leaked = len(report.leaks), report.totals.live_bytes
            bad = report.totals.bad_frees
            if not report.clean:
                findings += leak_summary(report)
        except KedrError as e:
            findings.append(f"leak report unreadable: {e}")
        problems = [p.line for p in find_problems(console_of_trial(console, k))]
        findings += problems
        if taint & TAINT_HURT or problems or init in KILLED or unload in KILLED:
            outcome = Outcome.CRASH
        elif unload not in (None, 0) or f.get("repl_unload", "0") != "0":
            outcome = Outcome.UNLOAD_FAILED
        elif leaks or bad:
            outcome = Outcome.LEAK
        elif injected == 0:
            outcome = Outcome.NOT_REACHED
        else:
            outcome = Outcome.CLEAN
        records.append(TrialRecord(index=k, outcome=outcome, injected=injected,
                                   init_status=init, workload_status=wl, unload_status=unload,
                                   leaks=leaks, leaked_bytes=leaked, bad_frees=bad,
                                   findings=tuple(findings), boot=boot))
    return records
