"""A minimal, strict reader for x86_64 relocatable ELF files (kernel modules).

Only what the inspector, the patcher and the verifier need: the ELF header, the
section header table, the symbol table as tuples, and NUL-terminated strings.
Everything is parsed in bulk with :mod:`struct` from one ``bytes`` object —
pyelftools builds a Python object per symbol, which costs ~38 s over the Debian
6.1 module corpus; this costs well under a second. Every offset is bounds-checked
here, so callers can slice without fear: a malformed file raises
:class:`KedrError` naming the file and the cause, never ``IndexError``.
"""

from __future__ import annotations

import struct
from collections import Counter
from functools import cached_property
from dataclasses import dataclass

from kedr_build.errors import KedrError

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")

ELFCLASS64 = 2
ELFDATA2LSB = 1
ET_REL = 1
EM_X86_64 = 62

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9

SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
SHN_XINDEX = 0xFFFF

STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2

# Indices into a symbol tuple from SYM.iter_unpack.
ST_NAME, ST_INFO, ST_OTHER, ST_SHNDX, ST_VALUE, ST_SIZE = range(6)

_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_EM_NAMES = {3: "EM_386", 40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV",
             8: "EM_MIPS", 21: "EM_PPC64", 22: "EM_S390"}

Symbol = tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int

    @property
    def file_size(self) -> int:
        """Bytes the section occupies in the file (0 for SHT_NOBITS)."""
        return 0 if self.type == SHT_NOBITS else self.size


def check_header(data: bytes, where: str) -> tuple[int, int, int]:
    """Validate the ELF header of a module; return (e_shoff, e_shnum, e_shstrndx)."""
    if len(data) < EHDR.size:
        raise KedrError(f"{where}: not an ELF file (only {len(data)} bytes)")
    if data[:4] != b"\x7fELF":
        raise KedrError(f"{where}: not an ELF file (bad magic {data[:4]!r})")
    if data[4] != ELFCLASS64:
        cls = {1: "ELFCLASS32"}.get(data[4], f"class {data[4]}")
        raise KedrError(f"{where}: {cls} ELF, expected ELFCLASS64 (an x86_64 kernel module)")
    if data[5] != ELFDATA2LSB:
        raise KedrError(f"{where}: big-endian or unknown ELF data encoding {data[5]}, "
                        "expected little-endian (ELFDATA2LSB)")
    (_ident, e_type, e_machine, _ver, _entry, _phoff, e_shoff, _flags, _ehsize, _phentsize,
     _phnum, e_shentsize, e_shnum, e_shstrndx) = EHDR.unpack_from(data, 0)
    if e_type != ET_REL:
        raise KedrError(f"{where}: ELF type {_ET_NAMES.get(e_type, e_type)}, expected ET_REL "
                        "(a kernel module is a relocatable object)")
    if e_machine != EM_X86_64:
        raise KedrError(f"{where}: ELF machine {_EM_NAMES.get(e_machine, e_machine)}, "
                        "expected EM_X86_64")
    if e_shentsize != SHDR.size:
        raise KedrError(f"{where}: corrupt ELF header: e_shentsize {e_shentsize}, "
                        f"expected {SHDR.size}")
    if e_shnum == 0 or e_shstrndx >= SHN_LORESERVE:
        raise KedrError(f"{where}: no section header table or extended section numbering "
                        "(e_shnum 0), not a kernel module")
    if e_shoff < EHDR.size or e_shoff + e_shnum * SHDR.size > len(data):
        raise KedrError(f"{where}: truncated or corrupt: section header table at {e_shoff:#x} "
                        f"({e_shnum} entries) is outside the file ({len(data)} bytes)")
    if e_shstrndx >= e_shnum:
        raise KedrError(f"{where}: corrupt ELF header: e_shstrndx {e_shstrndx} >= "
                        f"e_shnum {e_shnum}")
    return e_shoff, e_shnum, e_shstrndx


def c_string(buf: bytes, offset: int, where: str, what: str) -> bytes:
    """The NUL-terminated string at ``offset`` in ``buf`` (checked)."""
    end = buf.find(b"\0", offset)
    if offset < 0 or offset >= len(buf) or end < 0:
        raise KedrError(f"{where}: corrupt {what}: string at {offset:#x} is out of bounds "
                        "or not NUL-terminated")
    return buf[offset:end]


