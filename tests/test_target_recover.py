"""Units of a real machine's recovery (issue 21, item 3): the console log level labgrid's
ShellDriver changed is put back to the one the kernel booted with, and a machine the
sweep left tainted or silent is power-cycled and checked again, or the sweep stops in
one line. The machines themselves: tests/test_target_sweep_vm.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.targets.labgrid import boot_console_level
from kedr_build.targets.machine import PROBE, Answer, JobEnd
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

    def __init__(self, release: str, taint: int) -> None:
        self.release, self.taint = release, taint
        self.asked: list[str] = []

    def __str__(self) -> str:
        return "ssh://root@lab"

    log_name = "fake.cmd"
    slow = False

    def command_line(self, command: str) -> list[str]:
        return ["sh", "-c", command]

    def run(self, command: str, data: bytes | None = None, timeout: float = 1.0) -> Answer:
        self.asked.append(command)
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
    guest = MachineGuest(FakeMachine("6.1.0-1-amd64", 128), restart=lambda: fresh,
                         power="labgrid's ShellStrategy with QEMUDriver")
    assert guest.recover() == ""
    assert guest.boots == 2 and guest.conn is fresh and PROBE in fresh.asked
    assert guest.done == ["power-cycled through labgrid's ShellStrategy with QEMUDriver"]

    # Still tainted after the cycle (a power driver that does nothing): not reused.
    stuck = MachineGuest(FakeMachine("6.1.0-1-amd64", 128),
                         restart=lambda: FakeMachine("6.1.0-1-amd64", 512), power="p")
    assert stuck.recover() == ("TARGET=ssh://root@lab: its kernel is tainted W (512) after a "
                               "power cycle, W beyond out-of-tree/unsigned: reboot it")

    def broken() -> FakeMachine:
        raise KedrError("TARGET=labgrid:lab.yaml: power cycle through labgrid failed: "
                        "IOError: ")
    assert MachineGuest(FakeMachine("x", 0), restart=broken, power="p").recover() \
        .startswith("TARGET=labgrid:lab.yaml: power cycle through labgrid failed")
