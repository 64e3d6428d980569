"""Boot a kernel in QEMU, run one script in the guest, return a typed result.

The guest is a generated initramfs: static busybox, the job's files under
/kedr, the in-tree modules it needs under /lib/modules. Three serial ports,
one job each:

* ttyS0 - the kernel console (streamed to the caller while saved to console.log)
* ttyS1 - the job script's stdout and stderr (output.log)
* ttyS2 - the status channel: ``KEDR-STATUS <n>`` is written there and nowhere
  else, so the result never rests on console noise (drgn's vmtest does the same)

The kernel boots with ``panic=-1`` and QEMU with ``-no-reboot``: a panic ends the
VM at once, and a VM that ends without a status line is "lost" - a failure with
the console excerpt that explains it. A hang is cut off by the timeout. The
pinned kernels also boot with ``no_timer_check``: the boot's IO-APIC timer test
fails when the host starves the emulated CPU, and the kernel then panics before
the job starts (pinned/*.toml).

An oops, BUG or panic on the console is a "kernel problem" whatever happens
after it: the crashed kernel may then finish the job, hang (a lock the killed
task held, a module stuck half-loaded) or die, and which one depends on timing
(a 6.12 oops test once ended "lost" under load). With ``cut_after_crash`` the
run waits only so long after such a report (:func:`crash_grace`: in proportion to
how long the VM took to get there, so a slow host gets as much more) before it
ends the VM.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import tempfile
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from kedr_build import interrupt
from kedr_build.kernel import hosttools
from kedr_build.kernel import moddeps
from kedr_build.vm import packed
from kedr_build.vm.console import (KernelProblem, ProblemKind, classify, find_problems,
                                   strip_prefix)
from kedr_build.errors import KedrError
from kedr_build.vm.initramfs import Initramfs
from kedr_build.vm.qmp import DeviceControl, DeviceEvent, child_args, drive_args
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.resources import template_env

STATUS_MARK = "KEDR-STATUS "
DEVICE_PORT = "/dev/ttyS3"    # the guest's device requests (kedr-device), when hot-plug is on
GUEST_DIR = "kedr"
JOB_START = "kedr-build: job start"     # the guest's /init, in the kernel log

class Verdict(Enum):
    PASSED = "passed"
    FAILED = "failed"                  # the script exited non-zero
    KERNEL_PROBLEM = "kernel problem"  # oops, BUG, WARNING... in the kernel log, status or not
    LOST = "lost"                      # no status and no kernel report: hang or QEMU died


# Reports after which the kernel is damaged (a task killed in the middle, locks it
# held never released): what follows them may hang. A WARNING or a lockup message
# leaves the kernel running as it was.
CRASHES = frozenset({ProblemKind.OOPS, ProblemKind.BUG, ProblemKind.GPF, ProblemKind.PANIC})
CRASH_GRACE_MIN = 30.0      # seconds the guest is given after a crash report, at least
CRASH_GRACE_FACTOR = 3.0    # ... or this many times as long as it took to get there


def crash_grace(elapsed: float) -> float:
    """How long a run waits for the guest's status after a crash report that came
    ``elapsed`` seconds after QEMU started. In proportion: a host slowed down by load
    slows both the way there and what the guest still does after it (unloading,
    reading the reports: 2-8 s after the 6.12 oops test's report, at 2.4-6 s into
    the run)."""
    return max(CRASH_GRACE_MIN, CRASH_GRACE_FACTOR * elapsed)


@dataclass(frozen=True)
class GuestJob:
    """What to run in the guest: a POSIX sh script (cwd /kedr) and its files."""

    script: str
    files: Mapping[str, Path] = field(default_factory=dict)  # path under /kedr -> host file
    intree_modules: Sequence[str] = ()   # shipped with their dependencies; modprobe works
    qemu_args: Sequence[str] = ()        # more QEMU arguments: emulated devices (DEVICES=)
    # QEMU id -> its device_add arguments: the devices the guest may unplug and plug
    # again (``kedr-device unplug ID``, served over ttyS3 through QMP; vm/qmp.py)
    hotplug: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Boot vmlinuz, not vmlinux's PVH entry: the guest suspends to RAM (S3), and QEMU's
    # resume does not return to a PVH-booted kernel (seen on 6.1 and 6.12, QEMU 7.2).
    resumable: bool = False


@dataclass(frozen=True)
class VmResult:
    status: int | None
    output: str
    console: str
    problems: tuple[KernelProblem, ...]
    timed_out: bool
    elapsed: float
    command: tuple[str, ...]
    workdir: Path
    qemu_error: str = ""
    cut_after_crash: bool = False      # ended by crash_grace(), not by the timeout
    stalled: bool = False              # ended when its heartbeat stopped (run_guest's stall)
    job_started: bool = True           # the guest's /init got to the job (JOB_START)
    # Why no status came back, in a real machine's words ("no answer in 60 s": its
    # console stopped answering; targets/machine.py); "" for the QEMU guest.
    lost_why: str = ""

    @property
    def lost(self) -> bool:
        """No status came back: the job's steps after some point are unknown."""
        return self.status is None
    device_events: tuple[DeviceEvent, ...] = ()   # the guest's unplug/plug requests

    @property
    def verdict(self) -> Verdict:
        # A kernel report is the finding, whether or not the VM got to its status
        # after it (it may hang or die in what the crash left behind); but a kernel
        # that died before the job started never ran the job: the VM is lost.
        if self.problems and (self.job_started or not self.lost):
            return Verdict.KERNEL_PROBLEM
        if self.status is None:
            return Verdict.LOST
        return Verdict.PASSED if self.status == 0 else Verdict.FAILED

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.PASSED

    def reason(self) -> str:
        """One line: why the run failed ("" when it passed)."""
        v = self.verdict
        if v is Verdict.PASSED:
            return ""
        if v is Verdict.KERNEL_PROBLEM:
            why = f"kernel reported: {self.problems[0]}"
            return f"{why} ({self._lost_why()})" if self.lost else why
        if v is Verdict.LOST:
            return self._lost_why()
        return f"guest script exited with status {self.status}"

    def _lost_why(self) -> str:
        if not self.job_started and self.problems:
            return f"VM did not boot: {self.problems[0]}"
        if self.lost_why:
            return self.lost_why
        if self.cut_after_crash:
            return f"then no status: the VM was stopped {self.elapsed:.0f} s in"
        if self.stalled:
            return (f"the guest locked up: its heartbeat stopped, and the VM was stopped "
                    f"{self.elapsed:.0f} s in")
        if self.timed_out:
            return f"VM hung: no status after {self.elapsed:.0f} s"
        if self.qemu_error:
            return f"QEMU failed: {self.qemu_error}"
        return "VM ended without a status"


