"""Cold-patch a built module: rename its imports so that it calls replacement functions.

:func:`patch_elf` works on bytes and changes only what must change:

* ``.strtab``: each renamed import's name is rewritten in place when the new
  name has the same length and no other symbol's name shares the changed bytes
  (GNU ld merges string tails: ``kmalloc`` may point into ``__kmalloc``);
  otherwise the new name is appended to a copy of ``.strtab`` that moves to the
  end of the file (``sh_offset``/``sh_size`` updated; the section header table and
  ``e_shoff`` stay where they are, the old bytes stay as unreferenced filler).
  Relocations refer to symbols by index, so none changes.
* ``__versions``: the entry of each renamed import gets the new name and the
  replacement's CRC (the loader compares CRCs by name). Extended modversions
  (``__version_ext_crcs``/``__version_ext_names``, 6.14+) likewise.
* ``.modinfo``: ``depends=`` gains the replacement module (busybox's depmod reads
  only that). The kernel never pads ``.modinfo`` (checked on all 4,023 Debian 6.1
  modules), so the section usually grows: it is rewritten at the end of the file
  and the ``__UNIQUE_ID_*`` symbols that point into it are shifted.
* the appended signature is dropped (it would no longer match, and a bad signature
  is always fatal) and optionally re-made with the kernel's ``scripts/sign-file``.

:func:`patch_module` adds the file handling: decompress, patch, verify the result
with :mod:`kedr_build.ko.verify` (on mismatch: ``KedrError`` and no output), sign,
recompress as the input was, write atomically, write a JSON manifest.

Already-patched modules are refused, not patched twice: when a module imports a
plan's replacement name but not the original, or when its ``depends=`` names a
``kedr_repl_*`` module or the replacement module given (a second plan naming other
functions would otherwise stack a second replacement module), it has been patched
already. The import table and ``depends=`` are the markers — no extra ``.modinfo``
key, so ``modinfo`` output and what the kernel parses stay as the plan promises.
Files that are not kernel modules (no ``.modinfo`` with ``vermagic=``, no
``.gnu.linkonce.this_module``: a plain ``gcc -c`` object) are refused too.
"""

from __future__ import annotations

import bisect
import json
import os
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedr_build.ko.elf import SHDR, SYM, ST_NAME, ST_SHNDX, ST_SIZE, ST_VALUE, ElfRel, Section
from kedr_build.errors import KedrError
from kedr_build.ko.imports import (EXT_CRCS, EXT_NAMES, MODINFO, VERSION_ENTRY, VERSION_NAME_MAX,
                      VERSIONS, check_unpatched, defined_names, kernel_module_problem,
                      parse_ext_versions, parse_modinfo,
                      parse_versions)
from kedr_build.atomic import write_atomic_group
from kedr_build.ko.container import (SIG_MAGIC, XZ_PRESET, Compression, compress, read_module,
                                     suffix_compression)
from kedr_build.ko.names import plain_name
from kedr_build.ko.plan import RenamePlan
from kedr_build.ko.symvers import load_crcs
from kedr_build.ko.verify import Expectation, verify_patch


@dataclass(frozen=True)
class RenameRecord:
    old: str
    new: str
    symbol_index: int
    call_sites: int
    crc_old: int | None  # from __versions (or extended modversions); None: no entry
    crc_new: int | None
    strtab: str  # "in-place" or "appended"


@dataclass(frozen=True)
class PatchedImage:
    elf: bytes
    renames: tuple[RenameRecord, ...]
    skipped: tuple[str, ...]
    warnings: tuple[str, ...]
    expectation: Expectation
    strtab_grown: bool
    modinfo_grown: bool
    depends_before: str | None
    depends_after: str | None


@dataclass(frozen=True)
class SignRequest:
    key: Path
    cert: Path
    kdir: Path
    hash: str = "sha256"

    @property
    def sign_file(self) -> Path:
        return self.kdir / "scripts" / "sign-file"


