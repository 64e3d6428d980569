"""The labgrid transport's own work (kedr_build/targets/labgrid.py) against a command
driver that runs each command in the host's sh, the way labgrid's ShellDriver.run
returns it (output lines, no stderr, exit status): files in as base64 lines, output
and stderr kept apart and back byte for byte, a console that stops answering one
line. The same transport on a real labgrid guest: tests/test_target_labgrid_vm.py."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from kedr_build.errors import KedrError
from kedr_build.targets import labgrid
from kedr_build.targets.labgrid import LINES, LabgridShell
from kedr_build.targets.spec import LabgridTarget


class HostShell:
    """ShellDriver.run's contract: (output lines, [], status); commands seen kept."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, cmd: str, timeout: float = 30.0, codec: str = "utf-8",
            decodeerrors: str = "strict") -> tuple[list[str], list[str], int]:
        self.commands.append(cmd)
        proc = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=timeout)
        return proc.stdout.decode(codec, decodeerrors).splitlines(), [], proc.returncode


class Silent:
    def run(self, cmd: str, timeout: float = 30.0, codec: str = "utf-8",
            decodeerrors: str = "strict") -> tuple[list[str], list[str], int]:
        from pexpect import TIMEOUT
        raise TIMEOUT(f"Timeout of {timeout:.2f} seconds exceeded")


TARGET = LabgridTarget(Path("/lab/lab.yaml"))


def test_data_in_output_and_stderr_back_byte_for_byte() -> None:
    driver = HostShell()
    shell = LabgridShell(TARGET, driver)
    # Incompressible (gzip does not shrink it): ~180 base64 lines.
    data = random.Random(21).randbytes(100_000) + b"\r\n\xff"
    answer = shell.run("cat; printf 'one\\r\\ntwo\\377' >&2; exit 3", data)
    assert (answer.returncode, answer.stdout, answer.stderr) == (3, data, b"one\r\ntwo\xff")
    # Every line a command carries is within the 1024 of busybox's line editor.
    longest = max(len(line) for cmd in driver.commands for line in cmd.splitlines())
    assert longest < 1024 - 100, longest
    # ... and several lines go in one command (one round trip).
    assert max(cmd.count("\n") for cmd in driver.commands) == LINES - 1
    # Nothing of ours left in /tmp.
    assert not list(Path("/tmp").glob(".kedr-labgrid-*"))


def test_check_failure_and_silence_are_one_line() -> None:
    shell = LabgridShell(TARGET, HostShell())
    with pytest.raises(KedrError) as failed:
        shell.check("echo partial; echo 'no space left' >&2; exit 1", "copying")
    assert str(failed.value) == ("TARGET=labgrid:/lab/lab.yaml: copying failed (status 1): "
                                 "no space left")
    with pytest.raises(KedrError) as silent:
        LabgridShell(TARGET, Silent()).run("true", timeout=5)
    assert str(silent.value) == "TARGET=labgrid:/lab/lab.yaml: no answer in 5 s"


def test_job_output_apart_and_a_silent_console_timed_out(tmp_path: Path) -> None:
    shell = LabgridShell(TARGET, HostShell())
    work = tmp_path / "machine"
    work.mkdir()
    end = shell.run_job("echo out; echo KEDR-STATUS 0 >&2", tmp_path / "o", tmp_path / "e",
                        60, str(work))
    assert not end.timed_out and not end.lost
    assert (tmp_path / "o").read_bytes() == b"out\n"
    assert (tmp_path / "e").read_bytes() == b"KEDR-STATUS 0\n"
    assert list(work.iterdir()) == []
    end = LabgridShell(TARGET, Silent()).run_job("true", tmp_path / "o", tmp_path / "e", 5,
                                                 str(work))
    assert end.timed_out and (tmp_path / "o").read_bytes() == b""


class Echo:
    """A console whose machine echoes a byte at a time (a TCG guest's serial line),
    read through labgrid's own pexpect wrapper as its ShellDriver reads it."""

    def __init__(self, data: bytes) -> None:
        from labgrid.util.expect import PtxExpect

        self.data = data
        self._expect = PtxExpect(self)

    def read(self, size: int = 1, timeout: float = 0.0, max_size: int | None = None) -> bytes:
        from pexpect import TIMEOUT

        if not self.data:
            raise TIMEOUT("nothing more")
        byte, self.data = self.data[:1], self.data[1:]
        return byte


def test_the_logged_in_console_is_read_without_a_pause_per_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pexpect sleeps after each read unless told not to: with a byte a read, a
    copy's echo was one sleep a byte (66 s of a 72 s copy on a loaded host)."""
    import pexpect.expect

    console = Echo(b"x" * 3000 + b"END")
    driver = SimpleNamespace(console=console)
    try:
        labgrid._logged_in(TARGET, driver)
    finally:
        labgrid._SHELLS.pop(TARGET, None)
    sleeps: list[float] = []
    monkeypatch.setattr(pexpect.expect.time, "sleep", sleeps.append)
    console._expect.expect(b"END", timeout=10)
    assert console.data == b"" and sleeps == []