class ElfRel:
    """A parsed x86_64 ET_REL image. ``data`` is kept; nothing is copied lazily."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.where = where
        self.shoff, self.shnum, self.shstrndx = check_header(data, where)
        raw = [SHDR.unpack_from(data, self.shoff + i * SHDR.size) for i in range(self.shnum)]
        shstr = raw[self.shstrndx]
        if shstr[1] != SHT_STRTAB or shstr[4] + shstr[5] > len(data):
            raise KedrError(f"{where}: corrupt section name table (section {self.shstrndx})")
        names = data[shstr[4]:shstr[4] + shstr[5]]
        sections: list[Section] = []
        for i, (sh_name, sh_type, flags, addr, off, size, link, info, align, entsize) \
                in enumerate(raw):
            end = names.find(b"\0", sh_name)
            if end < 0:
                c_string(names, sh_name, where, f"name of section {i}")  # raises
            name = names[sh_name:end].decode("latin-1")
            if sh_type != SHT_NOBITS and sh_type != SHT_NULL and off + size > len(data):
                raise KedrError(f"{where}: truncated or corrupt: section {name or i} "
                                f"[{off:#x}, {off + size:#x}) is outside the file "
                                f"({len(data)} bytes)")
            if link >= self.shnum and sh_type in (SHT_SYMTAB, SHT_RELA, SHT_REL):
                raise KedrError(f"{where}: corrupt section {name}: sh_link {link} out of range")
            sections.append(Section(i, name, sh_type, flags, addr, off, size, link, info,
                                    align, entsize))
        self.sections: tuple[Section, ...] = tuple(sections)
        self._by_name = {s.name: s for s in reversed(sections)}
        symtabs = [s for s in sections if s.type == SHT_SYMTAB]
        if len(symtabs) != 1:
            raise KedrError(f"{where}: {'no' if not symtabs else 'more than one'} symbol table "
                            "(.symtab); was the module stripped?")
        self.symtab = symtabs[0]
        if self.symtab.size % SYM.size or self.symtab.size == 0:
            raise KedrError(f"{where}: corrupt .symtab: size {self.symtab.size} is not a "
                            f"multiple of {SYM.size}")
        self.strtab = sections[self.symtab.link]
        if self.strtab.type != SHT_STRTAB or self.strtab.index == 0:
            raise KedrError(f"{where}: corrupt .symtab: sh_link {self.symtab.link} is not a "
                            "string table")
        self.strtab_bytes = data[self.strtab.offset:self.strtab.offset + self.strtab.size]
        # Kernels since 5.x reject a .strtab that does not start and end with NUL.
        if not self.strtab_bytes or self.strtab_bytes[0] != 0 or self.strtab_bytes[-1] != 0:
            raise KedrError(f"{where}: corrupt .strtab: does not start and end with NUL")
        raw_syms = data[self.symtab.offset:self.symtab.offset + self.symtab.size]
        self.symtab_bytes = raw_syms
        if max(memoryview(raw_syms).cast("I")[::6]) >= self.strtab.size:  # st_name column
            raise KedrError(f"{where}: corrupt .symtab: a symbol name offset is outside .strtab")

    @cached_property
    def symbols(self) -> list[Symbol]:
        """Every .symtab entry as a tuple (parsed on first use: the verifier rarely needs it)."""
        return list(SYM.iter_unpack(self.symtab_bytes))

    def section(self, name: str) -> Section | None:
        return self._by_name.get(name)

    def section_bytes(self, sec: Section) -> bytes:
        return self.data[sec.offset:sec.offset + sec.file_size]

    def symbol_name(self, sym: Symbol) -> str:
        # The check in __init__ and the trailing NUL make this find() always succeed.
        st = self.strtab_bytes
        o = sym[ST_NAME]
        return st[o:st.index(b"\0", o)].decode("latin-1")

    def shdr_offset(self, index: int) -> int:
        return self.shoff + index * SHDR.size

    def undefined(self) -> list[tuple[int, str]]:
        """(symbol index, name) of every import: SHN_UNDEF global/weak symbols.

        Local symbols come first in .symtab and sh_info is the index of the first
        non-local one (ELF gABI), so only the globals are scanned.
        """
        st = self.strtab_bytes
        first = self.symtab.info if 0 < self.symtab.info <= len(self.symbols) else 1
        out = []
        for i in range(first, len(self.symbols)):
            s = self.symbols[i]
            if s[ST_SHNDX] == SHN_UNDEF and s[ST_INFO] >> 4 != STB_LOCAL and s[ST_NAME]:
                o = s[ST_NAME]
                out.append((i, st[o:st.index(b"\0", o)].decode("latin-1")))
        return out

    def name_offsets(self) -> list[int]:
        """st_name of every symbol, in symbol order (one C-level pass over .symtab)."""
        return memoryview(self.symtab_bytes).cast("I")[::6].tolist()

    def string_users(self) -> list[int]:
        """Sorted offsets into .strtab that something refers to: every symbol's name,
        and every section's name when .strtab is also the section name table."""
        offs = self.name_offsets()
        if self.shstrndx == self.strtab.index:
            offs.extend(struct.unpack_from("<I", self.data, self.shdr_offset(i))[0]
                        for i in range(self.shnum))
        offs.sort()
        return offs

    def relocation_counts(self, wanted: set[int] | None = None) -> dict[int, int]:
        """How many relocations (in RELA sections against .symtab) reference each symbol.

        The symbol index is the high half of r_info: u32 number 3 of each 6-u32 entry.
        """
        counts: dict[int, int] = {}
        for s in self.sections:
            if s.type != SHT_RELA or s.link != self.symtab.index:
                continue
            if s.size % 24:
                raise KedrError(f"{self.where}: corrupt {s.name}: size {s.size} is not a "
                                "multiple of 24")
            col = memoryview(self.data)[s.offset:s.offset + s.size].cast("I")[3::6]
            lst = col.tolist()
            if wanted is not None and len(wanted) <= 4:
                for idx in wanted:  # list.count runs in C: cheaper than a Counter here
                    n = lst.count(idx)
                    if n:
                        counts[idx] = counts.get(idx, 0) + n
                continue
            for idx, n in Counter(lst).items():
                if wanted is None or idx in wanted:
                    counts[idx] = counts.get(idx, 0) + n
        return counts