@dataclass(frozen=True)
class PatchResult:
    """The manifest of one patched module."""

    source: Path
    output: Path
    manifest: Path | None
    renames: tuple[RenameRecord, ...]
    skipped: tuple[str, ...]
    warnings: tuple[str, ...]
    signature_stripped: bool
    signed: bool
    strtab_grown: bool
    modinfo_grown: bool
    depends_before: str | None
    depends_after: str | None
    compression: str
    verified: bool = field(default=True)

    def to_json(self) -> dict[str, Any]:
        def crc(v: int | None) -> str | None:
            return None if v is None else f"0x{v:08x}"
        return {
            "source": str(self.source), "output": str(self.output),
            "renames": [{"old": r.old, "new": r.new, "symbol_index": r.symbol_index,
                         "call_sites": r.call_sites, "crc_old": crc(r.crc_old),
                         "crc_new": crc(r.crc_new), "strtab": r.strtab}
                        for r in self.renames],
            "skipped": list(self.skipped), "warnings": list(self.warnings),
            "signature_stripped": self.signature_stripped, "signed": self.signed,
            "strtab_grown": self.strtab_grown, "modinfo_grown": self.modinfo_grown,
            "depends_before": self.depends_before, "depends_after": self.depends_after,
            "compression": self.compression, "verified": self.verified,
        }


def _set_shdr(out: bytearray, elf: ElfRel, sec: Section, offset: int, size: int) -> None:
    SHDR.pack_into(out, elf.shdr_offset(sec.index), *SHDR.unpack_from(elf.data,
                   elf.shdr_offset(sec.index))[:4], offset, size,
                   sec.link, sec.info, sec.align, sec.entsize)


def _append_section(out: bytearray, elf: ElfRel, sec: Section, content: bytes) -> None:
    align = max(sec.align, 1)
    if align > 4096 or align & (align - 1):
        raise KedrError(f"{elf.where}: corrupt section {sec.name}: alignment {sec.align}")
    out.extend(b"\0" * (-len(out) % align))
    _set_shdr(out, elf, sec, len(out), len(content))
    out.extend(content)


def _in_place_ok(strtab: bytes, users: list[int], offset: int, old: bytes, new: bytes,
                 own: int) -> bool:
    """Can ``old`` at ``offset`` become ``new`` without changing any other name?

    ``own`` is how many of ``users`` are the renamed symbols themselves at ``offset``.
    A name at offset o covers byte p iff o <= p and no NUL lies in [o, p): so the
    names covering the changed bytes start between the beginning of the physical
    string and the last changed byte.
    """
    if len(old) != len(new):
        return False
    changed = [i for i in range(len(old)) if old[i] != new[i]]
    start = strtab.rfind(b"\0", 0, offset) + 1
    last = offset + changed[-1]
    users_in = bisect.bisect_right(users, last) - bisect.bisect_left(users, start)
    return users_in == own


def _defines(elf: ElfRel, name: str) -> bool:
    """Does the module define a symbol called ``name``? (Cheap when no string matches.)"""
    if b"\0" + name.encode("latin-1") + b"\0" not in elf.strtab_bytes:
        return False  # GNU ld may tail-merge it into a longer name: check properly below
    return name in defined_names(elf)