MAX_CPUS = 64


def check_cpus(cpus: int, where: str = "VM_CPUS") -> int:
    if not 1 <= cpus <= MAX_CPUS:
        raise KedrError(f"{where}={cpus}: guest CPUs must be 1-{MAX_CPUS}")
    return cpus


def qemu_command(kernel: ProvisionedKernel, initrd: Path, workdir: Path,
                 cpus: int | None = None, accel: str | None = None,
                 extra: Sequence[str] = (), resumable: bool = False) -> list[str]:
    """The QEMU command line; ``cpus`` overrides the kernel description's guest CPUs,
    ``accel`` its accelerator (KEDR_ACCEL in the environment overrides both)."""
    image = kernel.vmlinuz if resumable and kernel.vmlinuz else kernel.boot_image
    if image is None:
        raise KedrError(f"kernel {kernel.release}: no kernel image to boot "
                        "(KDIR= builds only; the VM runs the pinned kernel)")
    cfg = kernel.qemu
    accel = os.environ.get("KEDR_ACCEL", accel or cfg.accel)
    qemu = hosttools.require(["qemu-system-x86_64"])["qemu-system-x86_64"]
    return [qemu, "-accel", accel, "-cpu", cfg.cpu, "-m", str(cfg.memory_mb),
            "-smp", str(check_cpus(cpus if cpus is not None else cfg.cpus)),
            "-nodefaults", "-no-reboot", "-display", "none",
            "-kernel", str(image), "-initrd", str(initrd), "-append", cfg.cmdline,
            "-serial", "stdio",
            "-serial", f"file:{workdir / 'output.log'}",
            "-serial", f"file:{workdir / 'status.log'}", *extra]


