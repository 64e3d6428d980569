"""Property tests: mutated modules give KedrError (one clear line) or a verified output,
never another exception, never an output file after an error."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kedr_build.ko.elf import EHDR, SHDR
from kedr_build.errors import KedrError
from kedr_build.ko.imports import inspect_module
from kedr_build.ko.patch import patch_module
from kedr_build.ko.plan import build_plan

PLAN = build_plan(["kfree", "__kmalloc", "mutex_lock"], replacement_module="repl")
CRCS = {"Kfree": 1, "__Kmalloc": 2, "Mutex_lock": 3}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
_counter = itertools.count()


def _base(built: Path) -> bytes:  # noqa: F811
    return (built / "hello_mod.ko").read_bytes()


def _section_headers(data: bytes) -> list[tuple[int, ...]]:
    _, _, _, _, _, _, shoff, _, _, _, _, _, shnum, _ = EHDR.unpack_from(data)
    return [SHDR.unpack_from(data, shoff + i * SHDR.size) for i in range(shnum)]


def _check(data: bytes, tmp: Path) -> None:
    n = next(_counter)
    src, dst = tmp / f"in{n}.ko", tmp / f"out{n}.ko"
    src.write_bytes(data)
    try:
        inspect_module(src)
    except KedrError as e:
        assert "\n" not in str(e) and str(src) in str(e)
    try:
        patch_module(src, dst, PLAN, CRCS, manifest=False)
    except KedrError as e:
        msg = str(e)
        assert "\n" not in msg and str(src) in msg
        assert not dst.exists()
        assert not list(tmp.glob(f".out{n}.ko*"))
    else:
        assert dst.exists()
    assert src.read_bytes() == data


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=200_000))
def test_truncated(built: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                   cut: int) -> None:
    data = _base(built)
    _check(data[:cut % len(data)], tmp_path_factory.mktemp("trunc", numbered=True))


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1,
                      max_size=16), header_only=st.booleans())
def test_corrupted_bytes(built: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                         edits: list[tuple[int, int]], header_only: bool) -> None:
    data = bytearray(_base(built))
    shoff = EHDR.unpack_from(data)[6]
    for pos, value in edits:
        # Aim at the ELF header or the section header table half of the time.
        target = pos % 64 if header_only else (shoff + pos % (len(data) - shoff)
                                                 if pos % 2 else pos % len(data))
        data[target] = value
    _check(bytes(data), tmp_path_factory.mktemp("bytes", numbered=True))


FIELDS = {"offset": 4, "size": 5, "link": 6, "align": 8, "type": 1, "name": 0, "entsize": 9}


@SETTINGS
@given(section=st.integers(0, 60), field=st.sampled_from(sorted(FIELDS)),
       value=st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 0x40000)))
def test_bad_section_headers(built: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                             section: int, field: str, value: int) -> None:
    data = bytearray(_base(built))
    shoff = EHDR.unpack_from(data)[6]
    hdrs = _section_headers(bytes(data))
    i = section % len(hdrs)
    h = list(hdrs[i])
    k = FIELDS[field]
    h[k] = value & (0xFFFFFFFF if k in (0, 1, 6, 7) else 2**64 - 1)
    SHDR.pack_into(data, shoff + i * SHDR.size, *h)
    _check(bytes(data), tmp_path_factory.mktemp("shdr", numbered=True))


@SETTINGS
@given(field=st.sampled_from(["class", "data", "type", "machine", "shoff", "shnum",
                              "shstrndx", "shentsize"]), value=st.integers(0, 2**16 - 1))
def test_bad_elf_header(built: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                        field: str, value: int) -> None:
    data = bytearray(_base(built))
    where = {"class": (4, "B"), "data": (5, "B"), "type": (16, "H"), "machine": (18, "H"),
             "shoff": (40, "Q"), "shnum": (60, "H"), "shstrndx": (62, "H"),
             "shentsize": (58, "H")}[field]
    off, fmt = where
    struct.pack_into("<" + fmt, data, off, value & (0xFF if fmt == "B" else 0xFFFF))
    _check(bytes(data), tmp_path_factory.mktemp("ehdr", numbered=True))


def _retype(data: bytes, name: bytes, new_type: int | None = None,
            new_size: int | None = None) -> bytes:
    out = bytearray(data)
    _, _, _, _, _, _, shoff, _, _, _, _, _, shnum, shstrndx = EHDR.unpack_from(data)
    hdrs = _section_headers(data)
    names_off = hdrs[shstrndx][4]
    for i, h in enumerate(hdrs):
        if data[names_off + h[0]:].split(b"\0", 1)[0] == name:
            fields = list(h)
            if new_type is not None:
                fields[1] = new_type
            if new_size is not None:
                fields[5] = new_size
            SHDR.pack_into(out, shoff + i * SHDR.size, *fields)
    return bytes(out)


def test_missing_symtab(built: Path, tmp_path: Path) -> None:  # noqa: F811
    data = _retype(_base(built), b".symtab", new_type=1)
    with pytest.raises(KedrError, match="no symbol table"):
        patch_module(_write(tmp_path, data), tmp_path / "o.ko", PLAN, CRCS)
    assert not (tmp_path / "o.ko").exists()


@SETTINGS
@given(size=st.integers(0, 2000))
def test_bogus_versions_size(built: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                             size: int) -> None:
    data = _retype(_base(built), b"__versions", new_size=size)
    _check(data, tmp_path_factory.mktemp("ver", numbered=True))


def test_wrong_class_and_machine(built: Path, tmp_path: Path) -> None:  # noqa: F811
    data = bytearray(_base(built))
    data[18] = 183  # EM_AARCH64
    with pytest.raises(KedrError, match="EM_AARCH64, expected EM_X86_64"):
        patch_module(_write(tmp_path, bytes(data)), tmp_path / "o.ko", PLAN, CRCS)
    data[18], data[4] = 62, 1
    with pytest.raises(KedrError, match="ELFCLASS32"):
        patch_module(_write(tmp_path, bytes(data)), tmp_path / "o.ko", PLAN, CRCS)
    data[4], data[16] = 2, 3
    with pytest.raises(KedrError, match="ET_DYN, expected ET_REL"):
        patch_module(_write(tmp_path, bytes(data)), tmp_path / "o.ko", PLAN, CRCS)
    assert not (tmp_path / "o.ko").exists()


def _write(tmp: Path, data: bytes) -> Path:
    p = tmp / f"m{next(_counter)}.ko"
    p.write_bytes(data)
    return p
