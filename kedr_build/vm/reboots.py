"""Reduce a fuzz failure that only a fresh kernel can judge: a hang (the operation that
hung holds its file, and maybe its driver, for good), a crash (an oops leaves the
kernel damaged; a panic ends the guest) or a taint with no WARN/BUG line,
while the fuzzer ran (``taint``) or at the drivers' unload (``unload-taint``: each attempt
unloads them before it is judged) (taint flags stay set for the rest of the boot). The
boots get the judged run's emulated devices (DEVICES=), on the same slots, and load their
in-tree drivers the same way, so the drivers under test find their hardware. The guest's ``kfuzz -M`` runs the
delta debugging from the recorded operations the judged run wrote out
(``RunReport.fuzz_sequence``), each attempt a replay in one thread in a fresh load of
the drivers (``replacements/templates/guest-reduce.sh.j2``). Attempts that pass leave the
kernel clean and the boot goes on; the first that fails (hangs, or taints) ends the
boot, and the next boot resumes from the shorter sequence it left (``KFUZZ
reduce-reboot``): a boot per failing attempt, not per attempt. An attempt that fails
also says at which operation (the one that never returned, or the one after which the
taint appeared; not for a taint at the unload): the operations after it are dropped, and
the next attempt is that operation with the open of its file.

An attempt that ends the guest (a panic; a lockup of the whole kernel, stopped by the
host when the guest's heartbeat stopped for ``shm.STALL`` seconds) cannot say so itself: ``kfuzz
-M`` keeps, before each attempt, where to resume from if it fails in the ivshmem's
memory (:mod:`kedr_build.vm.shm`), with the position of the op in flight; the host reads
it from the file and boots again from there. Such a boot counts as a failing attempt
when it ended as the failure reduced did: with a crash report on the console for a
crash, without one for a hang.

The whole reduction has a budget of attempts and seconds (boots included); cut short, it
reports the shortest sequence known to fail by then. A sequence reduced within the
budget is replayed once more in a boot of its own.
"""

from __future__ import annotations

import re
import time
from functools import partial
from dataclasses import dataclass
from pathlib import Path

from kedr_build.atomic import write_atomic
from kedr_build.devices.attach import Attachment
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.module import ModuleRef, load_order
from kedr_build.resources import template_env
from kedr_build.vm import fuzzer, shm
from kedr_build.vm.qemu import CRASHES, GuestJob, Stall, VmResult, run_guest
from kedr_build.vm.reduction import Reduction, describe_ops
from kedr_build.vm.runner import SEQ_BEGIN, SEQ_END

# what it reduces -> the check it fails
CLASSES = {"hang": "fuzz", "crash": "kernel", "taint": "kernel", "unload-taint": "kernel"}
BOOT_MARGIN = 120.0       # seconds a boot may take beyond the reduction's time left

_REBOOT = re.compile(r"^KFUZZ reduce-reboot ops=(\d+) gran=(\d+) attempts=(\d+) located=(\d)$")
_DONE = re.compile(r"^KFUZZ reduced ops=(\d+) attempts=(\d+) ([\w-]+)$")
_NONE = re.compile(r"^KFUZZ reduce-none ops=(\d+) attempts=(\d+) why=([\w-]+)$")
_REPLAY = re.compile(r"^KFUZZ replay class=[\w-]+ fails=(\d) of 1$")


@dataclass(frozen=True)
class Budget:
    attempts: int
    seconds: float


@dataclass(frozen=True)
class BootEnd:
    """What one reduction boot said (:func:`parse_boot`)."""

    kind: str                       # reboot, reduced, none, or lost (no answer)
    attempts: int = 0
    ops: tuple[str, ...] = ()       # the shortest failing sequence so far, described
    sequence: str = ""              # ... as a kfuzz sequence file
    gran: int = 2
    located: bool = False
    outcome: str = ""


