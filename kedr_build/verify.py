"""Prove that a patched module differs from its input only as intended.

:func:`verify_patch` re-parses the output from its bytes and checks, against the
input and an :class:`~kedr_build.patch.Expectation`:

* the ELF header and every section header field except ``sh_offset``/``sh_size``
  of the sections the patcher may move (``.strtab``, ``.modinfo``,
  ``__version_ext_names``) are unchanged;
* every byte of the input that is not inside a section edited in place
  (``.symtab``, ``.strtab``, ``__versions``, ``.modinfo``, extended modversions) or the
  header of a moved section is unchanged — this covers all other sections, the
  gaps between them and the section header table; bytes past the input's end
  are exactly the moved sections (plus alignment zeros);
* symbols: only the renamed imports changed ``st_name`` and they resolve to the
  new names; only ``.modinfo`` symbols changed value/size, still naming the same
  strings; no other symbol's name changed (no byte of the string table that a
  non-renamed name covers differs);
* ``__versions``/extended modversions: only the renamed entries differ, with the
  new name and CRC; ``.modinfo``: only ``depends=`` differs.

It is called by :func:`~kedr_build.patch.patch_module` before anything is
written; any failure is a :class:`KedrError`, so no output appears.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from .elfrel import EHDR, SHDR, SYM, ST_NAME, ST_SHNDX, ST_SIZE, ST_VALUE, ElfRel, Section
from .errors import KedrError
from .inspect import (EXT_CRCS, EXT_NAMES, MODINFO, VERSION_ENTRY, VERSIONS,
                      parse_ext_versions, parse_modinfo, parse_versions)

if TYPE_CHECKING:
    from .patch import Expectation

Fail = Callable[[str], KedrError]
MOVABLE = frozenset({MODINFO, EXT_NAMES})


def verify_patch(original: bytes, output: bytes, expect: Expectation, where: str) -> None:
    def fail(msg: str) -> KedrError:
        return KedrError(f"{where}: internal error, patched output failed verification: {msg}")

    try:
        a = ElfRel(original, where)
        b = ElfRel(output, where + " (patched)")
    except KedrError as e:
        raise fail(str(e)) from None
    if original[:EHDR.size] != output[:EHDR.size]:
        raise fail("ELF header changed")
    if a.shnum != b.shnum:
        raise fail("section count changed")
    movable = MOVABLE | {a.strtab.name}
    edited: list[tuple[int, int]] = []  # input ranges allowed to differ
    moved: list[Section] = []
    for sa, sb in zip(a.sections, b.sections):
        if (sa.name, sa.type, sa.flags, sa.addr, sa.link, sa.info, sa.align, sa.entsize) != \
                (sb.name, sb.type, sb.flags, sb.addr, sb.link, sb.info, sb.align, sb.entsize):
            raise fail(f"section header of {sa.name} changed")
        if (sa.offset, sa.size) != (sb.offset, sb.size):
            if sa.name not in movable or sb.offset < len(original):
                raise fail(f"section {sa.name} moved or resized")
            moved.append(sb)
            start = a.shdr_offset(sa.index)
            edited.append((start, start + SHDR.size))
        elif sa.name in movable or sa.name in (a.symtab.name, VERSIONS, EXT_CRCS):
            edited.append((sa.offset, sa.offset + sa.file_size))
    _compare_outside(original, output, edited, fail)
    _check_tail(output, len(original), moved, fail)
    _check_symbols(a, b, expect, fail)
    _check_versions(a, b, expect, fail)
    _check_modinfo(a, b, expect, fail)


def _compare_outside(original: bytes, output: bytes, edited: list[tuple[int, int]],
                     fail: Fail) -> None:
    pos = 0
    for start, end in sorted(edited) + [(len(original), len(original))]:
        if start > pos and original[pos:start] != output[pos:start]:
            i = next(k for k in range(pos, start) if original[k] != output[k])
            raise fail(f"byte at {i:#x} changed outside the edited sections")
        pos = max(pos, end)


def _check_tail(output: bytes, orig_len: int, moved: list[Section],
                fail: Fail) -> None:
    pos = orig_len
    for s in sorted(moved, key=lambda s: s.offset):
        if s.offset < pos or output[pos:s.offset].strip(b"\0"):
            raise fail(f"moved section {s.name} overlaps or leaves stray bytes")
        pos = s.offset + s.size
    if pos != len(output):
        raise fail("bytes after the moved sections")


def _check_symbols(a: ElfRel, b: ElfRel, expect: Expectation, fail: Fail
                   ) -> None:
    f = fail
    if len(a.symbols) != len(b.symbols):
        raise f("symbol count changed")
    mi = a.section(MODINFO)
    mi_a = a.section_bytes(mi) if mi else b""
    mi_b = b.section_bytes(b.sections[mi.index]) if mi else b""
    for i, (sa, sb) in enumerate(zip(a.symbols, b.symbols)):
        if sa == sb:
            continue
        if i in expect.symbol_names:
            if sa[1:] != sb[1:]:
                raise f(f"renamed symbol {i} changed more than its name")
            continue
        if mi and sa[ST_NAME] == sb[ST_NAME] and sa[ST_SHNDX] == mi.index == sb[ST_SHNDX] \
                and sa[1:4] == sb[1:4]:
            old = mi_a[sa[ST_VALUE]:sa[ST_VALUE] + sa[ST_SIZE]].rstrip(b"\0")
            new = mi_b[sb[ST_VALUE]:sb[ST_VALUE] + sb[ST_SIZE]].rstrip(b"\0")
            if old == new or (old.startswith(b"depends=") and new == expect.depends):
                continue
        raise f(f"symbol {i} ({a.symbol_name(sa)}) changed")
    for i, name in expect.symbol_names.items():
        if b.symbol_name(b.symbols[i]) != name or b.symbols[i][ST_SHNDX] != 0:
            raise f(f"symbol {i} is not the import {name}")
    # No other name may cover a changed byte of the (common prefix of the) string tables.
    sa_str, sb_str = a.strtab_bytes, b.strtab_bytes[:len(a.strtab_bytes)]
    if sa_str != sb_str:
        users = sorted((s[ST_NAME], i) for i, s in enumerate(b.symbols)
                       if i not in expect.symbol_names)
        keys = [u[0] for u in users]
        for p in _diff_positions(sa_str, sb_str):
            start = sa_str.rfind(b"\0", 0, p) + 1
            lo, hi = bisect.bisect_left(keys, start), bisect.bisect_right(keys, p)
            if lo != hi:
                raise f(f"symbol {users[lo][1]} shares a renamed string")


def _diff_positions(x: bytes, y: bytes) -> list[int]:
    n = int.from_bytes(x, "little") ^ int.from_bytes(y, "little")
    out = []
    while n:
        low = n & -n
        pos = low.bit_length() - 1
        out.append(pos // 8)
        n &= ~(0xFF << (pos // 8 * 8))
    return out


def _check_versions(a: ElfRel, b: ElfRel, expect: Expectation, fail: Fail
                    ) -> None:
    f = fail
    for parse, table, name in ((parse_versions, expect.versions, VERSIONS),
                               (parse_ext_versions, expect.ext_versions, EXT_CRCS)):
        va, vb = parse(a), parse(b)
        if va is None or vb is None:
            if va is not vb:
                raise f(f"{name} appeared or vanished")
            if table:
                raise f(f"{name} expected")
            continue
        if len(va) != len(vb):
            raise f(f"{name} entry count changed")
        done = set()
        for ea, eb in zip(va, vb):
            want = table.get(ea.name, (ea.name, ea.crc))
            if (eb.name, eb.crc) != want:
                raise f(f"{name} entry {ea.name}: got {eb.name}/{eb.crc:#x}")
            if ea.name in table:
                done.add(ea.name)
        if done != set(table):
            raise f(f"{name}: entries not renamed: {sorted(set(table) - done)}")
    sa, sb = a.section(VERSIONS), b.section(VERSIONS)
    if sa is not None and sb is not None:  # raw bytes too: padding after names unchanged
        ra, rb = a.section_bytes(sa), b.section_bytes(sb)
        renamed = {v for v, _ in expect.versions.values()}
        for off in range(0, len(ra), VERSION_ENTRY):
            if ra[off:off + VERSION_ENTRY] != rb[off:off + VERSION_ENTRY]:
                name = rb[off + 8:off + VERSION_ENTRY].split(b"\0", 1)[0].decode("latin-1")
                tail = rb[off + 8 + len(name):off + VERSION_ENTRY]
                if name not in renamed or tail.strip(b"\0"):
                    raise f(f"{VERSIONS} entry at {off:#x} changed")
                if struct.unpack_from("<Q", rb, off)[0] >> 32:
                    raise f(f"{VERSIONS} entry at {off:#x}: CRC upper half")


def _check_modinfo(a: ElfRel, b: ElfRel, expect: Expectation, fail: Fail
                   ) -> None:
    mi = a.section(MODINFO)
    if mi is None:
        return
    old = [m.raw for m in parse_modinfo(a.section_bytes(mi))]
    new = [m.raw for m in parse_modinfo(b.section_bytes(b.sections[mi.index]))]
    if expect.depends is not None:
        deps = [i for i, r in enumerate(old) if r.startswith(b"depends=")]
        if deps:
            old[deps[0]] = expect.depends
        else:
            old.append(expect.depends)
    if old != new:
        raise fail(f"{MODINFO} differs beyond depends=")