def patch_elf(elf: ElfRel, mapping: Mapping[str, str], crcs: Mapping[str, int] | None,
              depends: str | None) -> PatchedImage:
    """Rename the imports of one ET_REL image; see the module docstring."""
    where = elf.where
    modinfo_sec = elf.section(MODINFO)
    modinfo = parse_modinfo(elf.section_bytes(modinfo_sec)) if modinfo_sec is not None else ()
    problem = kernel_module_problem(elf, modinfo)
    if problem:
        raise KedrError(f"{where}: {problem}")
    check_unpatched(where, modinfo, depends)
    warnings: list[str] = []
    und = elf.undefined()
    und_by_name: dict[str, list[int]] = {}
    for i, name in und:
        und_by_name.setdefault(name, []).append(i)
    todo: list[tuple[str, str]] = []
    skipped: list[str] = []
    for old, new in mapping.items():
        if new in und_by_name:
            if old in und_by_name:
                raise KedrError(f"{where}: imports both {old} and its replacement {new}")
            raise KedrError(f"{where}: imports {new}, the replacement for {old}: already "
                            "patched? refusing to rename twice")
        if old not in und_by_name:
            skipped.append(old)
            continue
        if _defines(elf, new):
            raise KedrError(f"{where}: defines {new} itself, so {old} cannot be renamed to it")
        todo.append((old, new))
    versions = parse_versions(elf)
    ext = parse_ext_versions(elf)
    if not todo:
        return PatchedImage(elf.data, (), tuple(skipped), tuple(warnings),
                            Expectation({}, {}, {}, None), False, False, None, None)

    out = bytearray(elf.data)
    counts = elf.relocation_counts({i for old, _ in todo for i in und_by_name[old]})

    # __versions: same name -> same entry; CRC must be the replacement's.
    ver_expect: dict[str, tuple[str, int]] = {}
    ext_expect: dict[str, tuple[str, int]] = {}
    crc_old: dict[str, int] = {}
    ver_by_name = {v.name: v for v in versions or ()}
    ext_by_name = {v.name: v for v in ext or ()}

    def replacement_crc(old: str, new: str, table: str) -> int:
        if crcs is None or new not in crcs:
            raise KedrError(f"{where}: no CRC for the replacement {new} (the module's {table} "
                            f"has one for {old}); give the replacement module's "
                            "Module.symvers or .ko")
        return crcs[new] & 0xFFFFFFFF

    vsec = elf.section(VERSIONS)
    for old, new in todo:
        v = ver_by_name.get(old)
        if v is not None and vsec is not None:
            crc = replacement_crc(old, new, VERSIONS)
            crc_old[old] = v.crc
            if len(new) > VERSION_NAME_MAX:
                if ext is None:
                    raise KedrError(f"{where}: replacement {new} is longer than {VERSION_NAME_MAX}"
                                    f" characters, too long for {VERSIONS} (choose a shorter "
                                    "name or the same-length naming)")
                warnings.append(f"{new}: too long for {VERSIONS}; left the {old} entry there "
                                "(kernels with extended modversions read only those)")
                continue
            entry = struct.pack("<Q", crc) + new.encode("latin-1").ljust(VERSION_ENTRY - 8, b"\0")
            out[vsec.offset + v.offset:vsec.offset + v.offset + VERSION_ENTRY] = entry
            ver_expect[old] = (new, crc)
    if ext is not None:
        csec, nsec = elf.section(EXT_CRCS), elf.section(EXT_NAMES)
        assert csec is not None and nsec is not None
        names = [v.name for v in ext]
        for old, new in todo:
            e = ext_by_name.get(old)
            if e is None:
                continue
            crc = replacement_crc(old, new, EXT_CRCS)
            crc_old.setdefault(old, e.crc)
            struct.pack_into("<I", out, csec.offset + 4 * e.offset, crc)
            names[e.offset] = new
            ext_expect[old] = (new, crc)
        new_names = b"".join(n.encode("latin-1") + b"\0" for n in names)
        if len(new_names) == nsec.size:
            out[nsec.offset:nsec.offset + nsec.size] = new_names
        else:
            _append_section(out, elf, nsec, new_names)

    # .strtab and .symtab
    strtab = elf.strtab_bytes
    new_strtab = bytearray(strtab)
    users = elf.string_users()
    records: list[RenameRecord] = []
    sym_expect: dict[int, str] = {}
    appended: dict[str, int] = {}
    sym_base = elf.symtab.offset
    for old, new in todo:
        idxs = und_by_name[old]
        offsets = {elf.symbols[i][ST_NAME] for i in idxs}
        ob, nb = old.encode("latin-1"), new.encode("latin-1")
        mode = "appended"
        if len(offsets) == 1:
            (o,) = offsets
            if _in_place_ok(strtab, users, o, ob, nb, len(idxs)):
                new_strtab[o:o + len(nb)] = nb
                mode = "in-place"
        if mode == "appended":
            if new not in appended:
                appended[new] = len(new_strtab)
                new_strtab += nb + b"\0"
            for i in idxs:
                struct.pack_into("<I", out, sym_base + i * SYM.size, appended[new])
        for i in idxs:
            sym_expect[i] = new
        records.append(RenameRecord(old, new, idxs[0], sum(counts.get(i, 0) for i in idxs),
                                    crc_old.get(old),
                                    (ver_expect.get(old) or ext_expect.get(old) or (None, None))[1],
                                    mode))
    strtab_grown = len(new_strtab) != len(strtab)
    if strtab_grown:
        _append_section(out, elf, elf.strtab, bytes(new_strtab))
    else:
        out[elf.strtab.offset:elf.strtab.offset + elf.strtab.size] = new_strtab

    # .modinfo depends=
    depends_before = depends_after = None
    new_dep: bytes | None = None
    modinfo_grown = False
    if depends is not None:
        if modinfo_sec is None:
            raise KedrError(f"{where}: no {MODINFO} section; is this a kernel module?")
        data = elf.section_bytes(modinfo_sec)
        deps = [m for m in modinfo if m.key == "depends"]
        if len(deps) > 1:
            raise KedrError(f"{where}: {len(deps)} depends= entries in {MODINFO}")
        listed = deps[0].value.split(",") if deps and deps[0].value else []
        depends_before = deps[0].value if deps else None
        if depends in listed:
            depends_after = depends_before
        else:
            depends_after = ",".join([*listed, depends])
            new_dep = b"depends=" + depends_after.encode()
            content, shifts = _modinfo_with(data, deps[0].offset if deps else None,
                                            len(deps[0].raw) if deps else 0, new_dep)
            if len(content) == len(data):
                out[modinfo_sec.offset:modinfo_sec.offset + len(data)] = content
            else:
                modinfo_grown = True
                _append_section(out, elf, modinfo_sec, content)
                _shift_modinfo_symbols(out, elf, modinfo_sec, *shifts)
    return PatchedImage(bytes(out), tuple(records), tuple(skipped), tuple(warnings),
                        Expectation(sym_expect, ver_expect, ext_expect, new_dep),
                        strtab_grown, modinfo_grown, depends_before, depends_after)


