"""Run built modules on a real machine: the QEMU guest's steps and evidence, over any
:class:`Transport` (ssh: targets/ssh.py; a labgrid target: targets/labgrid.py).

The machine must already run the kernel the modules are built for: its release
(``uname -r``) is compared with each module's vermagic before anything is
copied. Then the same job script the QEMU guest runs (:func:`plan_run`, rooted
in a fresh directory under /tmp), the modules and the workload are copied in
one tar stream, the job runs with its output and its exit status kept apart
(``KEDR-STATUS n`` on the job's stderr: never read from the output), and the
kernel log since the job's start marker is read with ``dmesg``. The runner's own
:func:`conclude` judges it, so the verdict is the one TARGET=qemu gives for the
same output.

Afterwards the machine is left as it was found: our modules and the in-tree
ones the job loaded are unloaded, the trace buffer's size put back, debugfs/tracefs
unmounted if we mounted them, the directory removed (the trace buffer's old content
is not kept: the job empties it); what could not be is said in the report
(``left_as_found``).
"""

from __future__ import annotations

import dataclasses
import io
import re
import secrets
import shlex
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kedr_build.atomic import write_atomic
from kedr_build.checks import suppress
from kedr_build.errors import KedrError
from kedr_build.kernel import hosttools
from kedr_build.kernel.descriptions import by_release
from kedr_build.ko.module import ModuleRef
from kedr_build.vm import packed
from kedr_build.vm.console import find_problems
from kedr_build.vm.qemu import JOB_START, STATUS_MARK, Verdict, VmResult, parse_status
from kedr_build.vm.runner import (JUDGED_LOG, TRACEFS, FuzzPlan, RunPlan, RunReport, conclude,
                                   plan_run)
from kedr_build.vm.taint import ALLOWED_TAINT, taint_letters

PROBE_TIMEOUT = 120.0      # seconds for each short command (a slow lab machine)
# Seconds a machine whose job ended without a status is given to answer before it
# counts as lost: the sweep's bound for one site (site_timeout, faults/sweep.py).
LOST_BOUND = 60.0
TAINT_BEFORE = "KEDR-TAINT-BEFORE "
EXECUTABLES = ("kfuzz",)       # copied files run as programs (besides the scripts)
_LEFT = re.compile(r"^KEDR-LEFT (\S+) (.+)$")


@dataclass(frozen=True)
class Answer:
    """One shell command's end on the machine."""

    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class JobEnd:
    """How a job ended when no status came back; all defaults: it ended with one.

    A job with no status is a *crash* when its console showed an oops or a panic
    (``console``: judged by vm/console.py; ``crashed``: the report that ended the
    wait for it), else a *hang* (``timed_out``: no status in the job's time;
    ``silent``: the machine stopped answering) or *lost* (``lost``: the link to it
    broke, an ssh session that ended): :func:`lost_word`."""

    timed_out: bool = False
    lost: str = ""              # why the link to the machine broke mid-job ("" if it did not)
    console: str = ""           # what its console showed meanwhile, when one is read (labgrid)
    silent: float = 0.0         # seconds its console did not answer before we gave up
    crashed: str = ""           # the crash report on its console that ended the wait
    answering: bool = False     # timed out with the machine still answering (a watched console)

    @property
    def ended(self) -> bool:
        """The job ended by itself: its output and status are there to read."""
        return not (self.timed_out or self.lost or self.silent or self.crashed)


class Transport(Protocol):
    """How commands reach the machine: all the steps need is a shell there."""

    def __str__(self) -> str:
        """TARGET='s value, for messages."""
        ...

    @property
    def log_name(self) -> str:
        """The file in the run's log directory that records how the job was started."""
        ...

    def command_line(self, command: str) -> list[str]:
        """How a user would run ``command`` there by hand (recorded, never parsed)."""
        ...

    @property
    def slow(self) -> bool:
        """A link of a few KiB/s (a serial console): modules go without debug info."""
        ...

    def run(self, command: str, data: bytes | None = None,
            timeout: float = PROBE_TIMEOUT) -> Answer:
        """Run ``command`` with ``data`` on its stdin; KedrError when the machine does
        not answer in ``timeout`` seconds."""
        ...

    def check(self, command: str, what: str, data: bytes | None = None) -> str:
        """Run ``command``; its stdout, or one line saying why not (``what`` failed)."""
        ...

    def run_job(self, command: str, out: Path, err: Path, timeout: float,
                workdir: str) -> JobEnd:
        """Run the (long) job ``command``, its stdout into ``out``, its stderr into
        ``err`` (``workdir``: a directory of ours on the machine for spooling them)."""
        ...


