"""The basic pack in the VM, through scons, as a lab would run it: a batch of two
drivers (DRIVERS=) in one pytest session. The leaker (mode=leak) fails basic with
the leak diagnosis and every other check passes; the clean chardev passes every
check. The reports validate against their schemas, the HTML page rendered by a
real headless browser (Debian's chromium through selenium) shows the verdict and
a leak stack, and a failure's reproducing command, run alone, fails the same way.
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
import xmlschema

from conftest import REPO, headless_chromium, kcidb_data, kcidb_statuses, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.packs import report

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory,
          pinned_kernel: ProvisionedKernel) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("packs")
    # kbuild builds in the driver's directory: build copies.
    for src in (REPO / "tests" / "drivers" / "leaker", REPO / "examples" / "chardev"):
        shutil.copytree(src, work / "src" / src.name)
    proc = run_scons([f"DRIVERS={work / 'src/leaker'},{work / 'src/chardev'}",
                      f"BUILD_DIR={work / 'build'}", "check", "PACK=basic"], check=False)
    return work, proc


def _report(batch: tuple[Path, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch[0] / "build" / "report" / report.JSON_NAME)
                                      .read_text())
    return data


def _items(data: dict[str, Any], driver: str) -> dict[str, dict[str, Any]]:
    return {f"{i['test']}.{i['check']}": i for i in data["items"] if i["driver"] == driver}


def test_leaker_fails_basic_with_the_leak_diagnosis(batch: tuple[Path, Any]) -> None:
    _, proc = batch
    assert proc.returncode != 0, proc.stdout
    # pytest's progress, one line per check as it runs, through scons.
    assert "basic.toml::load-unload.leaks[leaker] FAILED" in proc.stdout, proc.stdout
    assert "basic.toml::load-unload.loads[leaker] PASSED" in proc.stdout
    items = _items(_report(batch), "leaker")
    failed = {k for k, i in items.items() if i["outcome"] != "passed"}
    assert failed == {"load-unload.leaks", "workload.leaks"}, items
    # 13 objects kept per load (tests/test_leaks_vm.py EXPECTED_LEAKS), loaded 3 times.
    assert items["load-unload.leaks"]["message"].startswith("39 possible leaks"), items
    assert items["workload.leaks"]["message"].startswith("13 possible leaks"), items
    # Out-of-tree and unsigned (OE) is what a patched driver sets: not a finding.
    assert items["load-unload.kernel"]["message"].endswith("taint OE"), items
    run = next(r for r in _report(batch)["runs"]
               if (r["driver"], r["test"]) == ("leaker", "load-unload"))
    steps = [s.rsplit(" ", 1)[0] for s in run["steps"]]
    assert steps.count("insmod kedr_leaker") == 3 and steps.count("rmmod kedr_leaker") == 3
    stacks = [g["stack"] for g in run["leak_groups"]]
    assert any(s[0].startswith("leak_same_stack") and any("leak_from_init" in f for f in s)
               for s in stacks), stacks
    same = next(g for g in run["leak_groups"] if g["stack"][0].startswith("leak_same_stack"))
    assert same["count"] == 9      # 3 objects a load, one stack


def test_clean_driver_passes_basic(batch: tuple[Path, Any]) -> None:
    items = _items(_report(batch), "chardev")
    assert len(items) == 9 and all(i["outcome"] == "passed" for i in items.values()), items
    assert items["workload.workload"]["message"] == "workload workload.sh exited 0"
    assert "taint OE" in items["load-unload.kernel"]["message"], items


def test_reports_validate(batch: tuple[Path, Any], junit_xsd: Path) -> None:
    d = batch[0] / "build" / "report"
    xmlschema.XMLSchema(str(junit_xsd)).validate(str(d / report.JUNIT_NAME))
    data = _report(batch)
    jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
    assert data["verdict"] == "failed" and data["kernel"] == "debian-6.1"


def test_kcidb_json_validates_with_each_driver_s_statuses(batch: tuple[Path, Any]) -> None:
    """report/kcidb.json of the batch: valid KCIDB (kcidb-io), a checkout and a build per
    driver, the leaker's leak checks FAIL and roll up to FAIL, the clean driver PASS."""
    data = kcidb_data(batch[0] / "build" / "report")
    assert len(data["checkouts"]) == len(data["builds"]) == 2
    assert {(b["misc"]["driver"], b["status"], b["architecture"], b["config_name"])
            for b in data["builds"]} == {("leaker", "PASS", "x86_64", "debian-6.1"),
                                         ("chardev", "PASS", "x86_64", "debian-6.1")}
    statuses = kcidb_statuses(data)
    checks = ("loads", "kernel", "leaks", "rules")
    assert {p: s for (d, p), s in statuses.items() if d == "leaker" and s != "PASS"} == {
        "kedr.basic.load-unload.leaks": "FAIL", "kedr.basic.workload.leaks": "FAIL",
        "kedr.basic.load-unload": "FAIL", "kedr.basic.workload": "FAIL", "kedr.basic": "FAIL"}
    chardev = {p: s for (d, p), s in statuses.items() if d == "chardev"}
    assert chardev == {**{f"kedr.basic.load-unload.{c}": "PASS" for c in checks},
                       **{f"kedr.basic.workload.{c}": "PASS" for c in (*checks, "workload")},
                       "kedr.basic.load-unload": "PASS", "kedr.basic.workload": "PASS",
                       "kedr.basic": "PASS"}
    assert all(t["id"].startswith("kedr:") and t["origin"] == "kedr" for t in data["tests"])


