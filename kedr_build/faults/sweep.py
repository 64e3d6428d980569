"""The systematic fault sweep: fail every fault site of a driver once, judge each.

A *site* is a distinct (function, caller) pair the driver reaches, the caller
named relative to the driver (``faulty_init+0x43``: function and offset, from
kallsyms while the call runs), so it is the same site after a reload at another
address. :func:`sweep` boots the VM once to discover the sites reached in the
driver's init, the ``workload`` and its exit (the replacement module's
``faults/sites`` recorder, kedr_faults.c), then, in the same boot, fails each
site once (scenario ``caller=<site> nth=1`` on the site's function point) and
judges the run:

* the replacement module is reloaded with the driver for each site, so the leak
  report read before it unloads covers that site's run only (no generations
  needed in the leak payload);
* init failed cleanly with an error code / the workload saw the error (non-zero
  status) / what leaked / an oops, WARN or lockup (kernel taint, the console) /
  a hang (no progress for ``site_timeout`` seconds) / whether it unloaded;
* after a taint, a hang, or a driver that would not unload, the VM is booted
  afresh and the sweep carries on with the next site.

Progress goes to ``progress`` (site k of S, elapsed, estimate) as the guest
reports each site on its console.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from kedr_build.atomic import write_atomic
from kedr_build.checks.leaks import parse as parse_leaks, summary as leak_summary
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.module import ModuleRef
from kedr_build.resources import template_env
from kedr_build.vm.console import find_problems, strip_prefix
from kedr_build.vm.qemu import GuestJob, result_from_logs, run_guest

PROGRESS = "kedr-build: sweep site "
SITES_BEGIN = "--- sweep sites ---"
SITES_END = "--- end of sweep sites ---"
_SITE = re.compile(r"^KEDR-SITE (\d+) (.*)$")
_SITE_LINE = re.compile(r"^(init|workload|exit) (\S+) (\S+) (\S+)$")
_PROGRESS = re.compile(re.escape(PROGRESS) + r"(\d+) of (\d+) ")
_KILLED = (137, 139)          # insmod/rmmod killed by an oops in the kernel


class Outcome(Enum):
    CLEAN = "clean"               # failed, handled, nothing left behind
    NOT_REACHED = "not reached"   # the site was not reached again: nothing injected
    LEAK = "leak"                 # something leaked or was freed wrongly
    UNLOAD_FAILED = "unload failed"
    CRASH = "crash"               # oops, BUG, WARN, lockup
    HANG = "hang"

    @property
    def bad(self) -> bool:
        return self in (Outcome.LEAK, Outcome.UNLOAD_FAILED, Outcome.CRASH, Outcome.HANG)


@dataclass(frozen=True)
class Site:
    phase: str          # where discovery first reached it: init, workload, exit
    function: str       # exported function called: "kmalloc_trace"
    point: str          # its family fault point: "kmalloc"
    caller: str         # "faulty_init+0x43", relative to the driver

    def __str__(self) -> str:
        return f"{self.function} at {self.caller} ({self.phase})"


@dataclass(frozen=True)
class SiteResult:
    site: Site
    index: int                      # 1-based, in discovery order
    outcome: Outcome
    injected: int                   # faults injected (1 when the site was reached)
    init_status: int | None         # insmod's status: 0, or the errno init returned
    workload_status: int | None     # None: not run
    unload_status: int | None       # None: not loaded
    leaks: int = 0
    leaked_bytes: int = 0
    bad_frees: int = 0
    findings: tuple[str, ...] = ()  # the leak report's summary, the kernel's problem lines
    boot: int = 1                   # which boot of the sweep ran it
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        """One phrase: what the failure did."""
        parts: list[str] = []
        if self.init_status in _KILLED:
            parts.append("insmod killed")
        elif self.init_status:
            parts.append(f"init failed (error {self.init_status})")
        elif self.init_status == 0:
            parts.append("init ok")
        if self.workload_status:
            parts.append(f"workload saw the error (status {self.workload_status})")
        elif self.workload_status == 0:
            parts.append("workload ok")
        if self.unload_status:
            parts.append("unload failed")
        elif self.unload_status == 0:
            parts.append("unloaded")
        if self.leaks or self.bad_frees:
            parts.append(f"{self.leaks} leaks ({self.leaked_bytes} bytes), "
                         f"{self.bad_frees} bad frees")
        if self.outcome in (Outcome.CRASH, Outcome.HANG):
            parts.append(self.outcome.value + (f": {self.findings[-1]}" if self.findings
                                               else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class SweepResult:
    target: str
    sites: tuple[Site, ...]
    results: tuple[SiteResult, ...]
    boots: int
    elapsed: float
    discovery_seconds: float        # the first boot up to the end of discovery
    logs: Path

    @property
    def ok(self) -> bool:
        return not any(r.outcome.bad for r in self.results)

    @property
    def seconds_per_site(self) -> float:
        return (self.elapsed - self.discovery_seconds) / max(1, len(self.results))

    def to_json(self) -> str:
        data = asdict(self)
        data["logs"] = str(self.logs)
        for r in data["results"]:
            r["outcome"] = r["outcome"].value
        data["ok"] = self.ok
        return json.dumps(data, indent=2, default=str)


@dataclass
class _Progress:
    total: int = 0
    done: int = 0
    start: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    current: int = 0
    sweep_start: float | None = None    # the first site's progress line
    first_done: int = 0                 # sites judged before this run of the estimate


class _Stalled(Exception):
    pass


def sweep(kernel: ProvisionedKernel, replacement: Path, target: Path, logdir: Path, *,
          workload: Path | None = None, module_args: Sequence[str] = (),
          intree: Sequence[str] = (), site_timeout: float = 60.0, boot_timeout: float = 120.0,
          progress: Callable[[str], None] | None = None,
          max_boots: int = 50) -> SweepResult:
    """Discover the fault sites of ``target`` (patched against ``replacement``) and fail
    each once; raises KedrError when the driver reaches no fault-capable call."""
    repl = ModuleRef.read(replacement)
    tgt = ModuleRef.read(target)
    if workload is not None and not workload.is_file():
        raise KedrError(f"WORKLOAD={workload}: no such file")
    files = {f"modules/{repl.name}.ko": replacement, f"modules/{tgt.name}.ko": target}
    if workload is not None:
        files["workload.sh"] = workload
    say = progress or (lambda line: None)
    state = _Progress()
    start = time.monotonic()
    results: list[SiteResult] = []
    sites: tuple[Site, ...] = ()
    discovery_seconds = 0.0
    boot = 0
    next_site = 1
    while True:
        boot += 1
        if boot > max_boots:
            raise KedrError(f"sweep of {tgt.name}: gave up after {max_boots} boots")
        discover = not sites
        script = _script(repl.name, tgt.name, module_args, workload is not None,
                         sites, next_site, discover)
        workdir = logdir / f"boot-{boot}"
        state.last = time.monotonic()
        state.current = next_site - 1

        def watch(line: str) -> None:
            m = _PROGRESS.search(line)
            now = time.monotonic()
            if m:
                k, total = int(m.group(1)), int(m.group(2))
                if state.sweep_start is None:
                    state.sweep_start, state.first_done = now, k - 1
                    say(f"sweep: {total} sites found in {now - start:.1f} s")
                state.total, state.current, state.last = total, k, now
                done = k - 1 - state.first_done
                left = ((now - state.sweep_start) / done * (total - k + 1)) if done else 0.0
                site = line[m.end():].strip()
                say(f"sweep: site {k} of {total} ({site}), {now - start:.0f} s elapsed"
                    + (f", ~{left:.0f} s left" if done else ""))
            elif now - state.last > site_timeout and state.current:
                raise _Stalled()

        job = GuestJob(script=script, files=files, intree_modules=tuple(intree))
        timeout = boot_timeout + site_timeout * max(1, len(sites) - next_site + 1)
        stalled = False
        try:
            vm = run_guest(kernel, job, workdir, timeout=timeout, stream=watch)
        except _Stalled:
            stalled = True
            vm = result_from_logs(workdir, timed_out=True,
                                  elapsed=time.monotonic() - state.last)
        if discover:
            sites = _sites(vm.output)
            discovery_seconds = (state.sweep_start or time.monotonic()) - start
            fatal = re.search(r"^KEDR-SWEEP fatal (.*)$", vm.output, re.M)
            if fatal or (vm.status is None and not sites):
                raise KedrError(f"sweep of {tgt.name}: discovery failed: "
                                f"{fatal.group(1) if fatal else vm.reason()} "
                                f"(logs: {workdir})")
            if not sites:
                raise KedrError(f"sweep of {tgt.name}: nothing to sweep: the driver reached no "
                                f"function that can fail in init"
                                f"{', the workload' if workload else ''} or exit")
        else:
            fatal = re.search(r"^KEDR-SWEEP fatal (.*)$", vm.output, re.M)
            if fatal:
                raise KedrError(f"sweep of {tgt.name}: boot {boot} failed: {fatal.group(1)} "
                                f"(logs: {workdir})")
        got = _results(vm.output, vm.console, sites, tgt.name, target, boot)
        results += got
        last = results[-1].index if results else 0
        if last >= len(sites):
            break
        # The boot ended before the last site. A site the guest started (its progress
        # line) but never judged crashed or hung the VM; otherwise the guest stopped
        # after judging one (taint, a driver that stayed loaded): reboot after it.
        lost = state.current
        if lost > last and lost <= len(sites):
            hung = stalled or vm.timed_out
            problems = tuple(p.line for p in find_problems(_console_of_site(vm.console, lost)))
            results.append(SiteResult(
                site=sites[lost - 1], index=lost,
                outcome=Outcome.HANG if hung and not problems else Outcome.CRASH,
                injected=1, init_status=None, workload_status=None, unload_status=None,
                findings=problems or (vm.reason(),), boot=boot))
        elif not got:
            raise KedrError(f"sweep of {tgt.name}: boot {boot} judged no site "
                            f"({vm.reason() or 'no result'}; logs: {workdir})")
        next_site = results[-1].index + 1
        if next_site > len(sites):
            break
    elapsed = time.monotonic() - start
    result = SweepResult(target=tgt.name, sites=sites, results=tuple(results), boots=boot,
                         elapsed=elapsed, discovery_seconds=discovery_seconds, logs=logdir)
    write_atomic(logdir / "sweep.json", result.to_json().encode())
    return result


def _script(repl: str, target: str, module_args: Sequence[str], workload: bool,
            sites: Sequence[Site], start: int, discover: bool) -> str:
    marks = {"sites_begin": SITES_BEGIN, "sites_end": SITES_END, "progress": PROGRESS}
    return str(template_env().get_template("guest-sweep.sh.j2").render(
        repl=repl, target=target, module_args=shlex.join(module_args), workload=workload,
        sites=sites, start=start, discover=discover, marks=marks))


def _sites(output: str) -> tuple[Site, ...]:
    sites: list[Site] = []
    inside = False
    for line in output.splitlines():
        if line == SITES_BEGIN:
            inside = True
        elif line == SITES_END:
            inside = False
        elif inside:
            m = _SITE_LINE.match(line.strip())
            if m:
                sites.append(Site(*m.groups()))
    return tuple(sites)


def _console_of_site(console: str, k: int) -> str:
    """The console from site k's progress line to the next one."""
    lines = console.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        m = _PROGRESS.search(strip_prefix(line))
        if m:
            inside = int(m.group(1)) == k
        if inside:
            out.append(line)
    return "\n".join(out)


