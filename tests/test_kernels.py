"""Pinned kernels as data: both are listed, each provisions into a tree whose image,
modules and headers agree, and what cannot be had is one line naming what was
expected (an unknown name, packages apt cannot find, headers of another build)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from kedr_build.errors import KedrError
from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, ProvisionedKernel, available, describe


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kedr_build", *args], capture_output=True,
                          text=True, cwd=REPO)


def test_both_kernels_are_listed_and_61_stays_default() -> None:
    assert available() == ["debian-6.1", "debian-6.12"]
    assert DEFAULT_KERNEL == "debian-6.1"
    proc = cli("kernel", "--list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["debian-6.1"]["release"] == "6.1.0-56-amd64" and rows["debian-6.1"]["default"]
    assert rows["debian-6.12"]["release"] == "6.12.117+deb12-amd64"
    assert not rows["debian-6.12"]["default"]
    text = cli("kernel", "--list").stdout.splitlines()
    assert [ln.split()[0] for ln in text] == ["debian-6.1", "debian-6.12"]


def test_provisioned_tree_is_one_kernel(kernel: ProvisionedKernel) -> None:
    assert kernel.root is not None and kernel.modules_dir is not None
    provision.check_tree(describe(kernel.description.name if kernel.description else ""),
                         kernel.root)
    # The headers Makefile was rewritten to include the cached "-common" tree.
    include = (kernel.kdir / "Makefile").read_text().split()[-1]
    assert include.startswith(str(kernel.root)) and Path(include).is_file()
    # depmod ran: modprobe resolves in-tree dependencies (fat before vfat).
    proc = subprocess.run(["modprobe", "--show-depends", "-d", str(kernel.root),
                           "-S", kernel.release, "vfat"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = [Path(ln.split()[1]).name for ln in proc.stdout.splitlines()]
    assert [n.split(".ko")[0] for n in names] == ["fat", "vfat"]


def test_unknown_kernel_is_one_line() -> None:
    proc = cli("kernel", "debian-7")
    assert proc.returncode == 1
    assert proc.stderr == ("kedr-build: unknown kernel 'debian-7'; known kernels: "
                           "debian-6.1, debian-6.12\n")


def test_packages_that_cannot_be_found_are_named(tmp_path: Path) -> None:
    desc = describe("debian-6.12")
    bogus = dataclasses.replace(desc, packages=(
        dataclasses.replace(desc.packages[0], version="6.12.0-0~nonexistent"),))
    with pytest.raises(KedrError) as e:
        provision.ensure_description(bogus, cache=tmp_path, log=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("kernel debian-6.12 (kedr_build/kernel/pinned/debian-6.12.toml): "
                          "expected packages linux-image-6.12.117+deb12-amd64=6.12.0-0~nonexistent;")
    assert "6.12.0-0~nonexistent" in msg.split("apt-get download:")[1]
    assert not (tmp_path / "kernels" / "debian-6.12").exists()   # nothing half-provisioned


def _tree(kernel: ProvisionedKernel, dest: Path) -> Path:
    """A copy of the parts of a provisioned tree check_tree looks at."""
    assert kernel.root is not None and kernel.vmlinuz is not None
    kdir = dest / "usr/src" / kernel.kdir.name
    (kdir / "include/generated").mkdir(parents=True)
    shutil.copy(kernel.kdir / "include/generated/utsrelease.h", kdir / "include/generated")
    shutil.copy(kernel.symvers, kdir)
    (dest / "boot").mkdir()
    (dest / "boot" / kernel.vmlinuz.name).touch()
    mods = dest / "lib/modules" / kernel.release
    mods.mkdir(parents=True)
    (mods / "modules.order").touch()
    return dest


def test_headers_of_another_build_are_refused(tmp_path: Path) -> None:
    k61 = provision.ensure("debian-6.1")
    k612 = provision.ensure("debian-6.12")
    desc = describe("debian-6.12")
    # The 6.12 image with the 6.1 headers: named, with both releases.
    root = _tree(k612, tmp_path / "a")
    shutil.rmtree(root / "usr/src")
    _tree(k61, tmp_path / "b")
    shutil.move(tmp_path / "b/usr/src", root / "usr/src")
    with pytest.raises(KedrError) as e:
        provision.check_tree(desc, root)
    assert str(e.value) == ("kernel debian-6.12 (kedr_build/kernel/pinned/debian-6.12.toml): "
                            "expected headers for release 6.12.117+deb12-amd64, the packages "
                            "hold headers for 6.1.0-56-amd64")
    # Headers whose directory name fits but whose utsrelease.h is another build's.
    root = _tree(k612, tmp_path / "c")
    shutil.copy(k61.kdir / "include/generated/utsrelease.h",
                root / "usr/src" / k612.kdir.name / "include/generated/utsrelease.h")
    with pytest.raises(KedrError, match=r"expected headers for release 6\.12\.117\+deb12-amd64, "
                       r"linux-headers-6\.12\.117\+deb12-amd64 says 6\.1\.0-56-amd64"):
        provision.check_tree(desc, root)
    # Headers without the image they belong to.
    root = _tree(k612, tmp_path / "d")
    assert k61.vmlinuz is not None and k612.vmlinuz is not None
    (root / "boot" / k612.vmlinuz.name).rename(root / "boot" / k61.vmlinuz.name)
    with pytest.raises(KedrError, match=r"expected the image boot/vmlinuz-6\.12\.117\+deb12-amd64, "
                       r"the packages hold 6\.1\.0-56-amd64: headers and image do not match"):
        provision.check_tree(desc, root)
    # The matching tree passes.
    provision.check_tree(desc, _tree(k612, tmp_path / "e"))