def split_sequence(lines: tuple[str, ...]) -> tuple[str, str]:
    """The judged run's ``fuzz_sequence``: its class and the sequence file's text."""
    cls = lines[0].split()[1] if lines and lines[0].startswith("class ") else ""
    return cls, "".join(f"{ln}\n" for ln in lines[1:])


def parse_boot(output: str) -> BootEnd:
    lines = output.splitlines()
    ops = describe_ops(lines)
    seq: list[str] = []
    inside = False
    for line in lines:
        if line == SEQ_BEGIN:
            inside = True
        elif line == SEQ_END:
            inside = False
        elif inside:
            seq.append(line)
    text = "".join(f"{ln}\n" for ln in seq)
    for line in lines:
        if m := _REBOOT.match(line):
            return BootEnd("reboot", int(m.group(3)), ops, text, int(m.group(2)),
                           m.group(4) == "1")
        if m := _DONE.match(line):
            return BootEnd("reduced", int(m.group(2)), ops, text, outcome=m.group(3))
        if m := _NONE.match(line):
            return BootEnd("none", int(m.group(2)), outcome=m.group(3))
    return BootEnd("lost")


@dataclass(frozen=True)
class FreshLoads:
    """What a reduction's fresh boots load, each afresh for its replays of a sequence
    (guest-reduce.sh.j2 here, guest-race.sh.j2 for a race: kedr_build/vm/raceboot.py):
    the in-tree modules first (the drivers' dependencies, then the pack's, then the
    ``devices``' controllers and drivers, as the judged run loads them:
    :func:`kedr_build.vm.runner.plan_run`), the replacement modules, the drivers (each
    waited for to bind a device, with ``devices``), and the fuzzer that replays; each boot
    with the judged run's emulated devices (DEVICES=), on their slots, fresh disks."""
    intree: tuple[str, ...]
    trace_providers: tuple[str, ...]
    drivers: tuple[str, ...]
    files: dict[str, Path]
    devices: Attachment | None = None

    @classmethod
    def of(cls, modules: list[Path], trace_providers: tuple[str, ...],
           intree: tuple[str, ...], devices: Attachment | None = None) -> FreshLoads:
        ordered, needed = load_order(ModuleRef.read(m) for m in modules)
        files = {f"modules/{m.name}.ko": m.path for m in ordered}
        files["kfuzz"] = fuzzer.build()
        drivers = tuple(m.name for m in ordered if m.name not in trace_providers)
        attached = devices.intree(drivers) if devices is not None else ()
        return cls(tuple(dict.fromkeys([*needed, *intree, *attached])), trace_providers,
                   drivers, files, devices)

    def job(self, template: str, workdir: Path, sequence: str, with_shm: bool = False,
            **render: object) -> GuestJob:
        """One boot's job: ``template`` rendered with ``render``, the sequence it starts
        from kept in ``workdir`` as start.seq (and the devices' disks); ``with_shm``: the
        ivshmem device too, its file in ``workdir`` (:mod:`kedr_build.vm.shm`)."""
        workdir.mkdir(parents=True, exist_ok=True)
        write_atomic(workdir / "start.seq", sequence.encode())
        bindings = self.devices is not None and bool(self.devices.devices)
        script = template_env().get_template(template).render(
            intree=self.intree, trace_providers=self.trace_providers, drivers=self.drivers,
            root="/kedr", bindings=bindings, shm_find=shm.GUEST_FIND, **render)
        qemu_args: list[str] = []
        if self.devices is not None:
            self.devices.make_disks(workdir)
            qemu_args = self.devices.qemu_args(workdir)
        if with_shm:    # after the devices: they keep their slots
            threads = 1 + max((int(ln.split()[1]) for ln in sequence.splitlines()
                               if ln.startswith("op ")), default=0)
            qemu_args += shm.qemu_args(workdir / shm.FILE, shm.size(threads))
        return GuestJob(script=script, files={**self.files, "start.seq": workdir / "start.seq"},
                        intree_modules=self.intree, qemu_args=tuple(qemu_args))


