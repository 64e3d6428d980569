"""kedr_build.ko.verify: one failure per check. Each test takes a real patch of
hello_mod.ko (tests/data/modsrc), breaks its output or its expectation the way a
patcher bug would, and expects verify_patch to refuse it with that check's message.
A verifier with a check removed fails the matching test here."""

from __future__ import annotations

import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.ko.elf import SYM, ST_SHNDX, ST_SIZE, ST_VALUE, ElfRel
from kedr_build.ko.imports import EXT_CRCS, EXT_NAMES, MODINFO, VERSIONS, inspect_module
from kedr_build.ko.patch import PatchedImage, patch_elf
from kedr_build.ko.plan import Naming, build_plan
from kedr_build.ko.verify import Expectation, verify_patch

PLAN = build_plan(["kfree", "mutex_lock"], replacement_module="repl")
PREFIX_PLAN = build_plan(["kfree"], Naming.parse("prefix:kedr_"), replacement_module="repl")
CRCS = {"Kfree": 0x1111, "Mutex_lock": 0x2222, "kedr_kfree": 0x3333}


def patched(data: bytes, plan: object = PLAN) -> tuple[ElfRel, PatchedImage]:
    elf = ElfRel(data, "hello_mod.ko")
    img = patch_elf(elf, plan.mapping(), CRCS, "repl")  # type: ignore[attr-defined]
    verify_patch(elf, img.elf, img.expectation)      # the unbroken patch passes
    return elf, img


@pytest.fixture
def hello(built: Path) -> bytes:
    return (built / "hello_mod.ko").read_bytes()


def refuse(elf: ElfRel, out: bytes | bytearray, expect: Expectation, message: str) -> None:
    with pytest.raises(KedrError, match=message) as info:
        verify_patch(elf, bytes(out), expect)
    assert str(info.value).startswith("hello_mod.ko: internal error, patched output failed "
                                      "verification: ")


def section_at(out: bytes | bytearray, name: str) -> tuple[int, int]:
    sec = ElfRel(bytes(out), "x").section(name)
    assert sec is not None
    return sec.offset, sec.size


def sym_offset(out: bytes | bytearray, index: int) -> int:
    return ElfRel(bytes(out), "x").symtab.offset + index * SYM.size


# --- whole file ---------------------------------------------------------------------------

def test_output_that_does_not_parse(hello: bytes) -> None:
    elf, img = patched(hello)
    refuse(elf, img.elf[:40], img.expectation, "truncated|too short|ELF")


