"""What a built module imports and what the loader will check about it.

:func:`inspect_module` reads a .ko (compressed or not, signed or not) and returns a
:class:`ModuleInfo`: the imports (``SHN_UNDEF`` global symbols) with how many
relocations reference each (its call sites), the ``__versions`` entries, the
extended modversions (6.14+) when present, ``.modinfo`` and the signature. The
section parsers here are shared by the patcher and the verifier.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedr_build.ko.elf import ST_NAME, ST_SHNDX, ElfRel, Section
from kedr_build.errors import KedrError
from kedr_build.ko.container import Compression, read_module
from kedr_build.ko.names import REPLACEMENT_MODULE_PREFIX

VERSIONS = "__versions"
EXT_CRCS = "__version_ext_crcs"
EXT_NAMES = "__version_ext_names"
MODINFO = ".modinfo"
# struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; }
VERSION_ENTRY = 64
VERSION_NAME_MAX = VERSION_ENTRY - 8 - 1  # 55 characters and a NUL
_VERSION = struct.Struct(f"<Q{VERSION_ENTRY - 8}s")


@dataclass(frozen=True)
class ImportedSymbol:
    name: str
    index: int  # in .symtab
    call_sites: int  # relocations referencing the symbol
    weak: bool = False


@dataclass(frozen=True)
class VersionsEntry:
    name: str
    crc: int
    offset: int  # of the entry inside __versions (or index for extended modversions)


@dataclass(frozen=True)
class ModinfoString:
    offset: int  # inside .modinfo
    raw: bytes  # "key=value" without the NUL

    @property
    def key(self) -> str:
        return self.raw.split(b"=", 1)[0].decode("utf-8", "replace")

    @property
    def value(self) -> str:
        parts = self.raw.split(b"=", 1)
        return parts[1].decode("utf-8", "replace") if len(parts) == 2 else ""


@dataclass(frozen=True)
class ModuleInfo:
    path: Path
    compression: Compression
    signed: bool
    signature_bytes: int
    imports: tuple[ImportedSymbol, ...]
    defined: frozenset[str]  # every named symbol defined in the module (local or global)
    versions: tuple[VersionsEntry, ...] | None  # None: no __versions section
    ext_versions: tuple[VersionsEntry, ...] | None  # None: no extended modversions
    modinfo: tuple[ModinfoString, ...] = field(default=())

    def modinfo_values(self, key: str) -> list[str]:
        return [m.value for m in self.modinfo if m.key == key]

    @property
    def name(self) -> str:
        names = self.modinfo_values("name")
        return names[0] if names else self.path.name.split(".ko")[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "compression": self.compression.value[1:] or "none",
            "signed": self.signed,
            "signature_bytes": self.signature_bytes,
            "imports": [{"name": i.name, "call_sites": i.call_sites, "weak": i.weak}
                        for i in self.imports],
            "versions": None if self.versions is None else
            [{"name": v.name, "crc": f"0x{v.crc:08x}"} for v in self.versions],
            "ext_versions": None if self.ext_versions is None else
            [{"name": v.name, "crc": f"0x{v.crc:08x}"} for v in self.ext_versions],
            "modinfo": [[m.key, m.value] for m in self.modinfo],
        }


def parse_versions(elf: ElfRel) -> tuple[VersionsEntry, ...] | None:
    sec = elf.section(VERSIONS)
    if sec is None:
        return None
    data = elf.section_bytes(sec)
    if len(data) % VERSION_ENTRY:
        raise KedrError(f"{elf.where}: corrupt {VERSIONS}: size {len(data)} is not a multiple "
                        f"of {VERSION_ENTRY}")
    out = []
    for k, (crc, name_field) in enumerate(_VERSION.iter_unpack(data)):
        end = name_field.find(b"\0")
        if end < 0:
            raise KedrError(f"{elf.where}: corrupt {VERSIONS}: entry at "
                            f"{k * VERSION_ENTRY:#x} has no NUL in its name")
        out.append(VersionsEntry(name_field[:end].decode("latin-1"), crc, k * VERSION_ENTRY))
    return tuple(out)


def parse_ext_versions(elf: ElfRel) -> tuple[VersionsEntry, ...] | None:
    crcs_sec, names_sec = elf.section(EXT_CRCS), elf.section(EXT_NAMES)
    if crcs_sec is None and names_sec is None:
        return None
    if crcs_sec is None or names_sec is None:
        raise KedrError(f"{elf.where}: corrupt extended modversions: only one of {EXT_CRCS} "
                        f"and {EXT_NAMES}")
    crcs = elf.section_bytes(crcs_sec)
    names = elf.section_bytes(names_sec)
    if len(crcs) % 4 or (names and names[-1] != 0):
        raise KedrError(f"{elf.where}: corrupt extended modversions: {EXT_CRCS} size "
                        f"{len(crcs)} or unterminated {EXT_NAMES}")
    name_list = names[:-1].split(b"\0") if names else []
    if len(name_list) != len(crcs) // 4:
        # kernel/module/version.c rejects a count mismatch with -ENOEXEC too.
        raise KedrError(f"{elf.where}: corrupt extended modversions: {len(crcs) // 4} CRCs "
                        f"but {len(name_list)} names")
    return tuple(VersionsEntry(n.decode("latin-1"), c, i) for i, (n, (c,)) in
                 enumerate(zip(name_list, struct.iter_unpack("<I", crcs))))


def parse_modinfo(data: bytes) -> tuple[ModinfoString, ...]:
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\0", pos)
        if end < 0:
            end = len(data)
        if end > pos:
            out.append(ModinfoString(pos, data[pos:end]))
        pos = end + 1
    return tuple(out)


def modinfo_section(elf: ElfRel) -> Section | None:
    return elf.section(MODINFO)


THIS_MODULE = ".gnu.linkonce.this_module"


def kernel_module_problem(elf: ElfRel, modinfo: tuple[ModinfoString, ...]) -> str | None:
    """Why ``elf`` is not a loadable kernel module (None when it is one).

    ``modinfo``: its parsed ``.modinfo``. modpost gives every module a ``.modinfo``
    with ``vermagic=`` and a ``.gnu.linkonce.this_module`` (its ``struct module``);
    a plain ``gcc -c`` object has neither, and the kernel refuses a file without them.
    """
    if elf.section(MODINFO) is None:
        return f"not a kernel module (no {MODINFO} section: a plain object file?)"
    if not any(m.key == "vermagic" for m in modinfo):
        return f"not a kernel module (no vermagic= in {MODINFO}: a plain object file?)"
    if elf.section(THIS_MODULE) is None:
        return f"not a kernel module (no {THIS_MODULE} section: not linked by modpost)"
    return None


def check_unpatched(where: str, modinfo: tuple[ModinfoString, ...],
                    replacement_module: str | None = None) -> None:
    """Refuse a module kedr-build has patched already: its ``depends=`` names a
    ``kedr_repl_*`` module, or ``replacement_module``. (To patch it again, patch the
    original: a second patch would stack a second replacement module on it.)"""
    for m in modinfo:
        if m.key != "depends":
            continue
        for dep in m.value.split(","):
            if dep.startswith(REPLACEMENT_MODULE_PREFIX) or (
                    replacement_module and dep == replacement_module):
                raise KedrError(f"{where}: already patched (depends= lists the replacement "
                                f"module {dep}); patch the original module instead")


def defined_names(elf: ElfRel) -> frozenset[str]:
    st = elf.strtab_bytes
    out = set()
    for s in elf.symbols:
        o = s[ST_NAME]
        if o and s[ST_SHNDX] != 0:
            out.add(st[o:st.index(b"\0", o)].decode("latin-1"))
    return frozenset(out)


def inspect_elf(elf: ElfRel, path: Path, compression: Compression = Compression.NONE,
                signature_bytes: int = 0) -> ModuleInfo:
    und = elf.undefined()
    counts = elf.relocation_counts({i for i, _ in und})
    imports = tuple(ImportedSymbol(name, i, counts.get(i, 0), elf.symbols[i][1] >> 4 == 2)
                    for i, name in und)
    mi = modinfo_section(elf)
    return ModuleInfo(
        path=path, compression=compression, signed=signature_bytes > 0,
        signature_bytes=signature_bytes, imports=imports, defined=defined_names(elf),
        versions=parse_versions(elf), ext_versions=parse_ext_versions(elf),
        modinfo=parse_modinfo(elf.section_bytes(mi)) if mi is not None else ())


def inspect_module(path: str | os.PathLike[str]) -> ModuleInfo:
    mod = read_module(path)
    elf = ElfRel(mod.elf, str(path))
    return inspect_elf(elf, Path(path), mod.compression, len(mod.signature))


def inspect_unpatched_module(path: str | os.PathLike[str]) -> ModuleInfo:
    """:func:`inspect_module` for a module about to be patched: a file that is not a
    kernel module, or one patched already, is a :class:`KedrError`."""
    mod = read_module(path)
    elf = ElfRel(mod.elf, str(path))
    info = inspect_elf(elf, Path(path), mod.compression, len(mod.signature))
    problem = kernel_module_problem(elf, info.modinfo)
    if problem:
        raise KedrError(f"{path}: {problem}")
    check_unpatched(str(path), info.modinfo)
    return info
