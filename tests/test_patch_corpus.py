"""Patch every module of the pinned Debian kernel, in both naming modes, and check each
output independently of kedr_build — of its verifier and of the patcher's own report
(what it says it renamed). What must change is derived from the input alone: the
imports (undefined symbols) the plan names.

Readers: lief (sections' bytes, every symbol, ``__versions`` entry by entry, every
``.modinfo`` field), GNU readelf -sW/-SW (every symbol, every section header) and
kmod's modinfo (depends=, vermagic). For each module and mode:

* every section other than .strtab/.symtab/__versions/.modinfo is byte-identical;
* every symbol keeps value, size, type, binding, visibility and section; the
  imports the plan names carry the new name, no other name changes; a ``.modinfo``
  symbol may move, but names the same string (or, for depends=, the new one);
* every ``__versions`` entry, by position: a renamed import's has the new name and
  the replacement's CRC, every other one is byte-identical;
* every ``.modinfo`` field is unchanged, in order, but depends= (the input's list
  plus the replacement module);
* a module importing nothing the plan names is copied byte for byte;
* the patched set is the kernel's modules.order, exactly (4,023 on the pinned 6.1).

readelf and modinfo run batched (one process per 400 files); lief and the patching
run in a pool of os.cpu_count() workers.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from multiprocessing import Pool
from pathlib import Path

from typing import Any

import lief
import pytest

from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import DEFAULT_KERNEL
from kedr_build.ko.patch import patch_module
from kedr_build.ko.plan import Naming, RenamePlan, build_plan
from kedr_build.ko.symvers import read_symvers

FUNCTIONS = """kfree kmalloc_trace kmalloc_large kmalloc_large_node __kmalloc __kmalloc_node
kmalloc_node_trace krealloc kmemdup kmemdup_nul kstrdup kstrndup kvmalloc_node kvfree
kvfree_call_rcu vfree vmalloc vzalloc vmalloc_user devm_kmalloc memdup_user strndup_user
kmem_cache_alloc kmem_cache_alloc_node kmem_cache_alloc_lru kmem_cache_free mutex_lock
mutex_unlock mutex_trylock mutex_lock_interruptible _raw_spin_lock _raw_spin_unlock
_raw_spin_lock_irqsave _raw_spin_unlock_irqrestore _raw_spin_lock_bh _raw_spin_unlock_bh
_raw_spin_lock_irq _raw_spin_unlock_irq _copy_to_user _copy_from_user""".split()
MODES = {"same": Naming.parse("same-length"), "prefix": Naming.parse("prefix:kedr_")}
MAY_CHANGE = {".strtab", ".symtab", "__versions", ".modinfo"}
REPL = "kedr_repl"
BATCH = 400


def fake_crc(name: str) -> int:
    return zlib.crc32(name.encode())


_PLANS: dict[str, RenamePlan] = {}
_OUT: Path = Path()


def _init(plans: dict[str, RenamePlan], out: Path) -> None:
    global _PLANS, _OUT
    _PLANS, _OUT = plans, out


Symbol = tuple[str, int, int, int, str, str, str]   # name value size shndx bind type vis


def _read(path: str | Path) -> dict[str, Any]:
    """Everything checked, as read by lief."""
    elf = lief.ELF.parse(str(path))
    assert elf is not None, path
    sections = [(sec.name, int(sec.type), int(sec.flags),
                 bytes(sec.content) if sec.type != lief.ELF.Section.TYPE.NOBITS else b"")
                for sec in elf.sections]
    symbols: list[Symbol] = [(sym.name, sym.value, sym.size, sym.shndx, str(sym.binding),
                              str(sym.type), str(sym.visibility))
                             for sym in elf.symtab_symbols]
    names = [n for n, *_ in sections]
    return {"sections": sections, "symbols": symbols,
            "modinfo_index": names.index(".modinfo"),
            "versions": sections[names.index("__versions")][3]
            if "__versions" in names else None}


def _strings(data: bytes) -> list[bytes]:
    return [f for f in data.split(b"\0") if f]


def _string_at(data: bytes, offset: int) -> bytes:
    return data[offset:data.index(b"\0", offset)]


def _expected_renames(symbols: list[Symbol], mapping: dict[str, str]) -> dict[int, str]:
    """Derived from the input alone: the imports the plan names, by symbol index."""
    return {i: mapping[name] for i, (name, _v, _s, shndx, *_r) in enumerate(symbols)
            if shndx == 0 and i and name in mapping}


def _check_output(src: str, a: dict[str, Any], dst: Path, plan: RenamePlan) -> dict[int, str]:
    mapping = plan.mapping()
    renamed = _expected_renames(a["symbols"], mapping)
    if not renamed:
        assert dst.read_bytes() == Path(src).read_bytes(), f"{src}: not a plain copy"
        return renamed
    b = _read(dst)
    # Sections: same list; bytes identical but where the patch must edit.
    assert len(b["sections"]) == len(a["sections"]), src
    for (name, typ, flags, data), (name2, typ2, flags2, data2) in zip(a["sections"],
                                                                       b["sections"]):
        assert (name2, typ2, flags2) == (name, typ, flags), (src, name)
        if name not in MAY_CHANGE:
            assert data2 == data, f"{src}: {name} changed"
    mi = a["modinfo_index"]
    mi_a, mi_b = a["sections"][mi][3], b["sections"][mi][3]
    # .modinfo: every field, in order; depends= gains the replacement module.
    fields = _strings(mi_a)
    deps = [k for k, f in enumerate(fields) if f.startswith(b"depends=")]
    assert len(deps) <= 1, src
    old_deps = fields[deps[0]][len(b"depends="):].split(b",") if deps else []
    new_dep = b"depends=" + b",".join([d for d in old_deps if d] + [REPL.encode()])
    if deps:
        fields[deps[0]] = new_dep
    else:
        fields.append(new_dep)
    assert _strings(mi_b) == fields, f"{src}: .modinfo fields"
    # Symbols: only the renamed imports' names; .modinfo symbols name the same string.
    assert len(b["symbols"]) == len(a["symbols"]), src
    for i, (sa, sb) in enumerate(zip(a["symbols"], b["symbols"])):
        if i in renamed:
            assert sb == (renamed[i], *sa[1:]), (src, i, sa, sb)
        elif sa[3] == mi and sa[0]:
            assert (sb[0], *sb[3:]) == (sa[0], *sa[3:]), (src, i, sa, sb)
            was, now = _string_at(mi_a, sa[1]), _string_at(mi_b, sb[1])
            assert now == (new_dep if was.startswith(b"depends=") else was), (src, i)
            assert sb[2] == (len(now) + 1 if was.startswith(b"depends=") else sa[2]), (src, i)
        else:
            assert sb == sa, (src, i, sa, sb)
    # __versions, entry by entry.
    va, vb = a["versions"], b["versions"]
    assert (va is None) == (vb is None) and len(va or b"") == len(vb or b""), src
    if va is not None:
        imported = set(renamed.values())
        for o in range(0, len(va), 64):
            name = va[o + 8:o + 64].split(b"\0")[0].decode()
            new = mapping.get(name)
            if new is not None and new in imported:
                want = fake_crc(new).to_bytes(8, "little") + new.encode().ljust(56, b"\0")
                assert vb[o:o + 64] == want, (src, name)
            else:
                assert vb[o:o + 64] == va[o:o + 64], (src, name)
    return renamed


def _patch_and_check(job: tuple[int, str]) -> tuple[int, dict[str, dict[int, str]]]:
    """Patch one file in every mode, check it with lief; {mode: {sym index: new}}."""
    i, src = job
    a = _read(src)
    result: dict[str, dict[int, str]] = {}
    for mode, plan in _PLANS.items():
        dst = _OUT / mode / f"{i}.ko"
        crcs = {r.new: fake_crc(r.new) for r in plan.renames}
        patch_module(src, dst, plan, crcs, manifest=False)
        result[mode] = _check_output(src, a, dst, plan)
    return i, result


def _readelf(args: list[str], files: list[Path]) -> dict[str, list[str]]:
    """readelf output split per file (readelf prints 'File: NAME' for several files)."""
    out = subprocess.run(["readelf", *args, *map(str, files)], capture_output=True,
                         text=True, check=True).stdout
    per: dict[str, list[str]] = {}
    cur: list[str] = []
    for line in out.splitlines():
        if line.startswith("File: "):
            cur = per.setdefault(line[6:].strip(), [])
        else:
            cur.append(line)
    return per


def _symbols(lines: list[str]) -> dict[int, tuple[str, ...]]:
    syms = {}
    for line in lines:
        f = line.split()
        if len(f) >= 7 and f[0].endswith(":") and f[0][:-1].isdigit():
            syms[int(f[0][:-1])] = tuple(f[1:8]) if len(f) >= 8 else (*f[1:7], "")
    return syms


def _sections(lines: list[str]) -> list[str]:
    # "[Nr] Name Type Address Off Size ES Flg Lk Inf Al": keep all but Off/Size.
    out = []
    for line in lines:
        if line.lstrip().startswith("[") and "]" in line and "Nr]" not in line:
            head, rest = line.split("]", 1)
            f = rest.split()
            out.append(" ".join([f[0], f[1], f[2], *f[5:]]))
    return out


def _section_index(lines: list[str], name: str) -> str:
    for line in lines:
        if line.lstrip().startswith("[") and "]" in line:
            head, rest = line.split("]", 1)
            if rest.split()[:1] == [name]:
                return head.strip(" [")
    raise AssertionError(name)


def _modinfo(field: str, files: list[Path]) -> list[str]:
    out = subprocess.run(["/usr/sbin/modinfo", "-0", "-F", field, *map(str, files)],
                         capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


@pytest.mark.corpus
@pytest.mark.parametrize("kernel_name", [DEFAULT_KERNEL])   # the compressed ones: _612.py
def test_patch_whole_corpus(kernel_name: str, tmp_path: Path) -> None:
    pinned_kernel = provision.ensure(kernel_name)
    assert pinned_kernel.modules_dir is not None
    order = (pinned_kernel.modules_dir / "modules.order").read_text().split()
    files = sorted(pinned_kernel.modules_dir.glob("kernel/**/*.ko"))
    # Every module the kernel ships, no more, no less (4,023 on the pinned 6.1).
    assert sorted(str(p.relative_to(pinned_kernel.modules_dir)) for p in files) == sorted(order)
    assert len(set(order)) == len(order)
    exports = read_symvers(pinned_kernel.symvers)
    plans = {m: build_plan(FUNCTIONS, n, kernel_exports=exports, replacement_module=REPL)
             for m, n in MODES.items()}
    assert not plans["same"].warnings, plans["same"].warnings
    renamed_total = {m: 0 for m in MODES}
    modules_touched = {m: 0 for m in MODES}
    for m in MODES:
        (tmp_path / m).mkdir()
    with Pool(os.cpu_count() or 2, initializer=_init, initargs=(plans, tmp_path)) as pool:
        for start in range(0, len(files), BATCH):
            batch = list(enumerate(files))[start:start + BATCH]
            results = dict(pool.imap_unordered(_patch_and_check,
                                               [(i, str(p)) for i, p in batch], chunksize=8))
            sym_in = _readelf(["-sW"], [p for _, p in batch])
            sec_in = _readelf(["-SW"], [p for _, p in batch])
            deps_in = _modinfo("depends", [p for _, p in batch])
            vermagic_in = _modinfo("vermagic", [p for _, p in batch])
            modinfo_ndx = [_section_index(sec_in[str(p)], ".modinfo") for _, p in batch]
            for mode, plan in plans.items():
                outs = [tmp_path / mode / f"{i}.ko" for i, _ in batch]
                sym_out = _readelf(["-sW"], outs)
                sec_out = _readelf(["-SW"], outs)
                deps_out = _modinfo("depends", outs)
                vermagic_out = _modinfo("vermagic", outs)
                assert vermagic_out == vermagic_in
                for k, ((i, src), out) in enumerate(zip(batch, outs)):
                    renamed = results[i][mode]
                    a, b = _symbols(sym_in[str(src)]), _symbols(sym_out[str(out)])
                    assert a.keys() == b.keys(), src
                    for idx, fields in a.items():
                        if idx in renamed:
                            assert fields[5] == "UND" and b[idx] == (*fields[:6], renamed[idx])
                            assert plan.mapping()[fields[6]] == renamed[idx]
                        elif fields[5] == "UND":
                            assert b[idx] == fields and fields[6] not in plan.mapping(), src
                        elif fields[5] == modinfo_ndx[k]:  # may move; names never change
                            assert b[idx][2:] == fields[2:], (src, idx)
                        else:
                            assert b[idx] == fields, (src, idx)
                    assert _sections(sec_in[str(src)]) == _sections(sec_out[str(out)]), src
                    if renamed:
                        old = [d for d in deps_in[k].split(",") if d]
                        assert deps_out[k] == ",".join([*old, REPL]), src
                        modules_touched[mode] += 1
                        renamed_total[mode] += len(renamed)
                    else:
                        assert deps_out[k] == deps_in[k]
                        assert out.read_bytes() == src.read_bytes()
                    out.unlink()
    # The plan hits a large part of the corpus (counted from the inputs, not the patcher).
    assert modules_touched["same"] == modules_touched["prefix"] > 2000
    assert renamed_total["same"] == renamed_total["prefix"] > 8000
