"""Packs without a VM: the pack format and its errors, the pytest plugin driven by a
cheap test kind (registered as the fault sweep will register its own), sharding
and merging shards, and the report files against their schemas (the JUnit XML
against the Jenkins xunit plugin's junit-10.xsd, the JSON against ours)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import xmlschema

from conftest import REPO, kcidb_data, kcidb_statuses, run_scons
from kedr_build.errors import KedrError
from kedr_build.packs import merge, pack, report
from kedr_build.packs.session import DriverUnderTest, Session, parse_shard

CHEAP_KIND = '''
from kedr_build.checks.suppress import Suppressed
from kedr_build.packs import kinds
from kedr_build.packs.results import CheckResult, LeakGroupInfo, TestRun

def run(driver, test, logdir, session):
    import os
    with open(logdir / "ran", "a") as f:       # which process ran the group (boot)
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
    with open(logdir.parents[1] / "order", "a") as f:     # the groups in the order run
        f.write(f"{driver.name}/{test.name}\\n")
    # flaky_on: those drivers fail check b in their first run only (RETRIES= runs again).
    bad = (driver.name in test.params["fail_on"].split(",")
           or (driver.name in test.params["flaky_on"].split(",")
               and session.env.get("KEDR_ATTEMPT") == "1"))
    checks = tuple(CheckResult(c, not (bad and c == "b"), f"{c} of {driver.name}")
                   for c in test.checks)
    groups = (LeakGroupInfo(2, 64, "kmalloc", "leak_it+0x1c [x]", ("leak_it+0x1c [x]",
                                                                    "init+0x5 [x]")),) if bad else ()
    hidden = (Suppressed("s:1: leak all", 2, "leak"),) if driver.name == "d1" else ()
    return TestRun(driver.name, test.name, test.kind, checks, leak_groups=groups,
                   trace_calls={"kfree": 3, "__kmalloc": 4}, suppressed=hidden)

kinds.register(kinds.Kind("cheap", checks=("a", "b"), run=run,
                          params={"fail_on": kinds.Param(str, ""),
                                  "flaky_on": kinds.Param(str, "")}))
kinds.register(kinds.Kind("cheaplong", checks=("a", "b"), run=run,
                          params={"fail_on": kinds.Param(str, ""),
                                  "flaky_on": kinds.Param(str, "")}, long=True))
'''

CHEAP_PACK = '''
[pack]
name = "cheap"
format = 1

[[test]]
name = "one"
kind = "cheap"
fail_on = "d3"

[[test]]
name = "two"
kind = "cheap"
checks = ["a"]
'''


def test_basic_is_built_in() -> None:
    basic = pack.load("basic")
    assert [t.name for t in basic.tests] == ["load-unload", "workload"]
    assert basic.test("load-unload").params["cycles"] == 3
    assert set(basic.test("workload").checks) == {"loads", "workload", "kernel", "leaks",
                                                  "rules"}
    assert "basic" in pack.builtin()


def test_unknown_pack_lists_the_known_ones() -> None:
    with pytest.raises(KedrError) as e:
        pack.load("basci")
    assert str(e.value) == ("PACK=basci: unknown pack; built in: " + ", ".join(pack.builtin())
                            + " (or give the path of a pack file)")


@pytest.mark.parametrize("text, line, cause", [
    ('[pack]\nname = "x"\n[[test]\nname = "a"\n', 3, "Expected ']]' at the end of an array declaration"),
    ('[pack]\nname = "x"\n\n[[test]]\nname = "a"\nkind = "vm"\ncylces = 3\n', 7,
     "unknown key 'cylces'"),
    ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "vm"\ncycles = "3"\n', 6,
     "cycles: '3' is not an integer"),
    ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "vm"\ncycles = 0\n', 6,
     "cycles: 0 is below the minimum 1"),
    ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "vmm"\n', 5, "unknown test kind 'vmm'"),
    ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "faults"\nprobability = "10%"\n', 6,
     "probability: '10%' is not a probability written as a decimal, 0 to 1"),
    ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "vm"\ncopies = 0\n', 6,
     "copies: 0 is below the minimum 1"),
    ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "vm"\n[[test]]\nname = "b"\n'
     'kind = "vm"\nchecks = ["leaks", "leeks"]\n', 9, "check 'leeks' is not one of"),
    ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "vm"\n[[test]]\nname = "a"\n'
     'kind = "vm"\n', 7, "a test of that name comes earlier"),
    ('[pack]\nname = "x"\nformat = 2\n[[test]]\nname = "a"\nkind = "vm"\n', 3, "format 2"),
    ('[[test]]\nname = "a"\nkind = "vm"\n', 1, "no [pack] table"),
])
def test_malformed_pack_is_one_line_with_file_line_cause(tmp_path: Path, text: str, line: int,
                                                          cause: str) -> None:
    f = tmp_path / "my.toml"
    f.write_text(text)
    with pytest.raises(KedrError) as e:
        pack.load(str(f))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}:{line}: "), msg
    assert cause in msg, msg


def test_shard_syntax() -> None:
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "x", "1/", "1/0"):
        with pytest.raises(KedrError, match=f"SHARD={bad}: expected k/N"):
            parse_shard(bad)


def _session(tmp: Path, name: str, drivers: int, shard: tuple[int, int] | None = None,
             retries: int = 0, pack_text: str = CHEAP_PACK) -> Path:
    out = tmp / name
    out.mkdir()
    pack_file = tmp / "cheap.toml"      # one pack file: the same commands in every shard
    pack_file.write_text(pack_text)
    session = Session(pack=str(pack_file), kernel="debian-6.1", report_dir=str(out),
                      drivers=tuple(DriverUnderTest(
                          name=f"d{i}", modules=(), replacement=f"kedr_repl_d{i}",
                          command=f"scons MODULE=drivers/d{i} check PACK={pack_file}")
                          for i in range(drivers)), shard=shard, retries=retries)
    (out / "session.json").write_text(session.to_json())
    return out


def _pytest(out: Path, plugin_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{plugin_dir}{os.pathsep}{REPO}"}
    (out / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "cheapkind", "-p",
                           "kedr_build.packs.plugin", "-p", "no:cacheprovider",
                           "-c", str(out / "pytest.ini"), "--rootdir", str(out), "-v",
                           "--kedr-session", str(out / "session.json"),
                           "--junitxml", str(out / report.JUNIT_NAME),
                           "-o", "junit_family=xunit2", "-o", "junit_logging=system-out",
                           *extra, str(out.parent / "cheap.toml")],
                          capture_output=True, text=True, env=env, cwd=out)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cheapkind")
    (d / "cheapkind.py").write_text(CHEAP_KIND)
    return d


def _normal(rep: dict[str, Any]) -> dict[str, Any]:
    rep = dict(rep, command="", started="")
    rep["runs"] = [dict(r, elapsed=0) for r in rep["runs"]]
    return rep


def _cases(junit: Path) -> list[tuple[str, str, str]]:
    root = ET.parse(junit).getroot()
    return [(c.get("classname", ""), c.get("name", ""),
             ",".join(f"{x.tag}:{x.get('message', '')}" for x in c)) for c in root.iter("testcase")]


def test_pack_session_reports_validate_and_shards_merge_to_the_same(
        tmp_path: Path, plugin_dir: Path, junit_xsd: Path) -> None:
    whole = _session(tmp_path, "whole", drivers=5)
    proc = _pytest(whole, plugin_dir)
    assert proc.returncode == 1, proc.stdout + proc.stderr     # d3 fails check b of test one
    assert "one.b[d3] FAILED" in proc.stdout, proc.stdout
    assert "one.a[d0] PASSED" in proc.stdout
    assert f"reproduce: scons MODULE=drivers/d3 check PACK={tmp_path / 'cheap.toml'} TEST=one" \
        in proc.stdout
    assert "FAILED d3: 1 of 3 checks" in proc.stdout
    # SUPPRESS= rules that hid findings are said in the verdict line and in JUnit.
    said = "4 suppressed by SUPPRESS= (s:1: leak all: 4)"
    assert f"PASSED d1: 3 checks; {said}" in proc.stdout, proc.stdout
    outs = {c.get("name"): "".join(x.text or "" for x in c.iter("system-out"))
            for c in ET.parse(whole / report.JUNIT_NAME).getroot().iter("testcase")}
    assert "SUPPRESS: 2 suppressed by SUPPRESS= (s:1: leak all: 2)\n" in outs["one.a[d1]"]
    assert "SUPPRESS: 2 suppressed by SUPPRESS= (s:1: leak all: 2)\n" in outs["two.a[d1]"]
    assert "SUPPRESS" not in outs["one.a[d0]"], outs

    data = json.loads((whole / report.JSON_NAME).read_text())
    jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
    assert data["verdict"] == "failed"
    assert len(data["items"]) == 15 and len(data["runs"]) == 10
    xsd = xmlschema.XMLSchema(str(junit_xsd))
    xsd.validate(str(whole / report.JUNIT_NAME))
    html = (whole / report.HTML_NAME).read_text()
    assert "leak_it+0x1c [x]" in html and "<svg" in html
    # Self-contained: nothing loaded from elsewhere.
    assert not re.search(r"\b(src|href)\s*=|url\(|<link|@import", html)

    shards = []
    for k in (1, 2, 3):
        d = _session(tmp_path, f"shard{k}", drivers=5, shard=(k, 3))
        proc = _pytest(d, plugin_dir)
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        xsd.validate(str(d / report.JUNIT_NAME))
        shards.append(d)
    sizes = [len(json.loads((d / report.JSON_NAME).read_text())["items"]) for d in shards]
    assert sum(sizes) == 15 and all(sizes), sizes
    merged_dir = tmp_path / "merged"
    merged = merge.merge_dirs(merged_dir, shards)
    assert merged.verdict == "failed"
    merged_data = json.loads((merged_dir / report.JSON_NAME).read_text())
    jsonschema.validate(merged_data, json.loads(report.SCHEMA.read_text()))
    assert _normal(merged_data) == _normal(data)
    xsd.validate(str(merged_dir / report.JUNIT_NAME))
    assert _cases(merged_dir / report.JUNIT_NAME) == _cases(whole / report.JUNIT_NAME)
    suite = next(ET.parse(merged_dir / report.JUNIT_NAME).getroot().iter("testsuite"))
    assert (suite.get("tests"), suite.get("failures")) == ("15", "1")
    # KCIDB: both validate with kcidb-io, with the same statuses (ids differ: each run's own).
    whole_kcidb, merged_kcidb = (_kcidb(d) for d in (whole, merged_dir))
    assert _statuses(merged_kcidb) == _statuses(whole_kcidb)
    statuses = _statuses(whole_kcidb)
    assert statuses["d3", "kedr.cheap.one.b"] == "FAIL"
    assert statuses["d3", "kedr.cheap.one"] == statuses["d3", "kedr.cheap"] == "FAIL"
    assert statuses["d3", "kedr.cheap.two"] == statuses["d3", "kedr.cheap.one.a"] == "PASS"
    assert {s for (d, _), s in statuses.items() if d != "d3"} == {"PASS"}
    assert len(statuses) == 5 * (3 + 2 + 1)     # per driver: 3 checks, 2 tests, the pack
    assert [b["status"] for b in whole_kcidb["builds"]] == ["PASS"] * 5


def _kcidb(directory: Path) -> dict[str, Any]:
    return kcidb_data(directory)


def _statuses(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    return kcidb_statuses(data)


def test_kcidb_statuses_roll_up_in_kcidb_order() -> None:
    from kedr_build.packs import kcidb
    from kedr_build.packs.results import ItemResult

    assert kcidb.rollup(["PASS", "SKIP", "DONE"]) == "PASS"
    assert kcidb.rollup(["PASS", "MISS", "SKIP"]) == "MISS"
    assert kcidb.rollup(["MISS", "ERROR", "PASS"]) == "ERROR"
    assert kcidb.rollup(["ERROR", "FAIL", "SKIP", "PASS"]) == "FAIL"
    assert kcidb.rollup(["SKIP", "DONE"]) == "DONE"
    assert kcidb.rollup([]) == "SKIP"

    def item(outcome: str, blocker: bool = True) -> ItemResult:
        return ItemResult("d", "t", "c", outcome, "", "", blocker=blocker)

    assert [kcidb.status_of(item(o)) for o in ("passed", "failed", "error", "not-run",
                                               "interrupted", "flaky")] == [
        "PASS", "FAIL", "ERROR", "MISS", "MISS", "PASS"]
    assert kcidb.status_of(item("not-run", blocker=False)) == "SKIP"
    assert kcidb.status_of(item("passed"), built=False) == "MISS"
    assert kcidb.path_part("load-unload") == "load-unload"
    assert kcidb.path_part("a.b c") == "a_b_c"
    assert kcidb.check_origin("my_lab") == "my_lab"
    with pytest.raises(KedrError, match="KCIDB_ORIGIN=My-Lab: a KCIDB origin is lower-case"):
        kcidb.check_origin("My-Lab")


def test_retry_judges_each_check_over_its_runs() -> None:
    from kedr_build.packs import retry
    from kedr_build.packs.results import CheckResult, TestRun

    def run(*passed: bool, elapsed: float = 1.0) -> TestRun:
        return TestRun("d", "t", "vm", tuple(CheckResult(c, p, f"{c} {'ok' if p else 'bad'}")
                                             for c, p in zip("abc", passed)), elapsed=elapsed)

    runs = [run(True, False, False), run(False, True, False), run(True, True, False)]
    calls: list[int] = []

    def once(attempt: int) -> TestRun:
        calls.append(attempt)
        return runs[attempt - 1]

    got = retry.run_with_retries(once, 2)
    assert calls == [1, 2, 3]           # c fails in every run: as many as RETRIES= allows
    assert got.attempts == 3 and got.elapsed == 3.0
    a, b, c = got.checks
    # Passed in run 1, failed in run 2: flaky too (it is not deterministic), never passed.
    assert (a.passed, a.flaky) == (True, "failed in run 2 of 3 (a bad), passed in runs 1, 3")
    assert (b.passed, b.flaky) == (True, "failed in run 1 of 3 (b bad), passed in runs 2, 3")
    assert (c.passed, c.flaky, c.message) == (False, "", "c bad (failed in each of 3 runs)")
    calls.clear()
    assert retry.run_with_retries(once, 0).attempts == 1 and calls == [1]
    # Run 2 leaves no check failing in every run: no third run.
    calls.clear()
    runs[1] = run(False, True, True)
    assert retry.run_with_retries(once, 5).attempts == 2 and calls == [1, 2]
    # Nothing failing: one run, as without RETRIES=.
    assert retry.run_with_retries(lambda k: run(True, True, True), 3).attempts == 1
    # A driver that was not built is not run again.
    unbuilt = TestRun("d", "t", "vm", (CheckResult("a", False, "not built: x"),),
                      reason="not built: x")
    assert retry.run_with_retries(lambda k: unbuilt, 3).attempts == 1
    for bad in ("-1", "11", "two", "1.5"):
        with pytest.raises(KedrError, match=f"RETRIES={re.escape(bad)}: expected"):
            retry.parse_retries(bad)
    assert retry.parse_retries("") == 0 and retry.parse_retries("10") == 10


FLAKY_PACK = CHEAP_PACK.replace('fail_on = "d3"', 'fail_on = "d2"\nflaky_on = "d1"')


def test_retries_report_a_check_passed_on_retry_as_flaky_everywhere(
        tmp_path: Path, plugin_dir: Path) -> None:
    """RETRIES=2: d1 fails check b in its first run only (flaky), d2 in every run
    (failed after 3 runs), d0 never: flaky is said on the console, in the verdict line,
    JUnit, JSON, HTML and KCIDB, never as a plain pass; the verdict is passed on d1."""
    out = _session(tmp_path, "retry", drivers=3, retries=2, pack_text=FLAKY_PACK)
    proc = _pytest(out, plugin_dir)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text                   # d2 still fails
    assert "::one.b[d1] FLAKY" in proc.stdout, text
    assert "one.b[d1] PASSED" not in proc.stdout
    assert "one.b[d2] FAILED" in proc.stdout
    how = "failed in run 1 of 2 (b of d1), passed in run 2"
    assert "kedr-build pack cheap on debian-6.1: FAILED (1 flaky: passed on retry)" in text
    assert "PASSED d1: 3 checks, 1 flaky (passed on retry)" in text, text
    assert f"  one.b: flaky: {how}; b of d1" in text
    assert "FAILED d2: 1 of 3 checks" in text
    # The runs: d1's test one twice, d2's three times (RETRIES=2), d0's once.
    assert sorted(str(p.relative_to(out / "logs")) for p in (out / "logs").rglob("ran")) == [
        "d0/one/ran", "d0/two/ran", "d1/one/ran", "d1/one/retry-1/ran", "d1/two/ran",
        "d2/one/ran", "d2/one/retry-1/ran", "d2/one/retry-2/ran", "d2/two/ran"]

    data = json.loads((out / report.JSON_NAME).read_text())
    jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
    items = {(i["driver"], i["test"], i["check"]): i for i in data["items"]}
    assert items["d1", "one", "b"]["outcome"] == "flaky"
    assert items["d1", "one", "b"]["message"] == f"flaky: {how}; b of d1"
    assert items["d1", "one", "a"]["outcome"] == "passed"
    assert items["d2", "one", "b"]["outcome"] == "failed"
    assert items["d2", "one", "b"]["message"] == "b of d2 (failed in each of 3 runs)"
    runs = {(r["driver"], r["test"]): r for r in data["runs"]}
    assert (runs["d1", "one"]["attempts"], runs["d1", "one"]["retried"]) == (2, ["b: b of d1"])
    assert runs["d2", "one"]["attempts"] == 3 and runs["d0", "one"]["attempts"] == 1

    outs = {c.get("name"): "".join(x.text or "" for x in c.iter("system-out"))
            for c in ET.parse(out / report.JUNIT_NAME).getroot().iter("testcase")}
    assert f"FLAKY: {how}\n" in outs["one.b[d1]"], outs
    assert "FLAKY" not in outs["one.a[d1]"] and "FLAKY" not in outs["one.b[d2]"]

    html = (out / report.HTML_NAME).read_text()
    assert '<span id="flaky">1 flaky (passed on retry)</span>' in html
    assert html.count('class="outcome flaky">flaky<') == 1
    assert "2 runs (RETRIES=)" in html and "3 runs (RETRIES=)" in html

    statuses = _statuses(_kcidb(out))
    assert statuses["d1", "kedr.cheap.one.b"] == "PASS"
    assert statuses["d2", "kedr.cheap.one.b"] == "FAIL"
    flaky = next(t for t in _kcidb(out)["tests"] if t["path"] == "kedr.cheap.one.b"
                 and t["misc"]["driver"] == "d1")
    assert flaky["misc"]["kedr_outcome"] == "flaky" and flaky["comment"].startswith("flaky: ")

    # Without RETRIES= the same first run fails d1: what RETRIES= reports as flaky is
    # the failure it would have been.
    plain = _session(tmp_path, "plain", drivers=3, pack_text=FLAKY_PACK)
    proc = _pytest(plain, plugin_dir)
    assert "one.b[d1] FAILED" in proc.stdout, proc.stdout
    # --kedr-retries overrides the session's, and a bad value is one line.
    again = _session(tmp_path, "again", drivers=3, pack_text=FLAKY_PACK)
    assert "one.b[d1] FLAKY" in _pytest(again, plugin_dir, "--kedr-retries", "1").stdout
    # Two xdist workers: the same items, the worker's flaky result said by the controller.
    para = _session(tmp_path, "para", drivers=3, retries=2, pack_text=FLAKY_PACK)
    proc = _pytest(para, plugin_dir, "-n", "2")
    # Each item's line as without xdist (plugin.py takes the worker off the reports).
    assert "::one.b[d1] FLAKY" in proc.stdout and "[gw" not in proc.stdout, proc.stdout
    two = json.loads((para / report.JSON_NAME).read_text())
    assert _normal(two) == _normal(data)
    bad = _pytest(_session(tmp_path, "bad", drivers=1), plugin_dir, "--kedr-retries", "-1")
    assert bad.returncode == 4
    assert "kedr-build: RETRIES=-1: expected how many times a failed test runs again, " \
        "0 to 10" in bad.stderr, bad.stderr


def test_long_groups_start_first_under_xdist(tmp_path: Path, plugin_dir: Path) -> None:
    """Under xdist the groups of a long kind (a sweep) start first, then the pack's
    order; xdist's own order, the groups with the most checks first, started the device
    pack's sweep (one check) last, on a worker that had run two others already."""
    text = CHEAP_PACK.replace('name = "two"\nkind = "cheap"', 'name = "two"\nkind = "cheaplong"')
    out = _session(tmp_path, "order", drivers=2, pack_text=text)
    proc = _pytest(out, plugin_dir, "-n", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "logs" / "order").read_text().split() == ["d0/two", "d1/two", "d0/one",
                                                            "d1/one"]
    from kedr_build.packs.plugin import start_order

    groups = ["p.toml::probe[e1000]", "p.toml::sweep.x[e1000]", "p.toml::reload[e1000]",
              "p.toml::sweep.x[edu]"]
    assert start_order(groups, {"sweep.x"}) == [groups[1], groups[3], groups[0], groups[2]]


