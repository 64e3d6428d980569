"""Human-readable text for a RunReport (the parser and runner never print)."""

from __future__ import annotations

from collections.abc import Sequence

from kedr_build.vm.runner import RunReport

MAX_LOG_LINES = 200


def format_report(report: RunReport, title: str) -> str:
    out: list[str] = []
    if report.driver_log:
        out.append(f"--- kernel log of {title} ---")
        log = list(report.driver_log)
        if len(log) > MAX_LOG_LINES:
            out += log[:MAX_LOG_LINES]
            out.append(f"... {len(log) - MAX_LOG_LINES} more lines in {report.logs}/console.log")
        else:
            out += log
    if report.workload_output:
        out.append("--- workload output ---")
        out.append(report.workload_output.rstrip("\n"))
    if report.devices:
        out.append(f"--- device bindings (DEVICES={report.devices}) ---")
        out += [str(b) for b in report.bindings if b.module or b.bus == "pci"]
        out += [f"{e.request}: {e.reply} ({e.seconds:.2f} s)" for e in report.device_events]
    if report.trace_summary:
        out.append(f"--- call trace (full trace: {report.logs}/trace.txt) ---")
        out += report.trace_summary
    if report.leaks is not None:
        from kedr_build.checks.leaks import summary as leak_summary
        out.append(f"--- leaks, bad frees, rule violations (full report: "
                   f"{report.logs}/leaks.json) ---")
        out += leak_summary(report.leaks)
        for s in report.suppressed:
            out.append(f"suppressed {s.count}: {s.rule}" + ("   (matched nothing)" if not s.count
                                                           else ""))
    elif report.leaks_error:
        out.append(f"--- leak report unreadable: {report.leaks_error} ---")
    for point, text in report.faults.items():
        out.append(f"--- fault point {point} ---")
        out.append(text)
    for problem in report.problems:
        out.append(f"--- kernel {problem.kind.value} ---")
        out.append(problem.excerpt)
    if report.target:
        out += machine_lines(report.target, report.taint_before, report.taint,
                             report.power_cycles, report.left_as_found)
    steps = ", ".join(f"{s.action} {s.target}{'' if s.ok else ' FAILED'}" for s in report.steps)
    verdict = "PASSED" if report.ok else f"FAILED: {report.reason}"
    # A passed run with a failed step: an init failed under an injected fault (runner).
    expected = f" ({report.reason})" if report.ok and any(not s.ok for s in report.steps) else ""
    if report.ok and not report.checks_ok and report.leaks is not None:
        verdict = (f"FAILED: {len(report.leaks.leaks)} possible leaks, "
                   f"{report.leaks.totals.bad_frees} bad frees, "
                   f"{len(report.leaks.violations)} rule violations"
                   + (", report incomplete" if report.leaks.incomplete else ""))
    verdict += expected
    if report.suppressed and report.leaks is not None:
        # Never a plain PASSED when SUPPRESS= rules hid findings.
        total = sum(s.count for s in report.suppressed)
        verdict += f" ({total} suppressed by SUPPRESS=, {len(report.suppressed)} rules)"
    out.append(f"kedr-build: {title}: {verdict} [{steps or 'no steps'}] "
               f"in {report.elapsed:.1f} s (logs: {report.logs})")
    return "\n".join(out)


def machine_lines(target: str, taint_before: int | None, taint: int | None,
                  power_cycles: Sequence[str], left_as_found: str) -> list[str]:
    """A real machine's part of a report (a run's, an attach's): its taint before and
    after, its power cycles, and whether it was left as found."""
    return [f"--- target {target} ---",
            f"kernel taint (/proc/sys/kernel/tainted) before {taint_before}, after {taint}",
            *power_cycles,
            "left as found (modules unloaded, files removed)" if not left_as_found
            else f"NOT left as found: {left_as_found}"]
