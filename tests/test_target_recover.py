"""Units of a real machine's recovery (issue 21, item 3): the console log level labgrid's
ShellDriver changed is put back to the one the kernel booted with, and a machine the
sweep left tainted or silent is power-cycled and checked again, or the sweep stops in
one line; an attach job that crashed it likewise (targets/attach.py). The machines
themselves: tests/test_target_sweep_vm.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.targets.labgrid import boot_console_level
from kedr_build.targets.machine import (LOST_BOUND, PROBE, TAINT_BEFORE, Answer, JobEnd, Power,
                                        _after_loss, fresh_state)
from kedr_build.targets.trials import MachineGuest

PRINTK = "1\t4\t1\t7"        # /proc/sys/kernel/printk after ShellDriver's dmesg -n 1


@pytest.mark.parametrize("cmdline, level", [
    ("console=ttyS0 panic=-1 rdinit=/init loglevel=7 no_timer_check", 7),
    ("root=/dev/sda1 quiet", 4),
    ("root=/dev/sda1", 7),                      # CONSOLE_LOGLEVEL_DEFAULT: printk's 4th
    ("quiet loglevel=3", 3),                    # the last one given wins
    ("loglevel=3 debug", 10),
    ("loglevel=x", 7),
])
def test_the_level_the_kernel_booted_with(cmdline: str, level: int) -> None:
    assert boot_console_level(PRINTK, cmdline) == level


class FakeMachine:
    """Answers PROBE with a release and a taint; records what else it was asked."""

    def __init__(self, release: str, taint: int, dead: bool = False) -> None:
        self.release, self.taint, self.dead = release, taint, dead
        self.asked: list[str] = []
        self.waited: list[float] = []       # each command's timeout

    def __str__(self) -> str:
        return "ssh://root@lab"

    log_name = "fake.cmd"
    slow = False

    def command_line(self, command: str) -> list[str]:
        return ["sh", "-c", command]

    def run(self, command: str, data: bytes | None = None, timeout: float = 1.0) -> Answer:
        self.asked.append(command)
        self.waited.append(timeout)
        if self.dead:
            raise KedrError(f"TARGET={self}: no answer in {timeout:.0f} s")
        if command == PROBE:
            return Answer(0, f"{self.release}\n{self.taint}\n".encode(), b"")
        return Answer(0, b"", b"")

    def check(self, command: str, what: str, data: bytes | None = None) -> str:
        return self.run(command, data).stdout.decode()

    def run_job(self, command: str, out: Path, err: Path, timeout: float,
                workdir: str) -> JobEnd:
        return JobEnd()


def test_without_power_the_sweep_stops_after_cleaning_up() -> None:
    machine = FakeMachine("6.1.0-1-amd64", 128)
    guest = MachineGuest(machine, root="/tmp/kedr-build-x")
    why = guest.recover()
    assert why == ("TARGET=ssh://root@lab has no power driver to restart it; modules "
                   "unloaded, files removed: reboot it before using it again")
    assert any("rm -rf /tmp/kedr-build-x" in c for c in machine.asked)
    assert guest.boots == 1 and guest.done == []


def test_a_power_cycle_checks_the_kernel_again(tmp_path: Path) -> None:
    fresh = FakeMachine("6.1.0-1-amd64", 0)
    guest = MachineGuest(FakeMachine("6.1.0-1-amd64", 128),
                         restarts=Power("labgrid's ShellStrategy with QEMUDriver", lambda: fresh))
    assert guest.recover() == ""
    assert guest.boots == 2 and guest.conn is fresh and PROBE in fresh.asked
    assert guest.done == ["power-cycled through labgrid's ShellStrategy with QEMUDriver"]

    # Still tainted after the cycle (a power driver that does nothing): not reused.
    stuck = MachineGuest(FakeMachine("6.1.0-1-amd64", 128),
                         restarts=Power("p", lambda: FakeMachine("6.1.0-1-amd64", 512)))
    assert stuck.recover() == ("TARGET=ssh://root@lab: its kernel is tainted W (512) after a "
                               "power cycle, W beyond out-of-tree/unsigned: reboot it")

    def broken() -> FakeMachine:
        raise KedrError("TARGET=labgrid:lab.yaml: power cycle through labgrid failed: "
                        "IOError: ")
    assert MachineGuest(FakeMachine("x", 0), restarts=Power("p", broken)).recover() \
        .startswith("TARGET=labgrid:lab.yaml: power cycle through labgrid failed")


def test_a_machine_found_tainted_is_power_cycled_once_or_refused() -> None:
    found = FakeMachine("6.1.0-1-amd64", 512 | 4096)        # W, and O (allowed)
    with pytest.raises(KedrError) as refused:
        fresh_state(found, (), None, [])
    assert str(refused.value) == (
        "TARGET=ssh://root@lab: its kernel is already tainted WO (4608), W beyond "
        "out-of-tree/unsigned; nothing was copied: reboot it first")

    fresh = FakeMachine("6.1.0-1-amd64", 0)
    done: list[str] = []
    conn, state = fresh_state(found, (), Power("p", lambda: fresh), done)
    assert conn is fresh and state.taint == 0
    assert done == ["found tainted W: power-cycled through p, its kernel checked again"]

    # Tainted again after the one cycle: refused, in one line.
    with pytest.raises(KedrError) as again:
        fresh_state(found, (), Power("p", lambda: FakeMachine("6.1.0-1-amd64", 512)), [])
    line = str(again.value)
    assert "\n" not in line and line.startswith("TARGET=ssh://root@lab: its kernel is already "
                                                "tainted WO (4608)"), line
    assert line.endswith("power-cycled through p, but: TARGET=ssh://root@lab: its kernel is "
                         "tainted W (512) after a power cycle, W beyond out-of-tree/unsigned: "
                         "reboot it; nothing was copied"), line


def test_a_run_that_lost_the_machine() -> None:
    # Without power: the cleanup is tried within the sweep's bound, not a probe's 120 s,
    # and one line says the machine is lost.
    dead = FakeMachine("6.1.0-1-amd64", 0, dead=True)
    done: list[str] = []
    conn, left = _after_loss(dead, "/tmp/kedr-build-x", "rm -rf /tmp/kedr-build-x", (), None,
                             300.0, done, "hang")
    assert conn is dead and dead.waited == [LOST_BOUND] and done == []
    assert left == ("lost (TARGET=ssh://root@lab: no answer in 60 s) and it has no power "
                    "driver to restart it: reboot it before using it again")

    # With power: restarted, checked, and what outlived the boot removed there.
    fresh = FakeMachine("6.1.0-1-amd64", 0)
    conn, left = _after_loss(dead, "/tmp/kedr-build-x", "rm -rf /tmp/kedr-build-x", (),
                             Power("p", lambda: fresh), 300.0, done, "crash")
    assert conn is fresh and left == "" and dead.waited == [LOST_BOUND]
    assert fresh.asked == [PROBE, "rm -rf /tmp/kedr-build-x"]
    assert done == ["crash: power-cycled through p, its kernel checked again"]


class CrashingMachine(FakeMachine):
    """Its attach job panics in the attached window: output up to there, no status."""

    def run(self, command: str, data: bytes | None = None, timeout: float = 1.0) -> Answer:
        if command == "cat /proc/sys/kernel/tainted":
            self.asked.append(command)
            return Answer(0, f"{self.taint}\n".encode(), b"")
        return super().run(command, data, timeout)

    def run_job(self, command: str, out: Path, err: Path, timeout: float,
                workdir: str) -> JobEnd:
        out.write_text("step load 1.0\nstep before 1.1\nworkload rc=0\nstep attach 1.2\n"
                       "attach.sh: kedr_repl_leaker attached to kedr_leaker (1 sites)\n"
                       "step window 1.3\n")
        err.write_text(f"{TAINT_BEFORE}4096\n")
        return JobEnd(crashed="Kernel panic - not syncing: Fatal exception",
                      console="Kernel panic - not syncing: Fatal exception\n")


@pytest.mark.parametrize("power", [True, False], ids=["power", "no-power"])
def test_an_attach_that_crashed_the_machine(tmp_path: Path, power: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """targets/attach.py after a job without a status: the QEMU guest's verdict (the
    kernel's report), the machine power-cycled where it can be, else cleaned up as far
    as it goes and said to need a reboot; the run's reason says crash."""
    from kedr_build.intercept.attach import AttachResult, AttachSites
    from kedr_build.ko.module import ModuleRef
    from kedr_build.targets import attach
    from kedr_build.targets.spec import SshTarget

    ko = Path(__file__).parent / "data" / "leaks" / "kedr_leaker.ko"    # a real module
    release = ModuleRef.read(ko).release
    assert release
    out = tmp_path / "attach"
    (out / "kedr_repl_leaker").mkdir(parents=True)
    repl = out / "kedr_repl_leaker" / "kedr_repl_leaker.ko"
    repl.write_bytes(ko.read_bytes())
    for name in ("attach.sh", "detach.sh", "attach.sites", "attach.sections"):
        (out / name).write_text("")
    prepared = AttachResult(replacement=repl, sites=AttachSites("kedr_leaker", (), (), ""),
                            attach_sh=out / "attach.sh", detach_sh=out / "detach.sh",
                            warnings=())
    crashing, fresh = CrashingMachine(release, 4096), CrashingMachine(release, 4096)
    restarts = Power("labgrid's ShellStrategy with QEMUDriver", lambda: fresh) if power else None
    monkeypatch.setattr(attach, "machine_guest",
                        lambda target, config: MachineGuest(crashing, restarts=restarts))
    report = attach.attach_on_machine(SshTarget("lab"), None, prepared, ko, False,
                                      tmp_path / "run", None, 60.0)
    assert report.verdict == "failed"
    assert report.reason == "kernel panic; TARGET=ssh://root@lab: crash (then no status)"
    assert report.taint_before == 4096 and report.taint == 4096
    assert list(report.times) == ["load", "before", "attach", "window"]
    if power:
        assert report.power_cycles == ["crash: power-cycled through labgrid's ShellStrategy "
                                       "with QEMUDriver, its kernel checked again"]
        assert report.left_as_found == "" and report.machine == "ssh://root@lab"
        assert PROBE in fresh.asked and any("rm -rf /tmp/kedr-build-" in c for c in fresh.asked)
    else:
        assert report.power_cycles == []
        assert report.left_as_found == (
            "TARGET=ssh://root@lab has no power driver to restart it; modules unloaded, "
            "files removed: reboot it before using it again")
