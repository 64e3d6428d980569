"""A race's reduction without a VM (kedr_build/vm/races.py): ddmin over the kinds of
operation and the threads with a rate bar, the halving, the search of the ioctl
commands by halves, the verification and the report's text, against fake oracles
whose failure rate depends on what a sequence keeps; the guest's replay script
(guest-race.sh.j2) in sh with its tools faked; kfuzz -p -P's threads seen by strace
(issue 20)."""

from __future__ import annotations

import math
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.packs import pack
from kedr_build.resources import template_env
from kedr_build.vm import fuzzer, raceboot, races

# kfuzz.c's op kinds: open 0, close 1, storm 2, read 3, write 4, ioctl 5, poll 6, mmap 7
HEADER = "kfuzz-seq seed=1\npath 0 /dev/kedr_racefree\n"


def recording(per_thread: int = 400, threads: int = 2, cmds: tuple[int, ...] = (0x4004ab01,
              0xc008ab02, 0x0000ab03), seed: int = 1) -> str:
    rng = random.Random(seed)
    lines = []
    for t in range(threads):
        for i in range(1, per_thread + 1):
            kind = rng.choice((0, 1, 2, 3, 4, 5, 5, 6, 7))
            cmd = rng.choice(cmds) if kind == 5 else 0
            lines.append(f"op {t} {i} {kind} 0 0 0 0 16 0 {cmd} 0 0")
    return HEADER + "".join(f"{ln}\n" for ln in lines)


def kept(text: str) -> tuple[set[int], set[int], dict[int, int]]:
    """threads, op kinds, ops per thread of a sequence file's text."""
    ops = [ln.split() for ln in text.splitlines() if ln.startswith("op ")]
    per: dict[int, int] = {}
    for o in ops:
        per[int(o[1])] = per.get(int(o[1]), 0) + 1
    return {int(o[1]) for o in ops}, {int(o[3]) for o in ops}, per


class RaceBoot:
    """A fake VM: a replay fails with probability ``p(text)``; a failure ends the boot."""

    def __init__(self, p: Callable[[str], float], seed: int = 7) -> None:
        self.p, self.rng, self.replays = p, random.Random(seed), 0

    def __call__(self, text: str, n: int) -> tuple[int, int]:
        for i in range(1, n + 1):
            self.replays += 1
            if self.rng.random() < self.p(text):
                return 1, i
        return 0, n


def racefree(volume: int = 200) -> Callable[[str], float]:
    """Like tests/drivers/racefree: needs two threads, opens/closes and ioctls (any
    command), and enough of them: the rate falls with the ioctls and closes kept."""
    def p(text: str) -> float:
        threads, kinds, _ = kept(text)
        if len(threads) < 2 or not {0, 1} & kinds or 5 not in kinds:
            return 0.0
        ioctls = sum(1 for ln in text.splitlines() if ln.split()[3:4] == ["5"])
        return min(1.0, ioctls / volume)
    return p


def oracle(boot: races.Boot, replays: int = 5, attempts: int = 100,
           seconds: float = 1e9) -> races.Oracle:
    ticks = iter(range(10**9))
    return races.Oracle(boot, replays, attempts, seconds, clock=lambda: float(next(ticks)))


def test_reduces_to_the_racing_kinds_keeping_both_threads() -> None:
    text = recording()
    boot = RaceBoot(racefree(volume=60))
    r = races.reduce("leaks", text, oracle(boot))
    assert r.reduced, r.describe()
    threads, kinds, _ = kept(r.sequence)
    assert threads == {0, 1} and kinds <= {0, 1, 2, 5} and 5 in kinds, kinds
    assert r.threads == (0, 1) and "open/close" in r.kinds and any(
        k.startswith("ioctl") for k in r.kinds), r.kinds
    assert not {"read", "write", "poll", "mmap"} & set(r.kinds), r.kinds
    assert r.verified is not None and r.verified.fails >= r.bar == 3, r
    assert r.whole == races.Rate(5, 5)
    assert r.ops < len(races.Recording.parse(text).ops)
    assert re.fullmatch(
        r"race reduced to (open/close|ioctl cmd=0x\w+)( and (open/close|ioctl cmd=0x\w+))+, "
        r"2 threads, \d+ operations: replayed concurrently failed [345] of 5; the whole "
        r"recording \(800 operations\), replayed concurrently in 5 fresh loads, failed 5 of "
        r"5 \(ddmin over kinds and threads, a subset holding when it failed at least 3 of 5; "
        r"\d+ attempts, \d+ fresh boots, \d+ s \(budget 100 attempts, 1e\+09 s\)\)",
        r.describe()), r.describe()


