"""Parse the kernel's text trace (``/sys/kernel/tracing/trace``) into typed events.

Only what the replacement modules emit matters here (events ``call_<function>``
of the system ``kedr_repl_<driver>``), but any event line parses. Like the
console parser, it never throws on truncated input: a line that does not parse
is skipped and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

#           insmod-86      [000] .....     1.882034: call_kfree: call_site=... ptr=...
_LINE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                   r"(?:(?P<flags>\S{4,5})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s?(?P<body>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
_OVERRUN = re.compile(r"^overrun:\s*(\d+)", re.M)
CALL_PREFIX = "call_"


@dataclass(frozen=True)
class TraceEvent:
    task: str
    pid: int
    cpu: int
    flags: str
    timestamp: float
    event: str
    body: str

    @property
    def function(self) -> str:
        """The intercepted function (``call_kfree`` -> ``kfree``)."""
        return self.event.removeprefix(CALL_PREFIX)

    @property
    def fields(self) -> dict[str, str]:
        return dict(_FIELD.findall(self.body))

    @property
    def context(self) -> str:
        """hardirq / softirq / process, from the latency flags (``d.h..``, ``..s..``)."""
        flags = self.flags or ""
        if len(flags) >= 3 and flags[2] in "hH":
            return "hardirq"
        if len(flags) >= 3 and flags[2] in "sb":
            return "softirq"
        return "process"


@dataclass(frozen=True)
class Trace:
    events: tuple[TraceEvent, ...]
    unparsed: int       # lines that looked like events but did not parse
    overruns: int       # events the ring buffer dropped (per-CPU "overrun" stats)

    def calls(self) -> Counter[str]:
        return Counter(e.function for e in self.events if e.event.startswith(CALL_PREFIX))


def parse_trace(text: str, stats: str = "") -> Trace:
    events: list[TraceEvent] = []
    unparsed = 0
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            unparsed += 1
            continue
        events.append(TraceEvent(task=m.group("task").strip(), pid=int(m.group("pid")),
                                 cpu=int(m.group("cpu")), flags=m.group("flags") or "",
                                 timestamp=float(m.group("ts")), event=m.group("event"),
                                 body=m.group("body")))
    overruns = sum(int(n) for n in _OVERRUN.findall(stats))
    return Trace(tuple(events), unparsed, overruns)


_HEX_SITE = re.compile(r"\bcall_site=(0x[0-9a-f]+)\b")


class Symbolizer:
    """Addresses -> ``symbol+0xoff [module]`` from a /proc/kallsyms excerpt.

    The kernel's %pS in a trace is resolved when the trace is read; the driver
    may be gone by then (its exit-time calls are traced too), so the guest saves
    its modules' kallsyms before unloading them and the host resolves here.
    """

    def __init__(self, kallsyms: str) -> None:
        syms: list[tuple[int, str, str]] = []
        for line in kallsyms.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in "tTwW":
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            module = parts[3].strip("[]") if len(parts) > 3 else ""
            syms.append((addr, parts[2], module))
        syms.sort()
        self._addrs = [a for a, _, _ in syms]
        self._syms = syms

    def resolve(self, addr: int, max_offset: int = 0x100000) -> str | None:
        import bisect
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or addr - self._addrs[i] > max_offset:
            return None
        base, name, module = self._syms[i]
        return f"{name}+0x{addr - base:x}" + (f" [{module}]" if module else "")

    def rewrite(self, text: str,
                first: Callable[[int], str | None] | None = None) -> str:
        """Hex call sites named; ``first`` is asked before kallsyms (it knows init code)."""
        def sub(m: re.Match[str]) -> str:
            addr = int(m.group(1), 16)
            where = (first(addr) if first else None) or self.resolve(addr)
            return f"call_site={where.replace(' ', '')}" if where else m.group(0)
        return _HEX_SITE.sub(sub, text)


def summary(trace: Trace, first: int = 10) -> list[str]:
    """Readable lines: calls per function, then the first events."""
    counts = trace.calls()
    out = [f"{sum(counts.values())} intercepted calls"
           + (f", {trace.overruns} LOST (ring buffer overrun)" if trace.overruns else "")
           + (f", {trace.unparsed} unparsed lines" if trace.unparsed else "")]
    for function, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"  {n:8d}  {function}")
    calls = [e for e in trace.events if e.event.startswith(CALL_PREFIX)]
    if calls:
        out.append(f"first {min(first, len(calls))} calls:")
        for e in calls[:first]:
            out.append(f"  {e.timestamp:12.6f} {e.task}-{e.pid} [{e.cpu}] {e.function}: {e.body}")
    return out
