"""Patch every module of each pinned kernel other than the default (6.12: .ko.xz), in
both naming modes, and check each output independently of kedr_build's own verifier
(test_patch_corpus.py checks the default kernel's, lief included): pyelftools (sections byte-identical,
renamed symbols), GNU readelf -sW/-SW (every symbol, every section header) and kmod's
modinfo (depends=, vermagic).

6.12 ships its modules as .ko.xz (signed inside the compressed data): they are patched
as shipped (decompress, patch, recompress) and the outputs are checked through other
readers' decompression: the xz tool (``xz -dk``, batched) for readelf, kmod's own for
modinfo, Python's lzma for pyelftools, and ``xz --robot -l`` for the CRC32 check type
the in-kernel decompressor (CONFIG_MODULE_DECOMPRESS) requires.

readelf and modinfo run on *all* files, batched (one process per 400 files): over the
whole corpus they cost ~1 s, so there is no reason to sample. pyelftools is used per
file for the sections only (not per symbol, which would cost ~40 s) — and for the
renamed symbols by index. Patching and the pyelftools checks run in a pool of
os.cpu_count() workers; the whole test takes about 2.5 min of CPU (154 s user, 13 s sys).
"""

from __future__ import annotations

import io
import lzma
import os
import subprocess
import zlib
from multiprocessing import Pool
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, ProvisionedKernel, available
from kedr_build.ko.container import XZ_PRESET
from kedr_build.ko.patch import patch_module
from kedr_build.ko.plan import Naming, RenamePlan, build_plan
from kedr_build.ko.symvers import read_symvers

# Each kernel's spelling of the same APIs: those it exports are used (6.1 has
# kmalloc_trace, 6.12 __kmalloc_cache_noprof).
FUNCTIONS = """kfree kmalloc_trace kmalloc_large kmalloc_large_node __kmalloc __kmalloc_node
kmalloc_node_trace krealloc kmemdup kmemdup_nul kstrdup kstrndup kvmalloc_node kvfree
kvfree_call_rcu vfree vmalloc vzalloc vmalloc_user devm_kmalloc memdup_user strndup_user
kmem_cache_alloc kmem_cache_alloc_node kmem_cache_alloc_lru kmem_cache_free mutex_lock
mutex_unlock mutex_trylock mutex_lock_interruptible _raw_spin_lock _raw_spin_unlock
_raw_spin_lock_irqsave _raw_spin_unlock_irqrestore _raw_spin_lock_bh _raw_spin_unlock_bh
_raw_spin_lock_irq _raw_spin_unlock_irq _copy_to_user _copy_from_user
__kmalloc_cache_noprof __kmalloc_noprof __kmalloc_large_noprof __kmalloc_large_node_noprof
__kmalloc_node_noprof __kmalloc_cache_node_noprof krealloc_noprof kmemdup_noprof
__kvmalloc_node_noprof vmalloc_noprof vzalloc_noprof vmalloc_user_noprof
kmem_cache_alloc_noprof kmem_cache_alloc_node_noprof kmem_cache_alloc_lru_noprof""".split()
MODES = {"same": Naming.parse("same-length"), "prefix": Naming.parse("prefix:kedr_")}
# xz preset of an output: the fast one (1), except every DEFAULT_EVERY-th module in "same"
# mode, which gets the default (6, as modules_install). The ELF inside is the same either
# way (test_patch_xz.py), and preset 6 was most of this test's time on 6.12: patching 106
# of its modules took 4.26 s at preset 6 and 0.86 s at preset 1 (one core).
XZ_FAST, DEFAULT_EVERY = 1, 16


def xz_preset(mode: str, i: int) -> int:
    return XZ_PRESET if mode == "same" and i % DEFAULT_EVERY == 0 else XZ_FAST
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


