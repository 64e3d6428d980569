"""Patching 6.12's .ko.xz modules as shipped: the output is an xz file the kernel's
decompressor reads (CRC32), the same ELF whatever the xz preset, and a module with
nothing to rename keeps its own compressed bytes."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.kernel import provision
from kedr_build.ko.patch import patch_module
from kedr_build.ko.plan import build_plan
from kedr_build.ko.symvers import read_symvers


def xz_dc(path: Path) -> bytes:
    return subprocess.run(["xz", "-dc", str(path)], capture_output=True, check=True).stdout


def test_xz_presets_give_the_same_module(tmp_path: Path) -> None:
    kernel = provision.ensure("debian-6.12")
    assert kernel.modules_dir is not None
    loop = next(kernel.modules_dir.rglob("loop.ko.xz"))
    plan = build_plan(["kfree", "mutex_lock"], kernel_exports=read_symvers(kernel.symvers),
                      replacement_module="kedr_repl")
    crcs = {r.new: zlib.crc32(r.new.encode()) for r in plan.renames}
    outs = {}
    for preset in (1, 6):
        out = tmp_path / f"p{preset}" / "loop.ko.xz"
        out.parent.mkdir()
        result = patch_module(loop, out, plan, crcs, manifest=False, xz_preset=preset)
        assert result.compression == "xz" and result.signature_stripped
        robot = subprocess.run(["xz", "--robot", "-l", str(out)], capture_output=True,
                               text=True, check=True).stdout
        assert "\tCRC32\t" in robot
        outs[preset] = out
    assert xz_dc(outs[1]) == xz_dc(outs[6])
    # Preset 6 with a 1 MiB dictionary is how Debian compressed it: the same size class.
    assert outs[6].stat().st_size <= outs[1].stat().st_size
    with pytest.raises(KedrError, match="xz preset 12 is not 0..9"):
        patch_module(loop, tmp_path / "bad.ko.xz", plan, crcs, manifest=False, xz_preset=12)


def test_unchanged_module_keeps_its_compressed_bytes(tmp_path: Path) -> None:
    kernel = provision.ensure("debian-6.12")
    assert kernel.modules_dir is not None
    crc7 = next(kernel.modules_dir.rglob("crc7.ko.xz"))
    plan = build_plan(["kfree"], replacement_module="kedr_repl")
    out = tmp_path / "crc7.ko.xz"
    result = patch_module(crc7, out, plan, {}, manifest=False)
    assert result.renames == () and "nothing to rename" in " ".join(result.warnings)
    assert out.read_bytes() == crc7.read_bytes()
