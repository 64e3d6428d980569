"""Bad FAULTS= values and fault-related pack values through scons, as a user types
them: one line ``kedr-build: <variable>...: <cause>`` (quoting at most a short excerpt
of the value), exit status 1 (the one of every bad variable), no traceback, nothing
built or written (issue 17, section 3)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

CHARDEV = REPO / "examples" / "chardev"


def refused(proc: subprocess.CompletedProcess[str], build: Path, *fragments: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("kedr-build: "), lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert not build.exists() or not any(build.iterdir()), sorted(build.rglob("*"))
    return lines[0]


@pytest.mark.parametrize("faults, fragments", [
    ("kmalloc: nth=0", ("FAULTS='kmalloc: nth=0': at column 10: ", "out of range")),
    ("kmalloc: pid=1 pid=2", ("at column 16: ", "pid= given twice")),
    ("kmalloc: prob=0.1234567890123456789", ("at most 18 digits after the point",)),
    ("kmalloc: prob=1.0000001", ("the probability must be a decimal from 0 to 1",)),
    ("kmalloc: caller=" + "f" * 200, ("longer than 191 characters",)),
    ("kmalloc: always; kmalloc: never", ("point kmalloc is set twice",)),
], ids=["nth0", "pid-twice", "prob-digits", "prob-above-1", "long", "point-twice"])
def test_bad_faults_value(faults: str, fragments: tuple[str, ...], tmp_path: Path,
                          pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}", "run", f"FAULTS={faults}"],
                     check=False)
    refused(proc, build, *fragments)


@pytest.mark.parametrize("value", ["kmalloc: " + "a" * 100_000, "x" * 100_000,
                                   "kmalloc: always;" * 6_000],
                         ids=["long-scenario", "long-name", "many-points"])
def test_huge_faults_value_is_quoted_by_an_excerpt(value: str, tmp_path: Path,
                                                   pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}", "run", f"FAULTS={value}"],
                     check=False)
    line = refused(proc, build, "FAULTS=", "characters)")
    assert len(line) < 300, line


@pytest.mark.parametrize("target", ["sweep", "check"])
def test_faults_for_a_target_that_ignores_it(target: str, tmp_path: Path,
                                             pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}", target,
                      "FAULTS=kmalloc: nth=1", "VM_TIMEOUT=5"], check=False)
    refused(proc, build, f"FAULTS= applies to run only: {target} fails the driver's fault "
                         "sites itself")


@pytest.mark.parametrize("setting, cause", [
    ('kind = "vm"\ncopies = 100000', "copies: 100000 is above the maximum 64"),
    ('kind = "vm"\ncycles = 100000', "cycles: 100000 is above the maximum 1000"),
    ('kind = "faults"\nruns = 100000', "runs: 100000 is above the maximum 10000"),
    ('kind = "faults"\nprobability = "0.1234567890123456789"',
     "at most 18 digits after the point"),
])
def test_absurd_pack_values_are_refused_with_the_bound(setting: str, cause: str,
                                                       tmp_path: Path,
                                                       pinned_kernel: ProvisionedKernel) -> None:
    f = tmp_path / "my.toml"
    f.write_text(f'[pack]\nname = "x"\n[[test]]\nname = "a"\n{setting}\n')
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}", "check", f"PACK={f}"],
                     check=False)
    refused(proc, build, f"{f}:6: ", cause)
