"""Module files as bytes: compression and the appended signature.

A module on disk is ``[ELF][PKCS#7][struct module_signature]["~Module signature
appended~\\n"]``, optionally compressed as a whole (``.ko.xz``, ``.ko.zst``,
``.ko.gz``; the signature is inside the compressed data). :func:`read_module`
undoes both layers and checks the ELF header; :func:`compress` goes the other
way (:func:`kedr_build.atomic.write_atomic` writes the result). Compression is
detected from the magic bytes (the suffix must agree), so a renamed file is
never misread.
"""

from __future__ import annotations

import enum
import gzip
import lzma
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from kedr_build.ko.elf import check_header
from kedr_build.errors import KedrError
from kedr_build.ko.names import plain_name

SIG_MAGIC = b"~Module signature appended~\n"
# struct module_signature { u8 algo, hash, id_type, signer_len, key_id_len; u8 pad[3];
# __be32 sig_len; } — include/linux/module_signature.h
_MODSIG = struct.Struct(">BBBBB3xI")


class Compression(enum.Enum):
    NONE = ""
    XZ = ".xz"
    GZIP = ".gz"
    ZSTD = ".zst"

    @classmethod
    def from_name(cls, name: str) -> Compression:
        table = {"none": cls.NONE, "xz": cls.XZ, "gz": cls.GZIP, "gzip": cls.GZIP,
                 "zst": cls.ZSTD, "zstd": cls.ZSTD}
        if name not in table:
            raise KedrError(f"unknown compression {name!r}; use one of none, xz, gz, zst")
        return table[name]


_MAGICS = ((b"\xfd7zXZ\x00", Compression.XZ), (b"\x1f\x8b", Compression.GZIP),
           (b"\x28\xb5\x2f\xfd", Compression.ZSTD))


@dataclass(frozen=True)
class LoadedModule:
    """A module file's decompressed ELF image, with its signature split off."""

    path: Path
    compression: Compression
    elf: bytes
    signature: bytes  # the whole appended block (PKCS#7 + module_signature + magic), or b""

    @property
    def signed(self) -> bool:
        return bool(self.signature)


def compression_of(data: bytes) -> Compression:
    for magic, comp in _MAGICS:
        if data.startswith(magic):
            return comp
    return Compression.NONE


def suffix_compression(path: Path) -> Compression:
    for comp in (Compression.XZ, Compression.GZIP, Compression.ZSTD):
        if path.name.endswith(".ko" + comp.value):
            return comp
    return Compression.NONE


def decompress(data: bytes, comp: Compression, where: str) -> bytes:
    try:
        if comp is Compression.XZ:
            return lzma.decompress(data)
        if comp is Compression.GZIP:
            return gzip.decompress(data)
        if comp is Compression.ZSTD:
            return _zstd(["-d", "-c", "-q"], data, where)
    except (lzma.LZMAError, OSError, EOFError, zlib.error) as e:
        raise KedrError(f"{where}: corrupt {comp.value[1:]} data: {e}") from None
    return data


XZ_PRESET = 6     # xz's default, which scripts/Makefile.modinst uses


def compress(data: bytes, comp: Compression, where: str, xz_preset: int = XZ_PRESET) -> bytes:
    """Compress the way the kernel's scripts/Makefile.modinst does.

    ``xz_preset`` below 6 trades size for time (preset 1: ~7x faster, ~8% larger on
    Debian's modules); any preset gives a file the kernel's decompressor reads."""
    if comp is Compression.XZ:
        # XZ ... --check=crc32 --lzma2=dict=1MiB: the in-kernel decompressor wants CRC32.
        if not 0 <= xz_preset <= 9:
            raise KedrError(f"{where}: xz preset {xz_preset} is not 0..9")
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                             filters=[{"id": lzma.FILTER_LZMA2, "preset": xz_preset,
                                       "dict_size": 1 << 20}])
    if comp is Compression.GZIP:
        return gzip.compress(data, mtime=0)
    if comp is Compression.ZSTD:
        return _zstd(["-c", "-q", "-T0"], data, where)
    return data


def _zstd(args: list[str], data: bytes, where: str) -> bytes:
    # The zstd program (Debian's zstd package, a declared host tool): the standard
    # library has no zstd before Python 3.14, and one more Python dependency would
    # serve only the few kernels that compress modules with zstd.
    exe = shutil.which("zstd")
    if exe is None:
        raise KedrError(f"{where}: zstd-compressed, but the 'zstd' program is not installed "
                        "(apt-get install zstd)")
    proc = subprocess.run([exe, *args], input=data, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise KedrError(f"{where}: corrupt zstd data: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


def split_signature(data: bytes, where: str) -> tuple[bytes, bytes]:
    """(ELF image, signature block); the block is b"" for an unsigned module."""
    if not data.endswith(SIG_MAGIC):
        return data, b""
    tail = len(data) - len(SIG_MAGIC) - _MODSIG.size
    if tail < 0:
        raise KedrError(f"{where}: truncated module signature")
    *_ids, sig_len = _MODSIG.unpack_from(data, tail)
    start = tail - sig_len
    if start < 64:
        raise KedrError(f"{where}: corrupt module signature: sig_len {sig_len} exceeds the file")
    return data[:start], data[start:]


def read_module(path: str | os.PathLike[str]) -> LoadedModule:
    """Read, decompress, split off the signature and validate the ELF header."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise KedrError(f"{p}: cannot read: {e.strerror}") from None
    comp = compression_of(raw)
    by_suffix = suffix_compression(p)
    if comp is not by_suffix:
        said = f"{by_suffix.value[1:]}-compressed" if by_suffix.value else "not compressed"
        if comp is Compression.NONE:
            raise KedrError(f"{p}: name says {said}, but the data is not compressed")
        raise KedrError(f"{p}: name says {said}, but the data is {comp.value[1:]}-compressed "
                        f"(name it {plain_name(p) if p.name.endswith('.ko') else p.name + '.ko'}"
                        f"{comp.value})")
    data = decompress(raw, comp, str(p))
    elf, sig = split_signature(data, str(p))
    check_header(elf, str(p))
    return LoadedModule(p, comp, elf, sig)
