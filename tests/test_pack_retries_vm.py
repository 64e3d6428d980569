"""RETRIES= in the VM, on both pinned kernels: a workload that fails its first run and
passes a retry (tests/workloads/fails-first-run.sh: flaky made deterministic, through the
run number the check exports to the workload as KEDR_ATTEMPT) is run twice and reported
flaky in every report, never passed; the verdict passes and says so. A real Debian
module (KO=dummy) keeps it to two boots, no build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, kcidb_data, kcidb_statuses, kernel_name, outputs, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm

WORKLOAD = REPO / "tests" / "workloads" / "fails-first-run.sh"


def test_a_workload_passing_on_retry_is_flaky(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    proc = run_scons(["KO=dummy", f"WORKLOAD={WORKLOAD}", f"BUILD_DIR={tmp_path}",
                      f"KERNEL={kernel_name(kernel)}", "check", "PACK=basic", "TEST=workload",
                      "RETRIES=2"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "basic.toml::workload.workload[dummy] FLAKY" in out, out
    assert "workload.workload[dummy] PASSED" not in out
    assert "basic.toml::workload.leaks[dummy] PASSED" in out
    how = ("failed in run 1 of 2 (workload fails-first-run.sh exited with status 1: run 1), "
           "passed in run 2")
    assert f"kedr-build pack basic on {kernel_name(kernel)}: PASSED (1 flaky: passed on retry)" \
        in out, out
    assert "PASSED dummy: 5 checks, 1 flaky (passed on retry)" in out, out
    report_dir = outputs(tmp_path, "dummy", kernel) / "report"
    data = json.loads((report_dir / "report.json").read_text())
    assert data["verdict"] == "passed"
    items = {i["check"]: i for i in data["items"]}
    assert items["workload"]["outcome"] == "flaky", items
    assert items["workload"]["message"] == \
        f"flaky: {how}; workload fails-first-run.sh exited 0", items
    assert {c: i["outcome"] for c, i in items.items() if c != "workload"} == {
        c: "passed" for c in ("loads", "kernel", "leaks", "rules")}
    (run,) = data["runs"]
    assert run["attempts"] == 2 and len(run["retried"]) == 1, run
    # Each run booted: the retry's logs beside the first run's.
    logs = report_dir / "logs" / "dummy" / "workload"
    assert (logs / "result.json").is_file() and (logs / "retry-1" / "result.json").is_file()
    assert f"FLAKY: {how}" in (report_dir / "junit.xml").read_text()
    html = (report_dir / "report.html").read_text()
    assert '<span id="flaky">1 flaky (passed on retry)</span>' in html
    assert 'class="outcome flaky">flaky<' in html
    kcidb = kcidb_data(report_dir)
    assert kcidb_statuses(kcidb)["dummy", "kedr.basic.workload.workload"] == "PASS"
    test = next(t for t in kcidb["tests"] if t["path"] == "kedr.basic.workload.workload")
    assert test["misc"]["kedr_outcome"] == "flaky" and test["comment"].startswith("flaky: ")
