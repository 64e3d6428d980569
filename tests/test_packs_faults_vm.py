"""The faults and full packs in the VM, through scons: a driver with a leak on an error
path (tests/drivers/errleak) fails the faults pack's sweep at that site, with the
scenario that reproduces it alone (which, run, fails the same way); a driver whose
error paths are right (tests/drivers/faulty, mode=correct) passes. The session run
in two parallel VMs (JOBS=2, pytest-xdist) gives the same results as in one. The
sweep picture is checked in the page a headless chromium renders. The full pack's
stress (4 copies of the workload at once) passes on the correct driver.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.packs import report

pytestmark = pytest.mark.vm

Batch = tuple[Path, subprocess.CompletedProcess[str]]


def _sources(work: Path) -> str:
    shutil.copytree(REPO / "tests" / "drivers" / "errleak", work / "src" / "errleak")
    shutil.copytree(REPO / "tests" / "drivers" / "faulty", work / "src" / "faulty")
    shutil.copyfile(REPO / "tests" / "workloads" / "faulty.sh",
                    work / "src" / "faulty" / "workload.sh")
    return f"DRIVERS={work / 'src/errleak'},{work / 'src/faulty'}"


def _batch(work: Path, *extra: str) -> Batch:
    drivers = _sources(work)
    proc = run_scons([drivers, f"BUILD_DIR={work / 'build'}", "check", "PACK=faults", *extra],
                     check=False)
    return work, proc


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory, pinned_kernel: ProvisionedKernel) -> Batch:
    return _batch(tmp_path_factory.mktemp("faults"), "JOBS=1")


@pytest.fixture(scope="module")
def faults_parallel(tmp_path_factory: pytest.TempPathFactory,
                    pinned_kernel: ProvisionedKernel) -> Batch:
    return _batch(tmp_path_factory.mktemp("faults-jobs2"), "JOBS=2")


def _report(batch: Batch) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch[0] / "build" / "report" / report.JSON_NAME)
                                      .read_text())
    return data


def _items(data: dict[str, Any], driver: str) -> dict[str, dict[str, Any]]:
    return {f"{i['test']}.{i['check']}": i for i in data["items"] if i["driver"] == driver}


def test_leak_on_an_error_path_fails_the_sweep_at_its_site(faults: Batch) -> None:
    _, proc = faults
    assert proc.returncode != 0, proc.stdout
    assert "faults.toml::faults.sweep[errleak] FAILED" in proc.stdout, proc.stdout
    data = _report(faults)
    jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
    sweep = _items(data, "errleak")["faults.sweep"]
    assert sweep["outcome"] == "failed"
    assert "first: leak when kstrdup at errleak_init+0x" in sweep["message"], sweep
    assert "(init) fails: init failed (error 12), 1 leaks (4096 bytes)" in sweep["message"]
    assert sweep["reproduce"].endswith(" run 'FAULTS=kstrdup: nth=1 caller=errleak_init+0x"
                                       + sweep["message"].split("errleak_init+0x")[1]
                                       .split(" ")[0] + "'"), sweep
    run = next(r for r in data["runs"] if r["driver"] == "errleak")
    outcomes = {r["site"].split(" at ")[0]: r["outcome"] for r in run["sweep"]}
    assert outcomes == {"kmalloc_trace": "clean", "kstrdup": "leak"}, run["sweep"]


def test_correct_error_paths_pass_the_faults_pack(faults: Batch) -> None:
    items = _items(_report(faults), "faulty")
    assert {k: i["outcome"] for k, i in items.items()} == {
        "faults.sweep": "passed", "faults.campaign": "passed"}, items
    assert "all handled" in items["faults.sweep"]["message"]
    assert items["faults.campaign"]["message"].startswith("10 random runs (p=0.1, seeds 1..10")
    run = next(r for r in _report(faults)["runs"] if r["driver"] == "faulty")
    # init's three allocations and the workload's one call site.
    assert len(run["sweep"]) >= 4 and not any(r["bad"] for r in run["sweep"]), run["sweep"]
    assert {r["phase"] for r in run["sweep"]} == {"init", "workload"}, run["sweep"]


def test_the_sweep_site_reproduces_alone(faults: Batch) -> None:
    cmd = _items(_report(faults), "errleak")["faults.sweep"]["reproduce"]
    proc = subprocess.run(shlex.split(cmd), cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "1 possible leaks (4096 bytes)" in proc.stdout, proc.stdout
    # The verdict names what failed (the leak), not the init's failure the scenario caused.
    verdict = [ln for ln in proc.stdout.splitlines() if ln.startswith("kedr-build: errleak: ")]
    assert verdict and verdict[-1].startswith(
        "kedr-build: errleak: FAILED: 1 possible leaks, 0 bad frees, 0 rule violations "
        "(insmod kedr_errleak failed (status 12) under the injected fault)"), proc.stdout


def _comparable(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(i["index"], i["driver"], i["test"], i["check"], i["outcome"], i["message"])
            for i in data["items"]]


def test_two_parallel_vms_give_the_same_results(faults: Batch,
                                                faults_parallel: Batch) -> None:
    _, proc = faults_parallel
    assert proc.returncode != 0
    # Two workers; each item's line as one VM at a time gives it (plugin.py).
    assert "-n 2" in proc.stdout and "created: 2/2 workers" in proc.stdout, proc.stdout
    assert "faults.toml::faults.sweep[errleak] FAILED" in proc.stdout, proc.stdout
    one, two = _report(faults), _report(faults_parallel)
    assert _comparable(two) == _comparable(one)
    assert [[(r["site"], r["outcome"]) for r in run["sweep"]] for run in two["runs"]] == \
        [[(r["site"], r["outcome"]) for r in run["sweep"]] for run in one["runs"]]
    # pytest's own JUnit: the same test cases under the same names.
    names = [sorted(line.split('name="')[1].split('"')[0]
                    for line in (b[0] / "build" / "report" / report.JUNIT_NAME).read_text()
                    .replace("<testcase", "\n<testcase").splitlines()
                    if line.startswith("<testcase")) for b in (faults, faults_parallel)]
    assert names[0] == names[1] and len(names[0]) == 4, names


def test_rendered_sweep_picture(faults: Batch) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get((faults[0] / "build" / "report" / report.HTML_NAME).as_uri())
        picture = browser.find_element(By.ID, "sweep-errleak-faults")
        assert picture.is_displayed() and picture.size["width"] > 0
        bad = picture.find_elements(By.CSS_SELECTOR, "rect.site.failed")
        good = picture.find_elements(By.CSS_SELECTOR, "rect.site.passed")
        assert [b.get_attribute("data-outcome") for b in bad] == ["leak"]
        assert [g.get_attribute("data-outcome") for g in good] == ["clean"]
        # The failed site's cell sits in the picture's "leak" column.
        column = next(t for t in picture.find_elements(By.TAG_NAME, "text") if t.text == "leak")
        assert abs(column.location["x"] + column.size["width"] / 2
                   - (bad[0].location["x"] + bad[0].size["width"] / 2)) < 8
        clean = browser.find_elements(By.CSS_SELECTOR, "#sweep-faulty-faults rect.site.failed")
        assert clean == []
    finally:
        browser.quit()


def test_full_pack_stress_runs_copies_at_once(tmp_path: Path,
                                              pinned_kernel: ProvisionedKernel) -> None:
    drivers = _sources(tmp_path).split(",")[1]
    proc = run_scons([f"MODULE={drivers}", f"BUILD_DIR={tmp_path / 'build'}", "check",
                      "PACK=full", "TEST=stress"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "build" / "faulty" / "report" / report.JSON_NAME).read_text())
    items = _items(data, "faulty")
    assert set(items) == {f"stress.{c}" for c in ("loads", "workload", "kernel", "leaks",
                                                  "rules")}, items
    assert items["stress.workload"]["message"] == \
        "4 copies at once: workload workload.sh exited 0", items
    run = data["runs"][0]
    # Each copy makes its 4 allocations of 32 bytes (tests/workloads/faulty.sh): 16.
    assert run["trace_calls"]["__kmalloc"] == 16, run["trace_calls"]