def test_elf_header_changed(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    out[48] ^= 1                               # e_flags
    refuse(elf, out, img.expectation, "ELF header changed")


def test_section_header_changed(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    text = elf.section(".text")
    assert text is not None
    out[elf.shdr_offset(text.index) + 8] ^= 0x1  # sh_flags
    refuse(elf, out, img.expectation, r"section header of \.text changed")


def test_fixed_section_resized(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    text = elf.section(".text")
    assert text is not None
    struct.pack_into("<Q", out, elf.shdr_offset(text.index) + 32, text.size - 1)  # sh_size
    refuse(elf, out, img.expectation, r"section \.text moved or resized")


def test_byte_changed_outside_edited_sections(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    off, _ = section_at(out, ".text")
    out[off + 3] ^= 0xFF
    refuse(elf, out, img.expectation, f"byte at {off + 3:#x} changed outside")


def test_bytes_after_moved_sections(hello: bytes) -> None:
    elf, img = patched(hello, PREFIX_PLAN)
    assert img.strtab_grown
    refuse(elf, img.elf + b"\0junk", img.expectation, "bytes after the moved sections")


def test_stray_bytes_before_a_moved_section(hello: bytes) -> None:
    elf, img = patched(hello, PREFIX_PLAN)
    off, _ = section_at(img.elf, ".strtab")
    gap = [k for k in range(len(hello), off)]
    out = bytearray(img.elf)
    if not gap:   # no alignment gap: make one by moving the section up by 8
        text = ElfRel(img.elf, "x")
        idx = text.strtab.index
        out = bytearray(img.elf[:off]) + b"\0" * 8 + img.elf[off:]
        struct.pack_into("<Q", out, text.shdr_offset(idx) + 24, off + 8)
        gap = list(range(off, off + 8))
    out[gap[0]] = 0x55
    refuse(elf, out, img.expectation, r"moved section \.strtab overlaps or leaves stray bytes")


# --- symbols ------------------------------------------------------------------------------

def renamed_index(elf: ElfRel, name: str) -> int:
    return next(i for i, n in elf.undefined() if n == name)


def test_renamed_symbol_changed_more_than_its_name(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    i = renamed_index(elf, "kfree")
    out[sym_offset(out, i) + 4] ^= 0x10                 # st_info: binding
    refuse(elf, out, img.expectation, f"renamed symbol {i} changed more than its name")


def test_renamed_symbol_has_another_name(hello: bytes) -> None:
    elf, img = patched(hello)
    i = renamed_index(elf, "kfree")
    names = dict(img.expectation.symbol_names)
    names[i] = "Kfreee"
    refuse(elf, img.elf, replace(img.expectation, symbol_names=names),
           f"symbol {i} is not the import Kfreee")


def test_defined_function_shifted(hello: bytes) -> None:
    """The sabotage "every function symbol moved by one byte", one symbol of it."""
    elf, img = patched(hello)
    out = bytearray(img.elf)
    text = elf.section(".text")
    assert text is not None
    i = next(k for k, s in enumerate(elf.symbols) if s[ST_SHNDX] == text.index and s[ST_SIZE])
    struct.pack_into("<Q", out, sym_offset(out, i) + 8, elf.symbols[i][ST_VALUE] + 1)
    refuse(elf, out, img.expectation, rf"symbol {i} \({elf.symbol_name(elf.symbols[i])}\) changed")


def test_defined_symbol_resized(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    i = next(k for k, s in enumerate(elf.symbols) if s[ST_SHNDX] not in (0,) and s[ST_SIZE]
             and elf.sections[s[ST_SHNDX]].name != MODINFO if s[ST_SHNDX] < 0xff00)
    struct.pack_into("<Q", out, sym_offset(out, i) + 16, elf.symbols[i][ST_SIZE] + 1)
    refuse(elf, out, img.expectation, f"symbol {i} .*changed")


def modinfo_symbol(elf: ElfRel, key: bytes) -> int:
    mi = elf.section(MODINFO)
    assert mi is not None
    data = elf.section_bytes(mi)
    return next(k for k, s in enumerate(elf.symbols) if s[ST_SHNDX] == mi.index
                and data[s[ST_VALUE]:].startswith(key))


def test_modinfo_symbol_points_at_another_string(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    i = modinfo_symbol(elf, b"license=")
    struct.pack_into("<Q", out, sym_offset(out, i) + 8, elf.symbols[i][ST_VALUE] + 1)
    refuse(elf, out, img.expectation, rf"{MODINFO} symbol {i} \(.*\) names another string")


def test_modinfo_symbol_changed_otherwise(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    i = modinfo_symbol(elf, b"license=")
    out[sym_offset(out, i) + 5] ^= 0x1                  # st_other
    refuse(elf, out, img.expectation, rf"symbol {i} \(.*\) changed")


def test_tail_merged_name_damaged(hello: bytes) -> None:
    elf, img = patched(hello)
    i = renamed_index(elf, "__kmalloc")
    bad = bytearray(hello)
    bad[elf.strtab.offset + elf.symbols[i][0] + 2] = ord("K")
    refuse(elf, bad, Expectation({i: "__Kmalloc"}, {}, {}, None),
           "shares the string table bytes")


# --- __versions -----------------------------------------------------------------------------

def version_offset(out: bytes | bytearray, name: str) -> int:
    off, size = section_at(out, VERSIONS)
    for k in range(off, off + size, 64):
        if out[k + 8:k + 64].split(b"\0")[0] == name.encode():
            return k
    raise AssertionError(name)


def test_other_versions_entry_changed(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    k = version_offset(out, "__kmalloc")
    out[k] ^= 1
    refuse(elf, out, img.expectation, f"{VERSIONS} entry __kmalloc at .* changed")


def test_renamed_versions_entry_wrong_crc(hello: bytes) -> None:
    elf, img = patched(hello)
    out = bytearray(img.elf)
    out[version_offset(out, "Kfree")] ^= 1
    refuse(elf, out, img.expectation, f"{VERSIONS} entry at .* is not Kfree/0x1111")


def test_versions_entry_not_renamed(hello: bytes) -> None:
    elf, img = patched(hello)
    versions = {**img.expectation.versions, "__kmalloc": ("__Kmalloc", 5)}
    refuse(elf, img.elf, replace(img.expectation, versions=versions),
           rf"{VERSIONS}: entries not renamed: \['__kmalloc'\]")


def test_versions_expected_but_absent(hello: bytes, tmp_path: Path) -> None:
    (tmp_path / "in.ko").write_bytes(hello)
    src = tmp_path / "nov.ko"
    subprocess.run(["objcopy", "--rename-section", f"{VERSIONS}=__no_versions",
                    str(tmp_path / "in.ko"), str(src)], check=True)
    data = src.read_bytes()
    elf = ElfRel(data, "hello_mod.ko")
    img = patch_elf(elf, PLAN.mapping(), None, "repl")
    verify_patch(elf, img.elf, img.expectation)
    refuse(elf, img.elf, replace(img.expectation, versions={"kfree": ("Kfree", 1)}),
           f"{VERSIONS} expected")


# --- extended modversions -------------------------------------------------------------------

def with_ext(hello: bytes, tmp_path: Path, skip: str = "") -> bytes:
    """hello_mod.ko with 6.14+ extended modversions added (as modpost would), without
    the entry ``skip``."""
    (tmp_path / "src.ko").write_bytes(hello)
    info = inspect_module(tmp_path / "src.ko")
    assert info.versions is not None
    entries = [v for v in info.versions if v.name != skip]
    (tmp_path / "n").write_bytes(b"".join(v.name.encode() + b"\0" for v in entries))
    (tmp_path / "c").write_bytes(b"".join(struct.pack("<I", v.crc) for v in entries))
    out = tmp_path / "ext.ko"
    subprocess.run(["objcopy", "--add-section", f"{EXT_NAMES}={tmp_path / 'n'}",
                    "--add-section", f"{EXT_CRCS}={tmp_path / 'c'}", str(tmp_path / "src.ko"),
                    str(out)], check=True)
    return out.read_bytes()


def test_ext_entry_changed(hello: bytes, tmp_path: Path) -> None:
    elf, img = patched(with_ext(hello, tmp_path))
    out = bytearray(img.elf)
    ext = ElfRel(bytes(out), "x")
    crcs = ext.section(EXT_CRCS)
    names = ext.section_bytes(ext.section(EXT_NAMES)).split(b"\0")  # type: ignore[arg-type]
    assert crcs is not None
    k = names.index(b"__kmalloc")
    out[crcs.offset + 4 * k] ^= 1
    refuse(elf, out, img.expectation, f"{EXT_NAMES} entry __kmalloc: got __kmalloc/")


def test_ext_entry_renamed_wrongly(hello: bytes, tmp_path: Path) -> None:
    elf, img = patched(with_ext(hello, tmp_path))
    ext = {**img.expectation.ext_versions, "kfree": ("Kfree", 0x9999)}
    refuse(elf, img.elf, replace(img.expectation, ext_versions=ext),
           f"{EXT_NAMES} entry kfree: got Kfree/0x1111")


def test_ext_entry_not_renamed_names_the_right_entry(hello: bytes, tmp_path: Path) -> None:
    """kfree is renamed in __versions but has no extended entry: the message must list
    kfree (the set of extended entries renamed, not of __versions entries)."""
    elf, img = patched(with_ext(hello, tmp_path, skip="kfree"))
    assert "kfree" in img.expectation.versions and "kfree" not in img.expectation.ext_versions
    ext = {**img.expectation.ext_versions, "kfree": ("Kfree", 0x1111)}
    refuse(elf, img.elf, replace(img.expectation, ext_versions=ext),
           rf"{EXT_NAMES}: entries not renamed: \['kfree'\]")


def test_ext_expected_but_absent(hello: bytes) -> None:
    elf, img = patched(hello)
    refuse(elf, img.elf, replace(img.expectation, ext_versions={"kfree": ("Kfree", 1)}),
           f"{EXT_CRCS} appeared, vanished or was expected")


def test_ext_names_and_crcs_disagree(hello: bytes, tmp_path: Path) -> None:
    elf, img = patched(with_ext(hello, tmp_path))
    out = bytearray(img.elf)
    ext = ElfRel(bytes(out), "x")
    names, crcs = ext.section(EXT_NAMES), ext.section(EXT_CRCS)
    assert names is not None and crcs is not None
    # One name fewer (its bytes turned into empty names at the end): the counts differ.
    data = ext.section_bytes(names)
    first = data.index(b"\0") + 1
    out[names.offset:names.offset + len(data)] = data[first:] + b"\0" * first
    refuse(elf, out, img.expectation, "corrupt extended modversions: 10 CRCs but 15 names")


# --- .modinfo -------------------------------------------------------------------------------

def test_modinfo_changed_beyond_depends(hello: bytes) -> None:
    """The sabotage "license= changed": a .modinfo string other than depends= differs."""
    elf, img = patched(hello)
    out = bytearray(img.elf)
    off, size = section_at(out, MODINFO)
    k = out.index(b"license=GPL", off, off + size)
    out[k + 8:k + 11] = b"BSD"
    refuse(elf, out, img.expectation, f"{MODINFO} differs beyond depends=")


def test_depends_not_what_was_expected(hello: bytes) -> None:
    elf, img = patched(hello)
    refuse(elf, img.elf, replace(img.expectation, depends=b"depends=other"),
           f"{MODINFO}")