def build_initramfs(kernel: ProvisionedKernel, job: GuestJob) -> Initramfs:
    ramfs = Initramfs()
    ramfs.add_file("bin/busybox", hosttools.static_busybox(), 0o755)
    init = template_env().get_template("guest-init.sh.j2").render(
        guest_dir=GUEST_DIR, status_mark=STATUS_MARK, job_start=JOB_START)
    ramfs.add_bytes("init", init.encode(), 0o755)
    ramfs.add_bytes(f"{GUEST_DIR}/job.sh", job.script.encode(), 0o755)
    if job.hotplug:
        ramfs.add_bytes("bin/kedr-device", template_env().get_template(
            "guest-kedr-device.sh.j2").render(port=DEVICE_PORT).encode(), 0o755)
    for dest, src in job.files.items():
        if not src.is_file():
            raise KedrError(f"{src}: guest file missing")
        ramfs.add_file(f"{GUEST_DIR}/{dest}", src)
    # In-tree modules go in as the kernel ships them (.ko.xz on 6.12): busybox's
    # insmod/modprobe try finit_module() and, when the kernel refuses the compressed
    # file, decompress it themselves and call init_module() (the multi example's crc7
    # and KO=vfat's fat on 6.12 prove it in the VM tests).
    mods = moddeps.load_order(kernel, list(job.intree_modules))
    base = f"lib/modules/{kernel.release}"
    ramfs.add_dir(base)
    for mod in mods:
        ramfs.add_file(f"{base}/{mod.relpath}", mod.path, 0o644)
    if mods:
        ramfs.add_bytes(f"{base}/modules.dep", moddeps.modules_dep_subset(kernel, mods).encode())
        ramfs.add_bytes(f"{base}/modules.alias",
                        moddeps.modules_alias_subset(kernel, mods).encode())
    return ramfs


BOOT_RETRY_LOG = "boot-retry.log"


@dataclass(frozen=True)
class Stall:
    """A liveness limit for :func:`run_guest`: ``progress()`` (read once a second on
    the host) must change within ``seconds``; None: not watched (yet, or any more)."""

    seconds: float
    progress: Callable[[], object]


def run_guest(kernel: ProvisionedKernel, job: GuestJob, workdir: Path,
              timeout: float = 180.0, stream: Callable[[str], None] | None = None,
              cpus: int | None = None, accel: str | None = None,
              cut_after_crash: bool = False, stall: Stall | None = None) -> VmResult:
    """Boot, run ``job``, and return what happened; logs are kept in ``workdir``.
    ``accel`` replaces the kernel description's QEMU accelerator (e.g.
    "tcg,thread=single"; KEDR_ACCEL in the environment still wins).
    ``cut_after_crash``: after an oops, BUG or panic on the console, wait for the
    status only :func:`crash_grace` longer (never past ``timeout``).
    ``stall``: the VM is stopped as hung (``timed_out``) once ``stall.progress()`` (a
    heartbeat) has not changed for ``stall.seconds`` (a whole kernel locked up:
    nothing in the guest can say so).

    A kernel that dies before the guest's /init gets to the job has run nothing of
    the job: that boot is tried once more, and the first one's console is kept as
    console-first-boot.log with a line in boot-retry.log. (Seen on a loaded host:
    6.12 oopsing on an int3 at boot whose bytes in memory were already the nop, the
    stale translation of multi-threaded TCG in replacements/runtime/README.md.)"""
    result = _boot(kernel, job, workdir, timeout, stream, cpus, accel, cut_after_crash, stall)
    if result.job_started or not result.problems:
        return result
    (workdir / "console.log").replace(workdir / "console-first-boot.log")
    (workdir / BOOT_RETRY_LOG).write_text(
        f"the kernel died before the job started ({result.problems[0].line}): booted again\n")
    return _boot(kernel, job, workdir, timeout, stream, cpus, accel, cut_after_crash, stall)