def test_two_workers_give_the_same_report(tmp_path: Path, plugin_dir: Path) -> None:
    """pytest-xdist -n 2: each (driver, test) group runs once, on one worker, both workers
    work, and the reports equal the run without xdist (JUnit: the same cases)."""
    whole = _session(tmp_path, "whole", drivers=5)
    assert _pytest(whole, plugin_dir).returncode == 1
    para = _session(tmp_path, "para", drivers=5)
    proc = _pytest(para, plugin_dir, "-n", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    workers = {}
    for ran in (para / "logs").glob("*/*/ran"):
        lines = ran.read_text().split()
        assert len(lines) == 1, (ran, lines)        # one run per group, on one worker
        workers[ran.parent.parent.name, ran.parent.name] = lines[0]
    assert len(workers) == 10 and set(workers.values()) == {"gw0", "gw1"}, workers
    one = json.loads((whole / report.JSON_NAME).read_text())
    two = json.loads((para / report.JSON_NAME).read_text())
    assert _normal(two) == _normal(one)
    assert sorted(_cases(para / report.JUNIT_NAME)) == sorted(_cases(whole / report.JUNIT_NAME))


def test_sweep_picture_has_a_cell_per_site_in_its_outcome_column() -> None:
    from kedr_build.packs.results import CheckResult, PackReport, SweepRow, TestRun

    rows = (SweepRow("kmalloc_trace at x_init+0x10", "clean", "init failed (error 12)", "init"),
            SweepRow("kstrdup at x_init+0x42", "leak", "1 leaks (4096 bytes)", "init",
                     "scons MODULE=x run 'FAULTS=kstrdup: caller=x_init+0x42 nth=1'", True))
    run = TestRun("x", "faults", "faults", (CheckResult("sweep", False, "leak"),), sweep=rows)
    rep = PackReport("faults", "debian-6.1", "failed", (), (run,))
    pictures = report.sweep_pictures(rep)
    assert [(c["x"], c["bad"]) for c in pictures[0]["cells"]] == [(260, False), (260 + 90 * 2, True)]
    html = report.html(rep)
    assert 'class="site failed" data-outcome="leak"' in html
    assert "FAULTS=kstrdup: caller=x_init+0x42 nth=1" in html


def test_faults_and_full_are_built_in() -> None:
    faults = pack.load("faults")
    assert [(t.name, t.kind, t.checks) for t in faults.tests] == [
        ("faults", "faults", ("sweep", "campaign"))]
    assert faults.tests[0].params == {"runs": 10, "probability": "0.1", "seed": 1, "timeout": 0}
    full = pack.load("full")
    basic = pack.load("basic")
    assert full.tests[:2] == basic.tests and full.tests[2] == faults.tests[0]
    stress = full.test("stress")
    assert stress.params["copies"] == 4 and stress.params["workload"] == "required"


def test_merge_refuses_overlapping_shards(tmp_path: Path, plugin_dir: Path) -> None:
    d = _session(tmp_path, "a", drivers=1)
    _pytest(d, plugin_dir)
    with pytest.raises(KedrError, match="overlap"):
        merge.merge_dirs(tmp_path / "m", [d, d])


def test_shards_from_places_of_one_lab_merge_as_one_session() -> None:
    """SHARD=1/2 on place lab-a and SHARD=2/2 on lab-b of one labgrid environment (issue
    21): one report, at both places as one check on both names them; shards of other
    targets are other sessions (refused before: their targets differ)."""
    from kedr_build.packs.results import ItemResult, PackReport

    def shard(index: int, target: str) -> PackReport:
        item = ItemResult("chardev", "workload", f"check{index}", "passed", "", "",
                          index=index)
        return PackReport("basic", "debian-6.1", "passed", (item,), (), target=target)

    lab = "labgrid:/srv/lab.yaml"
    merged = merge.merge_reports([shard(1, f"{lab}:lab-b"), shard(0, f"{lab}:lab-a")])
    assert merged.target == f"{lab}:lab-b,lab-a" and merged.verdict == "passed"
    assert [i.index for i in merged.items] == [0, 1]
    assert merge.one_target([f"{lab}:lab-a", f"{lab}:lab-a,lab-b"]) == f"{lab}:lab-a,lab-b"
    assert merge.one_target(["ssh://root@a", "ssh://root@a"]) == "ssh://root@a"
    for other in ("labgrid:/srv/other.yaml:lab-b", lab, "ssh://root@lab-b", ""):
        with pytest.raises(KedrError, match="shards of different sessions"):
            merge.merge_reports([shard(0, f"{lab}:lab-a"), shard(1, other)])


@pytest.mark.parametrize("args, message", [
    (["PACK=basci"], "kedr-build: PACK=basci: unknown pack; built in: basic"),
    (["PACK=nosuch.toml"], "kedr-build: PACK=nosuch.toml: no such pack file"),
    (["SHARD=3/2"], "kedr-build: SHARD=3/2: expected k/N with 1 <= k <= N"),
    (["JOBS=two"], "kedr-build: JOBS=two: expected a number of VMs at once, 1 or more, "
                  "or auto"),
    (["RETRIES=11"], "kedr-build: RETRIES=11: expected how many times a failed test runs "
                     "again, 0 to 10"),
    (["KCIDB_ORIGIN=Lab 1"], "kedr-build: KCIDB_ORIGIN=Lab 1: a KCIDB origin is lower-case"),
    (["DRIVERS=examples/chardev,examples/chardev"], "both write"),
    (["DRIVERS=examples/chardev", "MODULE=examples/chardev"],
     "kedr-build: DRIVERS= and MODULE= exclude each other"),
    (["DRIVERS=@nosuch.txt"], "kedr-build: DRIVERS=@nosuch.txt: cannot read"),
    # Found only after the build, once.
    (["TEST=unknown,workload"], "kedr-build: TEST=unknown: not a test of pack 'basic' "
                                "(its tests: load-unload, workload)"),
    (["PACK=faults", "TEST=load-unload"], "kedr-build: TEST=load-unload: not a test of pack "
                                          "'faults' (its tests: faults)"),
])
def test_check_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path,
                                     pinned_kernel: Any) -> None:
    base = [] if any(a.startswith("DRIVERS=") for a in args) else ["MODULE=examples/chardev"]
    proc = run_scons([*base, *args, f"BUILD_DIR={tmp_path}", "check"], check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not list(tmp_path.glob("*/plan.json")), "refused after the build"


def test_malformed_pack_stops_scons_with_its_line(tmp_path: Path, pinned_kernel: Any) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text('[pack]\nname = "mine"\n\n[[test]]\nname = "x"\nkind = "vm"\nchecks = ["oops"]\n')
    proc = run_scons(["MODULE=examples/chardev", f"PACK={bad}", f"BUILD_DIR={tmp_path / 'b'}",
                      "check"], check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == (f"kedr-build: {bad}:7: [[test]] x: check 'oops' is not one "
                                   "of kind 'vm''s: loads, workload, kernel, leaks, rules"), \
        proc.stderr


def test_faults_kind_passes_a_driver_with_nothing_that_can_fail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep and the campaign raise NoFaultPoint (as kedr_build.faults does for a
    driver importing no function that can fail): both checks pass saying so; any other
    KedrError fails both with its line, whatever its text (typed, not matched)."""
    from kedr_build.faults.errors import NoFaultPoint
    from kedr_build.packs import faultkind

    def nothing(what: str, error: type[KedrError] = NoFaultPoint) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise error(what)
        return fail

    monkeypatch.setattr(faultkind.provision, "ensure", lambda name: None)
    monkeypatch.setattr(faultkind, "sweep", nothing("sweep of x: nothing to sweep: ..."))
    monkeypatch.setattr(faultkind, "campaign", nothing("campaign: x has no fault point: "
                                                       "nothing can fail"))
    test = pack.load("faults").tests[0]
    driver = DriverUnderTest(name="x", modules=("a/kedr_repl_x.ko", "a/x.ko"),
                             replacement="kedr_repl_x", command="scons check",
                             run_command="scons run")
    session = Session(pack="faults", kernel="debian-6.1", drivers=(driver,), report_dir="r")
    run = faultkind.run(driver, test, tmp_path, session)
    assert [(c.check, c.passed) for c in run.checks] == [("sweep", True), ("campaign", True)]
    assert run.checks[0].message.startswith("no fault site: sweep of x: nothing to sweep")
    monkeypatch.setattr(faultkind, "sweep", nothing("sweep of x: boot 1 failed: no init",
                                                    KedrError))
    run = faultkind.run(driver, test, tmp_path, session)
    assert [(c.check, c.passed, c.message) for c in run.checks] == [
        ("sweep", False, "sweep of x: boot 1 failed: no init"),
        ("campaign", False, "sweep of x: boot 1 failed: no init")]
    # A failure that merely says the words is a failure.
    monkeypatch.setattr(faultkind, "sweep", nothing("boot 1: nothing to sweep", KedrError))
    run = faultkind.run(driver, test, tmp_path, session)
    assert [c.passed for c in run.checks] == [False, False]


CHEAP_ONE = '''
[pack]
name = "cheap"
format = 1

[[test]]
name = "one"
kind = "cheap"
fail_on = "chardev"
'''


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cheapsite")
    (d / "cheapkind.py").write_text(CHEAP_KIND)
    return d


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import copy_checkout

    top = copy_checkout(tmp_path_factory.mktemp("checkout"))
    (top / "cheap.toml").write_text(CHEAP_ONE)
    return top


def _user(top: Path, plugin_dir: Path, cwd: Path, command: str
          ) -> subprocess.CompletedProcess[str]:
    """A shell command typed in ``cwd`` of the checkout copy. Every Python started
    registers the cheap kind (a sitecustomize beside it): scons reads the pack, the
    check's pytest runs it."""
    from conftest import checkout_env

    (plugin_dir / "sitecustomize.py").write_text(
        "try:\n    import cheapkind\nexcept ImportError:\n    pass\n")
    env = checkout_env({"PYTHONPATH": str(plugin_dir)})
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True)


def _reproduce(out: str) -> list[str]:
    return list(dict.fromkeys(ln.split("reproduce: ", 1)[1].strip() for ln in out.splitlines()
                              if "reproduce: " in ln))


@pytest.mark.parametrize("where, command, reports", [
    # The README's command shape, default BUILD_DIR (build/ in the checkout).
    (".", "./kedr-env scons MODULE=examples/chardev check PACK=cheap.toml",
     "build/chardev/report"),
    (".", "./kedr-env scons MODULE=examples/chardev BUILD_DIR=out check PACK=cheap.toml",
     "out/chardev/report"),
    (".", "./kedr-env scons DRIVERS=examples/chardev,examples/multi BUILD_DIR=out2 check "
          "PACK=cheap.toml", "out2/report"),
    # Started in the driver's directory (scons -u finds the SConstruct above).
    ("examples/chardev", "../../kedr-env scons -u MODULE=. check PACK=../../cheap.toml",
     "build/chardev/report"),
])
def test_check_with_relative_paths_and_its_reproduce_commands(
        checkout: Path, site_dir: Path, where: str, command: str, reports: str,
        pinned_kernel: Any) -> None:
    """Relative BUILD_DIR, the default one, a batch, a run from another directory: the
    check runs (it once ended in a FileNotFoundError traceback: pytest ran in the report
    directory with paths relative to the checkout) and every printed reproduce command
    works verbatim from the checkout's top, failing the same check."""
    proc = _user(checkout, site_dir, checkout / where, command)
    out = proc.stdout + proc.stderr
    # scons exits 2 when a target fails: here the check, as chardev fails check b.
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert "one.b[chardev] FAILED" in out, out
    data = json.loads((checkout / reports / report.JSON_NAME).read_text())
    assert {(i["driver"], i["check"], i["outcome"]) for i in data["items"]
            if i["driver"] == "chardev"} == {("chardev", "a", "passed"),
                                             ("chardev", "b", "failed")}
    assert (checkout / reports / report.JUNIT_NAME).is_file()
    commands = _reproduce(proc.stdout)
    assert len(commands) == 1 and commands[0].startswith("./kedr-env scons "), commands
    assert "MODULE=examples/chardev" in commands[0].split(), commands
    again = _user(checkout, site_dir, checkout, commands[0])
    out = again.stdout + again.stderr
    assert again.returncode == 2 and "Traceback" not in out, out
    assert "one.b[chardev] FAILED" in out and _reproduce(again.stdout) == commands, out


def test_reproduce_commands_are_typed_in_the_checkout(tmp_path: Path, pinned_kernel: Any) -> None:
    """scons started in examples/ (scons -u): the commands a failure prints name every
    path from the checkout's top, where ./kedr-env is; paths outside it stay absolute,
    names (PACK=basic) as given."""
    from kedr_build import checkjob, config

    rules = tmp_path / "rules.supp"
    rules.write_text("leak function=kstrdup\n")
    cfg = config.from_arguments({"MODULE": "chardev", "WORKLOAD": "chardev/workload.sh",
                                 "SUPPRESS": str(rules), "VM_TIMEOUT": "60"},
                                str(REPO), str(REPO / "examples"), offline=True)
    assert checkjob.command(cfg, "basic") == (
        f"./kedr-env scons MODULE=examples/chardev SUPPRESS={rules} VM_TIMEOUT=60 "
        "WORKLOAD=examples/chardev/workload.sh check PACK=basic")
    cfg = config.from_arguments({"MODULE": "chardev"}, str(REPO), str(REPO / "examples"),
                                offline=True)
    # The driver's own workload.sh, when WORKLOAD= is not given.
    assert checkjob.run_command(cfg) == ("./kedr-env scons MODULE=examples/chardev "
                                         "WORKLOAD=examples/chardev/workload.sh run")
    causes = ["other: kbuild failed", f"{cfg.driver}: kbuild failed (make exit 2): x.c:1: error"]
    assert checkjob.build_error(cfg, True, causes) == ""
    assert checkjob.build_error(cfg, False, causes) == causes[1]
    assert checkjob.build_error(cfg, False, causes[:1]) == \
        "its build failed (the messages are above)"


def test_jobs_capped_and_old_reports_cleared(tmp_path: Path, site_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    """JOBS=1000 once started 1000 xdist workers: capped at the session's (driver, test)
    groups and the CPUs, saying so in one line. A new run leaves no report of an older
    one (an old report.html once stayed beside a new junit.xml)."""
    from kedr_build.packs import check, kinds

    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))
    monkeypatch.syspath_prepend(str(site_dir))
    import cheapkind  # noqa: F401  (registers the cheap kind here too)

    out = _session(tmp_path, "run", drivers=1)
    session = Session.read(out / "session.json")
    many = Session(**{**session.__dict__, "jobs": 1000})
    assert check.groups(many) == 2
    assert check.workers(many, cpus=64) == (2, "kedr-build: JOBS=1000: 2 at once (the session "
                                            "has 2 driver-test groups, one VM each; this "
                                            "machine has 64 CPUs)")
    assert check.workers(Session(**{**session.__dict__, "jobs": 2}), cpus=1)[0] == 1
    assert check.workers(Session(**{**session.__dict__, "jobs": 2}), cpus=8) == (2, "")
    assert check.groups(Session(**{**session.__dict__, "shard": (2, 2)})) == 1
    (out / report.HTML_NAME).write_text("an old report")
    (out / "logs" / "gone").mkdir(parents=True)
    monkeypatch.setenv("PYTHONPATH", f"{site_dir}{os.pathsep}{REPO}")
    (site_dir / "sitecustomize.py").write_text("import cheapkind\n")
    assert check.run_session(many) == 0
    lines = capfd.readouterr().out.splitlines()
    assert sum("JOBS=1000" in ln for ln in lines) == 1
    assert any(ln.startswith("kedr-build: JOBS=1000: ") for ln in lines), lines
    assert "an old report" not in (out / report.HTML_NAME).read_text()
    assert not (out / "logs" / "gone").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["cheap.toml", "junit.xml", "kcidb.json", "logs", "pytest.ini", "report.html",
         "report.json", "session.json"])