def unxz(path: Path) -> bytes:
    """A module's bytes, decompressed by Python's lzma (not kedr_build's reader)."""
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def plain_path(out: Path) -> Path:
    """Where the readelf-readable (decompressed) copy of a file is: NAME.ko."""
    return out.with_name(out.name.removesuffix(".xz"))


def _patch_and_check(job: tuple[int, str]) -> tuple[int, dict[str, dict[int, str]]]:
    """Patch one file in every mode; pyelftools checks; return {mode: {sym index: new}}.
    A compressed input also gets a decompressed copy (NAME.ko) in _OUT/in, for readelf."""
    i, src_name = job
    src = Path(src_name)
    suffix = src.name[src.name.index(".ko"):]
    result: dict[str, dict[int, str]] = {}
    data_in = unxz(src)
    if suffix != ".ko":
        plain_path(_OUT / "in" / f"{i}{suffix}").write_bytes(data_in)
    elf_in = ELFFile(io.BytesIO(data_in))
    secs_in = [(s.name, s.header["sh_type"], s.header["sh_flags"],
                s.data() if s.header["sh_type"] != "SHT_NOBITS" else b"")
               for s in elf_in.iter_sections()]
    for mode, plan in _PLANS.items():
        dst = _OUT / mode / f"{i}{suffix}"
        crcs = {r.new: fake_crc(r.new) for r in plan.renames}
        res = patch_module(src, dst, plan, crcs, manifest=False, xz_preset=xz_preset(mode, i))
        result[mode] = {r.symbol_index: r.new for r in res.renames}
        data_out = unxz(dst)
        if not res.renames:
            assert data_out == data_in, f"{src}: changed with nothing to rename"
        elf = ELFFile(io.BytesIO(data_out))
        assert elf.num_sections() == len(secs_in)
        for (name, typ, flags, data), s in zip(secs_in, elf.iter_sections()):
            assert (s.name, s.header["sh_type"], s.header["sh_flags"]) == (name, typ, flags)
            if name not in MAY_CHANGE and typ != "SHT_NOBITS":
                assert s.data() == data, f"{src}: {name} changed"
        symtab = elf.get_section_by_name(".symtab")
        for idx, new in result[mode].items():
            sym = symtab.get_symbol(idx)
            assert sym.name == new and sym["st_shndx"] == "SHN_UNDEF", (src, idx)
        versions = elf.get_section_by_name("__versions")
        if versions is not None and res.renames:
            data = versions.data()
            names = {data[o + 8:o + 64].split(b"\0")[0].decode(): int.from_bytes(
                data[o:o + 8], "little") for o in range(0, len(data), 64)}
            for r in res.renames:
                if r.crc_old is not None:
                    assert names[r.new] == fake_crc(r.new) and r.old not in names
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


