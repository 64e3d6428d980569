"""Where a module uses its imports, read from its relocations: calls, jumps, addresses.

An x86_64 module reaches an imported function through a 32-bit PC-relative
relocation (``R_X86_64_PLT32``, older binutils ``R_X86_64_PC32``, addend -4) in
the last four bytes of the instruction. The opcode byte before it says what
the instruction is: ``e8`` a call, ``e9`` a jump (``0f 80``-``0f 8f`` a
conditional one). A jump to a function is a tail call (gcc's sibling-call
optimisation): the callee returns straight to the caller's caller, so what it
sees as its return address is outside the module. Any other reference (a
function pointer in data, ``mov $kfree``) takes the function's address: the
kernel may call it from anywhere.

:func:`import_sites` lists them with the function each one is in, and
:func:`address_taken` the places whose address the module takes (its entry
points), for the tail-call table (``kedr_build/intercept/tailcalls.py``; see
``replacements/runtime/README.md``, "Tail calls").
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Collection
from dataclasses import dataclass

from kedr_build.ko.elf import (SHT_RELA, ST_INFO, ST_NAME, ST_SHNDX, ST_SIZE, ST_VALUE,
                               ElfRel)

R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
# Sections whose relocations point at code locations for the kernel's own bookkeeping
# (ftrace call sites, ORC unwind entries, alternatives, exception tables, objtool's
# site lists), not at functions something will call: they take no address.
_CODE_METADATA = ("__mcount_loc", "__patchable_function_entries", ".orc_unwind",
                  ".return_sites", ".call_sites", ".retpoline_sites", ".ibt_endbr_seal",
                  ".static_call_sites", ".cfi_sites", ".kcfi_traps", "__bug_table",
                  ".smp_locks", ".parainstructions", ".altinstructions", "__ex_table",
                  "__jump_table", ".discard", "__tracepoints_ptrs")
STT_FUNC = 2
_RELA = struct.Struct("<QQq")


class SiteKind(enum.Enum):
    CALL = "call"
    JUMP = "jump"          # a tail call: the callee returns to the caller's caller
    ADDRESS = "address"    # the address taken (data, mov, lea): called from anywhere


@dataclass(frozen=True)
class ImportSite:
    name: str              # the imported function
    kind: SiteKind
    shndx: int             # the section the reference is in
    section: str
    start: int             # offset in that section of the instruction (of the relocation
                           # for an address)
    end: int               # where the instruction ends (4 past the relocation): the
                           # return address a call pushes
    function: str | None   # the function symbol containing it (None: none does)
    function_start: int    # that function's offset in the section
    function_size: int

    @property
    def site(self) -> int:
        """Where it is reported, in its section: a call at its return address (as the
        kernel's call sites are); a jump at the jump itself, since a jump that ends its
        function ends where the next function starts."""
        return self.start if self.kind is SiteKind.JUMP else self.end

    @property
    def where(self) -> str:
        """``tc_exit+0x10`` (or ``.text+0x10`` outside any function symbol)."""
        if self.function is None:
            return f"{self.section}+0x{self.site:x}"
        return f"{self.function}+0x{self.site - self.function_start:x}"


def import_sites(elf: ElfRel, names: Collection[str] | None = None) -> list[ImportSite]:
    """Every reference to the named imports (all imports: ``None``), in file order."""
    wanted = {i: n for i, n in elf.undefined() if names is None or n in names}
    if not wanted:
        return []
    functions = _functions(elf)
    sites: list[ImportSite] = []
    for rela in elf.sections:
        if rela.type != SHT_RELA or rela.link != elf.symtab.index:
            continue
        if rela.info >= len(elf.sections):
            continue
        target = elf.sections[rela.info]
        code = elf.section_bytes(target) if target.flags & SHF_EXECINSTR else b""
        data = elf.section_bytes(rela)
        for r_offset, r_info, addend in _RELA.iter_unpack(data[:len(data) - len(data) % 24]):
            name = wanted.get(r_info >> 32)
            if name is None:
                continue
            kind, start = SiteKind.ADDRESS, r_offset
            if code and r_info & 0xFFFFFFFF in (R_X86_64_PC32, R_X86_64_PLT32) \
                    and addend == -4 and 1 <= r_offset <= len(code) - 4:
                op = code[r_offset - 1]
                if op in (0xE8, 0xE9):
                    kind = SiteKind.CALL if op == 0xE8 else SiteKind.JUMP
                    start = r_offset - 1
                elif r_offset >= 2 and code[r_offset - 2] == 0x0F and 0x80 <= op <= 0x8F:
                    kind, start = SiteKind.JUMP, r_offset - 2
            fn = _containing(functions.get(target.index, []), r_offset)
            sites.append(ImportSite(name=name, kind=kind, shndx=target.index,
                                    section=target.name, start=start, end=r_offset + 4,
                                    function=fn[2] if fn else None,
                                    function_start=fn[0] if fn else 0,
                                    function_size=fn[1] if fn else 0))
    return sites


def address_taken(elf: ElfRel) -> set[tuple[int, int]]:
    """(section index, offset) of every place in the module whose address is taken
    (a reference that is not a direct call or jump: a function pointer in data such as
    ``struct module``'s exit, an ``EXPORT_SYMBOL``, ``mov $fn``): such a function can
    be called from outside the module."""
    syms = elf.symbols
    out: set[tuple[int, int]] = set()
    for rela in elf.sections:
        if rela.type != SHT_RELA or rela.link != elf.symtab.index or rela.info >= len(elf.sections):
            continue
        target = elf.sections[rela.info]
        if not target.flags & SHF_ALLOC or target.name.startswith(_CODE_METADATA):
            continue
        code = elf.section_bytes(target) if target.flags & SHF_EXECINSTR else b""
        data = elf.section_bytes(rela)
        for r_offset, r_info, addend in _RELA.iter_unpack(data[:len(data) - len(data) % 24]):
            index = r_info >> 32
            if index >= len(syms) or not 0 < syms[index][ST_SHNDX] < len(elf.sections):
                continue
            rtype = r_info & 0xFFFFFFFF
            if code and rtype in (R_X86_64_PC32, R_X86_64_PLT32) and 1 <= r_offset <= len(code) - 4:
                op = code[r_offset - 1]
                if op in (0xE8, 0xE9) or (r_offset >= 2 and code[r_offset - 2] == 0x0F
                                          and 0x80 <= op <= 0x8F):
                    continue        # a direct call or jump: not an address taken
                addend += 4         # PC-relative: the field ends 4 bytes on
            out.add((syms[index][ST_SHNDX], syms[index][ST_VALUE] + addend))
    return out


def _functions(elf: ElfRel) -> dict[int, list[tuple[int, int, str]]]:
    """Section index -> its function symbols (start, size, name), by start."""
    out: dict[int, list[tuple[int, int, str]]] = {}
    for s in elf.symbols:
        if s[ST_INFO] & 0xF == STT_FUNC and s[ST_NAME] and 0 < s[ST_SHNDX] < len(elf.sections):
            out.setdefault(s[ST_SHNDX], []).append((s[ST_VALUE], s[ST_SIZE],
                                                    elf.symbol_name(s)))
    for syms in out.values():
        # Aliases (init_module and the driver's own init name): the driver's name wins,
        # as the kernel's kallsyms does not prefer either; sorted for a stable choice.
        syms.sort(key=lambda t: (t[0], t[2] in ("init_module", "cleanup_module"), t[2]))
    return out


def _containing(syms: list[tuple[int, int, str]], offset: int) -> tuple[int, int, str] | None:
    for start, size, name in syms:
        if start <= offset < start + size:
            return start, size, name
    return None