def _boot(kernel: ProvisionedKernel, job: GuestJob, workdir: Path, timeout: float,
          stream: Callable[[str], None] | None, cpus: int | None, accel: str | None,
          cut_after_crash: bool, stall: Stall | None = None) -> VmResult:
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = workdir / "initramfs.cpio"
    build_initramfs(kernel, job).write(initrd)
    for name in ("console.log", "output.log", "status.log"):
        (workdir / name).unlink(missing_ok=True)
    control: DeviceControl | None = None
    extra = list(job.qemu_args)
    sockets: Path | None = None
    if job.hotplug:
        # Unix socket paths are short (108 bytes): not under a deep workdir.
        sockets = Path(tempfile.mkdtemp(prefix="kedr-qmp-"))
        control = DeviceControl(sockets / "qmp.sock", sockets / "dev.sock", job.hotplug,
                                drives=drive_args(list(job.qemu_args)),
                                children=child_args(list(job.qemu_args), set(job.hotplug)),
                                resumable=job.resumable)
        extra += ["-qmp", f"unix:{control.qmp_socket},server=on,wait=off",
                  "-chardev", f"socket,id=kedrdev,path={control.serial_socket},server=on,wait=off",
                  "-serial", "chardev:kedrdev"]
    cmd = qemu_command(kernel, initrd, workdir, cpus, accel, extra, job.resumable)
    (workdir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")

    start = time.monotonic()
    console_lines: list[str] = []
    # QEMU dies with this process (even by SIGKILL) and at once when it is interrupted.
    proc = interrupt.spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    timed_out = threading.Event()
    cut = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        proc.kill()

    def kill_after_crash() -> None:
        if proc.poll() is None and not timed_out.is_set():
            cut.set()
            proc.kill()

    timer = threading.Timer(timeout, kill_on_timeout)
    timer.start()
    done = threading.Event()
    stalled = threading.Event()

    def watch_stall(limit: Stall) -> None:
        seen: object = None
        since = time.monotonic()
        while not done.wait(1.0):
            now = limit.progress()
            if now is None or now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > limit.seconds:
                stalled.set()
                kill_on_timeout()
                return

    if stall is not None:
        threading.Thread(target=watch_stall, args=(stall,), daemon=True).start()
    grace: threading.Timer | None = None
    stderr_chunks: list[bytes] = []
    err_thread = threading.Thread(target=lambda: stderr_chunks.append(
        proc.stderr.read() if proc.stderr else b""), daemon=True)
    err_thread.start()
    if control is not None:
        control.start()
    try:
        assert proc.stdout is not None
        with (workdir / "console.log").open("w") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                console_lines.append(line)
                log.write(line + "\n")
                if stream is not None:
                    stream(line)
                if (cut_after_crash and grace is None
                        and classify(strip_prefix(line)) in CRASHES):
                    now = time.monotonic() - start
                    if crash_grace(now) < timeout - now:
                        grace = threading.Timer(crash_grace(now), kill_after_crash)
                        grace.start()
        proc.wait()
    finally:
        timer.cancel()
        done.set()
        if grace is not None:
            grace.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        interrupt.release(proc)
        if control is not None:
            control.join()
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)
    err_thread.join(timeout=5)
    # A VM that ended because the user interrupted the run is no result at all.
    interrupt.check()
    elapsed = time.monotonic() - start
    console = "\n".join(console_lines) + ("\n" if console_lines else "")
    qemu_error = b"".join(stderr_chunks).decode("utf-8", "replace").strip()
    if proc.returncode == 0 or timed_out.is_set() or cut.is_set():
        qemu_error = ""
    result = result_from_logs(workdir, console, timed_out=timed_out.is_set(), elapsed=elapsed,
                              command=tuple(cmd),
                              qemu_error=qemu_error.splitlines()[-1] if qemu_error else "",
                              cut_after_crash=cut.is_set(), stalled=stalled.is_set())
    if control is not None:
        result = dataclasses.replace(result, device_events=tuple(control.events))
    return result


def result_from_logs(workdir: Path, console: str | None = None, *, timed_out: bool = False,
                     elapsed: float = 0.0, command: tuple[str, ...] = (),
                     qemu_error: str = "", cut_after_crash: bool = False,
                     stalled: bool = False) -> VmResult:
    """A VmResult from a run directory's logs (also how a saved run is re-judged)."""
    if console is None:
        console = _read(workdir / "console.log")
    return VmResult(
        status=parse_status(_read(workdir / "status.log")),
        # The guest's tty turns "\n" into "\r\n" (onlcr); give callers plain lines, the
        # big dumps unpacked (kedr_build/vm/packed.py).
        output=packed.unpack(_read(workdir / "output.log").replace("\r\n", "\n")),
        console=console,
        problems=tuple(find_problems(console)),
        timed_out=timed_out,
        elapsed=elapsed,
        command=command,
        workdir=workdir,
        qemu_error=qemu_error,
        cut_after_crash=cut_after_crash,
        stalled=stalled,
        job_started=any(strip_prefix(ln).startswith(JOB_START)
                        for ln in console.splitlines()),
    )


def parse_status(text: str) -> int | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(STATUS_MARK):
            try:
                return int(line[len(STATUS_MARK):])
            except ValueError:
                return None
    return None


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