def test_ioctl_commands_are_kinds_of_their_own_only_when_few() -> None:
    few = races.Recording.parse(recording(cmds=(1, 2)))
    assert {k for k in few.kinds() if k.startswith("ioctl")} == {"ioctl cmd=0x00000001",
                                                                 "ioctl cmd=0x00000002"}
    many = races.Recording.parse(recording(cmds=tuple(range(1, 40))))
    ioctls = [k for k in many.kinds() if k.startswith("ioctl")]
    assert len(ioctls) == 1 and re.fullmatch(r"ioctl \((3\d) commands\)", ioctls[0]), ioctls


def test_a_command_the_race_needs_is_kept_the_others_dropped() -> None:
    """Only ioctl 0xc008ab02 opens the window: the other commands go."""
    def p(text: str) -> float:
        threads, kinds, _ = kept(text)
        hits = sum(1 for ln in text.splitlines() if ln.endswith(f" {0xc008ab02} 0 0"))
        return min(1.0, hits / 30) if len(threads) == 2 and 1 in kinds else 0.0
    r = races.reduce("kernel", recording(), oracle(RaceBoot(p)))
    assert r.reduced and "ioctl cmd=0xc008ab02" in r.kinds, r.describe()
    assert not {"ioctl cmd=0x4004ab01", "ioctl cmd=0x0000ab03"} & set(r.kinds), r.kinds


RACY = 0xc008ab02


def many_commands(per_thread: int = 1500, seed: int = 1) -> str:
    """A recording whose ioctls have more than 1,000 commands, as kfuzz's do: a quarter
    of them one of 4 commands the driver answers, the rest random (mostly once each)."""
    rng = random.Random(seed)
    answered = (0x4004ab01, RACY, 0x0000ab03, 0x8004ab04)
    lines = []
    for t in range(2):
        for i in range(1, per_thread + 1):
            kind = rng.choice((0, 1, 2, 3, 5, 5, 5, 5, 5))
            cmd = 0 if kind != 5 else rng.choice(answered) if rng.random() < 0.25 else \
                rng.getrandbits(32)
            lines.append(f"op {t} {i} {kind} 0 0 0 0 16 0 {cmd} 0 0")
    return HEADER + "".join(f"{ln}\n" for ln in lines)


def ioctls(text: str, cmd: int | None = None) -> int:
    return sum(1 for o in (ln.split() for ln in text.splitlines() if ln.startswith("op "))
               if o[3] == "5" and (cmd is None or int(o[10]) == cmd))


def needs(*cmds: int, volume: int = 30) -> Callable[[str], float]:
    """A race between two threads' opens/closes and the ioctls of ``cmds`` (each), its
    rate rising with their number; no ``cmds``: any command, as racefree's."""
    def p(text: str) -> float:
        threads, kinds, _ = kept(text)
        if len(threads) < 2 or not {0, 1, 2} & kinds:
            return 0.0
        return min(1.0, *(ioctls(text, c) / volume for c in cmds or (None,)))
    return p


def test_one_command_among_a_thousand_is_named() -> None:
    """More than 8 commands: ddmin over kinds keeps the ioctls as one kind, then the
    commands are searched by halves (a race needing one command: that command), in
    the halving before the last, which is halved again."""
    text = many_commands()
    recorded = len(races.Recording.parse(text).commands())
    assert recorded > 1000, recorded
    r = races.reduce("leaks", text, oracle(RaceBoot(needs(RACY))))
    assert r.reduced and r.kinds == ("open/close", f"ioctl cmd={RACY:#010x}"), r.describe()
    assert {ln.split()[10] for ln in r.sequence.splitlines()
            if ln.split()[3:4] == ["5"]} == {str(RACY)}, r.describe()
    assert r.verified is not None and r.verified.fails >= r.bar, r.describe()
    assert 8 < r.searched < recorded and r.attempts <= 30, r.describe()
    assert re.search(r"\(ddmin over kinds and threads, then \d+ ioctl commands by halves, a "
                     r"subset holding when it failed at least 3 of 5; \d+ attempts", r.describe())