def test_rendered_html_shows_verdict_and_leak_stack(batch: tuple[Path, Any]) -> None:
    from selenium.webdriver.common.by import By

    with headless_chromium() as browser:
        page = batch[0] / "build" / "report" / report.HTML_NAME
        browser.get(page.as_uri())
        verdict = browser.find_element(By.ID, "verdict")
        assert verdict.text == "FAILED"
        assert verdict.is_displayed()
        # The verdict comes first: nothing of the page's content is above it.
        assert verdict.location["y"] < browser.find_element(By.ID, "results").location["y"]
        stacks = [e.text for e in browser.find_elements(
            By.CSS_SELECTOR, "#run-leaker-load-unload .leak-group pre.stack")]
        assert any(s.splitlines()[0].startswith("leak_same_stack") and "leak_from_init" in s
                   for s in stacks), stacks
        bars = browser.find_elements(By.CSS_SELECTOR, "svg.trace-chart rect")
        assert bars and all(b.size["width"] > 0 for b in bars)
        failed_rows = browser.find_elements(By.CSS_SELECTOR, "tr.result td.outcome.failed")
        assert len(failed_rows) == 2
        browser.save_screenshot(str(page.with_suffix(".png")))


def test_failure_reproduces_alone(batch: tuple[Path, Any]) -> None:
    """The failure's command, run as given, runs that test of that driver only and fails
    the same way."""
    item = _items(_report(batch), "leaker")["load-unload.leaks"]
    cmd = item["reproduce"]
    assert "TEST=load-unload" in cmd and "DRIVERS" not in cmd
    proc = subprocess.run(shlex.split(cmd), cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    alone = json.loads((batch[0] / "build" / "leaker" / "report" / report.JSON_NAME)
                       .read_text())
    assert {(i["test"], i["driver"]) for i in alone["items"]} == {("load-unload", "leaker")}
    again = next(i for i in alone["items"] if i["check"] == "leaks")
    assert again["outcome"] == "failed" and again["message"] == item["message"]


def test_prebuilt_ko_runs_a_pack_test(batch: tuple[Path, Any]) -> None:
    """KO=: a binary module, patched as shipped, checked alone (TEST= one pack test)."""
    work = batch[0]
    ko = work / "build" / "chardev" / "kedr_chardev.ko"
    proc = run_scons([f"KO={ko}", f"BUILD_DIR={work / 'build'}", "check", "PACK=basic",
                      "TEST=load-unload"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "basic.toml::load-unload.leaks[kedr_chardev] PASSED" in proc.stdout
    data = json.loads((work / "build" / "kedr_chardev" / "report" / report.JSON_NAME)
                      .read_text())
    assert data["verdict"] == "passed" and len(data["items"]) == 4


def test_defective_drivers_fail_the_right_check(tmp_path: Path,
                                                pinned_kernel: ProvisionedKernel) -> None:
    """A WARN at init fails `kernel` (and only it); a refused init fails `loads` with the
    kernel's reason; a NULL dereference at init fails `loads` and `kernel` with the oops."""
    for name in ("warn", "initfail", "oops"):
        shutil.copytree(REPO / "tests" / "drivers" / name, tmp_path / "src" / name)
    listing = tmp_path / "drivers.txt"
    listing.write_text("# one a line\nsrc/warn\nsrc/initfail\nsrc/oops\n")
    proc = run_scons([f"DRIVERS=@{listing}", f"BUILD_DIR={tmp_path / 'build'}", "check",
                      "TEST=load-unload"], check=False)
    assert proc.returncode != 0
    data = json.loads((tmp_path / "build" / "report" / report.JSON_NAME).read_text())
    failed = {(i["driver"], i["check"]): i["message"] for i in data["items"]
              if i["outcome"] != "passed"}
    assert {k for k in failed if k[0] != "oops"} == {("warn", "kernel"), ("initfail", "loads")}, \
        failed
    assert {("oops", "loads"), ("oops", "kernel")} <= set(failed), failed
    assert failed[("warn", "kernel")].startswith("kernel WARNING: "), failed
    assert "no such device here" in failed[("initfail", "loads")], failed
    assert failed[("oops", "kernel")].startswith(("kernel oops: ", "kernel BUG: ")), failed


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def test_hanging_workload_is_reported_and_the_vm_reclaimed(batch: tuple[Path, Any],
                                                          tmp_path: Path) -> None:
    hang = tmp_path / "hang.sh"
    hang.write_text("echo going to sleep\nsleep 600\n")
    ko = batch[0] / "build" / "chardev" / "kedr_chardev.ko"
    build = tmp_path / "build"
    proc = run_scons([f"KO={ko}", f"WORKLOAD={hang}", "VM_TIMEOUT=15",
                      f"BUILD_DIR={build}", "check", "TEST=workload"], check=False)
    assert proc.returncode != 0
    assert "basic.toml::workload.workload[kedr_chardev] FAILED" in proc.stdout, proc.stdout
    data = json.loads((build / "kedr_chardev" / "report" / report.JSON_NAME).read_text())
    item = next(i for i in data["items"] if i["check"] == "workload")
    assert item["message"].startswith("VM hung: no status after 1"), item
    assert f"WORKLOAD={hang}" in item["reproduce"] and "VM_TIMEOUT=15" in item["reproduce"]
    # QEMU was killed and reaped: nothing still runs with this test's logs.
    assert not _processes_mentioning(str(build / "kedr_chardev" / "report" / "logs")), \
        "a VM of the hung run is still alive"


def test_a_driver_that_fails_to_build_is_a_failing_entry(tmp_path: Path,
                                                        pinned_kernel: ProvisionedKernel) -> None:
    """DRIVERS= with one driver that does not compile: its checks fail saying why (the
    compiler's first error), the other driver is still checked, no traceback."""
    for name in ("broken",):
        shutil.copytree(REPO / "tests" / "drivers" / name, tmp_path / "src" / name)
    shutil.copytree(REPO / "examples" / "chardev", tmp_path / "src" / "chardev")
    proc = run_scons([f"DRIVERS={tmp_path / 'src/broken'},{tmp_path / 'src/chardev'}",
                      f"BUILD_DIR={tmp_path / 'build'}", "check", "TEST=load-unload"],
                     check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "build" / "report" / report.JSON_NAME).read_text())
    jsonschema.validate(data, json.loads(report.SCHEMA.read_text()))
    broken = _items(data, "broken")
    assert set(broken) == {f"load-unload.{c}" for c in ("loads", "kernel", "leaks", "rules")}
    for item in broken.values():
        assert item["outcome"] == "failed", item
        assert item["message"].startswith(f"not built: {tmp_path / 'src/broken'}: kbuild "
                                          "failed (make exit 2): "), item
        assert "kedr_broken.c:7" in item["message"] and "error: " in item["message"], item
        assert "this_identifier_does_not_exist" in item["message"], item
    chardev = _items(data, "chardev")
    assert len(chardev) == 4 and all(i["outcome"] == "passed" for i in chardev.values()), chardev
    assert "basic.toml::load-unload.loads[broken] FAILED" in proc.stdout
    # KCIDB: the broken driver's build FAILs with the compiler's cause; its checks did not
    # run (MISS); the other driver's build and checks PASS.
    kcidb = kcidb_data(tmp_path / "build" / "report")
    builds = {b["misc"]["driver"]: b for b in kcidb["builds"]}
    assert builds["broken"]["status"] == "FAIL" and builds["chardev"]["status"] == "PASS"
    assert "this_identifier_does_not_exist" in builds["broken"]["log_excerpt"]
    statuses = kcidb_statuses(kcidb)
    assert {s for (d, _), s in statuses.items() if d == "broken"} == {"MISS"}
    assert {s for (d, _), s in statuses.items() if d == "chardev"} == {"PASS"}


def test_basic_on_the_612_kernel(tmp_path: Path) -> None:
    """KERNEL=debian-6.12: the clean chardev passes basic, the leaker fails only leaks
    (its allocations are other functions there: __kmalloc_cache_noprof, ...)."""
    from kedr_build.kernel import provision

    provision.ensure("debian-6.12")
    for src in (REPO / "tests" / "drivers" / "leaker", REPO / "examples" / "chardev"):
        shutil.copytree(src, tmp_path / "src" / src.name)
    proc = run_scons([f"DRIVERS={tmp_path / 'src/leaker'},{tmp_path / 'src/chardev'}",
                      "KERNEL=debian-6.12", f"BUILD_DIR={tmp_path / 'build'}", "check",
                      "PACK=basic"], check=False)
    assert proc.returncode != 0, proc.stdout
    # A batch's report for another kernel than the default: build/<kernel>/report.
    data = json.loads((tmp_path / "build" / "debian-6.12" / "report" / report.JSON_NAME)
                      .read_text())
    assert data["kernel"] == "debian-6.12"
    chardev = _items(data, "chardev")
    assert len(chardev) == 9 and all(i["outcome"] == "passed" for i in chardev.values()), chardev
    leaker = _items(data, "leaker")
    failed = {k for k, i in leaker.items() if i["outcome"] != "passed"}
    assert failed == {"load-unload.leaks", "workload.leaks"}, leaker
    assert leaker["load-unload.leaks"]["message"].startswith("39 possible leaks"), leaker