def _modinfo(field: str, files: list[Path]) -> list[str]:
    out = subprocess.run(["/usr/sbin/modinfo", "-0", "-F", field, *map(str, files)],
                         capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


def _xz_checks(files: list[Path]) -> list[str]:
    """The integrity check type of each .xz file (xz --robot -l), in order."""
    out = subprocess.run(["xz", "--robot", "-l", *map(str, files)], capture_output=True,
                         text=True, check=True).stdout
    return [line.split("\t")[6] for line in out.splitlines() if line.startswith("file\t")]


@pytest.mark.corpus
@pytest.mark.parametrize("kernel_name", [k for k in available() if k != DEFAULT_KERNEL])
def test_patch_whole_compressed_corpus(kernel_name: str, tmp_path: Path) -> None:
    kernel = provision.ensure(kernel_name)
    assert kernel.modules_dir is not None
    files = sorted(p for p in kernel.modules_dir.glob("kernel/**/*.ko*")
                   if p.name.endswith((".ko", ".ko.xz")))
    assert len(files) > 3000
    exports = read_symvers(kernel.symvers)
    functions = [f for f in FUNCTIONS if f in exports]
    assert len(functions) >= 35
    plans = {m: build_plan(functions, n, kernel_exports=exports, replacement_module=REPL)
             for m, n in MODES.items()}
    assert not plans["same"].warnings, plans["same"].warnings
    renamed_total = {m: 0 for m in MODES}
    modules_touched = {m: 0 for m in MODES}
    compressed = 0
    for m in ("in", *MODES):
        (tmp_path / m).mkdir()
    with Pool(os.cpu_count() or 2, initializer=_init, initargs=(plans, tmp_path)) as pool:
        for start in range(0, len(files), BATCH):
            batch = list(enumerate(files))[start:start + BATCH]
            results = dict(pool.imap_unordered(_patch_and_check,
                                               [(i, str(p)) for i, p in batch], chunksize=8))
            suffixes = [p.name[p.name.index(".ko"):] for _, p in batch]
            plain_in = [p if sfx == ".ko" else tmp_path / "in" / f"{i}.ko"
                        for (i, p), sfx in zip(batch, suffixes)]
            sym_in = _readelf(["-sW"], plain_in)
            sec_in = _readelf(["-SW"], plain_in)
            deps_in = _modinfo("depends", [p for _, p in batch])
            vermagic_in = _modinfo("vermagic", [p for _, p in batch])
            for mode, plan in plans.items():
                outs = [tmp_path / mode / f"{i}{sfx}" for (i, _), sfx in zip(batch, suffixes)]
                plain_out = [plain_path(o) for o in outs]
                xz_outs = [o for o in outs if o.name.endswith(".xz")]
                if xz_outs:
                    # What the kernel's decompressor can read: CRC32, as Debian's are.
                    assert set(_xz_checks(xz_outs)) == {"CRC32"}
                    # NAME.ko.xz -> NAME.ko beside it, by the xz tool (which checks
                    # the CRC32 of each as it goes).
                    subprocess.run(["xz", "-dk", *map(str, xz_outs)], check=True)
                sym_out = _readelf(["-sW"], plain_out)
                sec_out = _readelf(["-SW"], plain_out)
                deps_out = _modinfo("depends", outs)      # kmod reads the .ko.xz itself
                vermagic_out = _modinfo("vermagic", outs)
                assert vermagic_out == vermagic_in
                for k, ((i, src), out) in enumerate(zip(batch, outs)):
                    renamed = results[i][mode]
                    a = _symbols(sym_in[str(plain_in[k])])
                    b = _symbols(sym_out[str(plain_out[k])])
                    assert a.keys() == b.keys(), src
                    for idx, fields in a.items():
                        if idx in renamed:
                            assert fields[5] == "UND" and b[idx] == (*fields[:6], renamed[idx])
                            assert plan.mapping()[fields[6]] == renamed[idx]
                        elif fields[5] == "UND":
                            assert b[idx] == fields and fields[6] not in plan.mapping(), src
                        else:  # .modinfo symbols may move; names never change
                            assert b[idx][2:] == fields[2:], (src, idx)
                    assert _sections(sec_in[str(plain_in[k])]) == \
                        _sections(sec_out[str(plain_out[k])]), src
                    if renamed:
                        old = [d for d in deps_in[k].split(",") if d]
                        assert deps_out[k] == ",".join([*old, REPL]), src
                        modules_touched[mode] += 1
                        renamed_total[mode] += len(renamed)
                    else:
                        assert deps_out[k] == deps_in[k]
                        if out == plain_out[k]:
                            assert out.read_bytes() == src.read_bytes()
                    out.unlink()
                    plain_out[k].unlink(missing_ok=True)
            for k, p in enumerate(plain_in):
                if p.parent == tmp_path / "in":
                    compressed += 1
                    p.unlink()
    # Sanity: the plan hits a large part of the corpus.
    assert modules_touched["same"] == modules_touched["prefix"] > 2000
    assert renamed_total["same"] == renamed_total["prefix"] > 8000
    # 6.1 ships plain .ko files, 6.12 .ko.xz: each corpus is what it ships.
    assert compressed in (0, len(files))
