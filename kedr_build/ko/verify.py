"""Prove that a patched module differs from its input only as intended.

:func:`verify_patch` re-parses the output from its bytes and checks, against the
input and an :class:`Expectation`:

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

It is called by :func:`~kedr_build.ko.patch.patch_module` before anything is
written; any failure is a :class:`KedrError`, so no output appears.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass

from kedr_build.ko.elf import EHDR, SHDR, SYM, ST_SHNDX, ST_SIZE, ST_VALUE, ElfRel, Section
from kedr_build.errors import KedrError
from kedr_build.ko.imports import (EXT_CRCS, EXT_NAMES, MODINFO, VERSION_ENTRY, VERSIONS,
                      parse_ext_versions, parse_modinfo)

Fail = Callable[[str], KedrError]


@dataclass(frozen=True)
class Expectation:
    """What the patch meant to change: the verifier checks the output against it."""

    symbol_names: Mapping[int, str]  # symbol index -> new name
    versions: Mapping[str, tuple[str, int]]  # old name -> (new name, CRC)
    ext_versions: Mapping[str, tuple[str, int]]
    depends: bytes | None  # the new "depends=..." string, None when unchanged
MOVABLE = frozenset({MODINFO, EXT_NAMES})


def verify_patch(a: ElfRel, output: bytes, expect: Expectation) -> None:
    """``a``: the parsed input (it was validated when parsed); ``output``: the patched bytes."""
    where = a.where
    original = a.data

    def fail(msg: str) -> KedrError:
        return KedrError(f"{where}: internal error, patched output failed verification: {msg}")

    try:
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


def _check_symbols(a: ElfRel, b: ElfRel, expect: Expectation, fail: Fail) -> None:
    raw_a, raw_b = a.symtab_bytes, b.symtab_bytes
    if len(raw_a) != len(raw_b):
        raise fail("symbol count changed")
    n = SYM.size
    expected = bytearray(raw_a)
    for i, name in expect.symbol_names.items():
        sa, sb = SYM.unpack_from(raw_a, i * n), SYM.unpack_from(raw_b, i * n)
        if sa[1:] != sb[1:]:
            raise fail(f"renamed symbol {i} changed more than its name")
        if b.symbol_name(sb) != name or sb[ST_SHNDX] != 0:
            raise fail(f"symbol {i} is not the import {name}")
        expected[i * n:(i + 1) * n] = raw_b[i * n:(i + 1) * n]
    mi = a.section(MODINFO)
    if mi is not None and raw_a != raw_b:
        mi_a, mi_b = a.section_bytes(mi), b.section_bytes(b.sections[mi.index])
        for i, sa in enumerate(a.symbols):
            if sa[ST_SHNDX] != mi.index:
                continue
            sb = SYM.unpack_from(raw_b, i * n)
            if sb == sa:
                continue
            if sa[:4] != sb[:4]:
                raise fail(f"symbol {i} ({a.symbol_name(sa)}) changed")
            old = mi_a[sa[ST_VALUE]:sa[ST_VALUE] + sa[ST_SIZE]].rstrip(b"\0")
            new = mi_b[sb[ST_VALUE]:sb[ST_VALUE] + sb[ST_SIZE]].rstrip(b"\0")
            if not (old == new or (old.startswith(b"depends=") and new == expect.depends)):
                raise fail(f"{MODINFO} symbol {i} ({a.symbol_name(sa)}) names another string")
            expected[i * n:(i + 1) * n] = raw_b[i * n:(i + 1) * n]
    if expected != raw_b:
        i = next(k for k in range(0, len(raw_b), n) if expected[k:k + n] != raw_b[k:k + n]) // n
        raise fail(f"symbol {i} ({a.symbol_name(a.symbols[i])}) changed")
    # No other name may cover a changed byte of the (common prefix of the) string tables.
    sa_str, sb_str = a.strtab_bytes, b.strtab_bytes[:len(a.strtab_bytes)]
    if sa_str != sb_str:
        keys = a.string_users()
        names = a.name_offsets()
        own = sorted(names[i] for i in expect.symbol_names)
        for p in _diff_positions(sa_str, sb_str):
            start = sa_str.rfind(b"\0", 0, p) + 1
            users = bisect.bisect_right(keys, p) - bisect.bisect_left(keys, start)
            renamed = bisect.bisect_right(own, p) - bisect.bisect_left(own, start)
            if users != renamed:
                raise fail(f"a symbol that is not renamed shares the string table bytes at "
                           f"{p:#x} with a renamed import")


def _diff_positions(x: bytes, y: bytes) -> list[int]:
    n = int.from_bytes(x, "little") ^ int.from_bytes(y, "little")
    out = []
    while n:
        low = n & -n
        pos = low.bit_length() - 1
        out.append(pos // 8)
        n &= ~(0xFF << (pos // 8 * 8))
    return out


def _check_versions(a: ElfRel, b: ElfRel, expect: Expectation, fail: Fail) -> None:
    sa, sb = a.section(VERSIONS), b.section(VERSIONS)
    if (sa is None) != (sb is None):
        raise fail(f"{VERSIONS} appeared or vanished")
    if sa is None or sb is None:
        if expect.versions:
            raise fail(f"{VERSIONS} expected")
    else:
        ra, rb = a.section_bytes(sa), b.section_bytes(sb)
        if len(ra) != len(rb):
            raise fail(f"{VERSIONS} size changed")
        done: set[str] = set()
        if ra != rb:
            for off in range(0, len(ra), VERSION_ENTRY):
                ea, eb = ra[off:off + VERSION_ENTRY], rb[off:off + VERSION_ENTRY]
                if ea == eb:
                    continue
                old = ea[8:].split(b"\0", 1)[0].decode("latin-1")
                if old not in expect.versions:
                    raise fail(f"{VERSIONS} entry {old} at {off:#x} changed")
                new, crc = expect.versions[old]
                if eb != struct.pack("<Q", crc) + new.encode("latin-1").ljust(
                        VERSION_ENTRY - 8, b"\0"):
                    raise fail(f"{VERSIONS} entry at {off:#x} is not {new}/{crc:#x}")
                done.add(old)
        if done != set(expect.versions):
            raise fail(f"{VERSIONS}: entries not renamed: {sorted(set(expect.versions) - done)}")
    va = parse_ext_versions(a)
    try:
        vb = parse_ext_versions(b)
    except KedrError as e:
        raise fail(str(e)) from None
    if va is None or vb is None:
        if va is not vb or expect.ext_versions:
            raise fail(f"{EXT_CRCS} appeared, vanished or was expected")
        return
    if len(va) != len(vb):
        raise fail(f"{EXT_CRCS} entry count changed")
    done_ext: set[str] = set()
    for xa, xb in zip(va, vb):
        want = expect.ext_versions.get(xa.name, (xa.name, xa.crc))
        if (xb.name, xb.crc) != want:
            raise fail(f"{EXT_NAMES} entry {xa.name}: got {xb.name}/{xb.crc:#x}")
        if xa.name in expect.ext_versions:
            done_ext.add(xa.name)
    if done_ext != set(expect.ext_versions):
        raise fail(f"{EXT_NAMES}: entries not renamed: "
                   f"{sorted(set(expect.ext_versions) - done_ext)}")


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