def test_jobs_auto_is_one_vm_per_cpu_share(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBS=auto, the default: one VM per CPU, at most one per group, said in one line
    when more than one; under an enclosing pytest-xdist run, each of its workers' share
    of the CPUs; on a real machine, 1. (Before: the default was 1 VM at a time, and
    JOBS=auto a bad value.)"""
    from kedr_build import checkjob, config
    from kedr_build.packs import check
    from kedr_build.packs.session import AUTO_JOBS
    from kedr_build.targets.spec import QemuTarget, SshTarget

    assert config.VARIABLES["JOBS"].default == "auto"
    assert config._jobs("auto") == config._jobs("") == AUTO_JOBS and config._jobs("3") == 3
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    two = "".join(f'[[test]]\nname = "t{i}"\nkind = "vm"\nchecks = ["loads"]\n'
                  for i in (1, 2))
    out = _session(tmp_path, "run", drivers=3,          # 2 tests x 3 drivers: 6 groups
                   pack_text=f'[pack]\nname = "two"\nformat = 1\n{two}')
    auto = Session(**{**Session.read(out / "session.json").__dict__, "jobs": AUTO_JOBS})
    assert check.workers(auto, cpus=2) == (2, "kedr-build: JOBS=auto: 2 VMs at once (the "
                                           "session has 6 driver-test groups, one VM each; "
                                           "2 of this machine's 2 CPUs)")
    assert check.workers(auto, cpus=64)[0] == 6
    assert check.workers(auto, cpus=1) == (1, "")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert check.workers(auto, cpus=2) == (1, "")
    assert check.workers(auto, cpus=8)[0] == 4
    real = SimpleNamespace(jobs=AUTO_JOBS, target=SshTarget(host="lab"))
    assert checkjob.jobs_of(real) == 1                                 # type: ignore[arg-type]
    assert checkjob.jobs_of(SimpleNamespace(jobs=AUTO_JOBS, target=QemuTarget())) \
        == AUTO_JOBS                                                   # type: ignore[arg-type]


def test_reports_say_where_the_pack_ran(tmp_path: Path) -> None:
    """TARGET= is in report.json, the summary, the HTML and kcidb.json's environment (a
    real machine's run used to say "QEMU guest" there); shards of two targets are not one
    session. The QEMU guest's reports are as they were."""
    from dataclasses import replace

    import kcidb_io  # type: ignore[import-untyped]

    from kedr_build.packs import kcidb
    from kedr_build.packs.results import (CheckResult, ItemResult, PackReport, TestRun,
                                          from_dict)

    item = ItemResult("d", "load-unload", "loads", "passed", "", "")
    run = TestRun("d", "load-unload", "vm", (CheckResult("loads", True, "ok"),))
    lab = PackReport("basic", "debian-6.1", "passed", (item,), (run,),
                     started="2026-12-06T23:00:00+00:00", target="ssh://root@lab1")
    qemu = PackReport("basic", "debian-6.1", "passed", (item,), (run,),
                      started="2026-12-06T23:00:00+00:00")
    for rep, where in ((lab, "machine ssh://root@lab1, Debian 12"), (qemu, "QEMU guest, ")):
        data = json.loads(rep.to_json())
        jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
        assert from_dict(json.loads(rep.to_json())) == rep
        doc = kcidb.document(rep)
        kcidb_io.schema.LATEST.validate_exactly(doc)
        assert {t["environment"]["comment"][:len(where)] for t in doc["tests"]} == {where}
        assert doc["tests"][0]["environment"]["misc"].get("target") == (rep.target or None)
    assert report.summary(lab, tmp_path)[0] == \
        "kedr-build pack basic on debian-6.1 at ssh://root@lab1: PASSED"
    assert report.summary(qemu, tmp_path)[0] == "kedr-build pack basic on debian-6.1: PASSED"
    with pytest.raises(KedrError, match="on debian-6.1 in the QEMU guest vs pack basic on "
                                        "debian-6.1 at ssh://root@lab1"):
        merge.merge_reports([lab, qemu])
    other = replace(lab, items=(replace(item, index=1),))
    assert merge.merge_reports([lab, other]).target == "ssh://root@lab1"
