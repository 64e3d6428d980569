"""kofile: compression, signatures, ELF header checks, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.container import (SIG_MAGIC, Compression, compress, compression_of, read_module,
                               split_signature)


def debian_module(k: ProvisionedKernel, rel: str) -> Path:
    assert k.modules_dir is not None
    return k.modules_dir / "kernel" / rel


def test_signature_of_debian_module(pinned_kernel: ProvisionedKernel) -> None:
    path = debian_module(pinned_kernel, "fs/ext4/ext4.ko")
    raw = path.read_bytes()
    mod = read_module(path)
    assert mod.signed and mod.signature.endswith(SIG_MAGIC)
    assert mod.elf + mod.signature == raw
    sig_len = int.from_bytes(raw[-32:-28], "big")
    assert len(mod.signature) == sig_len + 40
    # readelf agrees: the section header table ends inside the unsigned part.
    assert len(mod.elf) == len(raw) - 40 - sig_len


def test_unsigned_and_bad_signature() -> None:
    assert split_signature(b"\x7fELF" + b"\0" * 100, "x") == (b"\x7fELF" + b"\0" * 100, b"")
    bogus = b"\0" * 100 + b"\0" * 8 + (10**6).to_bytes(4, "big") + SIG_MAGIC
    with pytest.raises(KedrError, match="sig_len"):
        split_signature(bogus, "x")
    with pytest.raises(KedrError, match="truncated module signature"):
        split_signature(SIG_MAGIC, "x")


@pytest.mark.parametrize("comp", [Compression.XZ, Compression.GZIP, Compression.ZSTD])
def test_compression_roundtrip(built: Path, tmp_path: Path, comp: Compression) -> None:  # noqa
    data = (built / "hello_mod.ko").read_bytes()
    packed = compress(data, comp, "x")
    assert compression_of(packed) is comp
    p = tmp_path / f"m.ko{comp.value}"
    p.write_bytes(packed)
    mod = read_module(p)
    assert mod.elf == data and mod.compression is comp and not mod.signed


def test_suffix_must_match(built: Path, tmp_path: Path) -> None:  # noqa: F811
    p = tmp_path / "m.ko.xz"
    p.write_bytes((built / "hello_mod.ko").read_bytes())
    with pytest.raises(KedrError, match="name says xz-compressed"):
        read_module(p)
    p.write_bytes(b"\xfd7zXZ\x00garbage")
    with pytest.raises(KedrError, match="corrupt xz data"):
        read_module(p)
    z = tmp_path / "m.ko.zst"
    z.write_bytes(b"\x28\xb5\x2f\xfdgarbage")
    with pytest.raises(KedrError, match=r"m\.ko\.zst: corrupt zstd data: "):
        read_module(z)


@pytest.mark.parametrize("edit, message", [
    ((4, 1), "ELFCLASS32 ELF, expected ELFCLASS64"),
    ((5, 2), "expected little-endian"),
    ((16, 2), "ET_EXEC, expected ET_REL"),
    ((18, 40), "EM_ARM, expected EM_X86_64"),
    ((0, 0x7e), "not an ELF file"),
])
def test_header_checks(built: Path, tmp_path: Path, edit: tuple[int, int],  # noqa: F811
                       message: str) -> None:
    data = bytearray((built / "hello_mod.ko").read_bytes())
    data[edit[0]] = edit[1]
    p = tmp_path / "m.ko"
    p.write_bytes(bytes(data))
    with pytest.raises(KedrError, match=message) as e:
        read_module(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KedrError, match="cannot read"):
        read_module(tmp_path / "nope.ko")


def test_write_atomic(tmp_path: Path) -> None:
    p = tmp_path / "out.ko"
    write_atomic(p, b"abc")
    assert p.read_bytes() == b"abc" and os.listdir(tmp_path) == ["out.ko"]
    with pytest.raises(KedrError, match="cannot write"):
        write_atomic(tmp_path / "no" / "dir.ko", b"x")
