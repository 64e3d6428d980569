"""RenamePlan: naming schemes, collisions, never-rename names, plan files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.plan import Naming, build_plan, load_plan, same_length_candidates
from kedr_build.ko.symvers import read_symvers


def test_same_length_default() -> None:
    plan = build_plan(["kfree", "__kmalloc", "_raw_spin_lock"])
    assert plan.mapping() == {"kfree": "Kfree", "__kmalloc": "__Kmalloc",
                              "_raw_spin_lock": "_Raw_spin_lock"}


def test_same_length_collision_order() -> None:
    assert list(same_length_candidates("kfree"))[:6] == \
        ["Kfree", "KFree", "KfRee", "KfrEe", "KfreE", "kFree"]
    plan = build_plan(["kfree"], kernel_exports={"kfree", "Kfree", "KFree"})
    assert plan.mapping() == {"kfree": "KfRee"}
    # Two plan entries never share a replacement: "Kfree" itself is a source here.
    plan = build_plan(["kfree", "Kfree"])
    assert plan.mapping() == {"kfree": "KFree", "Kfree": "kFree"}


def test_prefix_and_explicit() -> None:
    plan = build_plan(["kfree", "vfree"], Naming.parse("prefix:kedr_"),
                      explicit={"vfree": "my_vfree"})
    assert plan.mapping() == {"kfree": "kedr_kfree", "vfree": "my_vfree"}
    with pytest.raises(KedrError, match="unknown naming"):
        Naming.parse("suffix:x")
    with pytest.raises(KedrError, match="already used in the plan"):
        build_plan(["kfree", "vfree"], explicit={"kfree": "x_free", "vfree": "x_free"})
    with pytest.raises(KedrError, match="already used in the plan"):  # no chains
        build_plan([], explicit={"kfree": "vfree", "vfree": "Vfree"})


@pytest.mark.parametrize("name", ["__fentry__", "mcount", "__x86_return_thunk",
                                  "__x86_indirect_thunk_rax", "__x86_indirect_call_thunk_r11",
                                  "__SCT__might_resched", "__SCK__tp_func_x",
                                  "__tracepoint_kfree", "__stack_chk_guard", "module_layout",
                                  "__kasan_check_read", "__tsan_read4", "__sanitizer_cov_trace_pc",
                                  "__ubsan_handle_out_of_bounds"])
def test_never_rename(name: str) -> None:
    with pytest.raises(KedrError, match="never be renamed"):
        build_plan([name])


def test_kernel_exports(pinned_kernel: ProvisionedKernel) -> None:
    sv = read_symvers(pinned_kernel.symvers)
    plan = build_plan(["kfree", "kmalloc_caches_typo"], kernel_exports=sv)
    assert any("kmalloc_caches_typo" in w for w in plan.warnings)
    with pytest.raises(KedrError, match="target kernel already exports"):
        build_plan(["kfree"], explicit={"kfree": "vfree"}, kernel_exports=sv)


def test_plan_files(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text('naming = "prefix:kedr_"\nfunctions = ["kfree"]\n'
                    'replacement_module = "kedr_repl"\n[rename]\nvfree = "kedr_vfree2"\n')
    plan = load_plan(toml)
    assert plan.mapping() == {"kfree": "kedr_kfree", "vfree": "kedr_vfree2"}
    assert plan.replacement_module == "kedr_repl"
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"functions": ["kfree"]}))
    assert load_plan(js).mapping() == {"kfree": "Kfree"}
    assert load_plan(js, naming=Naming.parse("prefix:z_")).mapping() == {"kfree": "z_kfree"}
    js.write_text(json.dumps({"function": ["kfree"]}))
    with pytest.raises(KedrError, match="unknown plan key"):
        load_plan(js)
    js.write_text("{")
    with pytest.raises(KedrError, match="bad plan file"):
        load_plan(js)


@given(st.from_regex(r"_{0,3}[a-z][a-z0-9_]{0,40}", fullmatch=True))
def test_same_length_candidates_property(name: str) -> None:
    cands = list(same_length_candidates(name))
    assert cands and all(len(c) == len(name) and c != name for c in cands)
    assert len(set(cands)) == len(cands)
    assert all(c.lower() == name.lower() for c in cands)
