"""Build an out-of-tree driver directory with kbuild, outside the source tree.

* :func:`discover` asks make itself which modules a directory builds: it reads
  the directory's Kbuild (else Makefile) the way kbuild does - with
  KERNELRELEASE set and the kernel's auto.conf included - and prints ``obj-m``.
  Subdirectories named in obj-m/obj-y (``sub/``) are followed. This costs one
  make parse (~10 ms), not a kbuild run, so a null SCons build stays cheap.
* :func:`sync_tree` mirrors the sources into the build directory, copying only
  files whose bytes changed (mtimes of unchanged files are kept, so kbuild's own
  dependency tracking still works) and removing files that vanished.
* :func:`build` runs ``make -C KDIR M=<copy> modules`` there, with kbuild's
  output reaching the user verbatim, and installs each .ko and Module.symvers
  into the output directory atomically.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kedr_build.kernel import hosttools
from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError

# What kbuild writes into M=: never a source, never copied, never a dependency.
_OUTPUT_SUFFIXES = (".o", ".ko", ".mod", ".mod.c", ".cmd", ".order", ".symvers", ".a",
                    ".lds", ".dwo", ".su", ".tmp")
_OUTPUT_NAMES = {"Module.symvers", "modules.order", "Module.markers", ".sconsign.dblite"}


@dataclass(frozen=True)
class ModuleSpec:
    name: str      # module name, e.g. "hello"
    relpath: str   # the .ko relative to the driver directory, e.g. "sub/hello.ko"


def makefile_of(directory: Path) -> Path:
    for name in ("Kbuild", "Makefile", "makefile", "GNUmakefile"):
        if (directory / name).is_file():
            return directory / name
    raise KedrError(f"{directory}: no Kbuild or Makefile (not a kbuild module directory)")


def discover(driver: Path, kdir: Path, cache: Path | None = None) -> list[ModuleSpec]:
    """The modules a driver directory builds, in obj-m order.

    With ``cache``, the answer is kept in that JSON file, keyed by the bytes of
    every makefile in the tree and the kernel's config: a null build then
    spawns no make at all.
    """
    if not driver.is_dir():
        raise KedrError(f"MODULE={driver}: not a directory")
    key = _discover_key(driver, kdir) if cache is not None else ""
    if cache is not None:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return [ModuleSpec(**m) for m in data["modules"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    specs = _discover(driver.resolve(), "", kdir, depth=0)
    if not specs:
        raise KedrError(f"{makefile_of(driver)}: builds no module (obj-m is empty)")
    names = [s.name for s in specs]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise KedrError(f"{driver}: module name built twice: {', '.join(dups)}")
    if cache is not None:
        try:  # only a cache: an unwritable output directory is reported by the build
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(cache, json.dumps({"key": key,
                                            "modules": [vars(s) for s in specs]}).encode())
        except (OSError, KedrError):
            pass
    return specs


def cached_specs(cache: Path) -> list[ModuleSpec]:
    """The module list an earlier :func:`discover` left in ``cache``, whatever its key
    (``scons -c`` names the outputs without running make); [] when there is none."""
    try:
        return [ModuleSpec(**m) for m in json.loads(cache.read_text())["modules"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _discover_key(driver: Path, kdir: Path) -> str:
    h = hashlib.sha256(str(kdir.resolve()).encode())
    auto_conf = kdir / "include/config/auto.conf"
    if auto_conf.exists():
        st = auto_conf.stat()
        h.update(f"{st.st_mtime_ns}:{st.st_size}".encode())
    for dirpath, dirnames, filenames in os.walk(driver):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name in ("Kbuild", "Makefile", "makefile", "GNUmakefile") or name.endswith(".mk"):
                path = Path(dirpath) / name
                h.update(str(path.relative_to(driver)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _discover(top: Path, sub: str, kdir: Path, depth: int) -> list[ModuleSpec]:
    directory = top / sub if sub else top
    makefile = makefile_of(directory)
    if depth > 8:
        raise KedrError(f"{makefile}: subdirectories nest too deep")
    objm, objy = _eval_obj_vars(makefile, directory, kdir)
    specs: list[ModuleSpec] = []
    for word in objm + objy:
        if word.endswith("/"):
            specs += _discover(top, f"{sub}{word}", kdir, depth + 1)
        elif word.endswith(".o") and word in objm:
            rel = f"{sub}{word[:-2]}.ko"
            specs.append(ModuleSpec(name=Path(rel).stem.replace("-", "_"), relpath=rel))
    return specs


_PROBE = """\
KERNELRELEASE := kedr-probe
src := {src}
obj := {src}
srctree := {kdir}
-include {kdir}/include/config/auto.conf
include {makefile}
$(info KEDR-OBJ-M $(obj-m))
$(info KEDR-OBJ-Y $(obj-y))
.PHONY: kedr-probe
kedr-probe: ;
"""


def _eval_obj_vars(makefile: Path, directory: Path, kdir: Path) -> tuple[list[str], list[str]]:
    make = hosttools.require(["make"])["make"]
    probe = _PROBE.format(src=directory, kdir=kdir, makefile=makefile)
    proc = subprocess.run([make, "-s", "--no-print-directory", "-f", "-", "kedr-probe"],
                          input=probe, cwd=directory, capture_output=True, text=True)
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        raise KedrError(f"{makefile}: make cannot read it: {err[-1] if err else 'error'}")
    objm: list[str] = []
    objy: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith("KEDR-OBJ-M"):
            objm = line.split()[1:]
        elif line.startswith("KEDR-OBJ-Y"):
            objy = [w for w in line.split()[1:] if w.endswith("/")]
    return objm, objy


def source_files(driver: Path) -> list[Path]:
    """The driver's source files (what a rebuild depends on), sorted."""
    return sorted(driver / rel for rel in _walk(driver))