def _modinfo_with(data: bytes, at: int | None, old_len: int,
                  new: bytes) -> tuple[bytes, tuple[int, int, int, int]]:
    """The .modinfo content with the depends string at ``at`` replaced by ``new``.

    Uses zero padding right after the old string when there is enough; otherwise
    the tail shifts. Returns the content and (at, old_len, new_len, shift).
    """
    if at is None:  # no depends= at all: add one at the end
        body = data if data.endswith(b"\0") or not data else data + b"\0"
        return body + new + b"\0", (len(data), 0, 0, 0)
    end = at + old_len  # the old string's NUL
    pad = len(data) - end - len(data[end:].lstrip(b"\0")) - 1  # spare NULs after it
    delta = len(new) - old_len
    if delta <= pad:
        buf = bytearray(data)
        buf[at:end + 1] = b"\0" * (old_len + 1)
        buf[at:at + len(new)] = new
        return bytes(buf), (at, old_len, len(new), 0)
    return data[:at] + new + data[end:], (at, old_len, len(new), delta)


def _shift_modinfo_symbols(out: bytearray, elf: ElfRel, sec: Section, at: int, old_len: int,
                           new_len: int, shift: int) -> None:
    """Keep the __UNIQUE_ID_* symbols of .modinfo pointing at their strings."""
    base = elf.symtab.offset
    for i, s in enumerate(elf.symbols):
        if s[ST_SHNDX] != sec.index:
            continue
        value, size = s[ST_VALUE], s[ST_SIZE]
        if value == at and size == old_len + 1:
            size = new_len + 1
        elif value > at:
            value += shift
        else:
            continue
        struct.pack_into("<QQ", out, base + i * SYM.size + 8, value, size)


def _resolve_crcs(crcs: Mapping[str, int] | str | os.PathLike[str] | None
                  ) -> Mapping[str, int] | None:
    if crcs is None or isinstance(crcs, Mapping):
        return crcs
    return load_crcs(crcs)