def _fields(text: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in text.split() if "=" in w)


def _status(value: str | None) -> int | None:
    if value is None or value == "-":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _results(output: str, console: str, sites: Sequence[Site], target: str, ko: Path,
             boot: int) -> list[SiteResult]:
    leak_texts: dict[int, list[str]] = {}
    current: list[str] | None = None
    results: list[SiteResult] = []
    for line in output.splitlines():
        if line.startswith("KEDR-LEAKS-END "):
            current = None
            continue
        if line.startswith("KEDR-LEAKS "):
            current = leak_texts.setdefault(int(line.split()[1]), [])
            continue
        if current is not None:
            current.append(line)
            continue
        m = _SITE.match(line.strip())
        if not m:
            continue
        k = int(m.group(1))
        if not 1 <= k <= len(sites):
            continue
        f = _fields(m.group(2))
        init, wl, unload = _status(f.get("init")), _status(f.get("workload")), \
            _status(f.get("unload"))
        injected = int(f.get("injected", "0"))
        taint = int(f.get("taint", "0"))
        findings: list[str] = []
        leaks = leaked = bad = 0
        text = "\n".join(leak_texts.get(k, [])) + "\n"
        try:
            report = parse_leaks(text, {target: ko})
            leaks, leaked = len(report.leaks), report.totals.live_bytes
            bad = report.totals.bad_frees
            if not report.clean:
                findings += leak_summary(report)
        except KedrError as e:
            findings.append(f"leak report unreadable: {e}")
        problems = [p.line for p in find_problems(_console_of_site(console, k))]
        findings += problems
        if taint & 17056 or problems or init in _KILLED or unload in _KILLED:
            outcome = Outcome.CRASH
        elif unload not in (None, 0) or f.get("repl_unload", "0") != "0":
            outcome = Outcome.UNLOAD_FAILED
        elif leaks or bad:
            outcome = Outcome.LEAK
        elif injected == 0:
            outcome = Outcome.NOT_REACHED
        else:
            outcome = Outcome.CLEAN
        results.append(SiteResult(site=sites[k - 1], index=k, outcome=outcome,
                                  injected=injected, init_status=init, workload_status=wl,
                                  unload_status=unload, leaks=leaks, leaked_bytes=leaked,
                                  bad_frees=bad, findings=tuple(findings), boot=boot))
    return results


def table(result: SweepResult) -> list[str]:
    """The sweep as a table, one site a line, and a last line with the totals."""
    rows = [("#", "site", "phase", "outcome", "what happened")]
    for r in result.results:
        rows.append((str(r.index), f"{r.site.function} at {r.site.caller}", r.site.phase,
                     r.outcome.value, r.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4]
             for row in rows]
    counts: dict[str, int] = {}
    for r in result.results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    lines.append(f"{len(result.results)} sites of {result.target}: "
                 + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
                 + f"; {result.boots} boot{'s' if result.boots != 1 else ''}, "
                 f"{result.elapsed:.1f} s ({result.seconds_per_site:.2f} s per site)")
    return lines