def _walk(top: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        rel_dir = os.path.relpath(dirpath, top)
        for name in filenames:
            if name.startswith(".") or name in _OUTPUT_NAMES or name.endswith(_OUTPUT_SUFFIXES):
                continue
            yield name if rel_dir == "." else os.path.join(rel_dir, name)


def sync_tree(src: Path, dst: Path) -> int:
    """Mirror src's source files into dst; returns how many files were copied."""
    dst.mkdir(parents=True, exist_ok=True)
    wanted = set(_walk(src))
    copied = 0
    for rel in sorted(wanted):
        s, d = src / rel, dst / rel
        if d.is_file() and filecmp.cmp(s, d, shallow=False):
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d)
        copied += 1
    for rel in set(_walk(dst)) - wanted:
        (dst / rel).unlink()
    return copied


@dataclass(frozen=True)
class BuildRequest:
    driver: Path
    kdir: Path
    workdir: Path       # the kbuild copy lives here
    outdir: Path        # .ko files and Module.symvers land here
    modules: tuple[ModuleSpec, ...]
    jobs: int = 1
    verbose: bool = False


def make_command(req: BuildRequest) -> list[str]:
    cmd = ["make", "-C", str(req.kdir), f"M={req.workdir}", f"-j{req.jobs}"]
    if req.verbose:
        cmd.append("V=1")
    cmd.append("modules")
    return cmd


def build(req: BuildRequest) -> list[Path]:
    """Build and install the modules; returns the installed paths (.ko..., Module.symvers)."""
    hosttools.require(["make", "gcc"])
    sync_tree(req.driver, req.workdir)
    cmd = make_command(req)
    if req.verbose:
        print(shlex.join(cmd), flush=True)
    # kbuild's messages go to the user as they are: no capture, no reformatting.
    sys.stdout.flush()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise KedrError(f"{req.driver}: kbuild failed (make exit {proc.returncode}); "
                        "its messages are above")
    # All or nothing: a module missing means no module is installed, so the output
    # directory never holds some of the modules as if they were the result.
    missing = [spec.name for spec in req.modules if not (req.workdir / spec.relpath).is_file()]
    if missing:
        raise KedrError(f"{req.driver}: kbuild finished but did not produce "
                        f"{len(missing)} of {len(req.modules)} modules ({', '.join(missing)}); "
                        "nothing installed")
    symvers = req.workdir / "Module.symvers"
    if not symvers.is_file():
        raise KedrError(f"{symvers}: kbuild finished but wrote no Module.symvers; "
                        "nothing installed")
    req.outdir.mkdir(parents=True, exist_ok=True)
    installed = [install(req.workdir / spec.relpath, req.outdir / f"{spec.name}.ko")
                 for spec in req.modules]
    installed.append(install(symvers, req.outdir / "Module.symvers"))
    return installed


def install(src: Path, dest: Path) -> Path:
    """Copy atomically: a reader never sees a half-written file."""
    write_atomic(dest, src.read_bytes())
    return dest
