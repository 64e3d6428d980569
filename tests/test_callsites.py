"""Calls, jumps and taken addresses of a module's imports, read from its relocations
(kedr_build/ko/callsites.py), against GNU objdump's disassembly; and the tail-call
table built from them (kedr_build/intercept/tailcalls.py). tests/drivers/tailcall,
built on each pinned kernel as shipped (gcc makes its last calls jumps) and as
kedr-build builds it (sibling calls off: no jump left)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kedr_build.intercept.tailcalls import find
from kedr_build.kernel import dkms, kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.callsites import SiteKind, import_sites
from kedr_build.ko.container import read_module
from kedr_build.ko.elf import ElfRel

DRIVER = Path(__file__).resolve().parent / "drivers" / "tailcall"
DKMS_HELLO = Path(__file__).resolve().parent / "drivers" / "dkms-hello"


def objdump_sites(ko: Path) -> list[tuple[str, str, int, str]]:
    """(import, call/jump, end of the instruction in its section, section) per call or jump."""
    out = subprocess.run(["objdump", "-dr", str(ko)], capture_output=True, text=True,
                         check=True).stdout
    sites = []
    section = previous = ""
    for line in out.splitlines():
        if m := re.match(r"^Disassembly of section (\S+):$", line):
            section = m.group(1)
        elif m := re.search(r"^\s+([0-9a-f]+): R_X86_64_(?:PLT32|PC32)\s+(\w+)-0x4$", line):
            op = re.search(r":\s+(e8|e9) 00 00 00 00\s", previous)
            if op:
                sites.append((m.group(2), "call" if op.group(1) == "e8" else "jump",
                              int(m.group(1), 16) + 4, section))
        previous = line
    return sites


@pytest.fixture(scope="module")
def shipped(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("tailcall") / "src"
    shutil.copytree(DRIVER, src)
    subprocess.run(["make", "-C", str(kernel.kdir), f"M={src}", "modules"], check=True,
                   capture_output=True)
    return src / "kedr_tailcall.ko"


def test_calls_and_jumps_are_what_objdump_disassembles(shipped: Path) -> None:
    elf = ElfRel(read_module(shipped).elf, str(shipped))
    ours = [(s.name, s.kind.value, s.end, s.section) for s in import_sites(elf)
            if s.kind is not SiteKind.ADDRESS]
    assert sorted(ours) == sorted(objdump_sites(shipped))
    jumps = {(s.name, s.function) for s in import_sites(elf) if s.kind is SiteKind.JUMP}
    assert {("kfree", "tc_drop"), ("kfree", "tc_exit")} <= jumps


def test_tail_call_table_knows_which_jump_a_call_came_from(shipped: Path) -> None:
    elf = ElfRel(read_module(shipped).elf, str(shipped))
    alloc = next(s.name for s in import_sites(elf)
                 if s.kind is SiteKind.JUMP and s.function and s.function.startswith("tc_alloc"))
    table = find([shipped], {"kfree", alloc, "kstrdup"})
    assert set(table.sites) == {"kfree", alloc} and table.unattributed == {}
    kfree = table.sites["kfree"]
    by_function = {j.where.split("+")[0]: j for j in kfree.jumps}
    assert set(by_function) == {"tc_drop", "tc_exit"}
    # The exit is an entry point (struct module points at it); tc_drop is only called.
    assert by_function["tc_exit"].entry and not by_function["tc_drop"].entry
    assert kfree.jumps[kfree.outside] == by_function["tc_exit"]
    assert table.sites[alloc].outside == -1       # called from init only
    assert kfree.importers == ("kedr_tailcall",)


def test_the_instrumented_build_leaves_no_jump(kernel: ProvisionedKernel, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(DRIVER, src)
    ko = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir, outdir=tmp_path / "out",
                                          modules=tuple(kbuild.discover(src, kernel.kdir))))[0]
    assert [s for s in objdump_sites(ko) if s[1] == "jump" and s[0] != "__x86_return_thunk"] == []
    assert find([ko], {"kfree", "kstrdup", "kmalloc_trace", "__kmalloc_cache_noprof"}).sites == {}


def test_a_users_kcflags_is_kept() -> None:
    req = kbuild.BuildRequest(driver=Path("/d"), kdir=Path("/k"), outdir=Path("/o"), modules=(),
                              make_args=("KCFLAGS=-DFOO", "X=1"))
    assert kbuild.make_command(req)[5:7] == ["KCFLAGS=-DFOO -fno-optimize-sibling-calls", "X=1"]
    plain = kbuild.BuildRequest(driver=Path("/d"), kdir=Path("/k"), outdir=Path("/o"),
                                modules=(), instrumented=False)
    assert not any(w.startswith("KCFLAGS=") for w in kbuild.make_command(plain))


def test_a_dkms_build_leaves_no_jump(kernel: ProvisionedKernel, tmp_path: Path) -> None:
    """A DKMS package is built with the flag too: dkms-hello's exit ends in kfree(),
    a jump (the caller's caller would be reported) when gcc optimises sibling calls."""
    tree = tmp_path / "dkms"
    pkg = dkms.read_conf(DKMS_HELLO, kernel.release, kernel.kdir, tree)
    kos = dkms.build(pkg, tree, kernel.release, kernel.kdir, tmp_path / "out")
    hello = next(ko for ko in kos if ko.name == "dkms-hello.ko")
    sites = objdump_sites(hello)
    assert ("kfree", "call") in {(name, kind) for name, kind, _, _ in sites}
    assert [s for s in sites if s[1] == "jump" and s[0] != "__x86_return_thunk"] == []


def test_a_dkms_build_appends_to_the_users_kcflags(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("KCFLAGS", "-DFOO ")
    env = dkms.build_env(tmp_path, tmp_path / "build", tmp_path)
    assert env["KCFLAGS"] == "-DFOO -fno-optimize-sibling-calls"
    monkeypatch.delenv("KCFLAGS")
    assert dkms.build_env(tmp_path, tmp_path / "build", tmp_path)["KCFLAGS"] == \
        "-fno-optimize-sibling-calls"
