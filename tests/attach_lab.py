"""Hot patching on a lab machine (TARGET=ssh://, labgrid:) against TARGET=qemu: the
drivers, the pack and the comparisons tests/test_target_ssh_vm.py and
tests/test_target_labgrid_vm.py share.

Two drivers, each with its own workload.sh (the pack's check gives each its own):

* examples/chardev, clean: its window's 10 calls, nothing live at detach;
* tests/drivers/attachee with a workload that keeps one object a run (a leak: the
  window's one is live at detach, listed and not judged, as attach judges) and
  allocates and frees another.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from conftest import REPO, outputs, run_scons
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, ProvisionedKernel
from test_attach_vm import HOT_PACK

LEAKY_WORKLOAD = """# Keeps one object a run (freed only at unload) and churns another.
set -e
echo keep > /sys/kernel/debug/kedr_attachee/cmd
echo churn > /sys/kernel/debug/kedr_attachee/cmd
cat /sys/kernel/debug/kedr_attachee/counts
"""
DRIVERS = ("chardev", "attachee")


def copy_drivers(work: Path) -> Path:
    """Build copies of the two drivers under ``work``/src and the pack; the pack file."""
    shutil.copytree(REPO / "examples" / "chardev", work / "src" / "chardev",
                    dirs_exist_ok=True)
    shutil.copytree(REPO / "tests" / "drivers" / "attachee", work / "src" / "attachee",
                    dirs_exist_ok=True)
    (work / "src" / "attachee" / "workload.sh").write_text(LEAKY_WORKLOAD)
    pack = work / "hot.toml"
    pack.write_text(HOT_PACK)
    return pack


def drivers_arg(work: Path) -> str:
    return "DRIVERS=" + ",".join(str(work / "src" / d) for d in DRIVERS)


def batch_report(build: Path, kernel: ProvisionedKernel, name: str) -> Path:
    """A batch's report directory under BUILD_DIR=build (build/report, or
    build/<kernel>/report on another kernel than the default)."""
    return build / ("" if name == DEFAULT_KERNEL else name) / "report"


def items(report_dir: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    data: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    return {(i["driver"], i["test"], i["check"]): (i["outcome"], i["message"])
            for i in data["items"]}


def window(result: Path) -> dict[str, Any]:
    """What an attach run's result.json says of the driver, less where and when: the
    verdict, the window's calls and leak totals, and the objects live at detach
    without their caller's address (a module is loaded where the kernel puts it)."""
    r: dict[str, Any] = json.loads(result.read_text())
    return {"verdict": r["verdict"], "reason": r["reason"].split("; TARGET=")[0],
            "sites": r["sites"], "calls": r["calls"], "totals": r["totals"],
            "steps": list(r["times"]),
            "live": [re.sub(r" caller=\S+", "", ln) for ln in r["live"]],
            "workloads": re.findall(r"^workload rc=\d+$", r["output"], re.M)}


def windows(report_dir: Path) -> dict[str, dict[str, Any]]:
    """Each driver's attach run in a pack's report (logs/DRIVER/TEST/run/result.json)."""
    found = {p.relative_to(report_dir).parts[1]: window(p)
             for p in report_dir.rglob("run/result.json")}
    assert sorted(found) == sorted(DRIVERS), sorted(report_dir.rglob("result.json"))
    return found


def in_qemu(work: Path, build: Path, pack: Path, kernel: ProvisionedKernel,
            name: str) -> tuple[dict[tuple[str, str, str], tuple[str, str]],
                                dict[str, dict[str, Any]]]:
    """The same pack on TARGET=qemu (one boot a driver; the lab's build reused): its
    items and windows."""
    proc = run_scons([f"KERNEL={name}", f"BUILD_DIR={build}", drivers_arg(work), "check",
                      f"PACK={pack}"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report_dir = batch_report(build, kernel, name)
    return items(report_dir), windows(report_dir)


def check_lab_against_qemu(lab_dir: Path, qemu: tuple[dict[tuple[str, str, str],
                                                             tuple[str, str]],
                                                        dict[str, dict[str, Any]]]) -> None:
    """The lab's pack report equals QEMU's: every check's outcome and message, and each
    driver's window (calls, leak totals, objects live at detach)."""
    lab_items, lab_windows = items(lab_dir), windows(lab_dir)
    assert lab_items == qemu[0]
    assert lab_windows == qemu[1]
    assert {o for o, _ in lab_items.values()} == {"passed"}
    chardev, attachee = lab_windows["chardev"], lab_windows["attachee"]
    assert chardev["live"] == [] and chardev["totals"]["bad_frees"] == 0
    assert sum(chardev["calls"].values()) == 10
    # The leak made in the window: live at detach (listed, not judged); the one of the
    # run before attach is not the window's.
    assert len(attachee["live"]) == 1 and "kmalloc" in attachee["live"][0]
    assert " 136 bytes" in attachee["live"][0], attachee["live"]   # struct kept
    assert attachee["totals"]["allocs"] - attachee["totals"]["frees"] >= 1
    assert attachee["workloads"] == ["workload rc=0"] * 3


def hot_result(build: Path, driver: str, kernel: ProvisionedKernel) -> Path:
    """``scons ... attach``'s result of ``driver`` under BUILD_DIR=build."""
    return outputs(build, driver, kernel) / "attach" / "run" / "result.json"


def prepared(build: Path, driver: str, kernel: ProvisionedKernel) -> tuple[Any, Path]:
    """What ``scons ... attach`` prepared for ``driver`` (its replacement module, sites
    and scripts under attach/), and the plain .ko it attached to: to run the attach
    job again in this process without building anything."""
    from kedr_build.intercept.attach import AttachResult, find_sites

    out = outputs(build, driver, kernel) / "attach"
    info = json.loads((out / "attach.json").read_text())
    ko = Path(info["ko"])
    repl = next(out.glob("kedr_repl_*/kedr_repl_*.ko"))
    sites = find_sites(ko, {s["function"] for s in info["sites"]})
    assert len(sites.sites) == len(info["sites"])
    return AttachResult(replacement=repl, sites=sites, attach_sh=out / "attach.sh",
                        detach_sh=out / "detach.sh", warnings=()), ko
