"""bench/device_corpus.py without a VM: the rows it reads from real device-pack
reports (tests/data/devices/corpus/, recorded by its own runs), the table it writes
into README.md, its resumable record and the reduced pack it runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO
from kedr_build.errors import KedrError
from kedr_build.packs import pack

sys.path.insert(0, str(REPO / "bench"))
import device_corpus  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "devices" / "corpus"


def _report(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((DATA / f"{name}.report.json").read_text())
    return data


def test_a_report_is_one_row_each_test_passed_or_its_first_failed_check() -> None:
    # e1000e on debian-6.1: every device test passed; the sweep failed 2 of 28 sites
    r = device_corpus.parse_report(_report("e1000e-debian-6.1"), "e1000e", 405.0)
    assert (r.device, r.kernel, r.driver, r.verdict) == ("e1000e", "debian-6.1", "e1000e",
                                                         "failed")
    assert [t.test for t in r.tests] == ["probe", "rebind", "hotplug", "suspend", "reload"]
    assert all(t.passed and not t.check and not t.message for t in r.tests)
    assert r.sweep == {"clean": 26, "crash": 2}
    assert r.sweep_message.startswith("failed: 2 of 28 fault sites not handled; first: crash "
                                      "when request_threaded_irq at e1000_request_irq+0x126")


def test_a_failed_test_names_its_first_failed_check_with_its_message() -> None:
    # nvme on debian-6.1: the rules check of hotplug and suspend failed (a lock held by
    # the reset work when init returned), and the sweep found a leak at one site
    r = device_corpus.parse_report(_report("nvme-debian-6.1"), "nvme", 438.0)
    hotplug = r.outcome("hotplug")
    assert hotplug is not None and not hotplug.passed and hotplug.check == "rules"
    assert hotplug.message.startswith("failed: 1 rule violations; first: lock-held-at-return: "
                                      "a lock taken by mutex_lock() at nvme_reset_work+0x7f")
    assert [t.test for t in r.tests if not t.passed] == ["hotplug", "suspend"]
    assert r.sweep == {"clean": 15, "leak": 1, "not reached": 1}
    text = device_corpus.table({"debian-6.1": {"nvme": r}}, {"debian-6.1": {"nvme": "nvme"}},
                               {"debian-6.1 nvme suspend": "the same as [1]"})
    assert "| debian-6.1 | nvme | nvme | pass | pass | **FAIL** (rules) [1] | **FAIL** (rules) " \
        "[2] | pass | **FAIL** 17 sites: 15 clean, 1 leak, 1 not reached [3] | 438 s |" in text
    assert "[1] debian-6.1 nvme hotplug: rules: failed: 1 rule violations; first: " in text
    assert "[2] debian-6.1 nvme suspend: rules: failed: " in text and "— the same as [1]" in text
    assert "[3] debian-6.1 nvme faults: failed: 1 of 17 fault sites not handled; first: leak " \
        "when ioremap at nvme_remap_bar+0x68" in text


def test_the_table_has_every_device_of_every_kernel_and_says_which_were_not_run() -> None:
    ok = device_corpus.parse_report(_report("e1000e-debian-6.1"), "e1000e", 405.0)
    results = {"debian-6.1": {"e1000e": ok}}
    devices = {k: {"e1000e": "e1000e", "nvme": "nvme"} for k in ("debian-6.1", "debian-6.12")}
    key = "debian-6.1 e1000e faults"
    text = device_corpus.table(results, devices, {key: "a driver bug: reproduced on the "
                                                  "stock module"})
    rows = [ln for ln in text.splitlines() if ln.startswith("| debian-")]
    assert rows == [
        "| debian-6.1 | e1000e | e1000e | pass | pass | pass | pass | pass | "
        "**FAIL** 28 sites: 26 clean, 2 crash [1] | 405 s |",
        "| debian-6.1 | nvme | nvme | " + " | ".join(["not run"] * 6) + " | - |",
        "| debian-6.12 | e1000e | e1000e | " + " | ".join(["not run"] * 6) + " | - |",
        "| debian-6.12 | nvme | nvme | " + " | ".join(["not run"] * 6) + " | - |"]
    assert f"[1] {key}: failed: 2 of 28 fault sites not handled; first: crash when " \
        "request_threaded_irq at e1000_request_irq+0x126" in text
    assert "— a driver bug: reproduced on the stock module" in text
    assert "1 of 4 device × kernel runs recorded; not run on debian-6.1: nvme; not run on " \
        "debian-6.12: e1000e, nvme." in text
    # without a note, a failure says it was not investigated; "*" is the device's note
    assert "— not investigated" in device_corpus.table(results, devices, {})
    assert "— the device's" in device_corpus.table(results, devices,
                                                   {"debian-6.1 e1000e *": "the device's"})


def test_a_run_without_a_report_is_a_row_that_says_why() -> None:
    r = device_corpus.DeviceResult("nvme", "debian-6.1", "nvme", "error", seconds=3,
                                   error="no report.json (x.log): kedr-build: KO=nvme: ...")
    text = device_corpus.table({"debian-6.1": {"nvme": r}}, {"debian-6.1": {"nvme": "nvme"}},
                               {})
    assert "| debian-6.1 | nvme | nvme | **no report** [1] |" in text
    assert "[1] debian-6.1 nvme run: no report.json (x.log): kedr-build: KO=nvme" in text


def test_the_record_round_trips_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    r = device_corpus.parse_report(_report("e1000e-debian-6.1"), "e1000e", 405.0)
    path = tmp_path / "corpus.json"
    device_corpus.save_results(path, {"debian-6.1": {"e1000e": r}})
    assert device_corpus.load_results(path) == {"debian-6.1": {"e1000e": r}}
    assert device_corpus.load_results(tmp_path / "none.json") == {}
    path.write_text('{"results": {"debian-6.1": {"e1000e": {"device": 1, "bogus": 2}}}}')
    with pytest.raises(KedrError, match=r"corpus.json: not a device corpus record: "):
        device_corpus.load_results(path)


def test_notes_are_read_by_kernel_device_and_test(tmp_path: Path) -> None:
    path = tmp_path / "notes.toml"
    path.write_text('[notes]\n"debian-6.1 e1000e faults" = """a driver bug:\n  reproduced"""\n')
    assert device_corpus.load_notes(path) == {"debian-6.1 e1000e faults":
                                              "a driver bug: reproduced"}
    path.write_text('[notes]\n"e1000e faults" = "x"\n')
    with pytest.raises(KedrError, match=r"notes.toml: \[notes\] 'e1000e faults': not "):
        device_corpus.load_notes(path)
    path.write_text('[notes\n')
    with pytest.raises(KedrError, match=r"notes.toml: "):
        device_corpus.load_notes(path)
    assert device_corpus.load_notes(tmp_path / "none.toml") == {}
    # the checkout's own notes are well formed
    device_corpus.load_notes(device_corpus.NOTES)


def test_the_table_goes_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{device_corpus.BEGIN}\nold\n{device_corpus.END}\nb\n")
    device_corpus.write_readme(readme, "new\n")
    assert readme.read_text() == f"a\n{device_corpus.BEGIN}\nnew\n{device_corpus.END}\nb\n"
    readme.write_text("no markers\n")
    with pytest.raises(KedrError, match="no device-corpus markers"):
        device_corpus.write_readme(readme, "new\n")


def test_the_reduced_pack_is_the_device_pack_with_one_cycle(tmp_path: Path) -> None:
    full = pack.load("device")
    reduced = pack.load(str(device_corpus.reduced_pack(tmp_path / "p.toml")))
    assert [t.name for t in reduced.tests] == [t.name for t in full.tests]
    looped = ("rebind", "hotplug", "reload")      # the tests whose steps repeat
    assert {t.name: t.params["cycles"] for t in reduced.tests if t.name in looped} == \
        {"rebind": 1, "hotplug": 1, "reload": 2}   # reload's minimum is 2
    assert {t.name: t.params["cycles"] for t in full.tests if t.name in looped} == \
        {"rebind": 3, "hotplug": 3, "reload": 3}
    assert reduced.test("faults").params["timeout"] == device_corpus.SITE_TIMEOUT == 120
    assert full.test("faults").params["timeout"] == 0
    assert [t.params for t in reduced.tests if t.name not in looped + ("faults",)] == \
        [t.params for t in full.tests if t.name not in looped + ("faults",)]


def test_the_readme_table_is_the_generated_one() -> None:
    results = device_corpus.load_results(device_corpus.RESULTS)
    notes = device_corpus.load_notes(device_corpus.NOTES)
    devices = {k: device_corpus.drivers(k) for k in device_corpus.KERNELS}
    text = (REPO / "README.md").read_text()
    section = text.split(device_corpus.BEGIN, 1)[1].split(device_corpus.END, 1)[0]
    assert section == "\n" + device_corpus.table(results, devices, notes)


def test_a_check_not_run_is_a_not_run_cell_with_its_reason_never_a_pass() -> None:
    """ahci's hotplug when QEMU refused its disk at the re-plug: the device check not
    run (QEMU's refusal), the others judged; a failed check outranks it."""
    why = ("not run: the workload after the re-plug: QEMU refused plug ahci: ide-hd on "
           "ahci.0: not re-plugged: Bus 'ahci.0' does not support hotplugging")
    items = [{"driver": "ahci", "test": "hotplug", "check": "device", "outcome": "not-run",
              "message": why}] + [
        {"driver": "ahci", "test": "hotplug", "check": c, "outcome": "passed", "message": ""}
        for c in ("loads", "kernel", "leaks", "rules")] + [
        {"driver": "ahci", "test": "probe", "check": "device", "outcome": "passed",
         "message": ""}]
    report = {"kernel": "debian-6.1", "verdict": "failed", "items": items, "runs": []}
    r = device_corpus.parse_report(report, "ahci", 60.0)
    hotplug = r.outcome("hotplug")
    assert hotplug is not None and not hotplug.passed and hotplug.check == "device"
    text = device_corpus.table({"debian-6.1": {"ahci": r}}, {"debian-6.1": {"ahci": "ahci"}}, {})
    assert "| debian-6.1 | ahci | ahci | pass | not run | not run (device) [1] | not run |" in text
    assert f"[1] debian-6.1 ahci hotplug: device: not-run: {why}  \n" in text
    assert "FAIL" not in text
    # A leak next to it: the cell is the failure.
    items[3] = {**items[3], "outcome": "failed", "message": "1 leak"}
    r = device_corpus.parse_report(report, "ahci", 60.0)
    assert r.outcome("hotplug") == device_corpus.TestOutcome("hotplug", False, "leaks",
                                                             "failed: 1 leak", 0.0)
