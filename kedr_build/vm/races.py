"""Reduce a race to what it needs, and only to a sequence that reproduces it.

A fuzz failure the recorded operations replayed in one thread do not show (``kfuzz -M``
says ``replayed-in-one-thread-it-passes``) needs two threads at once: a race. The
guest writes the recording out (class ``race-CHECK``) and this module replays it
concurrently, each recorded thread's operations in a thread of their own (``kfuzz -p
SEQ -P``), in fresh loads of the drivers; a replay that fails ends its boot (a race
hit can leave the heap corrupted: a double free passed on; on racefree one thread's
operations, clean in a fresh boot, then failed 5 of 5 in the same boot), so each
failure costs a fresh boot (``replacements/templates/guest-race.sh.j2``).

A race needs volume, many chances at its window, more than any one operation: ddmin
by operation with "fails in any 1 of R replays" keeps what failed once by luck (the
``racereduce`` branch: 20000 operations reduced to 10-11 that then failed 0 of 5).
So, here:

1. the whole recording is replayed R times: it failed F of R (``measure``);
2. ddmin runs over the *components* of the recording, the threads and the kinds of
   operation (open/close with storms, read, write, ioctl -- by command when it has
   at most :data:`CMD_SPLIT` commands, else as one kind -- poll, mmap, lseek), each
   kind kept with all its operations (its volume), and a subset holds when it fails
   at least ``bar = max(2, ceil(F/2))`` of R: half the whole recording's rate, and
   never one lucky failure. A subset with one thread is known to pass (the one-thread
   replay of them all passed) and costs nothing;
3. while the bar holds, each kept thread's operations are halved (the first half);
4. ioctls of more than :data:`CMD_SPLIT` commands, kept as one kind: their commands are
   searched by halves (:func:`commands`, O(log commands) attempts) in the halving before
   the last (the last may have held by luck, at the edge of the volume the race needs),
   and what holds is halved again (3.); the report names the commands kept, each when
   at most :data:`CMD_SPLIT`, else how many of how many;
5. the result is replayed R times more (no early stop); below the bar, the one before
   it is (the commands' search's, then the halvings', then ddmin's result); none at the
   bar: no sequence is reported, the whole recording is, with its rate, and ``not
   reduced`` says why.

Replays stop early once the bar is reached or out of reach; attempts and seconds are
bounded (``reduce`` and ``race_seconds``); the verification always runs. The oracle is
injected (:data:`Boot`), so the logic is tested without a VM.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

OPEN_CLOSE = "open/close"
# kfuzz.c's enum op_kind, in order -> the kind a component keeps (storm: opens and closes)
KIND_NAMES = (OPEN_CLOSE, OPEN_CLOSE, OPEN_CLOSE, "read", "write", "ioctl", "poll", "mmap",
              "lseek")
CMD_SPLIT = 8       # ioctl commands up to which each command is a kind of its own
MERGED = "ioctl"    # ... beyond which they are one kind, "ioctl (N commands)"
MIN_BAR = 2         # a subset must fail at least this often: one failure is luck

E = TypeVar("E", bound=Hashable)


@dataclass(frozen=True)
class Op:
    thread: int
    kind: str           # a component's name: "read", "ioctl cmd=0x40045601", "ioctl"
    line: str           # the sequence file's line
    cmd: int = -1       # an ioctl's command (-1: not an ioctl)


@dataclass(frozen=True)
class Recording:
    """A kfuzz sequence file: its header (seed, paths) and its operations."""

    header: tuple[str, ...]
    ops: tuple[Op, ...]

    @staticmethod
    def parse(text: str) -> Recording:
        header: list[str] = []
        raw: list[tuple[int, int, int, str]] = []
        for line in text.splitlines():
            f = line.split()
            if f and f[0] == "op" and len(f) == 13:
                raw.append((int(f[1]), int(f[3]), int(f[10]), line))
            elif line:
                header.append(line)
        cmds = {c for _, k, c, _ in raw if KIND_NAMES[k % len(KIND_NAMES)] == "ioctl"}
        split = len(cmds) <= CMD_SPLIT

        def kind(k: int, cmd: int) -> str:
            name = KIND_NAMES[k % len(KIND_NAMES)]
            if name != "ioctl":
                return name
            return f"ioctl cmd={cmd:#010x}" if split else f"{MERGED} ({len(cmds)} commands)"

        return Recording(tuple(header), tuple(
            Op(t, kind(k, c), ln, c if KIND_NAMES[k % len(KIND_NAMES)] == "ioctl" else -1)
            for t, k, c, ln in raw))

    def text(self) -> str:
        return "".join(f"{ln}\n" for ln in (*self.header, *(o.line for o in self.ops)))

    def threads(self) -> tuple[int, ...]:
        return tuple(sorted({o.thread for o in self.ops}))

    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.kind for o in self.ops))

    def commands(self) -> tuple[int, ...]:
        """The ioctl commands, the most frequent first (then in the order they came)."""
        count: dict[int, int] = {}
        for o in self.ops:
            if o.cmd >= 0:
                count[o.cmd] = count.get(o.cmd, 0) + 1
        return tuple(sorted(count, key=lambda c: -count[c]))

    def keep(self, threads: Sequence[int], kinds: Sequence[str]) -> Recording:
        return Recording(self.header, tuple(o for o in self.ops
                                            if o.thread in threads and o.kind in kinds))

    def only(self, cmds: Sequence[int]) -> Recording:
        """Its ioctls of ``cmds`` only (and every other operation)."""
        keep = set(cmds)
        return Recording(self.header, tuple(o for o in self.ops
                                            if o.cmd < 0 or o.cmd in keep))

    def halve(self) -> Recording:
        """Each thread's first half of its operations (in its own order)."""
        per: dict[int, int] = {}
        for o in self.ops:
            per[o.thread] = per.get(o.thread, 0) + 1
        seen: dict[int, int] = {}
        kept: list[Op] = []
        for o in self.ops:
            seen[o.thread] = seen.get(o.thread, 0) + 1
            if seen[o.thread] <= (per[o.thread] + 1) // 2:
                kept.append(o)
        return Recording(self.header, tuple(kept))