@dataclass(frozen=True)
class MachineState:
    release: str                  # uname -r
    taint: int                    # /proc/sys/kernel/tainted
    modules: frozenset[str]       # loaded, as /proc/modules names them


@dataclass(frozen=True)
class Power:
    """How the machine is restarted (labgrid's strategy or power driver:
    targets/labgrid.py's power_cycle); a shell on it again."""

    how: str                            # for messages
    restart: Callable[[], Transport]


PROBE = "uname -r; cat /proc/sys/kernel/tainted; cut -d' ' -f1 /proc/modules"


def probe(conn: Transport) -> MachineState:
    lines = conn.check(PROBE, "reading its kernel release").splitlines()
    if len(lines) < 2 or not lines[1].strip().isdigit():
        raise KedrError(f"TARGET={conn}: unexpected answer to {PROBE!r}: "
                        f"{' / '.join(lines[:2])}")
    return MachineState(release=lines[0].strip(), taint=int(lines[1]),
                        modules=frozenset(ln.strip() for ln in lines[2:] if ln.strip()))


def check_release(modules: tuple[ModuleRef, ...], state: MachineState, target: object) -> None:
    """Refuse modules built for another kernel than the machine runs (before copying)."""
    for m in modules:
        if m.release is not None and m.release != state.release:
            pinned = by_release(state.release)
            fix = (f"KERNEL={pinned}" if pinned else "KDIR= the headers of its kernel")
            raise KedrError(f"TARGET={target}: the machine runs kernel {state.release}, but "
                            f"{m.path.name} is built for {m.release} (vermagic); nothing was "
                            f"copied: build it for the machine ({fix})")


def _probed(conn: Transport, modules: tuple[ModuleRef, ...]) -> tuple[MachineState, int]:
    """The machine's state, its release checked against the modules' vermagic; and its
    taint beyond out-of-tree/unsigned."""
    state = probe(conn)
    check_release(modules, state, conn)
    return state, state.taint & ~ALLOWED_TAINT


def checked_state(conn: Transport, modules: tuple[ModuleRef, ...], when: str) -> MachineState:
    """Its kernel: the modules' release (vermagic), not tainted beyond
    out-of-tree/unsigned (``when``: for the message); else one line."""
    state, extra = _probed(conn, modules)
    if extra:
        raise KedrError(f"TARGET={conn}: its kernel is tainted {taint_letters(state.taint)} "
                        f"({state.taint}) {when}, {taint_letters(extra)} beyond "
                        "out-of-tree/unsigned: reboot it")
    return state


def power_cycle(power: Power, modules: tuple[ModuleRef, ...]) -> tuple[Transport, MachineState]:
    """Restart the machine; a shell on its fresh boot, checked (:func:`checked_state`)."""
    conn = power.restart()
    return conn, checked_state(conn, modules, "after a power cycle")


def fresh_state(conn: Transport, modules: tuple[ModuleRef, ...], power: Power | None,
                done: list[str]) -> tuple[Transport, MachineState]:
    """The machine as found, checked before anything is copied. One found tainted (an
    earlier run, or anything else: its kernel check would judge someone else's
    WARNING) is never reused silently: power-cycled once where it can be (said in
    ``done``), else refused in one line."""
    state, extra = _probed(conn, modules)
    if not extra:
        return conn, state
    found = (f"TARGET={conn}: its kernel is already tainted {taint_letters(state.taint)} "
             f"({state.taint}), {taint_letters(extra)} beyond out-of-tree/unsigned")
    if power is None:
        raise KedrError(f"{found}; nothing was copied: reboot it first")
    try:
        conn, state = power_cycle(power, modules)
    except KedrError as e:
        raise KedrError(f"{found}; power-cycled through {power.how}, but: {e}; nothing "
                        "was copied") from None
    done.append(f"found tainted {taint_letters(extra)}: power-cycled through {power.how}, "
                "its kernel checked again")
    return conn, state