def died_failing(cls: str, result: VmResult) -> bool:
    """A boot that gave no answer ended as the failure ``cls`` does: a crash with a
    crash report on its console, a hang without one (the host stopped it)."""
    crashed = any(p.kind in CRASHES for p in result.problems)
    return result.lost and (crashed if cls == "crash" else cls == "hang" and not crashed)


def resumed_from(cls: str, result: VmResult) -> BootEnd:
    """A boot that died mid-attempt: the attempt failed, and the shared memory says
    with which sequence (cut after its op in flight) the next boot resumes."""
    back = shm.read(result.workdir / shm.FILE)
    if not (back.resume and back.inflight and died_failing(cls, result)):
        return BootEnd("lost")
    return BootEnd("reboot", back.attempts, back.ops, back.sequence, back.gran, back.located)


def reduce(kernel: ProvisionedKernel, modules: list[Path], trace_providers: tuple[str, ...],
           intree: tuple[str, ...], fuzz_sequence: tuple[str, ...], hang: int,
           budget: Budget, logdir: Path, cpus: int | None = None,
           devices: Attachment | None = None) -> Reduction:
    cls, sequence = split_sequence(fuzz_sequence)
    check = CLASSES.get(cls, "")
    recorded = sequence.count("\nop ")
    loads = FreshLoads.of(modules, trace_providers, intree, devices)
    start = time.monotonic()
    boots = attempts = 0
    gran, resumed, located = 2, False, False
    ops: tuple[str, ...] = ()

    def result(outcome: str, reduced: bool, replays: int = 0,
               replay_fails: int = 0) -> Reduction:
        saved = ""
        if reduced:     # a kfuzz sequence file: `kfuzz -p FILE` replays it in a guest
            saved = str(logdir / f"{cls}.seq")
            write_atomic(Path(saved), sequence.encode())
        return Reduction(check, recorded, ops if reduced else (), attempts, outcome,
                         reduced, replays, replay_fails, boots=boots,
                         seconds=time.monotonic() - start,
                         budget=f"{budget.attempts} attempts, {budget.seconds:g} s",
                         saved=saved)

    def boot(replay: bool, left: float) -> VmResult:
        nonlocal boots
        boots += 1
        workdir = logdir / f"reduce-{cls}-{boots}"
        job = loads.job("guest-reduce.sh.j2", workdir, sequence, with_shm=True, cls=cls,
                        hang=hang, attempts=budget.attempts, used=attempts, seconds=int(left),
                        gran=gran, resumed=resumed, located=located, replay=replay,
                        seq_begin=SEQ_BEGIN, seq_end=SEQ_END)
        return run_guest(kernel, job, workdir, timeout=left + BOOT_MARGIN, cpus=cpus,
                         stall=Stall(shm.STALL, partial(shm.beat, workdir / shm.FILE)))

    while True:
        left = budget.seconds - (time.monotonic() - start)
        if attempts >= budget.attempts:
            return result("budget-reached", resumed)
        if left < 1:
            return result("time-reached", resumed)
        run = boot(False, left)
        end = parse_boot(run.output)
        if end.kind == "lost":
            end = resumed_from(cls, run)
        if end.kind == "lost":
            return result("guest-lost", resumed)
        attempts = end.attempts
        if end.kind == "none":
            return result(end.outcome, False)
        ops = end.ops
        sequence = end.sequence
        if end.kind == "reduced":
            break
        gran, located, resumed = end.gran, end.located, True
    left = budget.seconds - (time.monotonic() - start)
    if left < 1:
        return result(end.outcome, True)
    run = boot(True, left)
    m = next(filter(None, map(_REPLAY.match, run.output.splitlines())), None)
    fails = int(m.group(1)) if m else int(died_failing(cls, run))
    return result(end.outcome, True, 1, fails)
