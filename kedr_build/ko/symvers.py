"""Export CRCs: from a Module.symvers file, or from a built module's ``__crc_*`` symbols.

Module.symvers is tab-separated: ``CRC  symbol  module  EXPORT_TYPE  NAMESPACE`` on
5.6+ (the namespace field is empty but present), ``CRC  symbol  module  EXPORT_TYPE``
before. In a built .ko, ``__crc_<sym>`` is ``SHN_ABS`` with the CRC as its value
(≤5.18), or since the Linux commit "kbuild: link symbol CRCs at final link,
removing CONFIG_MODULE_REL_CRCS" (in v5.19) a u32 at ``st_value`` inside a
``__kcrctab*`` section.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from kedr_build.ko.elf import SHN_ABS, SHN_LORESERVE, SHN_UNDEF, ST_NAME, ST_SHNDX, ST_VALUE, ElfRel
from kedr_build.errors import KedrError
from kedr_build.ko.container import read_module


@dataclass(frozen=True)
class SymversEntry:
    crc: int
    module: str
    export_type: str
    namespace: str = ""


def parse_symvers(text: str, where: str) -> dict[str, SymversEntry]:
    out: dict[str, SymversEntry] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (4, 5):
            raise KedrError(f"{where}:{lineno}: expected 4 or 5 tab-separated fields, "
                            f"got {len(fields)}")
        try:
            crc = int(fields[0], 16)
        except ValueError:
            raise KedrError(f"{where}:{lineno}: bad CRC {fields[0]!r}") from None
        if not 0 <= crc <= 0xFFFFFFFF:
            raise KedrError(f"{where}:{lineno}: CRC {fields[0]} does not fit in 32 bits")
        out[fields[1]] = SymversEntry(crc, fields[2], fields[3],
                                      fields[4] if len(fields) == 5 else "")
    return out


def read_symvers(path: str | os.PathLike[str]) -> dict[str, SymversEntry]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise KedrError(f"{p}: cannot read Module.symvers: {e.strerror}") from None
    return parse_symvers(text, str(p))


def crcs_from_elf(elf: ElfRel) -> dict[str, int]:
    """CRC of every symbol a built module exports, from its ``__crc_<sym>`` symbols."""
    out: dict[str, int] = {}
    st = elf.strtab_bytes
    for sym in elf.symbols:
        o = sym[ST_NAME]
        if not st.startswith(b"__crc_", o):
            continue
        name = elf.symbol_name(sym)[len("__crc_"):]
        shndx = sym[ST_SHNDX]
        if shndx == SHN_ABS:
            out[name] = sym[ST_VALUE] & 0xFFFFFFFF
        elif SHN_UNDEF < shndx < SHN_LORESERVE and shndx < len(elf.sections):
            sec = elf.sections[shndx]
            if sym[ST_VALUE] + 4 > sec.file_size:
                raise KedrError(f"{elf.where}: __crc_{name} points outside {sec.name}")
            (out[name],) = struct.unpack_from("<I", elf.data, sec.offset + sym[ST_VALUE])
    return out


def crcs_from_module(path: str | os.PathLike[str]) -> dict[str, int]:
    mod = read_module(path)
    return crcs_from_elf(ElfRel(mod.elf, str(path)))


def load_crcs(source: str | os.PathLike[str]) -> dict[str, int]:
    """CRCs from a Module.symvers or from a built .ko (decided by the file's name)."""
    name = Path(source).name
    if ".ko" in name:
        return crcs_from_module(source)
    return {k: v.crc for k, v in read_symvers(source).items()}
