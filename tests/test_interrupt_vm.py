"""Interrupting the VM jobs, as a user or a CI runner does, on both pinned kernels: real
scons, real QEMU, real signals. ``scons ... check`` stopped by Ctrl-C (SIGINT to the
process group) and by SIGKILL of scons alone, ``sweep`` by Ctrl-C in the middle of a
site, ``run`` by SIGTERM of scons alone. Each: scons exits 128 + signal, no QEMU or
pytest is left (found in /proc by the test's build directory in their command lines),
the results say interrupted, no swept site is a crash, nothing half written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import xmlschema

from conftest import REPO, kernel_name, live_processes, outputs, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm
# Workloads (guest cwd /kedr) that block, so that a run, or a swept site's trial, is
# still going when the signal comes. The sweep's returns at once the first time (its
# discovery), then blocks in every trial that reaches it.
BLOCKING = "#!/bin/sh\nsleep 600\n"
BLOCKING_AFTER_DISCOVERY = "#!/bin/sh\n[ -e ran-once ] && sleep 600\ntouch ran-once\n"
# Generous bounds against a test that would otherwise hang; never asserted as speed.
LIMIT = 600.0


@pytest.fixture(scope="module")
def built(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp(f"interrupt-{kernel_name(kernel)}")
    run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}",
               f"KERNEL={kernel_name(kernel)}"])
    return build


def _workload(build: Path, blocking: bool) -> Path:
    script = build / ("blocking.sh" if blocking else "blocking-after-discovery.sh")
    script.write_text(BLOCKING if blocking else BLOCKING_AFTER_DISCOVERY)
    return script


class Scons:
    """scons in its own process group (as a shell starts a job), output collected."""

    def __init__(self, build: Path, kernel: ProvisionedKernel, *args: str) -> None:
        self.build = build
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "SCons", "-C", str(REPO), "-Q",
             f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}",
             f"KERNEL={kernel_name(kernel)}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + LIMIT
        while not ready():
            assert self.proc.poll() is None, f"scons ended before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {what} in {LIMIT} s:\n{self.output}"
            time.sleep(0.2)

    def wait_for_vm(self) -> None:
        self.wait_until("QEMU", lambda: bool(live_processes(self.build, "qemu-system")))

    def finish(self) -> int:
        status = self.proc.wait(timeout=LIMIT)
        self.reader.join(timeout=60)
        return status


def wait_gone(marker: Path) -> None:
    """Children orphaned by a SIGKILL take their signal from the kernel: wait for them
    to go (bounded), and say which stayed."""
    deadline = time.monotonic() + LIMIT
    while live_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_processes(marker) == []


def leftovers(directory: Path) -> list[Path]:
    """Half-written files: the temporaries of write_atomic and of junit.xml."""
    return [p for p in directory.rglob("*") if p.name.endswith((".tmp", ".part"))]


def _report(out: Path) -> dict[str, object]:
    report_dir = out / "report"
    assert leftovers(report_dir) == []
    data: dict[str, object] = json.loads((report_dir / "report.json").read_text())
    return data


def _junit_interrupted(out: Path, junit_xsd: Path, name: str) -> None:
    junit = out / "report" / "junit.xml"
    xmlschema.XMLSchema(str(junit_xsd)).validate(str(junit))
    text = junit.read_text()
    assert f'message="not run: interrupted by {name}"' in text, text


def test_ctrl_c_stops_check_and_every_report_says_interrupted(
        built: Path, kernel: ProvisionedKernel, junit_xsd: Path) -> None:
    """Before: QEMU died of the SIGINT, the session went on, and the reports said
    PASSED with the checks never run left out."""
    # One VM at a time (JOBS=auto would boot both tests' VMs at once on 2 CPUs): the
    # second test's must never boot.
    job = Scons(built, kernel, f"WORKLOAD={_workload(built, True)}", "check", "PACK=basic",
                "JOBS=1")
    job.wait_for_vm()
    os.killpg(job.proc.pid, signal.SIGINT)
    assert job.finish() == 130, job.output
    assert live_processes(built) == []
    data = _report(outputs(built, "chardev", kernel))
    assert data["verdict"] == "interrupted", data
    items = data["items"]
    assert isinstance(items, list)
    assert {i["outcome"] for i in items} <= {"passed", "interrupted"}
    assert any(i["outcome"] == "interrupted" for i in items)
    _junit_interrupted(outputs(built, "chardev", kernel), junit_xsd, "SIGINT")
    html = (outputs(built, "chardev", kernel) / "report" / "report.html").read_text()
    assert '<div id="verdict" class="interrupted">INTERRUPTED</div>' in html
    assert "kedr-build pack basic on " in job.output and ": INTERRUPTED" in job.output
    assert "kedr-build: chardev: INTERRUPTED by SIGINT" in job.output, job.output
    # The session stopped: the second test's VM never booted.
    assert not (outputs(built, "chardev", kernel) / "report" / "logs" / "chardev" / "workload"
                / "console.log").exists()


def test_sigkill_of_scons_takes_pytest_and_qemu_with_it(
        built: Path, kernel: ProvisionedKernel, junit_xsd: Path) -> None:
    """Before: pytest and its QEMU outlived scons and ran the session to its end."""
    job = Scons(built, kernel, f"WORKLOAD={_workload(built, True)}", "check", "PACK=basic",
                "TEST=workload")
    job.wait_for_vm()
    job.proc.kill()                     # scons alone, as the OOM killer or a CI runner
    assert job.finish() == -signal.SIGKILL
    wait_gone(built)
    data = _report(outputs(built, "chardev", kernel))
    assert data["verdict"] == "interrupted", data
    _junit_interrupted(outputs(built, "chardev", kernel), junit_xsd, "SIGTERM")


def test_ctrl_c_in_a_sweep_is_no_crash_and_stops_it(built: Path,
                                                     kernel: ProvisionedKernel) -> None:
    """Before: the site being tried when Ctrl-C killed QEMU was recorded as a crash, and
    the sweep booted again and went on."""
    job = Scons(built, kernel, f"WORKLOAD={_workload(built, False)}", "sweep")
    job.wait_until("a site's trial", lambda: "sweep: site " in job.output)
    os.killpg(job.proc.pid, signal.SIGINT)
    assert job.finish() == 130, job.output
    assert live_processes(built) == []
    sweep_dir = outputs(built, "chardev", kernel) / "sweep"
    assert leftovers(sweep_dir) == []
    data = json.loads((sweep_dir / "sweep.json").read_text())
    assert data["interrupted"] == "SIGINT" and data["ok"] is False, data
    assert all(r["outcome"] not in ("crash", "hang") for r in data["results"]), data
    assert not (sweep_dir / "boot-2").exists(), job.output      # no fresh boot after it
    assert "INTERRUPTED by SIGINT" in job.output, job.output
    assert " crash" not in job.output, job.output


def test_sigterm_stops_run_at_once(built: Path, kernel: ProvisionedKernel) -> None:
    """Before: scons let the VM run until the workload ended or VM_TIMEOUT."""
    job = Scons(built, kernel, f"WORKLOAD={_workload(built, True)}", "run")
    job.wait_for_vm()
    job.proc.terminate()
    assert job.finish() == 143, job.output
    assert live_processes(built) == []
    result = json.loads((outputs(built, "chardev", kernel) / "run" / "result.json").read_text())
    assert result["verdict"] == "interrupted" and result["reason"] == "interrupted by SIGTERM"
    assert "kedr-build: chardev: INTERRUPTED by SIGTERM" in job.output, job.output
    assert leftovers(outputs(built, "chardev", kernel) / "run") == []