def test_the_commands_search_is_logarithmic() -> None:
    """Binary: at most 2 log2(commands) attempts, to the one command or to the half
    holding two a race needs; a race that needs volume, not a command, keeps what it
    needs, and the search stops at the first halves that both fail."""
    seq = races.Recording.parse(many_commands())
    n = len(seq.commands())
    for racy in ((RACY,), (RACY, 0x8004ab04)):
        tried: list[races.Recording] = []

        def holds(r: races.Recording) -> bool:
            tried.append(r)
            return all(ioctls(r.text(), c) > 0 for c in racy)
        got = races.commands(seq, holds).commands()
        assert set(racy) <= set(got) and len(got) <= 4 * len(racy) - 3, got
        assert len(tried) <= 2 * math.ceil(math.log2(n)), len(tried)
    tried = []

    def volume(r: races.Recording) -> bool:
        tried.append(r)
        return ioctls(r.text()) >= 100
    got = races.commands(seq, volume).commands()
    assert 100 <= ioctls(seq.only(got).text()) < 200 and len(tried) <= 2 * math.ceil(
        math.log2(n)), (len(got), len(tried))
    few = races.Recording.parse(recording())
    assert races.commands(few, lambda r: pytest.fail("searched")) is few


def test_plain_ddmin_crawls_down_a_race_that_needs_volume() -> None:
    """Why the commands are searched by halves: a race needing 100 ioctls of any command,
    each command once (racefree's): plain ddmin's finer chunks and complements crawl to
    exactly 100 commands, an attempt a chunk; halves stop at the first that both fail."""
    cmds = list(range(1269))
    attempts: dict[int, int] = {}
    for finest in (0, 2):
        calls: list[int] = []

        def volume(kept: tuple[int, ...]) -> bool:
            calls.append(len(kept))
            return len(kept) >= 100
        got = races.ddmin(cmds, volume, finest=finest)
        attempts[finest] = len(calls)
        assert 100 <= len(got) < 200, (finest, len(got))
    assert attempts == {0: 466, 2: 5}, attempts


def test_a_race_needing_volume_names_how_many_commands() -> None:
    """Any command races (racefree's): the search keeps the commands whose ioctls give
    the volume, and the report says how many of how many, exactly the sequence's."""
    text = many_commands(seed=2)
    recorded = len(races.Recording.parse(text).commands())
    r = races.reduce("leaks", text, oracle(RaceBoot(needs(volume=60), seed=3)))
    assert r.reduced, r.describe()
    cmds = races.Recording.parse(r.sequence).commands()
    assert r.kinds == ("open/close", f"ioctl ({len(cmds)} of {recorded} commands)"), r.kinds
    assert 8 < len(cmds) < r.searched < recorded, (len(cmds), r.searched)


def test_noise_is_not_a_reproducer() -> None:
    """Every sequence fails now and then by luck (1 in 10): one failure in R is what the
    old any-1-of-R predicate kept. The bar (3 of 5) refuses it: no kind drops, and what
    is reported is the whole recording, verified."""
    def p(text: str) -> float:
        return 0.9 if len(kept(text)[1]) == 8 and len(kept(text)[0]) == 2 else 0.1
    r = races.reduce("leaks", recording(), oracle(RaceBoot(p)))
    assert r.whole.fails >= 4, r
    assert not r.reduced or kept(r.sequence)[1] == set(range(8)), r.describe()
    assert r.reduced or not r.sequence


def test_below_the_bar_in_verification_it_is_not_reduced() -> None:
    """The search's subsets held, by luck, but the verification's R replays fail under
    the bar: not reduced, the whole recording's rate said, no sequence."""
    def boot(text: str, n: int) -> tuple[int, int]:
        whole = len(kept(text)[1]) == 8
        # the whole recording and the search's subsets fail (the search asks for 3
        # replays at most a boot); the verification (5 replays a boot) does not
        return (1, 1) if whole or n < 5 else (0, n)
    r = races.reduce("leaks", recording(), oracle(boot, attempts=6))
    assert not r.reduced and not r.sequence and r.verified == races.Rate(0, 5), r
    assert re.fullmatch(
        r"not reduced \(the reduced sequence \(.+, 2 threads, \d+ operations\) replayed "
        r"concurrently failed 0 of 5, under the bar of 3 of 5; 6 attempts, \d+ fresh boots, "
        r"\d+ s \(budget 6 attempts, 1e\+09 s\)\); the whole recording \(800 operations\), "
        r"replayed concurrently in 5 fresh loads, failed 5 of 5", r.describe()), r.describe()


