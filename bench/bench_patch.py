"""Benchmark: patch the whole module corpus of a pinned kernel vs ``objcopy --redefine-sym``.

    python bench/bench_patch.py [--kernel debian-6.1] [--jobs N] [--limit N]

kedr-build does the full job on every module — renames in .strtab, __versions
entries with replacement CRCs, depends=, signature strip, self-verification and
an atomic write (no manifest, as objcopy writes none). objcopy does only the
renames (one ``--redefine-sym old=new`` per plan entry; it ignores names a file
does not have), one process per file, which is how a build would run it. Both run
over the same files into a scratch directory, in the same run, with the same
parallelism: ``--jobs 1`` (default) runs both sequentially; ``--jobs N`` runs both
in a ``multiprocessing`` pool of N workers. The goal is a ratio ≤ 0.5.
"""

from __future__ import annotations

import argparse
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
from kedr_build.ko.patch import patch_module  # noqa: E402
from kedr_build.ko.plan import build_plan  # noqa: E402

FUNCTIONS = """kfree kmalloc_trace kmalloc_large __kmalloc __kmalloc_node kmalloc_node_trace
krealloc kmemdup kstrdup kvmalloc_node kvfree vfree vmalloc vzalloc kmem_cache_alloc
kmem_cache_free mutex_lock mutex_unlock _raw_spin_lock _raw_spin_unlock _copy_to_user
_copy_from_user""".split()

Job = tuple[str, str]
_PLAN = build_plan(FUNCTIONS, replacement_module="kedr_repl")
_CRCS = {r.new: zlib.crc32(r.new.encode()) for r in _PLAN.renames}
_OBJCOPY_ARGS = [f"--redefine-sym={r.old}={r.new}" for r in _PLAN.renames]


def kedr_one(job: Job) -> int:
    src, dst = job
    return len(patch_module(src, dst, _PLAN, _CRCS, manifest=False).renames)


def objcopy_one(job: Job) -> int:
    src, dst = job
    subprocess.run(["objcopy", *_OBJCOPY_ARGS, src, dst], check=True)
    return 0


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
    args = ap.parse_args(argv)
    kernel = provision.ensure(args.kernel)
    assert kernel.modules_dir is not None
    files = sorted(kernel.modules_dir.glob("kernel/**/*.ko"))
    if args.limit:
        files = files[:args.limit]
    size = sum(f.stat().st_size for f in files)
    scratch = Path(tempfile.mkdtemp(prefix="kedr-bench."))
    try:
        for d in ("kedr", "objcopy"):
            (scratch / d).mkdir()
        plan_jobs = {d: [(str(f), str(scratch / d / f"{i}.ko")) for i, f in enumerate(files)]
                     for d in ("kedr", "objcopy")}
        for f in files:  # warm the page cache for both contenders alike
            f.read_bytes()
        t_obj, _ = timed(objcopy_one, plan_jobs["objcopy"], args.jobs)
        t_kedr, renames = timed(kedr_one, plan_jobs["kedr"], args.jobs)
    finally:
        shutil.rmtree(scratch)
    print(f"modules           {len(files)} ({size / 2**20:.0f} MiB), jobs {args.jobs}")
    print(f"plan              {len(_PLAN.renames)} functions, {renames} imports renamed")
    print(f"objcopy           {t_obj:7.2f} s  (--redefine-sym only)")
    print(f"kedr-build patch  {t_kedr:7.2f} s  (renames, __versions, depends=, signature, "
          "verification)")
    print(f"ratio             {t_kedr / t_obj:7.2f} x objcopy (goal <= 0.5)")
    return 0




if __name__ == "__main__":
    sys.exit(main())
