"""``scons ... attach``: hot patching of the driver in the VM, start to end.

The driver's plain ``.ko`` (unpatched; an in-tree ``KO=`` module is modprobed)
is loaded, the workload runs once, the replacement module attaches
(``attach.sh``), the workload runs again (the attached window), the window's
counters and leak report are read, it detaches and unloads the replacement
module, the workload runs a third time untouched, and the driver is unloaded.
:class:`AttachReport` says when each step happened (guest uptime), what the
window saw, and the verdict: failed on a failed step, a kernel problem, a bad
free or a rule violation. Objects still live when the window closes are
listed, not judged: the driver still runs and may free them later.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kedr_build.atomic import write_atomic

from kedr_build.vm.printer import machine_lines
from kedr_build.vm.qemu import GuestJob

if TYPE_CHECKING:
    from kedr_build.intercept.attach import AttachResult
    from kedr_build.kernel.descriptions import ProvisionedKernel
    from kedr_build.vm.qemu import VmResult

STEPS = ("load", "before", "attach", "window", "detach", "after", "unload", "done")


@dataclass(frozen=True)
class AttachReport:
    verdict: str                        # "passed" or "failed"
    reason: str                         # why it failed ("" when passed)
    target: str
    sites: int
    times: dict[str, float]             # step -> guest uptime when it started
    calls: dict[str, int]               # function -> calls in the attached window
    totals: dict[str, int] = field(default_factory=dict)   # the leak report's totals
    live: list[str] = field(default_factory=list)          # "fn size caller" at detach
    output: str = ""
    # A real machine (TARGET=ssh://, labgrid:; targets/attach.py): where, its taint
    # before and after, what was done to it, and how it was left ("" as found).
    machine: str = ""
    taint_before: int | None = None
    taint: int | None = None
    power_cycles: list[str] = field(default_factory=list)
    left_as_found: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def guest_script(target: str, replacement: str, intree: bool, workload: bool) -> str:
    """The job: load, run, attach, run, detach, run, unload. A module already loaded
    (a real machine's in-tree module, loaded at boot) is attached to as it is and
    left loaded: only what the job loaded is unloaded."""
    name = shlex.quote(target.replace("-", "_"))
    load = f"modprobe {shlex.quote(target)}" if intree else "insmod target.ko"
    unload = (f"[ -n \"$found\" ] || modprobe -r {shlex.quote(target)}" if intree
              else f"rmmod {shlex.quote(target)}")
    found = f"found=$(grep \"^{name} \" /proc/modules)" if intree else "found="
    work = "sh ./workload.sh; echo \"workload rc=$?\"" if workload else "true"
    ctl = f"/sys/kernel/debug/kedr_build/{replacement}"
    return f"""set -u
t() {{ cut -d' ' -f1 /proc/uptime; }}
{found}
echo "step load $(t)"; [ -n "$found" ] || {load} || {{ echo "failed: loading {target}"; exit 1; }}
echo "step before $(t)"; {work}
echo "step attach $(t)"; sh attach/attach.sh || {{ echo "failed: attach"; {unload}; exit 1; }}
echo "step window $(t)"; {work}
echo "== status"; cat {ctl}/status; echo "== leaks"; cat {ctl}/leaks; echo "== end"
echo "step detach $(t)"; sh attach/detach.sh --unload || {{ echo "failed: detach"; exit 1; }}
echo "step after $(t)"; {work}
echo "step unload $(t)"; {unload} || {{ echo "failed: unloading {target}"; exit 1; }}
echo "step done $(t)"
"""


def attach_job(prepared: AttachResult, ko: Path, intree: bool, logdir: Path,
               workload: Path | None) -> GuestJob:
    """The job of an attach run and its files (the QEMU guest's or a real machine's)."""
    from kedr_build.ko.container import read_module

    logdir.mkdir(parents=True, exist_ok=True)
    files = prepared.guest_files("attach")
    if not intree:
        plain = logdir / "target.ko"      # decompressed: busybox insmod takes an ELF
        write_atomic(plain, read_module(ko).elf)
        files["target.ko"] = plain
    if workload is not None:
        files["workload.sh"] = workload
    target = prepared.sites.module
    return GuestJob(script=guest_script(target, prepared.replacement.stem, intree,
                                        workload is not None),
                    files=files, intree_modules=(target,) if intree else ())


def run_attach(kernel: ProvisionedKernel, prepared: AttachResult, ko: Path, intree: bool,
               logdir: Path, workload: Path | None, timeout: float) -> AttachReport:
    from kedr_build.vm.qemu import run_guest

    job = attach_job(prepared, ko, intree, logdir, workload)
    result = run_guest(kernel, job, logdir, timeout=timeout)
    return conclude_attach(prepared, result, logdir)


def conclude_attach(prepared: AttachResult, result: VmResult, logdir: Path) -> AttachReport:
    """The report of an attach job's result (written to ``logdir``)."""
    write_atomic(logdir / "output.log", result.output.encode())
    write_atomic(logdir / "console.log", result.console.encode())
    report = interpret(result.output, prepared.sites.module, len(prepared.sites.sites),
                       result.status, [p.kind.value for p in result.problems],
                       result.timed_out)
    write_atomic(logdir / "result.json", report.to_json().encode())
    return report


def interpret(output: str, target: str, sites: int, status: int | None,
              problems: list[str], timed_out: bool) -> AttachReport:
    times = {m.group(1): float(m.group(2))
             for m in re.finditer(r"^step (\w+) ([0-9.]+)$", output, re.M)}
    block = re.search(r"^== status\n(.*?)^== leaks\n(.*?)^== end$", output, re.M | re.S)
    calls: dict[str, int] = {}
    totals: dict[str, int] = {}
    live: list[str] = []
    if block:
        for f in (line.split() for line in block.group(1).splitlines()):
            if len(f) == 5 and all(x.isdigit() for x in f[2:]) and int(f[3]):
                calls[f[0]] = int(f[3])
        leaks = block.group(2)
        m = re.search(r"^totals (.*)$", leaks, re.M)
        if m:
            totals = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
        live = [f"{o[0]} {o[1]} bytes caller={o[2]}" for o in re.findall(
            r"^object fn=(\S+) .*?size=(\d+) caller=(\S+)", leaks, re.M)]
        violations = len(re.findall(r"^violation ", leaks, re.M))
    else:
        violations = 0
    failed = re.search(r"^failed: (.*)$", output, re.M)
    refusal = re.search(r"^attach\.sh: (?!.* attached to ).*$", output, re.M)
    reason = ""
    if timed_out:
        reason = "the VM timed out"
    elif problems:
        reason = f"kernel {', '.join(problems)}"
    elif failed:
        reason = failed.group(1) + (f" ({refusal.group(0)})" if refusal else "")
    elif status != 0 or "done" not in times:
        reason = f"the guest job ended with status {status}"
    elif totals.get("bad_frees"):
        reason = f"{totals['bad_frees']} bad frees in the attached window"
    elif violations:
        reason = f"{violations} rule violations in the attached window"
    return AttachReport(verdict="failed" if reason else "passed", reason=reason,
                        target=target, sites=sites, times=times, calls=calls,
                        totals=totals, live=live, output=output)


def format_attach(report: AttachReport, logdir: Path) -> list[str]:
    t = report.times
    out = []
    if "attach" in t:
        end = t.get("detach", t.get("done", t["attach"]))
        out.append(f"--- attached window: {report.target}, {report.sites} sites, "
                   f"attached at {t.get('window', t['attach']):.3f} s, detached at "
                   f"{end:.3f} s (guest uptime) ---")
    total = sum(report.calls.values())
    out.append(f"{total} intercepted calls in the window")
    for fn, n in sorted(report.calls.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"{n:>10}  {fn}")
    if report.totals:
        tt = report.totals
        out.append(f"window: {tt.get('allocs', 0)} acquisitions (allocations, locks), {tt.get('frees', 0)} releases, "
                   f"{tt.get('untracked_frees', 0)} frees of objects from before attach "
                   f"(untracked), {tt.get('bad_frees', 0)} bad frees; {len(report.live)} "
                   "objects of the window still live at detach (not judged: the driver "
                   "still runs)")
    if report.machine:
        out += machine_lines(report.machine, report.taint_before, report.taint,
                             report.power_cycles, report.left_as_found)
    verdict = "PASSED" if report.verdict == "passed" else f"FAILED: {report.reason}"
    out.append(f"kedr-build: {report.target}: attach {verdict} (logs: {logdir})")
    return out
