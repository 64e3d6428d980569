"""`scons` against concurrent runs, clashing names, bad output directories, killed
writes and half-failed builds (issue 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.imports import inspect_module


def scons_proc(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "SCons", "-C", str(REPO), "-Q", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def copy_driver(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in src.rglob("*"):
        if p.is_file():
            (dest / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dest / p.relative_to(src)).write_bytes(p.read_bytes())
    return dest


def kedr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("kedr-build")]


def test_two_builds_at_once_both_succeed(tmp_path: Path,
                                         pinned_kernel: ProvisionedKernel) -> None:
    """Ten times: two scons of the same driver at once, after a source change; both
    succeed and the outputs are the new ones (one waits for the other, saying so)."""
    driver = copy_driver(REPO / "examples/chardev", tmp_path / "chardev")
    main = driver / "main.c"
    original = main.read_text()
    build = tmp_path / "build"
    args = [f"MODULE={driver}", f"BUILD_DIR={build}"]
    waited = 0
    for i in range(10):
        main.write_text(original + f'\nMODULE_INFO(kedr_iteration, "{i}");\n')
        procs = [scons_proc(args) for _ in range(2)]
        outs = [(p, *p.communicate(timeout=600)) for p in procs]
        for p, out, err in outs:
            assert p.returncode == 0, f"iteration {i}: exit {p.returncode}\n{out}\n{err}"
            assert "Traceback" not in out + err
        waited += sum("kedr-build: waiting for pid " in err for _, _, err in outs)
        for ko in (build / "chardev/kedr_chardev.ko", build / "chardev/patched/kedr_chardev.ko"):
            assert inspect_module(ko).modinfo_values("kedr_iteration") == [str(i)], (i, ko)
        assert (build / "chardev/load.sh").is_file()
    assert waited >= 1, "the two builds never overlapped: the test tested nothing"


def test_same_name_other_driver_is_refused(tmp_path: Path,
                                           pinned_kernel: ProvisionedKernel) -> None:
    a = copy_driver(REPO / "examples/chardev", tmp_path / "a" / "drv")
    b = copy_driver(REPO / "examples/chardev", tmp_path / "b" / "drv")
    build = tmp_path / "build"
    run_scons([f"MODULE={a}", f"BUILD_DIR={build}"])
    before = {p: p.read_bytes() for p in (build / "drv").rglob("*.ko")}
    proc = run_scons([f"MODULE={b}", f"BUILD_DIR={build}"], check=False)
    assert proc.returncode == 1
    assert kedr_lines(proc) == [
        f"kedr-build: {build / 'drv'}: holds the outputs of {a}, not of {b} (two sources with "
        f"the same name); give BUILD_DIR= another directory, or remove {build / 'drv'}"]
    assert {p: p.read_bytes() for p in (build / "drv").rglob("*.ko")} == before
    # The same driver again is fine (a null build).
    assert "up to date" in run_scons([f"MODULE={a}", f"BUILD_DIR={build}"]).stdout


@pytest.mark.parametrize("source", ["KO=vfat", "MODULE"])
def test_one_driver_moves_between_the_pinned_kernels(source: str, tmp_path: Path,
                                                    pinned_kernel: ProvisionedKernel) -> None:
    """KERNEL= switches: each pinned kernel keeps its own outputs of one driver name
    (build/<name>/ for the default, build/<kernel>/<name>/ for another), so switching
    back and forth neither refuses (KO=vfat once did: "holds the outputs of
    .../debian-6.1/.../vfat.ko ... (two sources with the same name)") nor rebuilds."""
    from conftest import outputs
    from kedr_build.kernel import provision

    provision.ensure("debian-6.12")
    build = tmp_path / "build"
    if source == "MODULE":
        drv = copy_driver(REPO / "examples/chardev", tmp_path / "chardev")
        arg, name, ko = f"MODULE={drv}", "chardev", "kedr_chardev.ko"
    else:
        arg, name, ko = source, "vfat", "vfat.ko"
    for kernel in ("debian-6.1", "debian-6.12"):
        proc = run_scons([arg, f"BUILD_DIR={build}", f"KERNEL={kernel}"], check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        release = provision.ensure(kernel).release
        patched = inspect_module(outputs(build, name, kernel) / "patched" / ko)
        assert patched.modinfo_values("vermagic")[0].startswith(release + " ")
    assert (build / name).is_dir() and (build / "debian-6.12" / name).is_dir()
    for kernel in ("debian-6.1", "debian-6.12"):
        again = run_scons([arg, f"BUILD_DIR={build}", f"KERNEL={kernel}"])
        assert "up to date" in again.stdout, again.stdout


def _build_dir_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """case -> (BUILD_DIR, expected part of the one error line)."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    immutable = tmp_path / "immutable"
    immutable.mkdir()
    subprocess.run(["chattr", "+i", str(immutable)], check=True)
    return {"file": (afile, f"{afile}/chardev: cannot create the output directory: Not a "
                            "directory"),
            "under-file": (afile / "sub", "cannot create the output directory: Not a "
                                          "directory"),
            "proc": (Path("/proc/kedr"), "/proc/kedr/chardev: cannot create the output "
                                         "directory"),
            "immutable": (immutable, "cannot create the output directory: Operation not "
                                     "permitted"),
            "readonly": (tmp_path / "ro", "cannot create the output directory: Read-only "
                                          "file system")}


@pytest.mark.parametrize("case", ["file", "under-file", "proc", "immutable", "readonly"])
def test_unusable_build_dir_is_one_line(case: str, tmp_path: Path,
                                        pinned_kernel: ProvisionedKernel) -> None:
    build, expected = _build_dir_cases(tmp_path)[case]
    cmd = [sys.executable, "-m", "SCons", "-C", str(REPO), "-Q",
           f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}"]
    try:
        if case == "readonly":
            build.mkdir()
            # A read-only mount in a mount namespace of its own: nothing to clean up.
            cmd = ["unshare", "-m", "sh", "-c",
                   f'mount -t tmpfs -o ro none "{build}" && exec "$@"', "sh", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "immutable")], check=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = kedr_lines(proc)
    assert len(lines) == 1 and expected in lines[0], lines
    assert proc.stderr.strip() == lines[0], proc.stderr


def test_path_with_space_is_refused(tmp_path: Path, pinned_kernel: ProvisionedKernel) -> None:
    driver = copy_driver(REPO / "examples/chardev", tmp_path / "my drivers" / "chardev")
    proc = run_scons([f"MODULE={driver}", f"BUILD_DIR={tmp_path / 'build'}"], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"kedr-build: MODULE={driver}: kbuild cannot build in a "
                                   "path containing ' ' (make splits or expands it); use a "
                                   "path without it")
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}",
                      f"BUILD_DIR={tmp_path / 'out put'}"], check=False)
    assert proc.returncode == 1 and "BUILD_DIR=" in proc.stderr and "' '" in proc.stderr
    assert not (tmp_path / "out put").exists()


def test_killed_write_leftovers_are_swept(tmp_path: Path) -> None:
    """A write killed between its temporary file and the rename leaves .<name>.*.tmp;
    the next write into that directory removes it (not a fresh one of a live writer)."""
    from kedr_build.atomic import sweep_stale

    child = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, tempfile
sys.path.insert(0, {str(REPO)!r})
import kedr_build.atomic as a
real = os.replace
def stop(*args):
    print("written", flush=True)
    sys.stdin.read()          # wait here until killed
a.os.replace = stop
a.write_atomic({str(tmp_path / 'OUT.ko')!r}, b"x" * (4 << 20))
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "written\n"
    child.kill()
    child.wait()
    left = list(tmp_path.glob(".OUT.ko.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size == 4 << 20
    # Another process's write still in flight (modified now) is left alone ...
    fresh = tmp_path / ".OTHER.ko.abcdefgh.tmp"
    fresh.write_bytes(b"in flight")
    # ... a leftover from before the next run started is removed by that run's write.
    old = time.time() - 60
    os.utime(left[0], (old, old))
    subprocess.run([sys.executable, "-c", f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from kedr_build.atomic import write_atomic
write_atomic({str(tmp_path / 'OUT.ko')!r}, b"new")
"""], check=True)
    assert not left[0].exists() and fresh.exists()
    assert (tmp_path / "OUT.ko").read_bytes() == b"new"
    # A leftover nobody renamed for an hour is stale whoever made it.
    hour = time.time() - 3700
    os.utime(fresh, (hour, hour))
    assert sweep_stale(tmp_path) == [fresh]


