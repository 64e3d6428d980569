"""A driver with no workload through `basic`, on both pinned kernels: its workload test
cannot run, so it is reported as not run, with the reason, in every report; basic says
that test is not a blocker, so the verdict is load-unload's (a real Debian module,
KO=dummy, which loads and unloads cleanly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xmlschema

from conftest import (headless_chromium, kcidb_data, kcidb_statuses, kernel_name, outputs,
                      run_scons)
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm

NO_WORKLOAD = "not run: no workload: give WORKLOAD=script.sh (or put workload.sh in the driver)"


def test_no_workload_is_not_run_and_basic_passes(tmp_path: Path, kernel: ProvisionedKernel,
                                                 junit_xsd: Path) -> None:
    """Before: `scons KO=dummy check` failed basic on workload.workload ("no workload")."""
    proc = run_scons(["KO=dummy", f"BUILD_DIR={tmp_path}", f"KERNEL={kernel_name(kernel)}",
                      "check", "PACK=basic"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    report_dir = outputs(tmp_path, "dummy", kernel) / "report"
    data = json.loads((report_dir / "report.json").read_text())
    assert data["verdict"] == "passed"
    items = {(i["test"], i["check"]): (i["outcome"], i["message"], i["blocker"])
             for i in data["items"]}
    assert {k: v[0] for k, v in items.items() if k[0] == "load-unload"} == {
        ("load-unload", c): "passed" for c in ("loads", "kernel", "leaks", "rules")}
    assert {k: v for k, v in items.items() if k[0] == "workload"} == {
        ("workload", c): ("not-run", NO_WORKLOAD, False)
        for c in ("loads", "workload", "kernel", "leaks", "rules")}
    junit = report_dir / "junit.xml"
    xmlschema.XMLSchema(str(junit_xsd)).validate(str(junit))
    assert junit.read_text().count(f'<skipped type="pytest.skip" message="{NO_WORKLOAD}"') == 5
    html = (report_dir / "report.html").read_text()
    assert "5 not run" in html and html.count("not-run (not a blocker)") == 5
    assert "PASSED dummy: 4 checks; workload: 5 checks " + NO_WORKLOAD + " (not a blocker)" \
        in out, out
    # KCIDB: a non-blocker that cannot run is SKIP (not applicable), rolled up under PASS.
    statuses = kcidb_statuses(kcidb_data(report_dir))
    assert statuses == {**{("dummy", f"kedr.basic.load-unload.{c}"): "PASS"
                           for c in ("loads", "kernel", "leaks", "rules")},
                        **{("dummy", f"kedr.basic.workload.{c}"): "SKIP"
                           for c in ("loads", "workload", "kernel", "leaks", "rules")},
                        ("dummy", "kedr.basic.load-unload"): "PASS",
                        ("dummy", "kedr.basic.workload"): "SKIP", ("dummy", "kedr.basic"): "PASS"}
    # The page as a browser renders it: each not-run check says so, in the not-run
    # colours, never as passed.
    from selenium.webdriver.common.by import By

    with headless_chromium() as browser:
        browser.get((report_dir / "report.html").as_uri())
        assert browser.find_element(By.ID, "verdict").text == "PASSED"
        assert browser.find_element(By.ID, "not-run").text == "5 not run"
        cells = {row.get_attribute("data-check"): row.find_element(By.CSS_SELECTOR, "td.outcome")
                 for row in browser.find_elements(By.CSS_SELECTOR,
                                                  'tr.result[data-test="workload"]')}
        assert sorted(cells) == ["kernel", "leaks", "loads", "rules", "workload"]
        for cell in cells.values():
            assert cell.is_displayed() and cell.text == "not-run (not a blocker)"
            assert cell.value_of_css_property("background-color") == "rgba(238, 238, 238, 1)"
        passed = browser.find_elements(By.CSS_SELECTOR,
                                       'tr.result[data-test="load-unload"] td.outcome')
        assert [c.text for c in passed] == ["passed"] * 4
        assert passed[0].value_of_css_property("background-color") != \
            "rgba(238, 238, 238, 1)"
