"""Write a pack session's reports: ``report.json`` (versioned; JSON Schema in
``kedr_build/packs/schema/report-2.json``), ``kcidb.json`` (KernelCI's KCIDB I/O
format: :mod:`kedr_build.packs.kcidb`), ``report.html`` (one self-contained
page: verdict first, per-test results, leak stacks grouped, violations, trace
statistics as an inline SVG chart, the fault-sweep table), and the terminal
summary. pytest writes ``junit.xml`` itself (``--junitxml``).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from kedr_build.atomic import write_atomic
from kedr_build.checks.suppress import Suppressed, describe
from kedr_build.packs import kcidb
from kedr_build.packs.results import PackReport

SCHEMA = Path(__file__).resolve().parent / "schema" / "report-2.json"
TEMPLATES = Path(__file__).resolve().parent / "templates"
JSON_NAME, HTML_NAME, JUNIT_NAME = "report.json", "report.html", "junit.xml"
CHART_FUNCTIONS = 12       # bars in the trace chart
# The fault sweep picture's columns: kedr_build.faults.trials.Outcome's values, good first.
SWEEP_OUTCOMES = ("clean", "not reached", "leak", "unload failed", "crash", "hang",
                  "lost")


def tool_versions() -> dict[str, str]:
    import pytest

    return {"kedr-build": _own_version(), "python": platform.python_version(),
            "pytest": pytest.__version__}


def _own_version() -> str:
    """The installed distribution's version, or the checkout's pyproject.toml's."""
    import importlib.metadata
    import tomllib

    try:
        return importlib.metadata.version("kedr-build")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return f"{tomllib.loads(pyproject.read_text())['project']['version']} (checkout)"
    except (OSError, KeyError, ValueError):
        return "unknown"


def write(directory: Path, rep: PackReport, origin: str = kcidb.DEFAULT_ORIGIN) -> None:
    """The report files (``origin``: the KCIDB origin of kcidb.json's objects)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / JSON_NAME, rep.to_json().encode())
    write_atomic(directory / kcidb.KCIDB_NAME, kcidb.to_json(rep, origin).encode())
    write_atomic(directory / HTML_NAME, html(rep).encode())


def html(rep: PackReport) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    suppressed = {d: describe(s) for d, s in suppressed_by_driver(rep).items()}
    return str(env.get_template("report.html.j2").render(r=rep, charts=charts(rep),
                                                         sweeps=sweep_pictures(rep),
                                                         suppressed=suppressed))


def suppressed_by_driver(rep: PackReport) -> dict[str, tuple[Suppressed, ...]]:
    """Per driver, each SUPPRESS= rule with the findings it hid in all its runs."""
    out: dict[str, dict[str, Suppressed]] = {}
    for run in rep.runs:
        rules = out.setdefault(run.driver, {})
        for s in run.suppressed:
            had = rules.get(s.rule)
            rules[s.rule] = Suppressed(s.rule, s.count + (had.count if had else 0), s.category)
    return {d: tuple(rules.values()) for d, rules in out.items() if rules}


def sweep_pictures(rep: PackReport) -> list[dict[str, Any]]:
    """Per run with a fault sweep: a grid, one row per site and one column per outcome,
    the site's outcome a filled cell (red when it fails the sweep)."""
    out = []
    for run in rep.runs:
        if not run.sweep:
            continue
        outcomes = list(SWEEP_OUTCOMES) + sorted({r.outcome for r in run.sweep}
                                                 - set(SWEEP_OUTCOMES))
        cells = [{"x": 260 + 90 * outcomes.index(r.outcome), "y": 30 + 22 * i,
                  "bad": r.bad, "site": r.site, "outcome": r.outcome, "detail": r.detail}
                 for i, r in enumerate(run.sweep)]
        out.append({"driver": run.driver, "test": run.test, "rows": run.sweep,
                    "columns": [{"x": 260 + 90 * i, "name": o} for i, o in enumerate(outcomes)],
                    "cells": cells, "width": 260 + 90 * len(outcomes),
                    "height": 34 + 22 * len(run.sweep)})
    return out


def charts(rep: PackReport) -> list[dict[str, Any]]:
    """Per run with a trace: the most called functions as bars (x, width, label)."""
    out = []
    for run in rep.runs:
        calls = sorted(run.trace_calls.items(), key=lambda kv: (-kv[1], kv[0]))[:CHART_FUNCTIONS]
        if not calls:
            continue
        top = max(n for _, n in calls)
        bars = [{"function": f, "calls": n, "width": max(1, round(300 * n / top)),
                 "y": 22 * i} for i, (f, n) in enumerate(calls)]
        out.append({"driver": run.driver, "test": run.test, "bars": bars,
                    "height": 22 * len(bars), "total": sum(run.trace_calls.values())})
    return out


def summary(rep: PackReport, directory: Path) -> list[str]:
    """The short text summary: the verdict per driver, each failed check with the
    command that reproduces it, and where the reports are."""
    flaky = [i for i in rep.items if i.outcome == "flaky"]
    where = f" at {rep.target}" if rep.target else ""
    lines = [f"kedr-build pack {rep.pack} on {rep.kernel}{where}: "
             f"{rep.verdict.upper()}"
             + (f" ({len(flaky)} flaky: passed on retry)" if flaky else "")]
    drivers = list(dict.fromkeys(i.driver for i in rep.items))
    suppressed = suppressed_by_driver(rep)
    for d in drivers:
        items = [i for i in rep.items if i.driver == d]
        cut = [i for i in items if i.outcome == "interrupted"]
        bad = [i for i in items if i.blocks and i.outcome != "interrupted"]
        said = f"; {describe(suppressed[d])}" if d in suppressed else ""
        # A not-run test of a non-blocker: said once per test, with why.
        idle = {i.test: i.message for i in items if i.outcome == "not-run" and not i.blocker}
        aside = "".join(f"; {t}: {len([i for i in items if i.test == t])} checks {m} "
                        "(not a blocker)" for t, m in idle.items()) + said
        if cut:
            lines.append(f"INTERRUPTED {d}: {len(cut)} of {len(items)} checks not run "
                         f"({cut[0].message.removeprefix('not run: ')})"
                         + (f", {len(bad)} failed" if bad else "") + aside)
        elif not bad:
            ran = len(items) - sum(1 for i in items if i.outcome == "not-run")
            shaky = [i for i in items if i.outcome == "flaky"]
            lines.append(f"PASSED {d}: {ran} checks"
                         + (f", {len(shaky)} flaky (passed on retry)" if shaky else "") + aside)
            for i in shaky:
                lines.append(f"  {i.test}.{i.check}: {i.message}")
            continue
        else:
            lines.append(f"FAILED {d}: {len(bad)} of {len(items)} checks" + aside)
        for i in bad:
            lines.append(f"  {i.test}.{i.check}: {i.message}")
            lines.append(f"      reproduce: {i.reproduce}")
    lines.append(f"reports: {directory / HTML_NAME}, {directory / JSON_NAME}, "
                 f"{directory / JUNIT_NAME}, {directory / kcidb.KCIDB_NAME}")
    return lines