def test_partial_kbuild_installs_nothing(tmp_path: Path,
                                         pinned_kernel: ProvisionedKernel) -> None:
    """kbuild succeeds but one module of the two is missing: no module is installed."""
    driver = copy_driver(REPO / "examples/chardev", tmp_path / "two")
    kbuild = driver / "Kbuild"
    # Only the module discovery (make with KERNELRELEASE=kedr-probe) sees ghost.o.
    kbuild.write_text(kbuild.read_text() + "\nifeq ($(KERNELRELEASE),kedr-probe)\n"
                      "obj-m += ghost.o\nendif\n")
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={driver}", f"BUILD_DIR={build}"], check=False)
    assert proc.returncode != 0
    lines = kedr_lines(proc)
    assert lines == [f"kedr-build: {driver}: kbuild finished but did not produce 1 of 2 "
                     "modules (ghost); nothing installed"], lines
    assert list((build / "two").glob("*.ko")) == []
    assert not (build / "two" / "patched").exists()
    failed = (build / "two" / "FAILED").read_text().splitlines()
    assert failed[0] == "this build failed; outputs here may be partial or stale:"
    assert failed[1:] == [f"{build / 'two' / 'kedr_chardev.ko'}: Error 1", lines[0]], failed
    # Fixed, it builds, and the marker goes.
    kbuild.write_text(kbuild.read_text().replace("obj-m += ghost.o", ""))
    run_scons([f"MODULE={driver}", f"BUILD_DIR={build}"])
    assert (build / "two" / "patched" / "kedr_chardev.ko").is_file()
    assert not (build / "two" / "FAILED").exists()


def test_clean_takes_the_lock_without_the_source_check(
        tmp_path: Path, pinned_kernel: ProvisionedKernel) -> None:
    """scons -c of a never-built driver and of a built one: no error, outputs gone."""
    build = tmp_path / "build"
    run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}", "-c"])
    assert list(build.rglob("*.ko")) == []
    run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}"])
    run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}", "-c"])
    assert list((build / "chardev").rglob("*.ko")) == []