def test_a_rare_race_is_not_reduced_and_says_its_rate() -> None:
    r = races.reduce("leaks", recording(), oracle(RaceBoot(lambda text: 0.0)))
    assert not r.reduced and r.attempts == 0 and r.boots == 1, r
    assert r.describe().startswith(
        "not reduced (the whole recording failed 0 of 5 replayed concurrently, under 2: "
        "too rare to tell a reproducer from luck; 0 attempts, 1 fresh boots"), r.describe()
    assert r.describe().endswith("the whole recording (800 operations), replayed "
                                 "concurrently in 5 fresh loads, failed 0 of 5")


def test_a_lost_guest_stops_it() -> None:
    r = races.reduce("kernel", recording(), oracle(lambda text, n: (0, 0)))
    assert not r.reduced and r.describe().startswith(
        "not reduced (a boot replaying the whole recording gave no answer"), r.describe()


def test_rates_stop_early_and_each_failure_costs_a_boot() -> None:
    boot = RaceBoot(lambda text: 1.0)
    o = oracle(boot)
    assert o.rate("x") == races.Rate(5, 5) and o.boots == 5
    assert o.rate("x", need=3) == races.Rate(3, 3) and o.boots == 8
    never = oracle(RaceBoot(lambda text: 0.0))
    assert never.rate("x", need=3) == races.Rate(0, 3) and never.boots == 1
    assert races.bar_for(races.Rate(5, 5)) == 3 and races.bar_for(races.Rate(4, 5)) == 2
    assert races.bar_for(races.Rate(1, 5)) == 2


def test_the_budget_ends_the_search_not_the_verification() -> None:
    r = races.reduce("leaks", recording(), oracle(RaceBoot(racefree(volume=60)), attempts=1))
    assert r.attempts == 1 and not r.reduced and r.describe().startswith(
        "not reduced (no kind of operation or thread could be dropped with the rate at 3 "
        "of 5 or more before the budget ran out; 1 attempts,"), r.describe()
    r = races.reduce("leaks", recording(), oracle(RaceBoot(racefree(volume=60)), attempts=3))
    assert r.attempts == 3 and r.verified is not None and r.verified.replays == 5, r


def test_ddmin_one_minimal() -> None:
    tests: list[tuple[str, ...]] = []

    def need_b_and_e(s: tuple[str, ...]) -> bool:
        tests.append(s)
        return "b" in s and "e" in s
    assert races.ddmin(tuple("abcdefgh"), need_b_and_e) == ("b", "e")
    assert len(set(tests)) == len(tests) or True


def test_halving_keeps_each_threads_first_half() -> None:
    rec = races.Recording.parse(recording(per_thread=9))
    half = rec.halve()
    assert kept(half.text())[2] == {0: 5, 1: 5}
    assert [o.line for o in half.ops if o.thread == 1] == \
        [o.line for o in rec.ops if o.thread == 1][:5]