def _wrapper(root: str, token: str) -> str:
    """Mount debugfs and tracefs if they are not (remembering which, to unmount them
    again), mark the job's start in the kernel log, run the job script, and write its
    status on stderr."""
    return f"""cd {root} || exit 100
for fs in debugfs:/sys/kernel/debug tracefs:/sys/kernel/tracing; do
  t=${{fs%%:*}}; d=${{fs#*:}}
  grep -q " $d $t " /proc/mounts && continue
  mount -t $t $t $d && echo $d >> {root}/mounted || echo "kedr-build: cannot mount $t on $d" >&2
done
# The job sets the trace buffer's size: its size now ("7 (expanded: 1408)" before
# anything traced: 1408) is put back afterwards.
read kb rest < {TRACEFS}/buffer_size_kb && case $rest in
  *expanded:*) kb=${{rest##*expanded: }}; kb=${{kb%)}};; esac && echo $kb > {root}/tracebuf
echo "{JOB_START} {token}" > /dev/kmsg
echo "{TAINT_BEFORE}$(cat /proc/sys/kernel/tainted)" >&2
sh {root}/job.sh </dev/null 2>&1
echo "{STATUS_MARK}$?" >&2
"""


def _cleanup(root: str, plan: RunPlan, loaded_before: frozenset[str],
             extra: tuple[str, ...] = ()) -> str:
    """Unload what is still loaded of ours and of the in-tree modules the job (or its
    workload: ``extra``, MODPROBE=) loaded, unmount what the wrapper mounted, remove the
    directory; say what is left."""
    return cleanup_script(root, [m.name for m in reversed(plan.modules)],
                          [*reversed((*plan.intree, *extra))], loaded_before)


def cleanup_script(root: str, ours: list[str], intree: list[str],
                   loaded_before: frozenset[str]) -> str:
    """Unload ``ours`` and those of the in-tree modules ``intree`` that were not loaded
    before (in this order), unmount what the wrapper mounted, put the trace buffer's
    size back, remove ``root``; say what is left (``KEDR-LEFT`` lines)."""
    names = " ".join(shlex.quote(n) for n in ours + [
        m.replace("-", "_") for m in intree if m.replace("-", "_") not in loaded_before])
    return f"""for pass in 1 2; do
  for m in {names}; do grep -q "^$m " /proc/modules && rmmod $m 2>/dev/null; done
done
[ -f {root}/tracebuf ] && cat {root}/tracebuf > {TRACEFS}/buffer_size_kb
[ -f {root}/mounted ] && for d in $(cat {root}/mounted); do umount $d; done
rm -rf {root}
for m in {names}; do grep -q "^$m " /proc/modules && echo "KEDR-LEFT module $m"; done
[ -e {root} ] && echo "KEDR-LEFT directory {root}"
exit 0
"""


