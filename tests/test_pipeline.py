"""intercept(), the one entry point of the chain (select, plan, generate, build,
patch, load scripts), does what the SCons targets do: on the module scons built,
the same plan, replacement module source, patched bytes and load scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.intercept.pipeline import InterceptRequest, intercept
from kedr_build.kernel.descriptions import ProvisionedKernel


def test_intercept_gives_what_scons_gives(built_chardev: Path, kernel: ProvisionedKernel,
                                          tmp_path: Path) -> None:
    repl = "kedr_repl_chardev"
    result = intercept(InterceptRequest(modules=(built_chardev / "kedr_chardev.ko",),
                                        kernel=kernel, outdir=tmp_path, replacement_module=repl,
                                        driver="chardev"))
    same = ["plan.json", "tail_calls.json", f"{repl}/{repl}.c", f"{repl}/{repl}_trace.h",
            "patched/kedr_chardev.ko", "load.sh", "unload.sh"]
    for rel in same:
        assert (tmp_path / rel).read_bytes() == (built_chardev / rel).read_bytes(), rel
    assert result.replacement == tmp_path / repl / f"{repl}.ko"
    assert result.patched == (tmp_path / "patched" / "kedr_chardev.ko",)
    assert result.load_order == (result.replacement, *result.patched)
    assert [d.name for d in result.load.drivers] == ["kedr_chardev"]
    assert result.plan.mapping() == json.loads((built_chardev / "plan.json").read_text())["rename"]
    manifest = json.loads((tmp_path / "patched" / "kedr_chardev.ko.json").read_text())
    assert {r["old"] for r in manifest["renames"]} == set(result.plan.mapping())


def test_intercept_of_no_module_is_one_line(pinned_kernel: ProvisionedKernel,
                                            tmp_path: Path) -> None:
    with pytest.raises(KedrError, match="^intercept: no module to patch$"):
        intercept(InterceptRequest(modules=(), kernel=pinned_kernel, outdir=tmp_path,
                                   replacement_module="kedr_repl_x"))
