"""Interrupted pack sessions and checks that cannot run, without a VM: the pytest plugin
driven by a cheap test kind whose run for one driver blocks on a real child process (as
a test blocks on QEMU), stopped by a real signal. (The VM jobs themselves, scons run,
sweep and check stopped by SIGINT, SIGTERM and SIGKILL: tests/test_interrupt_vm.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema

from conftest import REPO, kcidb_data, kcidb_statuses, live_processes
from kedr_build.errors import KedrError
from kedr_build.packs import pack, report
from kedr_build.packs.session import DriverUnderTest, Session

SLOW_KIND = '''
import sys
from kedr_build import interrupt
from kedr_build.packs import kinds
from kedr_build.packs.results import CheckResult, TestRun

def run(driver, test, logdir, session):
    if driver.name == test.params["hang_on"]:
        # Blocks on a child as a VM test blocks on QEMU; its command line names logdir.
        child = interrupt.spawn([sys.executable, "-c", "import time; time.sleep(600)",
                                 str(logdir)])
        (logdir / "started").write_text(str(child.pid))
        try:
            child.wait()
        finally:
            interrupt.release(child)
        interrupt.check()
    if driver.name == test.params["idle_on"]:
        return TestRun(driver.name, test.name, test.kind, reason="not run: no workload",
                       checks=tuple(CheckResult(c, False, "not run: no workload", skipped=True)
                                    for c in test.checks))
    return TestRun(driver.name, test.name, test.kind,
                   tuple(CheckResult(c, True, f"{c} of {driver.name}") for c in test.checks))

kinds.register(kinds.Kind("slow", checks=("a", "b"), run=run,
                          params={"hang_on": kinds.Param(str, ""),
                                  "idle_on": kinds.Param(str, "")}))
'''


def _session(tmp: Path, pack_text: str, drivers: int = 3) -> Path:
    out = tmp / "report"
    out.mkdir()
    pack_file = tmp / "slow.toml"
    pack_file.write_text(pack_text)
    session = Session(pack=str(pack_file), kernel="debian-6.1", report_dir=str(out),
                      drivers=tuple(DriverUnderTest(
                          name=f"d{i}", modules=(), replacement=f"kedr_repl_d{i}",
                          command=f"scons MODULE=drivers/d{i} check") for i in range(drivers)))
    (out / "session.json").write_text(session.to_json())
    (out / "pytest.ini").write_text("[pytest]\n")
    (tmp / "slowkind.py").write_text(SLOW_KIND)
    return out


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "slowkind", "-p", "kedr_build.packs.plugin",
            "-p", "no:cacheprovider", "-p", "no:labgrid", "-c", str(out / "pytest.ini"),
            "--rootdir", str(out),
            "-v", "--kedr-session", str(out / "session.json"),
            "--junitxml", str(out / report.JUNIT_NAME), "-o", "junit_family=xunit2",
            str(out.parent / "slow.toml")]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{REPO}"}


def _cases(junit: Path) -> dict[str, str]:
    return {c.get("name", ""): ",".join(f"{x.tag}:{x.get('message', '')}" for x in c)
            for c in ET.parse(junit).getroot().iter("testcase")}


PACK = '''
[pack]
name = "slow"
format = 1

[[test]]
name = "one"
kind = "slow"
hang_on = "d1"
'''


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM to pytest",
                                 "SIGINT to the group, 2 xdist workers"])
def test_interrupted_session_says_so_everywhere(tmp_path: Path, how: str,
                                                junit_xsd: Path) -> None:
    """Before: the interrupted session's reports said PASSED with the checks not run left
    out (SIGINT), or there were none at all (SIGTERM killed pytest outright), and the
    child the test waited on was left running."""
    out = _session(tmp_path, PACK)
    xdist = ["-n", "2"] if "xdist" in how else []
    proc = subprocess.Popen(_command(out) + xdist, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(tmp_path), cwd=out, start_new_session=True)
    started = out / "logs" / "d1" / "one" / "started"
    while not started.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0]
    signum = signal.SIGINT if how.startswith("SIGINT") else signal.SIGTERM
    if "group" in how:
        os.killpg(proc.pid, signum)          # what a terminal's Ctrl-C does
    else:
        proc.send_signal(signum)
    stdout, _ = proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, stdout
    assert live_processes(out) == []
    name = signal.Signals(signum).name

    data = json.loads((out / report.JSON_NAME).read_text())
    jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
    assert data["verdict"] == "interrupted"
    outcomes = [(i["driver"], i["check"], i["outcome"], i["message"]) for i in data["items"]]
    cut = f"not run: interrupted by {name}"
    if xdist:       # d0 and d2 ran on the other worker, or not yet
        assert len(outcomes) == 6 and {o[2] for o in outcomes} <= {"passed", "interrupted"}
        assert outcomes[2:4] == [("d1", c, "interrupted", cut) for c in ("a", "b")]
    else:
        assert outcomes == [
            ("d0", "a", "passed", "a of d0"), ("d0", "b", "passed", "b of d0"),
            *[(d, c, "interrupted", cut) for d in ("d1", "d2") for c in ("a", "b")]]

    xmlschema.XMLSchema(str(junit_xsd)).validate(str(out / report.JUNIT_NAME))
    cases = _cases(out / report.JUNIT_NAME)
    assert len(cases) == 6
    assert cases == {f"one.{c}[{d}]": ("" if o == "passed" else f"skipped:{cut}")
                     for d, c, o, _ in outcomes}
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "junit.xml", "kcidb.json", "pytest.ini", "report.html", "report.json", "session.json"]
    # KCIDB: interrupted is MISS (the harness stopped), and so is its roll-up.
    statuses = kcidb_statuses(kcidb_data(out))
    assert {statuses[d, f"kedr.slow.one.{c}"] for d, c, o, _ in outcomes
            if o == "interrupted"} == {"MISS"}
    assert statuses["d1", "kedr.slow.one"] == statuses["d1", "kedr.slow"] == "MISS"

    html = (out / report.HTML_NAME).read_text()
    assert '<div id="verdict" class="interrupted">INTERRUPTED</div>' in html
    n = sum(1 for o in outcomes if o[2] == "interrupted")
    assert f"{n} interrupted ({cut})" in html
    assert "kedr-build pack slow on debian-6.1: INTERRUPTED" in stdout
    assert f"INTERRUPTED d1: 2 of 2 checks not run (interrupted by {name})" in stdout
    if not xdist:
        assert "PASSED d0: 2 checks" in stdout


@pytest.mark.parametrize("blocker, verdict, status", [
    ("false", "passed", 0), ("true", "failed", 1)])
def test_a_check_that_cannot_run_is_not_run_and_only_a_blocker_fails(
        tmp_path: Path, blocker: str, verdict: str, status: int, junit_xsd: Path) -> None:
    """Before: a driver with no workload failed basic's workload check ("no workload")
    and the other checks of that test were pytest skips reported as "skipped"."""
    out = _session(tmp_path, f'''
[pack]
name = "slow"
format = 1

[[test]]
name = "one"
kind = "slow"

[[test]]
name = "work"
kind = "slow"
idle_on = "d1"
blocker = {blocker}
''', drivers=2)
    proc = subprocess.run(_command(out), capture_output=True, text=True, env=_env(tmp_path),
                          cwd=out)
    assert proc.returncode == status, proc.stdout + proc.stderr
    data = json.loads((out / report.JSON_NAME).read_text())
    jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
    assert data["verdict"] == verdict
    idle = [(i["test"], i["check"], i["outcome"], i["message"], i["blocker"])
            for i in data["items"] if i["driver"] == "d1"]
    assert idle == [("one", "a", "passed", "a of d1", True), ("one", "b", "passed", "b of d1", True),
                    ("work", "a", "not-run", "not run: no workload", blocker == "true"),
                    ("work", "b", "not-run", "not run: no workload", blocker == "true")]
    xmlschema.XMLSchema(str(junit_xsd)).validate(str(out / report.JUNIT_NAME))
    cases = _cases(out / report.JUNIT_NAME)
    assert cases["work.a[d1]"] == cases["work.b[d1]"] == "skipped:not run: no workload"
    assert cases["work.a[d0]"] == ""
    html = (out / report.HTML_NAME).read_text()
    assert "2 not run" in html and f'<div id="verdict" class="{verdict}">' in html
    # KCIDB: a blocker not run is MISS (unknown, above PASS), a non-blocker SKIP.
    statuses = kcidb_statuses(kcidb_data(out))
    idle_status = "MISS" if blocker == "true" else "SKIP"
    assert statuses["d1", "kedr.slow.work.a"] == statuses["d1", "kedr.slow.work"] == idle_status
    assert statuses["d1", "kedr.slow"] == ("MISS" if blocker == "true" else "PASS")
    assert statuses["d0", "kedr.slow"] == "PASS"
    if blocker == "false":
        assert ("PASSED d1: 2 checks; work: 2 checks not run: no workload (not a blocker)"
                in proc.stdout), proc.stdout
        assert "not-run (not a blocker)" in html
    else:
        assert "FAILED d1: 2 of 4 checks" in proc.stdout, proc.stdout
        assert "  work.a: not run: no workload" in proc.stdout


def test_blocker_must_be_true_or_false(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "vm"\nblocker = "no"\n')
    with pytest.raises(KedrError) as e:
        pack.load(str(f))
    assert str(e.value) == f"{f}:6: [[test]] a: blocker: 'no' is not true or false"


def test_basic_workload_test_is_not_a_blocker() -> None:
    basic = pack.load("basic")
    assert [(t.name, t.blocker) for t in basic.tests] == [("load-unload", True),
                                                          ("workload", False)]


SIGNAL_UNDER_THE_LOCK = '''
import os, signal, sys, time
from kedr_build import interrupt
interrupt.install()
child = interrupt.spawn([sys.executable, "-c", "import time; time.sleep(120)"])
with interrupt._lock:                   # as spawn(), release() or the handler hold it
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)                     # the handler runs here, in this thread
child.wait()
print("received", interrupt.received(), "child", child.returncode)
'''


def test_a_signal_while_the_lock_is_held_does_not_deadlock(tmp_path: Path) -> None:
    """A second signal came while the first one's handler held the children's lock
    (Ctrl-C reaches a pack's pytest as the group's SIGINT, then as the SIGTERM scons
    forwards): with a plain Lock the handler waited on its own thread forever, and CI
    found that pytest still waiting 25 minutes later (py-spy: _forward inside
    handle inside _forward). The handler must take it again and go on."""
    proc = subprocess.run([sys.executable, "-c", SIGNAL_UNDER_THE_LOCK], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (
        0, f"received {int(signal.SIGTERM)} child {-signal.SIGKILL}"), proc.stderr
