"""The fuzzer's record and a reduction's resume state in memory the host reads after the
guest is gone (kedr_build/vm/shm.py), with the real static kfuzz on the host: /dev/null
stands for the device (a seed's operations depend on the seed only), a file of the
ivshmem's size for its memory, and an oracle that kills ``kfuzz -M`` mid-attempt for a
guest that died."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

from kedr_build.vm import fuzzer, reboots, shm
from kedr_build.vm.console import KernelProblem, ProblemKind
from kedr_build.vm.qemu import VmResult, Verdict
from kedr_build.vm.runner import RunReport, Step, lost_mid_fuzz


def kfuzz(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(fuzzer.build()), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def memory(tmp_path: Path, threads: int = 1) -> Path:
    f = tmp_path / shm.FILE
    with f.open("wb") as out:
        out.truncate(shm.size(threads))
    return f


def test_size_is_a_power_of_two_that_holds_the_record() -> None:
    one, sixteen = shm.size(1), shm.size(16)
    assert one & (one - 1) == 0 and sixteen & (sixteen - 1) == 0
    assert 2 * 1024 * 1024 < one < sixteen       # a thread keeps 32768 ops of 64 bytes


def test_record_in_fixed_memory_read_back_by_the_host(tmp_path: Path) -> None:
    mem = memory(tmp_path)
    proc = kfuzz("-s", "12", "-n", "40", "-j", "1", "-r", str(mem), "-F", "/dev/null")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert mem.stat().st_size == shm.size(1)      # not truncated to the record's size
    back = shm.read(mem)
    assert not back.resume
    ops = [ln for ln in back.sequence.splitlines() if ln.startswith("op ")]
    assert len(ops) == 40 and back.sequence.startswith("kfuzz-seq seed=12\npath 0 /dev/null\n")
    # the same ops as a tmpfs record of the same seed
    kfuzz("-s", "12", "-n", "40", "-j", "1", "-r", str(tmp_path / "rec"), "/dev/null")
    kfuzz("-E", str(tmp_path / "rec"), "-o", str(tmp_path / "rec.seq"))
    assert (tmp_path / "rec.seq").read_text() == back.sequence


def test_fixed_memory_too_small_is_one_line(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"\0" * 4096)
    proc = kfuzz("-s", "1", "-n", "10", "-r", str(small), "-F", "/dev/null")
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        f"KFUZZ error: {small}: 4096 bytes, {_record_bytes(2)} needed"]
    assert small.stat().st_size == 4096


def _record_bytes(threads: int) -> int:
    return 2072 + 24 + threads * (8 + 32768 * 64) + 8     # + the heartbeat


def test_empty_memory_reads_as_nothing(tmp_path: Path) -> None:
    assert shm.read(memory(tmp_path)) == shm.Readback()
    assert shm.read(tmp_path / "absent") == shm.Readback()


DIES_ON = """# attempt N dies: kfuzz -M (this script's grandparent) is killed mid-attempt
n=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {count}
head -n {lines} "$1" > "$1.pre"   # the replay got this far (seed and path: 2 lines)
{kfuzz} -p "$1.pre" > /dev/null
[ $n -lt {die} ] || kill -9 $(awk '{{print $4}}' /proc/$PPID/stat)
exit 0
"""


def died_at(tmp_path: Path, die: int, ops: int = 1000) -> shm.Readback:
    """kfuzz -M over a 12-op record whose every attempt fails, the guest dying in
    attempt ``die`` at its op ``ops`` at the latest: what the memory says to resume
    from."""
    kfuzz("-s", "3", "-n", "12", "-j", "1", "-r", str(tmp_path / "rec"), "/dev/null")
    oracle = tmp_path / "oracle.sh"
    oracle.write_text(DIES_ON.format(count=tmp_path / "n", kfuzz=fuzzer.build(), die=die,
                                    lines=ops + 2))
    mem = memory(tmp_path)
    proc = kfuzz("-M", str(tmp_path / "rec"), "-o", str(tmp_path / "out.seq"), "-a", "50",
                 "-c", str(oracle), env={"KFUZZ_SHM": str(mem)})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    return shm.read(mem)


def test_resume_state_of_an_attempt_the_guest_died_in(tmp_path: Path) -> None:
    # Attempt 1 (all 12 ops) fails; attempt 2 (the first half, 6 ops) kills the guest.
    back = died_at(tmp_path, 2)
    assert back.resume and back.inflight
    assert (back.attempts, back.gran, back.located) == (2, 2, True)
    ops = [ln for ln in back.sequence.splitlines() if ln.startswith("op ")]
    assert [int(ln.split()[2]) for ln in ops] == list(range(1, 7))
    assert len(back.ops) == 6 and back.ops[0].startswith("t0#1 open path=/dev/null")
    # dying in the first attempt (the whole, its op in flight the last: all kept)
    (tmp_path / "whole").mkdir()
    first = died_at(tmp_path / "whole", 1)
    assert (first.attempts, len(first.ops), first.located) == (1, 12, True)
    # ... at its 5th op: the ops after the one in flight are dropped
    (tmp_path / "cut").mkdir()
    cut = died_at(tmp_path / "cut", 1, 5)
    assert (cut.attempts, len(cut.ops), cut.located) == (1, 5, True)
    assert cut.ops[-1].startswith("t0#5 ")


def lost(tmp_path: Path, *problems: ProblemKind, timed_out: bool = False) -> VmResult:
    return VmResult(status=None, output="", console="", timed_out=timed_out, elapsed=1.0,
                    problems=tuple(KernelProblem(k, "x", "x") for k in problems),
                    command=(), workdir=tmp_path)


def test_a_reduction_boot_that_died_resumes_from_the_memory(tmp_path: Path) -> None:
    died_at(tmp_path, 2)
    crashed = lost(tmp_path, ProblemKind.OOPS, ProblemKind.PANIC)
    end = reboots.resumed_from("crash", crashed)
    assert (end.kind, end.attempts, end.gran, end.located, len(end.ops)) == \
        ("reboot", 2, 2, True, 6)
    assert end.sequence.count("\nop ") == 6
    # Ended as another failure than the one reduced: not an attempt that failed.
    assert reboots.resumed_from("hang", crashed).kind == "lost"
    assert reboots.resumed_from("crash", lost(tmp_path, timed_out=True)).kind == "lost"
    assert reboots.resumed_from("hang", lost(tmp_path, timed_out=True)).kind == "reboot"
    assert reboots.resumed_from("taint", crashed).kind == "lost"


def test_a_fuzz_step_lost_becomes_a_sequence_to_reduce(tmp_path: Path) -> None:
    mem = memory(tmp_path)
    kfuzz("-s", "12", "-n", "9", "-j", "1", "-r", str(mem), "-F", "/dev/null")
    record = shm.read(mem)
    base = RunReport(verdict=Verdict.KERNEL_PROBLEM, reason="x", steps=(Step("insmod", "m", 0),),
                     driver_log=(), workload_output="", problems=(
                         KernelProblem(ProblemKind.OOPS, "Oops", "Oops"),),
                     elapsed=1.0, logs=tmp_path, lost=True)
    seq = lost_mid_fuzz(base, record).fuzz_sequence
    assert seq[0] == "class crash" and sum(ln.startswith("op ") for ln in seq) == 9
    hang = lost_mid_fuzz(dataclasses.replace(base, problems=()), record).fuzz_sequence
    assert hang[0] == "class hang"
    # the fuzz step ended (its status came back): the guest died later, not reduced here
    ended = dataclasses.replace(base, steps=(Step("fuzz", "kfuzz", 0),))
    assert lost_mid_fuzz(ended, record).fuzz_sequence == ()
    assert lost_mid_fuzz(dataclasses.replace(base, lost=False), record).fuzz_sequence == ()


def test_reduction_boot_job_has_the_device_and_a_crash_oracle(tmp_path: Path) -> None:
    loads = reboots.FreshLoads((), ("kedr_repl_x",), ("x",), {})
    seq = "kfuzz-seq seed=1\npath 0 /dev/x\nop 1 3 0 0 0 0 0 8 0 0 0 0\n"
    job = loads.job("guest-reduce.sh.j2", tmp_path, seq, with_shm=True, cls="crash", hang=3,
                    attempts=40, used=0, seconds=100, gran=2, resumed=False, located=False,
                    replay=False, seq_begin="B", seq_end="E")
    assert job.qemu_args == (
        "-object", f"memory-backend-file,id=kedrshm,share=on,mem-path={tmp_path / shm.FILE},"
        f"size={shm.size(2)}", "-device", "ivshmem-plain,memdev=kedrshm")   # threads 0, 1
    (tmp_path / "job.sh").write_text(job.script)
    subprocess.run(["sh", "-n", str(tmp_path / "job.sh")], check=True)
    # a crash's lines reach the console (the host judges a guest that died by them)
    assert "echo 4 > /proc/sys/kernel/printk" in job.script
    assert '[ -z "$shm" ] || { export KFUZZ_SHM=$shm; /kedr/kfuzz -B $shm & }' in job.script
    assert "dmesg | grep -qE 'BUG:|Oops|general protection'" in job.script
    hang = loads.job("guest-reduce.sh.j2", tmp_path, seq, cls="hang", hang=3, attempts=40,
                     used=0, seconds=100, gran=2, resumed=False, located=False, replay=False,
                     seq_begin="B", seq_end="E")
    assert hang.qemu_args == () and "echo 1 > /proc/sys/kernel/printk" in hang.script


def test_heartbeat_counts_up_and_stops_at_zero(tmp_path: Path) -> None:
    mem = memory(tmp_path)
    assert shm.beat(mem) is None                     # not started: not watched
    proc = subprocess.Popen([str(fuzzer.build()), "-B", str(mem)])
    try:
        seen = set()
        for _ in range(20):
            seen.add(shm.beat(mem))
            if len(seen - {None}) >= 2:
                break
            time.sleep(0.2)
        assert len(seen - {None}) >= 2, seen          # it changes while the guest lives
    finally:
        proc.terminate()
        assert proc.wait(5) == 0
    assert shm.beat(mem) is None                     # stopped on purpose: 0



def test_a_guest_stopped_for_its_stopped_heartbeat_says_so(tmp_path: Path) -> None:
    stopped = dataclasses.replace(lost(tmp_path, timed_out=True), stalled=True, elapsed=24.2)
    assert stopped.reason() == ("the guest locked up: its heartbeat stopped, and the VM was "
                                "stopped 24 s in")
    assert reboots.died_failing("hang", stopped)     # a lockup: a hang's failing attempt