def run_on_machine(conn: Transport, modules: list[Path], logdir: Path,
                   workload: Path | None = None, timeout: float = 300.0,
                   trace_providers: tuple[str, ...] = (),
                   suppressions: tuple[suppress.Suppression, ...] = (),
                   faults: Mapping[str, str] | None = None, intree: tuple[str, ...] = (),
                   cycles: int = 1, copies: int = 1, attempt: int = 1,
                   power: Power | None = None, discover: bool = False,
                   fuzz: FuzzPlan | None = None, chaos: FuzzPlan | None = None,
                   per_cycle: bool = False, cycle_params: tuple[str, ...] = ()) -> RunReport:
    """Load, exercise and unload the modules on the machine; the same RunReport as
    :func:`kedr_build.vm.runner.run_modules` gives for the VM (``intree``, ``cycles``,
    ``copies``, ``attempt``: as there; the in-tree modules come from the machine's own
    /lib/modules through its modprobe, and those the run loaded are unloaded after).
    ``discover``, ``fuzz``, ``chaos``, ``per_cycle``, ``cycle_params``: the fuzz, reload
    and chaos kinds' steps, as there (the static fuzzer is copied with the modules; the
    script keeps its own files in the run's directory, removed with it, and never clears
    the machine's kernel log).

    ``power`` (labgrid): a machine found tainted is power-cycled once before the run,
    and one whose job ended without a status (a panic, a hang, a link that broke:
    :class:`JobEnd`) is power-cycled after it, its kernel checked again (release,
    vermagic, taint): the run's reason says crash, hang or lost (:func:`lost_word`),
    with what its console showed."""
    logdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    root = f"/tmp/kedr-build-{token}"
    plan = plan_run(modules, workload, trace_providers, faults, cycles=cycles, copies=copies,
                    attempt=attempt, discover=discover, fuzz=fuzz, per_cycle=per_cycle,
                    chaos=chaos, cycle_params=cycle_params, root=root, scratch=root,
                    keep_log=True)
    if workload is not None and not workload.is_file():
        raise KedrError(f"WORKLOAD={workload}: no such file")
    done: list[str] = []
    conn, state = fresh_state(conn, plan.modules, power, done)
    busy = [m.name for m in plan.modules if m.name in state.modules]
    if busy:
        raise KedrError(f"TARGET={conn}: {busy[0]} is already loaded there; nothing was "
                        "copied (unload it first)")
    files = {f"modules/{m.name}.ko": (_without_debug_info(m.path) if conn.slow
                                      else m.path.read_bytes()) for m in plan.modules}
    if workload is not None:
        files["workload.sh"] = workload.read_bytes()
    if fuzz is not None or chaos is not None:
        from kedr_build.vm import fuzzer

        files["kfuzz"] = fuzzer.build().read_bytes()
    files["job.sh"] = plan.script.encode()
    files["wrapper.sh"] = _wrapper(root, token).encode()
    (logdir / conn.log_name).write_text(shlex.join(conn.command_line(f"sh {root}/wrapper.sh"))
                                        + "\n")
    start = time.monotonic()
    cleanup = _cleanup(root, plan, state.modules, intree)
    left: str | None = None
    try:
        conn.check(f"mkdir {root} && tar -x -f - -C {root}", f"copying the files to {root}",
                   _tar(files))
        result = run_job(conn, root, token, logdir, timeout, start)
        if result.status is None:
            conn, left = _after_loss(conn, root, cleanup, plan.modules, power, timeout, done,
                                     lost_word(result))
    except KedrError as e:
        # A copy that failed (a full disk) or a machine that stopped answering: the one
        # line says how the machine was left too.
        left = leave(conn, root, cleanup)
        raise KedrError(f"{e} ({left or 'the machine was left as found'})") from None
    finally:
        if left is None:
            left = leave(conn, root, cleanup)
    report = conclude(result, plan, logdir, suppressions,
                      targets=tuple(m.name for m in plan.modules
                                    if m.name not in trace_providers))
    before = next((int(ln[len(TAINT_BEFORE):]) for ln in
                   (logdir / "status.log").read_text().splitlines()
                   if ln.startswith(TAINT_BEFORE) and ln[len(TAINT_BEFORE):].isdigit()), None)
    report = dataclasses.replace(report, target=str(conn), taint_before=before,
                                 left_as_found=left, power_cycles=tuple(done))
    if result.lost:
        report = dataclasses.replace(report, reason=_lost_reason(result, conn))
    write_atomic(logdir / "result.json", report.to_json().encode())
    return report


def _after_loss(conn: Transport, root: str, cleanup: str, modules: tuple[ModuleRef, ...],
                power: Power | None, timeout: float, done: list[str],
                word: str) -> tuple[Transport, str]:
    """The job ended without a status: the machine crashed, hung or dropped its link
    (``word``: :func:`lost_word`, said in ``done``).
    With power it is restarted (:func:`power_cycle`, as the sweep's trials do after a
    lost site) and what outlived the boot removed; without, the cleanup is tried
    within :data:`LOST_BOUND` (not a probe's two minutes on a dead link) and a machine
    that does not answer is said to be lost. The machine, and "" when it is left as
    found, else how it is left."""
    if power is None:
        left = leave(conn, root, cleanup, min(timeout, LOST_BOUND))
        if left.startswith("not cleaned up"):
            return conn, (f"lost ({left[len('not cleaned up: '):]}) and it has no power "
                          "driver to restart it: reboot it before using it again")
        return conn, left
    try:
        conn, _ = power_cycle(power, modules)
    except KedrError as e:
        return conn, f"lost, and restarting it through {power.how} failed: {e}"
    done.append(f"{word}: power-cycled through {power.how}, its kernel checked again")
    # A /tmp on disk outlives the boot: the run's files go.
    return conn, leave(conn, root, cleanup)


