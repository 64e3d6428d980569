"""inspect and symvers against GNU readelf, kmod's modinfo and pyelftools."""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from kedr_build.errors import KedrError
from kedr_build.ko.imports import inspect_module
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.symvers import crcs_from_module, parse_symvers, read_symvers


def pyelftools_view(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(import -> relocation count, __versions name -> crc), the slow way."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        und = {i: s.name for i, s in enumerate(symtab.iter_symbols())
               if i and s["st_shndx"] == "SHN_UNDEF" and s.name}
        refs: Counter[str] = Counter()
        for sec in elf.iter_sections():
            if isinstance(sec, RelocationSection) and sec["sh_link"] == \
                    elf.get_section_index(".symtab"):
                for r in sec.iter_relocations():
                    if r["r_info_sym"] in und:
                        refs[und[r["r_info_sym"]]] += 1
        imports = {name: refs[name] for name in und.values()}
        ver = elf.get_section_by_name("__versions")
        versions = {}
        if ver is not None:
            d = ver.data()
            for o in range(0, len(d), 64):
                versions[d[o + 8:o + 64].split(b"\0")[0].decode()] = \
                    int.from_bytes(d[o:o + 8], "little")
    return imports, versions


def test_hello(built: Path) -> None:  # noqa: F811
    info = inspect_module(built / "hello_mod.ko")
    imports = {i.name: i.call_sites for i in info.imports}
    assert imports["kfree"] == 2 and imports["mutex_lock"] == 2 and imports["__kmalloc"] == 1
    assert "kmalloc" in info.defined and "h_alloc" in info.defined
    assert info.name == "hello_mod" and not info.signed
    assert info.modinfo_values("license") == ["GPL"]
    assert info.ext_versions is None


def test_against_pyelftools_and_modinfo(pinned_kernel: ProvisionedKernel) -> None:
    assert pinned_kernel.modules_dir is not None
    files = sorted(pinned_kernel.modules_dir.glob("kernel/**/*.ko"))
    sample = random.Random(6).sample(files, 25) + \
        [pinned_kernel.modules_dir / "kernel/fs/ext4/ext4.ko"]
    for path in sample:
        info = inspect_module(path)
        imports, versions = pyelftools_view(path)
        assert {i.name: i.call_sites for i in info.imports} == imports, path
        assert {v.name: v.crc for v in info.versions or ()} == versions, path
        out = subprocess.run(["/usr/sbin/modinfo", "-0", "-F", "depends", str(path)],
                             capture_output=True, text=True, check=True).stdout
        assert info.modinfo_values("depends") == out.split("\0")[:-1], path
        assert info.signed


def test_symvers_kernel(pinned_kernel: ProvisionedKernel) -> None:
    sv = read_symvers(pinned_kernel.symvers)
    assert len(sv) > 10000
    assert sv["kfree"].export_type == "EXPORT_SYMBOL" and sv["kfree"].module == "vmlinux"
    info = inspect_module(pinned_kernel.modules_dir / "kernel/fs/ext4/ext4.ko")  # type: ignore
    ver = {v.name: v.crc for v in info.versions or ()}
    assert ver["kfree"] == sv["kfree"].crc  # the module was built against this Module.symvers


def test_symvers_formats() -> None:
    new = parse_symvers("0x00000001\tfoo\tdrivers/x\tEXPORT_SYMBOL_GPL\tNS\n"
                        "0x00000002\tbar\tvmlinux\tEXPORT_SYMBOL\t\n", "t")
    assert new["foo"].namespace == "NS" and new["bar"].crc == 2
    old = parse_symvers("0xdeadbeef\tbaz\tvmlinux\tEXPORT_SYMBOL\n", "t")
    assert old["baz"].crc == 0xDEADBEEF and old["baz"].namespace == ""
    with pytest.raises(KedrError, match="t:1: expected 4 or 5"):
        parse_symvers("0x1 foo\n", "t")
    with pytest.raises(KedrError, match="bad CRC"):
        parse_symvers("zz\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n", "t")


def test_crcs_from_built_module(built: Path) -> None:  # noqa: F811
    """__crc_* in __kcrctab (5.19+) agree with the Module.symvers of the same build."""
    from_ko = crcs_from_module(built / "repl.ko")
    from_symvers = {k: v.crc for k, v in read_symvers(built / "Module.symvers").items()
                    if v.module.endswith("/repl")}
    assert from_ko == from_symvers and "Kfree" in from_ko