# One boot: replay the sequence concurrently up to N times, each in a fresh load, stopping
# at the first failure -> (failures: 0 or 1, replays judged); (0, 0): the guest was lost.
Boot = Callable[[str, int], tuple[int, int]]


class GuestLost(Exception):
    """A boot gave no answer: the reduction stops."""


class OutOfBudget(Exception):
    """No attempt may start: the attempts or the seconds are spent."""


@dataclass(frozen=True)
class Rate:
    fails: int
    replays: int

    def __str__(self) -> str:
        return f"failed {self.fails} of {self.replays}"


@dataclass
class Oracle:
    """Replays in fresh boots, counting them (``boot`` is the VM, or a fake)."""

    boot: Boot
    replays: int                # R
    attempts: int               # the budget of ddmin/halving attempts...
    seconds: float              # ... and of seconds (the verification runs past it)
    clock: Callable[[], float] = time.monotonic
    boots: int = 0
    made: int = 0               # attempts made
    spent: bool = False         # the budget ended the search
    start: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def rate(self, text: str, need: int = 0) -> Rate:
        """R replays, or fewer: with ``need``, stop once ``need`` failures are reached or
        out of reach."""
        fails = judged = 0
        while judged < self.replays:
            if need and (fails >= need or fails + self.replays - judged < need):
                break
            n = self.replays - judged
            if need:    # no more clean replays than leave the bar in reach
                n = min(n, self.replays - need - (judged - fails) + 1)
            self.boots += 1
            f, j = self.boot(text, n)
            if j == 0:
                raise GuestLost()
            fails += f
            judged += j
        return Rate(fails, judged)

    def holds(self, rec: Recording, bar: int) -> bool:
        if self.made >= self.attempts or self.elapsed() >= self.seconds:
            self.spent = True
            raise OutOfBudget()
        self.made += 1
        return self.rate(rec.text(), bar).fails >= bar


def bar_for(whole: Rate) -> int:
    """What a subset must fail, of R: half the whole recording's failures, at least 2."""
    return max(MIN_BAR, math.ceil(whole.fails / 2))