def run_job(conn: Transport, root: str, token: str, logdir: Path, timeout: float,
            start: float) -> VmResult:
    """Run ``root``/wrapper.sh (its job marked by ``token``) as a VmResult: the job's
    output and status, and the kernel log since its start marker (or what a console
    showed as it went silent)."""
    end = conn.run_job(f"sh {root}/wrapper.sh", logdir / "output.log", logdir / "status.log",
                       timeout, root)
    elapsed = time.monotonic() - start
    console = end.console     # what a console showed as it went silent (labgrid)
    if end.ended:
        dmesg = conn.run(since_start(root, token))
        console = dmesg.stdout.decode("utf-8", "replace") if dmesg.returncode == 0 else ""
    write_atomic(logdir / "console.log", console.encode())
    status = parse_status((logdir / "status.log").read_text(errors="replace"))
    return VmResult(status=status,
                    output=packed.unpack((logdir / "output.log").read_text(errors="replace")),
                    console=console, problems=tuple(find_problems(console)),
                    timed_out=end.timed_out or bool(end.silent), elapsed=elapsed,
                    command=tuple(conn.command_line(f"sh {root}/wrapper.sh")), workdir=logdir,
                    qemu_error=end.lost if status is None else "",
                    job_started=True, lost_why=_why(end, timeout) if status is None else "")


def since_start(root: str, token: str) -> str:
    """The command that prints the kernel log since the job's start marker: all of it
    when the marker was pushed out of the ring buffer (a flood of WARNs: everything
    left is newer). A fuzz reduction saved the judged run's log before its replays
    (runner.JUDGED_LOG): that one is read then."""
    log = f"{root}/kedr-console"
    return (f"if [ -f {root}/{JUDGED_LOG} ]; then cat {root}/{JUDGED_LOG}; else dmesg; fi "
            f"> {log} && if grep -qF '{JOB_START} {token}' {log}; then "
            f"sed -n '/{JOB_START} {token}/,$p' {log}; else cat {log}; fi")


def _why(end: JobEnd, timeout: float) -> str:
    """Why no status came back, without the word (crash, hang, lost) that judges it."""
    if end.crashed:
        return "then no status"
    if end.silent:
        return f"no answer in {end.silent:.0f} s"
    if end.timed_out:
        return f"no status after {timeout:.0f} s" + (", the machine still answering"
                                                       if end.answering else "")
    return end.lost or "the job ended without a status"


def leave(conn: Transport, root: str, script: str, timeout: float = PROBE_TIMEOUT) -> str:
    """Run a :func:`cleanup_script`; "" when the machine is as it was found, else what
    is left and why."""
    try:
        proc = conn.run(script, timeout=timeout)
    except KedrError as e:
        return f"not cleaned up: {e}"
    if proc.returncode != 0:
        return (f"not cleaned up: {conn} failed ({last_line(proc.stderr) or proc.returncode}); "
                f"{root} and the modules may still be there")
    left = [f"{m.group(1)} {m.group(2)}" for ln in proc.stdout.decode(errors="replace")
            .splitlines() if (m := _LEFT.match(ln.strip()))]
    return f"left behind: {', '.join(left)}" if left else ""


def lost_word(result: VmResult) -> str:
    """A job without a status, judged as the sweep judges a site (faults/trials.py's
    Outcome): "crash" when the kernel reported an oops or a panic, else "hang" when
    no status came in time or the machine stopped answering, else "lost" (the link
    broke)."""
    if result.verdict is Verdict.KERNEL_PROBLEM and result.problems:
        return "crash"
    return "hang" if result.timed_out else "lost"


def _lost_reason(result: VmResult, conn: Transport) -> str:
    word = lost_word(result)
    if word == "crash":
        # The console's last words (labgrid: what it showed as it went silent).
        return (f"TARGET={conn}: crash (oops/panic on the console: "
                f"{result.problems[0].line}; {result.lost_why})")
    return f"TARGET={conn}: {word} ({result.lost_why})"


def _tar(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("modules",):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") or \
                name in EXECUTABLES else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _without_debug_info(ko: Path) -> bytes:
    """The module as ``make INSTALL_MOD_STRIP=1`` installs it (objcopy --strip-debug,
    into a temporary file: the build's .ko is not touched). The kernel never reads
    .debug_* sections; the symbol table the reports' stack frames name stays: the
    leaker's replacement module goes from 2.9 MiB to a fraction of it."""
    objcopy = hosttools.require(["objcopy"])["objcopy"]
    with tempfile.TemporaryDirectory(prefix="kedr-strip-") as tmp:
        out = Path(tmp) / ko.name
        proc = subprocess.run([objcopy, "--strip-debug", str(ko), str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise KedrError(f"{ko}: objcopy --strip-debug failed: "
                            f"{last_line(proc.stderr.encode())}")
        return out.read_bytes()


def last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