def default_manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def patch_module(src: str | os.PathLike[str], dst: str | os.PathLike[str], plan: RenamePlan,
                 replacement_crcs: Mapping[str, int] | str | os.PathLike[str] | None = None,
                 *, depends: str | None = None, compression: Compression | None = None,
                 manifest: str | os.PathLike[str] | None | bool = True,
                 sign: SignRequest | None = None, xz_preset: int = XZ_PRESET) -> PatchResult:
    """Patch ``src`` into ``dst`` (never in place) and return the manifest.

    ``replacement_crcs``: a name->CRC mapping, or the path of the replacement
    module's Module.symvers or .ko. ``depends`` defaults to the plan's
    replacement module. ``compression`` defaults to the input's. ``manifest``:
    True writes ``<dst>.json``, a path writes there, False/None writes none.
    """
    src_p, dst_p = Path(src), Path(dst)
    manifest_p: Path | None = None
    if manifest is True:
        manifest_p = default_manifest_path(dst_p)
    elif manifest not in (None, False):
        manifest_p = Path(manifest)  # type: ignore[arg-type]
    _check_paths(src_p, dst_p, manifest_p)
    mod = read_module(src_p)
    elf = ElfRel(mod.elf, str(src_p))
    crcs = _resolve_crcs(replacement_crcs)
    dep = depends if depends is not None else plan.replacement_module
    img = patch_elf(elf, plan.mapping(), crcs, dep)
    warnings = list(img.warnings)
    comp = mod.compression if compression is None else compression
    if img.renames:
        verify_patch(elf, img.elf, img.expectation)
        body = img.elf
        stripped = mod.signed
        if stripped and sign is None:
            warnings.append("module signature stripped (it would no longer match); the kernel "
                            "loads the module unsigned, tainted E, unless signatures are "
                            "enforced")
        signed = False
        if sign is not None:
            body = _sign(body, sign, dst_p)
            signed = True
    else:
        warnings.append("nothing to rename: output is a copy of the input")
        body, stripped, signed = mod.elf + mod.signature, False, mod.signed
    named = suffix_compression(dst_p)
    if named is not comp:
        raise KedrError(f"{dst_p}: the output would be {_compression_name(comp)}, but its name "
                        f"says {_compression_name(named)}; name it "
                        f"{plain_name(dst_p)}{comp.value} or choose the compression")
    if not img.renames and comp is mod.compression:
        # Unchanged and in the same container: the input's own bytes, not a
        # recompression of them (for a .ko.xz, recompressing is most of the cost).
        encoded = src_p.read_bytes()
    else:
        encoded = compress(body, comp, str(dst_p), xz_preset)
    result = PatchResult(src_p, dst_p, manifest_p, img.renames, img.skipped, tuple(warnings),
                         stripped, signed, img.strtab_grown, img.modinfo_grown,
                         img.depends_before, img.depends_after, comp.value[1:] or "none")
    files: list[tuple[Path, bytes]] = [(dst_p, encoded)]
    if manifest_p is not None:
        files.append((manifest_p, (json.dumps(result.to_json(), indent=2) + "\n").encode()))
    write_atomic_group(files)
    return result


def _compression_name(comp: Compression) -> str:
    return f"{comp.value[1:]}-compressed" if comp.value else "uncompressed"


def _same_file(a: Path, b: Path) -> bool:
    """Are ``a`` and ``b`` one file (or would they be, once written)? Cheap: no realpath
    unless neither exists yet and the names agree."""
    ea, eb = a.exists(), b.exists()
    if ea and eb:
        return os.path.samefile(a, b)
    if ea or eb or a.name != b.name:
        return False
    return os.path.realpath(a.parent) == os.path.realpath(b.parent)


def _check_paths(src: Path, dst: Path, manifest: Path | None) -> None:
    """The input is never written, and the output and the manifest are two files."""
    if _same_file(src, dst):
        raise KedrError(f"{dst}: output is the input; the input is never modified")
    if manifest is not None:
        if _same_file(src, manifest):
            raise KedrError(f"{manifest}: manifest is the input; the input is never modified")
        if _same_file(dst, manifest):
            raise KedrError(f"{manifest}: manifest and output are the same file")


def _sign(elf: bytes, req: SignRequest, dst: Path) -> bytes:
    tool = req.sign_file
    for what, p in (("sign-file", tool), ("signing key", req.key), ("certificate", req.cert)):
        if not p.is_file():
            raise KedrError(f"{p}: {what} not found")
    with tempfile.TemporaryDirectory(prefix=".kedr-sign.", dir=dst.parent) as tmp:
        f = Path(tmp) / "module.ko"
        f.write_bytes(elf)
        proc = subprocess.run([str(tool), req.hash, str(req.key), str(req.cert), str(f)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise KedrError(f"{tool}: signing failed: {lines[-1] if lines else proc.returncode}")
        signed = f.read_bytes()
    if not (signed.startswith(elf) and signed.endswith(SIG_MAGIC)):
        raise KedrError(f"{tool}: output is not the module with a signature appended")
    return signed