def ddmin(elements: Sequence[E], test: Callable[[tuple[E, ...]], bool],
          finest: int = 0) -> tuple[E, ...]:
    """Zeller's ddmin: a 1-minimal subset of ``elements`` for which ``test`` holds
    (``elements`` itself is known to). ``test`` may raise :class:`OutOfBudget`: the
    smallest subset known to hold is returned. ``finest``: no more chunks than that
    (2: a binary search, the first half that holds, else the second, while one does;
    the result is then not 1-minimal)."""
    current = tuple(elements)
    n = 2
    try:
        while len(current) >= 2:
            size = math.ceil(len(current) / n)
            chunks = [current[i:i + size] for i in range(0, len(current), size)]
            for chunk in chunks:
                if test(chunk):
                    current, n = chunk, 2
                    break
            else:
                for chunk in chunks if n > 2 else ():
                    rest = tuple(e for e in current if e not in chunk)
                    if test(rest):
                        current, n = rest, max(n - 1, 2)
                        break
                else:
                    if n >= len(current) or n == finest:
                        break
                    n = min(n * 2, len(current))
    except OutOfBudget:
        pass
    return current


@dataclass(frozen=True)
class RaceReduction:
    check: str
    recorded: int                   # operations in the recording
    whole: Rate                     # the whole recording, replayed concurrently R times
    bar: int = 0                    # what a subset had to fail, of R
    reduced: bool = False
    threads: tuple[int, ...] = ()   # what the reduced sequence keeps...
    kinds: tuple[str, ...] = ()
    ops: int = 0
    searched: int = 0               # the ioctl commands searched by halves (0: none)
    verified: Rate | None = None    # ... and how its R replays went
    attempts: int = 0
    boots: int = 0
    seconds: float = 0.0
    budget: str = ""
    why: str = ""                   # not reduced: why
    sequence: str = ""              # the reduced sequence file's text
    saved: str = ""                 # where the report keeps it

    def describe(self) -> str:
        whole = (f"the whole recording ({self.recorded} operations), replayed "
                 f"concurrently in {self.whole.replays} fresh loads, {self.whole}")
        cost = (f"{self.attempts} attempts, {self.boots} fresh boots, {self.seconds:.0f} s "
                f"(budget {self.budget})")
        if not self.reduced:
            return f"not reduced ({self.why}; {cost}); {whole}"
        kept = " and ".join(self.kinds)
        where = f"; kept in {self.saved}" if self.saved else ""
        search = (f", then {self.searched} ioctl commands by halves" if self.searched
                  else "")
        return (f"race reduced to {kept}, {len(self.threads)} threads, {self.ops} "
                f"operations: replayed concurrently {self.verified}; {whole} (ddmin over "
                f"kinds and threads{search}, a subset holding when it failed at least "
                f"{self.bar} of {self.whole.replays}; {cost}{where})")


def commands(seq: Recording, holds: Callable[[Recording], bool]) -> Recording:
    """``seq`` keeping the ioctls of only the commands the race needs, when it has more
    than :data:`CMD_SPLIT` of them (ddmin over kinds keeps them as one kind): a binary
    search, the commands ordered most frequent first, keeping the first half that holds,
    else the second, while one does: at most 2 log2(commands) attempts (plain ddmin's
    finer chunks and complements crawl down a race that needs volume more than any one
    command, as racefree's does, an attempt per chunk). A race needing two commands that
    the halves split keeps the last half holding both."""
    cmds = seq.commands()
    if len(cmds) <= CMD_SPLIT:
        return seq
    # by halves, no subset is tried twice
    return seq.only(ddmin(cmds, lambda kept: holds(seq.only(kept)), finest=2))


def name_commands(kinds: Sequence[str], seq: Recording) -> tuple[str, ...]:
    """``kinds``, the ioctls kept as one kind named by the commands ``seq`` has left: each
    when at most :data:`CMD_SPLIT`, else how many of how many."""
    cmds = seq.commands()
    named: list[str] = []
    for k in kinds:
        if not k.startswith(f"{MERGED} ("):
            named.append(k)
        elif len(cmds) <= CMD_SPLIT:
            named.extend(f"ioctl cmd={c:#010x}" for c in sorted(cmds))
        else:
            named.append(f"{MERGED} ({len(cmds)} of {k[len(MERGED) + 2:]}")
    return tuple(named)


