"""A labgrid machine's job watched on its console (kedr_build/targets/watch.py, issue 21):
its end, a crash report and silence each end the wait when they happen, not when the
job's time is up; and a job without a status is judged crash, hang or lost alike in a
run's report and a sweep's site (faults/trials.py).

The console is a stand-in for labgrid's console driver (expect over what the machine
writes at given times, sendline of the watch's probes) on a clock of its own, so
"when" is the clock's and nothing here waits; the job itself runs in the host's sh,
its output and status read back as from the machine. The real console:
tests/test_target_sweep_vm.py.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pexpect import TIMEOUT

from kedr_build.faults.trials import Outcome, Trial, run_trials
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.targets.labgrid import LabgridShell
from kedr_build.targets.machine import LOST_BOUND, JobEnd, _lost_reason, run_job
from kedr_build.targets.spec import LabgridTarget
from kedr_build.targets.watch import POLL
from kedr_build.vm.console import find_problems
from kedr_build.vm.qemu import GuestJob, VmResult

TARGET = LabgridTarget(Path("/lab/lab.yaml"))
PANIC = b"[    9.101] Kernel panic - not syncing: Fatal exception\r\n"
OOPS = b"[    9.100] BUG: kernel NULL pointer dereference, address: 0000000000000000\r\n"
NEVER = float("inf")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Machine:
    """labgrid's ShellDriver (run) and its console (expect, sendline, _expect.before)
    on a machine that writes ``writes`` on its console at their times, ends a job
    ``job_seconds`` after it starts (NEVER: it does not) and answers until ``dies``."""

    def __init__(self, clock: Clock, writes: Sequence[tuple[float, bytes]] = (),
                 job_seconds: float = NEVER, dies: float = NEVER) -> None:
        self.clock, self.job_seconds, self.dies = clock, job_seconds, dies
        self.writes = sorted(writes)
        self.buffer = b""
        self.typed: list[str] = []
        self._expect = SimpleNamespace(before=b"")
        self.console = self

    # ShellDriver.run
    def run(self, cmd: str, timeout: float = 30.0, codec: str = "utf-8",
            decodeerrors: str = "strict") -> tuple[list[str], list[str], int]:
        if self.clock.now >= self.dies:
            self.clock.now += timeout
            raise TIMEOUT(f"Timeout of {timeout:.2f} seconds exceeded")
        job = "wrapper.sh" in cmd
        if job and cmd.endswith(" &"):          # in the background: its end line later
            proc = subprocess.run(["sh", "-c", cmd[:-2]], capture_output=True)
            if self.clock.now + self.job_seconds < self.dies:
                self._write(self.clock.now + self.job_seconds, proc.stdout.replace(b"\n", b"\r\n"))
            return [], [], 0
        if job and self.clock.now + self.job_seconds >= min(self.dies, self.clock.now + timeout):
            self.clock.now += timeout           # the job as one command: the wait is its time
            raise TIMEOUT(f"Timeout of {timeout:.2f} seconds exceeded")
        proc = subprocess.run(["sh", "-c", cmd], capture_output=True)
        return proc.stdout.decode(codec, decodeerrors).splitlines(), [], proc.returncode

    def _write(self, when: float, data: bytes) -> None:
        self.writes = sorted([*self.writes, (when, data)])

    # the console driver
    def sendline(self, line: str) -> None:
        self.typed.append(line)
        if self.clock.now < self.dies:
            answer = line.split(" ", 1)[1].replace("''", "")
            self._write(self.clock.now + 0.3, f"{line}\r\n{answer}\r\n/ # ".encode())

    def expect(self, patterns: list[re.Pattern[bytes]], timeout: float
               ) -> tuple[int, bytes, re.Match[bytes], bytes]:
        until = self.clock.now + timeout
        while True:
            found = [(m.start(), i, m) for i, p in enumerate(patterns)
                     if (m := p.search(self.buffer))]
            if found:
                _, i, m = min(found, key=lambda f: (f[0], f[1]))
                before, self.buffer = self.buffer[:m.start()], self.buffer[m.end():]
                self._expect.before = before
                return i, before, m, m.group(0)
            if self.writes and self.writes[0][0] <= until:
                when, data = self.writes.pop(0)
                self.clock.now = max(self.clock.now, when)
                self.buffer += data
                continue
            self.clock.now = until
            self._expect.before = self.buffer
            raise TIMEOUT(f"Timeout of {timeout:.2f} seconds exceeded")


def job(machine: Machine, tmp_path: Path, timeout: float = 3600.0) -> tuple[JobEnd, Path]:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / "wrapper.sh").write_text("echo out; echo KEDR-STATUS 0 >&2\n")
    shell = LabgridShell(TARGET, machine, clock=machine.clock)
    end = shell.run_job(f"sh {root}/wrapper.sh", tmp_path / "o", tmp_path / "e", timeout,
                        str(root))
    return end, root


def test_a_job_that_ends_is_read_back_and_the_machine_was_asked_meanwhile(
        tmp_path: Path) -> None:
    clock = Clock()
    machine = Machine(clock, job_seconds=12.0)
    end, root = job(machine, tmp_path)
    assert end.ended and end == JobEnd()
    assert (tmp_path / "o").read_bytes() == b"out\n"
    assert (tmp_path / "e").read_bytes() == b"KEDR-STATUS 0\n"
    assert list(root.iterdir()) == [root / "wrapper.sh"]      # the spool files are gone
    # Probed every POLL seconds of quiet, answered each time (the typed line hides
    # the answer from the console's echo of it).
    assert len(machine.typed) == 2 and "''" in machine.typed[0]
    assert clock.now == pytest.approx(12.0)


def test_a_panic_on_the_console_ends_the_wait_at_once(tmp_path: Path) -> None:
    clock = Clock()
    machine = Machine(clock, writes=[(3.0, PANIC)], dies=3.0)
    end, _ = job(machine, tmp_path)
    # Without the watch the job was one command on the console: no answer for its
    # whole 3600 s.
    assert end.crashed == "Kernel panic - not syncing: Fatal exception", end
    assert clock.now == pytest.approx(3.0)
    assert [p.line for p in find_problems(end.console)] == [end.crashed]
    assert (tmp_path / "o").read_bytes() == b""


def test_a_panic_after_the_shells_escape_sequence_is_still_a_panic(tmp_path: Path) -> None:
    # As recorded on a labgrid lab machine (tests/test_target_kinds_vm.py, debian-6.12,
    # panic_on_warn=1): busybox ash's cursor-position query, ESC [6n, went out just
    # before the panic's line. It was not found, and the run was judged a hang after
    # LOST_BOUND s of silence.
    clock = Clock()
    panic = (b"\x1b[6n[   39.111939] Kernel panic - not syncing: kernel: panic_on_warn "
             b"set ...\r\n")
    machine = Machine(clock, writes=[(3.0, panic)], dies=3.0)
    end, _ = job(machine, tmp_path)
    assert end.crashed == "Kernel panic - not syncing: kernel: panic_on_warn set ...", end
    assert clock.now == pytest.approx(3.0)


def test_an_oops_gives_the_job_the_crash_grace_then_ends_it(tmp_path: Path) -> None:
    # The machine goes on (the oops killed one task); the job does not end.
    clock = Clock()
    end, _ = job(Machine(clock, writes=[(3.0, OOPS)]), tmp_path)
    assert end.crashed.startswith("BUG: kernel NULL pointer dereference"), end
    assert clock.now == pytest.approx(3.0 + 30.0)          # crash_grace(3 s): 30 s
    # ... a panic after it (oops=panic) ends it then, the oops its finding ...
    clock = Clock()
    end, _ = job(Machine(clock, writes=[(3.0, OOPS), (4.0, PANIC)], dies=4.0), tmp_path)
    assert end.crashed.startswith("BUG: kernel NULL pointer dereference"), end
    assert clock.now == pytest.approx(4.0)
    # ... a soft lockup (KERN_EMERG: on the console) is no crash: no grace, the wait
    # goes on (dmesg judges it) ...
    clock = Clock()
    lockup = b"[   30.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [insmod:99]\r\n"
    end, _ = job(Machine(clock, writes=[(3.0, lockup)], job_seconds=50.0), tmp_path)
    assert end.ended and clock.now == pytest.approx(50.0), end
    # ... and one that ends in the grace is read back as any other (dmesg judges it).
    clock = Clock()
    end, _ = job(Machine(clock, writes=[(3.0, OOPS)], job_seconds=8.0), tmp_path)
    assert end.ended and (tmp_path / "e").read_bytes() == b"KEDR-STATUS 0\n"


def test_silence_is_a_hang_after_lost_bound_and_a_live_machine_after_the_timeout(
        tmp_path: Path) -> None:
    clock = Clock()
    end, _ = job(Machine(clock, dies=2.0), tmp_path)
    assert end.silent == pytest.approx(LOST_BOUND) and not end.crashed, end
    assert clock.now == pytest.approx(LOST_BOUND)
    clock = Clock()
    end, _ = job(Machine(clock), tmp_path, timeout=40.0)
    assert end.timed_out and end.answering and not end.silent, end
    assert clock.now == pytest.approx(40.0)


class Lost:
    """A Transport whose job ends as ``end`` says (for run_job's judgement)."""

    def __init__(self, end: JobEnd) -> None:
        self.end = end

    def __str__(self) -> str:
        return "labgrid:/lab/lab.yaml"

    def command_line(self, command: str) -> list[str]:
        return ["sh", "-c", command]

    def run_job(self, command: str, out: Path, err: Path, timeout: float,
                workdir: str) -> JobEnd:
        out.write_bytes(b"")
        err.write_bytes(b"")
        return self.end


ENDS = {
    "crash": (JobEnd(crashed="Kernel panic - not syncing: Fatal exception",
                     console=PANIC.decode()),
              "crash (oops/panic on the console: Kernel panic - not syncing: Fatal exception; "
              "then no status)"),
    "hang": (JobEnd(silent=LOST_BOUND), "hang (no answer in 60 s)"),
    "hang, answering": (JobEnd(timed_out=True, answering=True),
                        "hang (no status after 300 s, the machine still answering)"),
    "lost": (JobEnd(lost="the ssh session ended without a status"),
             "lost (the ssh session ended without a status)"),
}


@pytest.mark.parametrize("name", ENDS)
def test_the_run_report_says_crash_hang_or_lost(name: str, tmp_path: Path) -> None:
    end, words = ENDS[name]
    conn = Lost(end)
    result = run_job(cast(Any, conn), "/tmp/kedr-build-x", "t", tmp_path, 300.0, 0.0)
    assert result.status is None
    assert _lost_reason(result, cast(Any, conn)) == f"TARGET=labgrid:/lab/lab.yaml: {words}"


class OneTrial:
    """A machine guest (faults/guest.py's Guest) whose one trial ends without a status
    as ``result`` says, and that cannot be restarted."""

    name, root, scratch, one_at_a_time, boots = "m", "/tmp/k", "/tmp/k", True, 1

    def __init__(self, **result: Any) -> None:
        self.result = result

    def run(self, job: GuestJob, workdir: Path, timeout: float, stream: Any) -> VmResult:
        return VmResult(status=None, output="", elapsed=1.0, command=(), workdir=workdir,
                        **{"console": "", "problems": (), "timed_out": False, **self.result})

    def recover(self) -> str:
        return "no power driver"


@pytest.mark.parametrize("result, outcome, verdict", [
    (dict(console=PANIC.decode(), problems=tuple(find_problems(PANIC.decode())),
          lost_why="then no status"),
     Outcome.CRASH, "crash: Kernel panic - not syncing: Fatal exception"),
    (dict(timed_out=True, lost_why="no answer in 60 s"), Outcome.HANG,
     "hang: no answer in 60 s"),
    (dict(qemu_error="the ssh session ended without a status",
          lost_why="the ssh session ended without a status"),
     Outcome.LOST, "lost: the ssh session ended without a status"),
])
def test_a_sweep_site_without_a_status_is_crash_hang_or_lost(
        result: dict[str, Any], outcome: Outcome, verdict: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One real .ko plays both modules (the machine never loads them): no load order.
    ko = Path(__file__).resolve().parent / "data" / "leaks" / "kedr_leaker.ko"
    monkeypatch.setattr("kedr_build.faults.trials.load_order", lambda modules: ([], []))
    run = run_trials(cast(ProvisionedKernel, None), ko, ko, tmp_path,
                     trials=[Trial("one", (("kmalloc", "nth=1"),))],
                     guest=cast(Any, OneTrial(**result)))
    (record,) = run.records
    assert (record.outcome, record.verdict) == (outcome, verdict)
    assert run.stopped.endswith(f"({outcome.value}): no power driver")
