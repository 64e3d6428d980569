"""Benchmark: patch the whole module corpus of a pinned kernel vs ``objcopy --redefine-sym``.

    python bench/bench_patch.py [--kernel debian-6.1|debian-6.12] [--jobs N] [--limit N]

kedr-build does the full job on every module — renames in .strtab, __versions
entries with replacement CRCs, depends=, signature strip, self-verification and
an atomic write (no manifest, as objcopy writes none). objcopy does only the
renames (one ``--redefine-sym old=new`` per plan entry; it ignores names a file
does not have), one process per file, which is how a build would run it. Both run
over the same files into a scratch directory, in the same run, with the same
parallelism: ``--jobs 1`` (default) runs both sequentially, file by file, alternating
which goes first (a shared machine's changing load hits both alike); ``--jobs N`` runs
each in turn in a ``multiprocessing`` pool of N workers. The goal is a ratio ≤ 0.5.

A compressed corpus (6.12's .ko.xz) is patched as shipped: kedr-build decompresses,
patches and recompresses in-process; the comparison does the same job per file with
the tools, ``xz -dc`` + ``objcopy --redefine-sym`` + ``xz --check=crc32
--lzma2=dict=1MiB`` (scripts/Makefile.modinst's settings, which kedr-build uses too).
Recompression dominates both sides, so at equal settings (preset 6) the ratio stays
near 0.8 (measured 2026-11-26, 2 cores, --jobs 1: 476.6 s vs 596.7 s over all 4230
modules, 0.80; 48.8 s vs 63.3 s over the first 1500, 0.77). ``--xz-preset 1`` gives
0.21 (42.3 s vs 201.2 s, all 4230) for 8% larger files (94.8 MiB vs 87.5 MiB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kedr_build.kernel import provision  # noqa: E402
from kedr_build.ko.container import XZ_PRESET  # noqa: E402
from kedr_build.ko.patch import patch_module  # noqa: E402
from kedr_build.ko.plan import RenamePlan, build_plan  # noqa: E402
from kedr_build.ko.symvers import read_symvers  # noqa: E402

# Both kernels' spellings; each kernel's plan takes those it exports.
FUNCTIONS = """kfree kmalloc_trace kmalloc_large __kmalloc __kmalloc_node kmalloc_node_trace
krealloc kmemdup kstrdup kvmalloc_node kvfree vfree vmalloc vzalloc kmem_cache_alloc
kmem_cache_free mutex_lock mutex_unlock _raw_spin_lock _raw_spin_unlock _copy_to_user
_copy_from_user __kmalloc_cache_noprof __kmalloc_large_noprof __kmalloc_noprof
__kmalloc_node_noprof krealloc_noprof kmemdup_noprof __kvmalloc_node_noprof vmalloc_noprof
vzalloc_noprof kmem_cache_alloc_noprof""".split()

Job = tuple[str, str]
_PLAN: RenamePlan | None = None
_CRCS: dict[str, int] = {}
_OBJCOPY_ARGS: list[str] = []
_XZ_PRESET = XZ_PRESET


def _init(exports: set[str], xz_preset: int = XZ_PRESET) -> None:
    """Set the plan for this process (and, through fork, the pool's workers)."""
    global _PLAN, _CRCS, _OBJCOPY_ARGS, _XZ_PRESET
    _XZ_PRESET = xz_preset
    _PLAN = build_plan([f for f in FUNCTIONS if f in exports], replacement_module="kedr_repl")
    _CRCS = {r.new: zlib.crc32(r.new.encode()) for r in _PLAN.renames}
    _OBJCOPY_ARGS = [f"--redefine-sym={r.old}={r.new}" for r in _PLAN.renames]


def kedr_one(job: Job) -> int:
    src, dst = job
    assert _PLAN is not None
    return len(patch_module(src, dst, _PLAN, _CRCS, manifest=False,
                            xz_preset=_XZ_PRESET).renames)


def objcopy_one(job: Job) -> int:
    src, dst = job
    if not src.endswith(".xz"):
        subprocess.run(["objcopy", *_OBJCOPY_ARGS, src, dst], check=True)
        return 0
    plain_in, plain_out = dst.removesuffix(".xz") + ".in", dst.removesuffix(".xz")
    with open(plain_in, "wb") as f:
        subprocess.run(["xz", "-dc", src], stdout=f, check=True)
    subprocess.run(["objcopy", *_OBJCOPY_ARGS, plain_in, plain_out], check=True)
    subprocess.run(["xz", "-f", "--check=crc32", "--lzma2=dict=1MiB", plain_out], check=True)
    os.unlink(plain_in)
    return 0


def interleaved(a: Callable[[Job], int], a_jobs: list[Job], b: Callable[[Job], int],
                b_jobs: list[Job]) -> tuple[float, float, int]:
    """Sequential timing, file by file, alternating which contender goes first: on a
    shared machine a change of load hits both alike."""
    t_a = t_b = 0.0
    n = 0
    for k, (ja, jb) in enumerate(zip(a_jobs, b_jobs)):
        for which in ((0, 1) if k % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            if which == 0:
                a(ja)
                t_a += time.perf_counter() - start
            else:
                n += b(jb)
                t_b += time.perf_counter() - start
    return t_a, t_b, n


def timed(fn: Callable[[Job], int], jobs: list[Job], workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    if workers == 1:
        n = sum(fn(j) for j in jobs)
    else:
        with Pool(workers) as pool:
            n = sum(pool.imap_unordered(fn, jobs, chunksize=16))
    return time.perf_counter() - start, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="debian-6.1")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N modules")
    ap.add_argument("--xz-preset", type=int, default=XZ_PRESET,
                    help=f"kedr-build's xz preset for recompressed modules (default "
                         f"{XZ_PRESET}, as modules_install and the xz side; 1 trades size for time)")
    args = ap.parse_args(argv)
    kernel = provision.ensure(args.kernel)
    assert kernel.modules_dir is not None
    _init(set(read_symvers(kernel.symvers)), args.xz_preset)
    files = sorted(p for p in kernel.modules_dir.glob("kernel/**/*.ko*")
                   if p.name.endswith((".ko", ".ko.xz")))
    if args.limit:
        files = files[:args.limit]
    size = sum(f.stat().st_size for f in files)
    scratch = Path(tempfile.mkdtemp(prefix="kedr-bench."))
    try:
        for d in ("kedr", "objcopy"):
            (scratch / d).mkdir()
        plan_jobs = {d: [(str(f), str(scratch / d / f"{i}{f.name[f.name.index('.ko'):]}"))
                         for i, f in enumerate(files)]
                     for d in ("kedr", "objcopy")}
        for f in files:  # warm the page cache for both contenders alike
            f.read_bytes()
        if args.jobs == 1:
            t_obj, t_kedr, renames = interleaved(objcopy_one, plan_jobs["objcopy"],
                                                 kedr_one, plan_jobs["kedr"])
        else:
            t_obj, _ = timed(objcopy_one, plan_jobs["objcopy"], args.jobs)
            t_kedr, renames = timed(kedr_one, plan_jobs["kedr"], args.jobs)
        out_size = {d: sum(p.stat().st_size for p in (scratch / d).iterdir()) for d in plan_jobs}
    finally:
        shutil.rmtree(scratch)
    xz = sum(f.name.endswith(".xz") for f in files)
    print(f"kernel            {args.kernel} ({kernel.release})")
    print(f"modules           {len(files)} ({size / 2**20:.0f} MiB"
          f"{f', {xz} .ko.xz' if xz else ''}), jobs {args.jobs}")
    assert _PLAN is not None
    print(f"plan              {len(_PLAN.renames)} functions, {renames} imports renamed")
    print(f"objcopy           {t_obj:7.2f} s  (--redefine-sym only"
          f"{'; with xz -dc and xz per file' if xz else ''})")
    print(f"kedr-build patch  {t_kedr:7.2f} s  (renames, __versions, depends=, signature, "
          "verification)")
    if xz:
        print(f"xz preset         kedr-build {args.xz_preset}, xz tool 6; output "
              f"{out_size['kedr'] / 2**20:.1f} MiB vs {out_size['objcopy'] / 2**20:.1f} MiB")
    print(f"ratio             {t_kedr / t_obj:7.2f} x objcopy (goal <= 0.5)")
    return 0




if __name__ == "__main__":
    sys.exit(main())