def reduce(check: str, text: str, oracle: Oracle) -> RaceReduction:
    rec = Recording.parse(text)
    R = oracle.replays
    budget = f"{oracle.attempts} attempts, {oracle.seconds:g} s"

    def done(whole: Rate, **kw: object) -> RaceReduction:
        return RaceReduction(check, len(rec.ops), whole, attempts=oracle.made,
                             boots=oracle.boots, seconds=oracle.elapsed(), budget=budget,
                             **kw)  # type: ignore[arg-type]

    try:
        whole = oracle.rate(rec.text())
    except GuestLost:
        return done(Rate(0, 0), why="a boot replaying the whole recording gave no answer")
    bar = bar_for(whole)
    if whole.fails < bar:
        return done(whole, bar=bar, why=f"the whole recording failed {whole.fails} of "
                    f"{R} replayed concurrently, under {bar}: too rare to tell a "
                    "reproducer from luck")
    threads = {f"thread {t}": t for t in rec.threads()}
    known: dict[tuple[str, ...], bool] = {}

    def subset(kept: Sequence[str]) -> Recording:
        return rec.keep([t for n, t in threads.items() if n in kept],
                        [k for k in kept if k not in threads])

    def test(kept: tuple[str, ...]) -> bool:
        key = tuple(sorted(kept))
        if key not in known:
            # one thread alone: the one-thread replay of every op passed
            alone = sum(k in threads for k in kept) < 2
            known[key] = not alone and bool(subset(kept).ops) and oracle.holds(subset(kept),
                                                                                bar)
        return known[key]

    try:
        kept = ddmin((*threads, *rec.kinds()), test)
    except GuestLost:
        return done(whole, bar=bar, why="a reduction boot gave no answer")

    def halved(seq: Recording) -> list[Recording]:
        """``seq``, then each halving of it that held (the budget ends it quietly)."""
        held = [seq]
        try:
            while len(held[-1].ops) >= 4 and oracle.holds(half := held[-1].halve(), bar):
                held.append(half)
        except OutOfBudget:
            pass
        return held

    searched = 0
    try:
        tried = halved(subset(kept))    # ddmin's result, then each halving that held
        # The ioctl commands searched in the halving before the last: the last may have
        # held by luck, at the edge of the volume the race needs, where each of the
        # search's attempts would be a coin's toss; then halved again.
        base, made = tried[-2:][0], oracle.made
        fewer = commands(base, lambda r: oracle.holds(r, bar))
        if oracle.made > made:
            searched = len(base.commands())
        cut = halved(fewer) if fewer != base else []
    except GuestLost:
        return done(whole, bar=bar, why="a reduction boot gave no answer")
    kinds = tuple(k for k in kept if k not in threads)
    if len(tried[0].ops) == len(rec.ops) and len(tried) == 1 and not cut:
        late = " before the budget ran out" if oracle.spent else ""
        return done(whole, bar=bar, why=f"no kind of operation or thread could be dropped "
                    f"with the rate at {bar} of {R} or more{late}")
    # The most reduced first; below the bar, the halving before it, then ddmin's result
    # before the halvings (the last halving that held may have held by luck, at the edge
    # of the volume the race needs); the commands' search's results before them all.
    said = []
    for best in dict.fromkeys((*cut[-1:], *cut[-2:-1], tried[-1], tried[-2:][0], tried[0])):
        try:
            verified = oracle.rate(best.text())
        except GuestLost:
            return done(whole, bar=bar, why="a verification boot gave no answer")
        named = name_commands(kinds, best)
        what = (f"{' and '.join(named)}, {len(best.threads())} threads, {len(best.ops)} "
                "operations")
        if verified.fails >= bar:
            return done(whole, bar=bar, reduced=True, verified=verified,
                        threads=best.threads(), kinds=named, ops=len(best.ops),
                        searched=searched, sequence=best.text())
        said.append(f"the reduced sequence ({what}) replayed concurrently {verified}")
    return done(whole, bar=bar, verified=verified, threads=best.threads(), kinds=named,
                ops=len(best.ops), why=f"{', and '.join(said)}, under the bar of {bar} "
                f"of {R}")