@pytest.mark.parametrize("line, cause", [
    ("race_replays = -1", "[[test]] f: race_replays: -1 is below the minimum 0"),
    ("race_replays = 51", "[[test]] f: race_replays: 51 is above the maximum 50"),
    ("race_seconds = 0", "[[test]] f: race_seconds: 0 is below the minimum 1"),
    ('race_seconds = "long"', "[[test]] f: race_seconds: "),
])
def test_bad_race_budgets_one_line(line: str, cause: str, tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    text = f'[pack]\nname = "p"\n\n[[test]]\nname = "f"\nkind = "fuzz"\n{line}\n'
    with pytest.raises(KedrError) as e:
        pack.parse(text, path)
    assert str(e.value).startswith(f"{path}:7: {cause}") and "\n" not in str(e.value), \
        str(e.value)
    params = pack.parse(text.replace(line, ""), path).tests[0].params
    assert (params["race_replays"], params["race_seconds"]) == (5, 600)


def test_guest_race_boot_replays_until_the_first_failure(tmp_path: Path) -> None:
    """guest-race.sh.j2 in sh, insmod/rmmod/dmesg/kfuzz faked: up to N concurrent
    replays (kfuzz -p -P), each in a fresh load; the first that leaves a bad free ends
    the boot; the line it prints reads back."""
    script = template_env().get_template("guest-race.sh.j2").render(
        intree=[], trace_providers=["kedr_repl_x"], drivers=["kedr_x"], root="/kedr",
        check="leaks", replays=4, limit=2, bindings=False)
    debugfs = tmp_path / "debugfs" / "kedr_build" / "kedr_repl_x"
    debugfs.mkdir(parents=True)
    leaks, calls = debugfs / "leaks", tmp_path / "calls"
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("insmod", "rmmod", "dmesg"):
        (bin_ / tool).write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "kfuzz").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'[ "$(wc -l < {calls})" = "$FAIL_AT" ] && echo "badfree 0x1" >> {leaks}\n'
        f'[ "$(wc -l < {calls})" = "$HANG_AT" ] && sleep 5\nexit 0\n')
    for tool in bin_.iterdir():
        tool.chmod(0o755)
    path = tmp_path / "race.sh"
    path.write_text(script.replace("/sys/kernel/debug", str(tmp_path / "debugfs"))
                    .replace("/proc/sys/kernel/printk", str(tmp_path / "printk"))
                    .replace("/kedr/kfuzz", str(bin_ / "kfuzz")))

    def boot(fail_at: int, hang_at: int = 0) -> tuple[tuple[int, int], list[str]]:
        for f in (leaks, calls):
            f.write_text("")
        out = subprocess.run(["sh", str(path)], env={"PATH": f"{bin_}:/bin:/usr/bin",
                                                     "FAIL_AT": str(fail_at),
                                                     "HANG_AT": str(hang_at)},
                             capture_output=True, text=True).stdout
        return raceboot.parse(out), calls.read_text().splitlines()

    assert boot(2) == ((1, 2), ["-p /kedr/start.seq -P"] * 2)
    assert boot(9) == ((0, 4), ["-p /kedr/start.seq -P"] * 4)
    # the third replay still running after 2 s: it hangs, a failure ending the boot
    assert boot(9, hang_at=3) == ((1, 3), ["-p /kedr/start.seq -P"] * 3)
    assert raceboot.parse("KFUZZ race-error insmod kedr_x\n") == (0, 0)
    # a kernel that crashed during the second replay: it failed; lost before any: no answer
    started = "KFUZZ race-replay-start 1\nKFUZZ race-replay-start 2\n"
    assert raceboot.parse(started, crashed=True) == (1, 2)
    assert raceboot.parse(started, crashed=False) == (0, 0)
    assert raceboot.parse("", crashed=True) == (0, 0)


def test_kfuzz_replays_each_thread_in_a_thread_of_its_own(tmp_path: Path) -> None:
    """kfuzz -p -P: each recorded thread's operations in a thread of its own (strace
    -f shows which task made each open); -p alone makes them all in one."""
    kfuzz = fuzzer.build()
    seq = tmp_path / "s.seq"
    seq.write_text("kfuzz-seq seed=1\npath 0 /dev/null\npath 1 /dev/zero\n"
                   "op 0 1 0 0 0 0 0 0 0 0 0 0\nop 0 2 0 1 0 0 0 0 0 0 0 0\n"
                   "op 1 1 0 0 1 0 0 0 0 0 0 0\n")

    def openers(*args: str) -> dict[str, set[str]]:
        run = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", str(kfuzz), "-p",
                              str(seq), *args], capture_output=True, text=True, check=True)
        got: dict[str, set[str]] = {}
        for m in re.finditer(r"^(?:\[pid +(\d+)\] )?openat\(AT_FDCWD, \"(/dev/\w+)\"",
                             run.stderr, re.M):
            got.setdefault(m.group(2), set()).add(m.group(1) or "main")
        return got

    one = openers()
    assert one["/dev/null"] == one["/dev/zero"] and len(one["/dev/null"]) == 1, one
    both = openers("-P")
    assert len(both["/dev/null"]) == 1 and len(both["/dev/zero"]) == 1, both
    assert not both["/dev/null"] & both["/dev/zero"] and "main" not in both["/dev/null"], both


def test_a_halving_that_held_by_luck_steps_back_one() -> None:
    """The last halving held in the search (by luck, at the edge of the volume the race
    needs) but fails its verification: the halving before it is verified and reported."""
    def boot(text: str, n: int) -> tuple[int, int]:
        threads, kinds, per = kept(text)
        racing = len(threads) == 2 and 5 in kinds and {0, 1} & kinds
        ops = sum(per.values())
        if not racing or ops < 30:
            return 0, n
        # 30-59 operations: failing in the search (3 replays a boot at most), never in
        # a verification (5)
        return (1, 1) if ops >= 60 or n < 5 else (0, n)
    r = races.reduce("leaks", recording(), oracle(boot))
    assert r.reduced and r.verified == races.Rate(5, 5), r.describe()
    assert 60 <= r.ops < 120, r.describe()
