"""The leak payload's report: parse, symbolize, group, summarize.

The replacement module writes ``/sys/kernel/debug/kedr_build/<module>/leaks``
(replacements/runtime/kedr_leak.c), one record per line, ``key=value`` fields,
first line ``kedr-leaks 1``::

    module kedr_repl_x
    config stack_depth=16 max_objects=65536 max_stacks=16384
    target name=kedr_leaker state=unloaded
    section target=kedr_leaker shndx=9 addr=0xffffffffc0a1b000
    object fn=kmalloc_trace kind=kmalloc ptr=0x... size=100 caller=0x... stack=3 pid=1 comm=insmod
    badfree what=double fn=kfree ptr=0x... caller=0x... stack=7 passed=0 pid=1 alloc_fn=... comm=sh
    totals allocs=12 frees=4 live=8 live_bytes=... bad_frees=0 ...
    stack id=3 frames=5
    frame 0xffffffffc0a1b01c leaker_init+0x1c/0x80 [kedr_leaker]
    end

:func:`parse` turns it into a :class:`LeakReport` (frozen dataclasses, JSON via
:meth:`LeakReport.to_json`). Addresses inside a target's sections (recorded by
the payload while the target loaded, ``.init.text`` included) are named from
the target's own ELF symbol table; other frames keep the guest's ``%pS`` text.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kedr_build.errors import KedrError

FORMAT_VERSION = 1
MAGIC = "kedr-leaks"

# Kinds that are held rather than allocated (reported as "still held").
HELD_KINDS = frozenset({"mutex", "timer", "spinlock", "work", "dwork"})
# Memory (reported as "leak: N bytes"); every other kind is a resource the
# target acquired (netdev, irq, region, chrdev_region, ...: "still held at
# unload"), named in the report by its pointer, irq, start or dev_t.
MEMORY_KINDS = frozenset({"kmalloc", "cache", "vmalloc", "kvmalloc", "pages", "page",
                          "pages_exact", "kmem_cache", "skb", "dma_coherent"})

_TOTAL_KEYS = ("allocs", "frees", "live", "live_bytes", "bad_frees", "dropped_objects",
               "dropped_stacks", "untracked_frees", "nmi_skipped", "gap", "dropped_targets",
               "unwinds", "full_unwinds")


@dataclass(frozen=True)
class Totals:
    allocs: int = 0
    frees: int = 0
    live: int = 0
    live_bytes: int = 0
    bad_frees: int = 0
    dropped_objects: int = 0
    dropped_stacks: int = 0
    untracked_frees: int = 0
    nmi_skipped: int = 0
    gap: bool = False
    # Target modules the payload could not record (no memory for the entry): their
    # judgments at init's return and at unload were not made. Older reports: 0.
    dropped_targets: int = 0
    # Stacks unwound (allocations, frees that may be held, first rule violations): what
    # the payload's cost grows with. Older reports: 0.
    unwinds: int = 0
    # Of those, the ones unwound from the replacement module's own frames up (the
    # target's frame not found through our frame pointers: a moved tail-call site,
    # an interrupt stack, an attached module). Older reports: 0.
    full_unwinds: int = 0


@dataclass(frozen=True)
class Leak:
    """An object the target allocated and had not freed when the report was read."""

    function: str                 # the allocator called: "kmalloc_trace"
    kind: str                     # kmalloc, cache, vmalloc, kvmalloc, pages, page, ...
    ptr: int
    size: int
    caller: str                   # "leaker_init+0x1c [kedr_leaker]"
    stack: tuple[str, ...]        # frame 0 is the call site
    pid: int
    comm: str


@dataclass(frozen=True)
class BadFree:
    what: str                     # double, foreign, mismatch, invalid, interior
    function: str                 # the freeing function called
    ptr: int
    caller: str
    stack: tuple[str, ...]
    passed: bool                  # handed to the kernel anyway (someone else's heap object)
    pid: int
    comm: str
    alloc_function: str | None = None
    alloc_kind: str | None = None
    alloc_size: int | None = None
    alloc_caller: str | None = None
    alloc_stack: tuple[str, ...] = ()
    free_caller: str | None = None      # double free: the first free
    free_stack: tuple[str, ...] = ()

    def describe(self) -> str:
        head = {"double": "double free", "foreign": "free of memory the target did not allocate",
                "mismatch": "free with the wrong function",
                "invalid": "free of an invalid pointer (an error pointer or an address in the "
                           "first page)",
                "interior": "free of an address inside an object the target allocated",
                }.get(self.what, f"bad free ({self.what})")
        text = f"{head}: {self.function}(0x{self.ptr:x}) at {self.caller}"
        if self.alloc_function:
            text += f"; allocated by {self.alloc_function} ({self.alloc_kind}"
            text += f", {self.alloc_size} bytes)" if self.alloc_size else ")"
        if self.what == "foreign":
            text += ("; a heap object allocated elsewhere: passed on" if self.passed
                     else "; not a heap object: not passed on")
        elif not self.passed:
            text += "; not passed on"
        return text


@dataclass(frozen=True)
class Violation:
    """A kernel API rule broken at one call site (counted, first occurrence kept)."""

    rule: str                     # sleep-in-atomic
    function: str                 # the function called
    caller: str
    stack: tuple[str, ...]
    count: int
    context: str                  # preempt-off, irqs-off, bh-off, softirq, hardirq
    preempt_count: int
    pid: int
    comm: str

    def describe(self) -> str:
        times = "once" if self.count == 1 else f"{self.count} times"
        if self.rule == "lock-held-at-return":
            return (f"{self.rule}: a lock taken by {self.function}() at {self.caller} still "
                    f"held when the target's init returned, {times}")
        if self.rule == "unlock-not-held":
            return (f"{self.rule}: {self.function}() at {self.caller} released a lock "
                    f"that was not held, {times}")
        return (f"{self.rule}: {self.function}() at {self.caller} in atomic context "
                f"({self.context}, preempt_count=0x{self.preempt_count:x}), {times}")


@dataclass(frozen=True)
class Target:
    name: str
    state: str                           # loaded, unloaded
    sections: tuple[tuple[int, int], ...]  # (ELF section index, run-time address)


@dataclass(frozen=True)
class LeakGroup:
    stack: tuple[str, ...]
    leaks: tuple[Leak, ...]

    @property
    def bytes(self) -> int:
        return sum(leak.size for leak in self.leaks)


@dataclass(frozen=True)
class LeakReport:
    version: int
    module: str
    totals: Totals
    leaks: tuple[Leak, ...]
    bad_frees: tuple[BadFree, ...]
    targets: tuple[Target, ...] = ()
    config: dict[str, int] = field(default_factory=dict)
    violations: tuple[Violation, ...] = ()
    dropped_violations: int = 0           # call sites beyond the payload's table
    suppressed: int = 0                   # findings removed by suppressions (checks.suppress)

    @property
    def incomplete(self) -> str:
        """Why the report cannot vouch for the driver ("" when it can)."""
        if self.totals.dropped_targets:
            return (f"{self.totals.dropped_targets} target modules not recorded: their "
                    "judgments at init's return and at unload are missing")
        return ""

    @property
    def clean(self) -> bool:
        """Nothing found, and nothing the payload had to leave unjudged."""
        return (not self.leaks and not self.bad_frees and self.totals.bad_frees == 0
                and not self.violations and not self.dropped_violations
                and not self.incomplete)

    def groups(self) -> list[LeakGroup]:
        """Leaks grouped by allocation stack, most first (then by size)."""
        by_stack: dict[tuple[str, ...], list[Leak]] = {}
        for leak in self.leaks:
            by_stack.setdefault(leak.stack or (leak.caller,), []).append(leak)
        groups = [LeakGroup(s, tuple(ls)) for s, ls in by_stack.items()]
        return sorted(groups, key=lambda g: (-len(g.leaks), -g.bytes, g.stack))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# --- symbolization -------------------------------------------------------------------

class ModuleSymbols:
    """Run-time addresses of one loaded module -> ``symbol+0xoff [module]``, from its ELF."""

    def __init__(self, name: str, ko: Path, sections: tuple[tuple[int, int], ...]) -> None:
        from kedr_build.ko.container import read_module
        from kedr_build.ko.elf import ST_INFO, ST_SHNDX, ST_VALUE, ElfRel

        elf = ElfRel(read_module(ko).elf, str(ko))
        self.name = name
        by_section: dict[int, list[tuple[int, str]]] = {}
        for sym in elf.symbols:
            stype = sym[ST_INFO] & 0xF
            if stype in (1, 2) or (stype == 0 and sym[ST_INFO] >> 4 == 1):  # OBJECT, FUNC
                name_ = elf.symbol_name(sym)
                if name_ and not name_.startswith("__UNIQUE_ID"):
                    by_section.setdefault(sym[ST_SHNDX], []).append((sym[ST_VALUE], name_))
        self._ranges: list[tuple[int, int, int]] = []   # (start, end, shndx)
        for shndx, base in sections:
            # Code only: the payload also records data and non-allocated sections.
            if 0 < shndx < len(elf.sections) and elf.sections[shndx].flags & 0x4 \
                    and elf.sections[shndx].size:
                self._ranges.append((base, base + elf.sections[shndx].size, shndx))
        self._ranges.sort()
        self._syms = {k: sorted(v) for k, v in by_section.items()}
        self._section_names = {s.index: s.name for s in elf.sections}

    def resolve(self, addr: int) -> str | None:
        for start, end, shndx in self._ranges:
            # A return address may sit right after the section's last call.
            if start <= addr <= end:
                off = addr - start
                syms = self._syms.get(shndx, [])
                i = bisect.bisect_right(syms, (off, "\U0010ffff")) - 1
                if i >= 0:
                    value, name = syms[i]
                    return f"{name}+0x{off - value:x} [{self.name}]"
                return f"{self._section_names.get(shndx, '?')}+0x{off:x} [{self.name}]"
        return None


def _symbolizers(targets: tuple[Target, ...], modules: Mapping[str, Path]) -> list[ModuleSymbols]:
    out = []
    for t in targets:
        ko = modules.get(t.name)
        if ko is not None and t.sections:
            out.append(ModuleSymbols(t.name, ko, t.sections))
    return out


def target_resolver(text: str, modules: Mapping[str, Path]) -> Callable[[int], str | None]:
    """Name addresses in the targets from a report's ``target``/``section`` lines only
    (for the trace, whose call sites in freed init code kallsyms names wrong).
    A report that does not parse names nothing."""
    try:
        targets = parse(text).targets
    except KedrError:
        return lambda addr: None
    syms = _symbolizers(targets, modules)

    def resolve(addr: int) -> str | None:
        for s in syms:
            where = s.resolve(addr)
            if where is not None:
                return where
        return None
    return resolve


# --- parsing ---------------------------------------------------------------------------

def _fields(words: list[str], lineno: int, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise KedrError(f"leak report line {lineno}: {what}: expected key=value, got {w!r}")
        out[key] = value
    return out


def _int(fields: Mapping[str, str], key: str, lineno: int) -> int:
    if key not in fields:
        raise KedrError(f"leak report line {lineno}: missing {key}=")
    try:
        return int(fields[key], 0)
    except ValueError:
        raise KedrError(f"leak report line {lineno}: {key}={fields[key]!r} is not a number") \
            from None


def _rest_after(line: str, key: str) -> str:
    """The value of ``key=``, the last field of a line, spaces included."""
    pos = line.find(f" {key}=")
    return line[pos + len(key) + 2:] if pos >= 0 else ""


def parse(text: str, modules: Mapping[str, Path] | None = None) -> LeakReport:
    """A report from the text of the ``leaks`` file; ``modules``: target name -> .ko,
    for naming addresses in the targets (init code included)."""
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise KedrError("leak report is empty (was the replacement module loaded?)")
    head = lines[0].split()
    if len(head) != 2 or head[0] != MAGIC:
        raise KedrError(f"leak report line 1: expected '{MAGIC} <version>', got {lines[0]!r}")
    if head[1] != str(FORMAT_VERSION):
        raise KedrError(f"leak report: format version {head[1]} is not supported "
                        f"(this kedr-build reads version {FORMAT_VERSION})")
    module = ""
    config: dict[str, int] = {}
    targets: dict[str, tuple[str, list[tuple[int, int]]]] = {}
    objects: list[tuple[dict[str, str], str, int]] = []
    bads: list[tuple[dict[str, str], str, int]] = []
    violations: list[tuple[dict[str, str], str, int]] = []
    dropped_violations = 0
    totals: Totals | None = None
    stacks: dict[int, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    ended = False
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        if ended:
            raise KedrError(f"leak report line {lineno}: text after 'end'")
        kind, _, rest = line.partition(" ")
        if kind == "frame":
            if current is None:
                raise KedrError(f"leak report line {lineno}: frame outside a stack")
            addr_text, _, sym = rest.partition(" ")
            try:
                current.append((int(addr_text, 16), sym.strip()))
            except ValueError:
                raise KedrError(f"leak report line {lineno}: bad frame address "
                                f"{addr_text!r}") from None
            continue
        current = None
        if kind == "end":
            ended = True
        elif kind == "module":
            module = rest.strip()
        elif kind == "attached":
            pass    # a hot-patching module's window (kedr_attach.c); the totals cover it
        elif kind == "config":
            config = {k: int(v) for k, v in _fields(rest.split(), lineno, kind).items()
                      if v.isdigit()}
        elif kind == "target":
            f = _fields(rest.split(), lineno, kind)
            targets[f.get("name", "?")] = (f.get("state", "?"), [])
        elif kind == "section":
            f = _fields(rest.split(), lineno, kind)
            tname = f.get("target", "")
            if tname not in targets:
                raise KedrError(f"leak report line {lineno}: section of unknown target {tname!r}")
            targets[tname][1].append((_int(f, "shndx", lineno), _int(f, "addr", lineno)))
        elif kind == "object":
            comm = _rest_after(line, "comm")
            f = _fields(line[:len(line) - len(comm)].split()[1:], lineno, kind)
            objects.append((f, comm, lineno))
        elif kind == "badfree":
            comm = _rest_after(line, "comm")
            f = _fields(line[:len(line) - len(comm)].split()[1:], lineno, kind)
            bads.append((f, comm, lineno))
        elif kind == "violation":
            comm = _rest_after(line, "comm")
            f = _fields(line[:len(line) - len(comm)].split()[1:], lineno, kind)
            violations.append((f, comm, lineno))
        elif kind == "rules":
            dropped_violations = _int(_fields(rest.split(), lineno, kind), "dropped_violations",
                                      lineno)
        elif kind == "totals":
            f = _fields(rest.split(), lineno, kind)
            values = {k: _int(f, k, lineno) for k in _TOTAL_KEYS if k in f and k != "gap"}
            totals = Totals(**values, gap=f.get("gap") == "1")
        elif kind == "stack":
            f = _fields(rest.split(), lineno, kind)
            current = stacks.setdefault(_int(f, "id", lineno), [])
        else:
            raise KedrError(f"leak report line {lineno}: unknown record {kind!r}")
    if not ended:
        raise KedrError("leak report is truncated (no 'end' line)")
    if totals is None:
        raise KedrError("leak report has no 'totals' line")

    target_list = tuple(Target(n, s, tuple(secs)) for n, (s, secs) in targets.items())
    syms = _symbolizers(target_list, modules or {})
    known: dict[int, str] = {}
    for frames in stacks.values():
        for addr, text in frames:
            known.setdefault(addr, text)

    def name(addr: int) -> str:
        for s in syms:
            where = s.resolve(addr)
            if where is not None:
                return where
        text = known.get(addr)
        if text and not text.startswith("0x"):
            # %pS prints "sym+0x1c/0x80 [mod]": the length is noise here.
            sym, _, mod = text.partition(" ")
            return sym.split("/")[0] + (f" {mod}" if mod else "")
        return f"0x{addr:x}"

    def stack(sid: int) -> tuple[str, ...]:
        return tuple(name(a) for a, _ in stacks.get(sid, []))

    leaks = tuple(Leak(function=f.get("fn", "?"), kind=f.get("kind", "?"),
                       ptr=_int(f, "ptr", n), size=_int(f, "size", n),
                       caller=name(_int(f, "caller", n)), stack=stack(_int(f, "stack", n)),
                       pid=_int(f, "pid", n), comm=comm)
                  for f, comm, n in objects)
    bad_frees = []
    for f, comm, n in bads:
        alloc = "alloc_fn" in f
        bad_frees.append(BadFree(
            what=f.get("what", "?"), function=f.get("fn", "?"), ptr=_int(f, "ptr", n),
            caller=name(_int(f, "caller", n)), stack=stack(_int(f, "stack", n)),
            passed=f.get("passed") == "1", pid=_int(f, "pid", n), comm=comm,
            alloc_function=f.get("alloc_fn") if alloc else None,
            alloc_kind=f.get("alloc_kind") if alloc else None,
            alloc_size=_int(f, "alloc_size", n) if alloc else None,
            alloc_caller=name(_int(f, "alloc_caller", n)) if "alloc_caller" in f else None,
            alloc_stack=stack(_int(f, "alloc_stack", n)) if alloc else (),
            free_caller=name(_int(f, "free_caller", n)) if "free_caller" in f else None,
            free_stack=stack(_int(f, "free_stack", n)) if "free_stack" in f else ()))
    rules = tuple(Violation(rule=f.get("rule", "?"), function=f.get("fn", "?"),
                            caller=name(_int(f, "caller", n)), stack=stack(_int(f, "stack", n)),
                            count=_int(f, "count", n), context=f.get("context", "?"),
                            preempt_count=_int(f, "preempt_count", n), pid=_int(f, "pid", n),
                            comm=comm)
                  for f, comm, n in violations)
    return LeakReport(version=FORMAT_VERSION, module=module, totals=totals, leaks=leaks,
                      bad_frees=tuple(bad_frees), targets=target_list, config=config,
                      violations=rules, dropped_violations=dropped_violations)


# --- text -----------------------------------------------------------------------------

def summary(report: LeakReport, max_groups: int = 20, frames: int = 6) -> list[str]:
    """Readable lines: totals, leaks grouped by stack, bad frees."""
    t = report.totals
    out = [f"{t.allocs} allocations, {t.frees} frees, {len(report.leaks)} possible leaks "
           f"({sum(leak.size for leak in report.leaks)} bytes), {len(report.bad_frees)} bad frees, "
           f"{len(report.violations)} rule violations"]
    dropped = [f"{v} {k.replace('_', ' ')}" for k, v in
               (("dropped_objects", t.dropped_objects), ("dropped_stacks", t.dropped_stacks),
                ("untracked_frees", t.untracked_frees), ("nmi_skipped", t.nmi_skipped)) if v]
    if dropped:
        out.append("not tracked: " + ", ".join(dropped))
    if t.gap:
        out.append("tracking was incomplete (switched off for a while, or a table was full): "
                   "leaks may be missed, frees of unknown heap objects are not reported")
    if report.incomplete:
        out.append(f"report incomplete: {report.incomplete}")
    if report.suppressed:
        out.append(f"{report.suppressed} findings suppressed")
    groups = report.groups()
    for g in groups[:max_groups]:
        first = g.leaks[0]
        more = f" (+{len(g.leaks) - 1} more with the same stack, {g.bytes} bytes in all)" \
            if len(g.leaks) > 1 else ""
        if first.kind == "timer":
            out.append(f"timer still pending at unload (deleted by kedr): armed by "
                       f"{first.function} at {first.caller}, task {first.comm}[{first.pid}]{more}")
        elif first.kind in ("work", "dwork"):
            out.append(f"work still pending at unload (cancelled by kedr): queued by "
                       f"{first.function} at {first.caller}, task {first.comm}[{first.pid}]{more}")
        elif first.kind in HELD_KINDS:
            out.append(f"still held: a {first.kind} taken by {first.function} at {first.caller}, "
                       f"task {first.comm}[{first.pid}]{more}")
        elif first.kind not in MEMORY_KINDS:
            out.append(f"still held at unload: {first.kind} 0x{first.ptr:x} acquired by "
                       f"{first.function} at {first.caller}, task {first.comm}[{first.pid}]"
                       f"{more}")
        else:
            out.append(f"leak: {first.size} bytes from {first.function} ({first.kind}) at "
                       f"{first.caller}, task {first.comm}[{first.pid}]{more}")
        out += [f"    {f}" for f in g.stack[:frames]]
    if len(groups) > max_groups:
        out.append(f"... {len(groups) - max_groups} more leak stacks")
    for b in report.bad_frees:
        out.append(f"bad free: {b.describe()}")
        out += [f"    {f}" for f in b.stack[:frames]]
        if b.alloc_stack:
            out.append("  allocated at:")
            out += [f"    {f}" for f in b.alloc_stack[:frames]]
        if b.free_stack:
            out.append("  first freed at:")
            out += [f"    {f}" for f in b.free_stack[:frames]]
    for v in report.violations:
        out.append(f"rule violation: {v.describe()}")
        out += [f"    {f}" for f in v.stack[:frames]]
    if report.dropped_violations:
        out.append(f"... {report.dropped_violations} more rule violations (call sites not kept)")
    if t.bad_frees > len(report.bad_frees):
        out.append(f"... {t.bad_frees - len(report.bad_frees)} more bad frees (not kept)")
    return out
