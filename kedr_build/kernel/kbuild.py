"""Build an out-of-tree driver directory with kbuild, as its own developer would.

* :func:`discover` asks make itself which modules a directory builds: it reads
  the directory's Kbuild (else Makefile) the way kbuild does - with
  KERNELRELEASE set, ``src``/``obj``/``M``/``PWD`` naming the real directory,
  the kernel's auto.conf included and the user's ``MAKE_ARGS`` on the command
  line - and prints ``obj-m``. Subdirectories named in obj-m/obj-y (``sub/``) are
  followed. This costs one make parse (~10 ms), not a kbuild run, and the answer
  is cached, so a null SCons build spawns no make at all.
* :func:`build` runs ``make -C KDIR M=<driver> [MAKE_ARGS] KCFLAGS=-fno-optimize-sibling-calls
  modules`` (see :data:`INSTRUMENT_CFLAGS`) in the driver's own directory with ``PWD`` set to it - exactly what the developer
  types there - so paths that reach the driver's neighbours (``$(PWD)/..``,
  ``$(src)/../include``, ``KBUILD_EXTRA_SYMBOLS=$(M)/../other/Module.symvers``)
  mean what they mean to kbuild, and the tree is left as kbuild leaves it.
  kbuild's output reaches the user verbatim; only when every module was
  produced are the .ko files and Module.symvers installed into the output
  directory (atomically), so a failed build leaves no partial results.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
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
    name: str      # module name, e.g. "gost_test" (what modprobe and /sys/module say)
    relpath: str   # the .ko relative to the driver directory, e.g. "sub/gost-test.ko"

    @property
    def filename(self) -> str:
        """The .ko's file name as kbuild writes it (``gost-test.ko``)."""
        return Path(self.relpath).name


def makefile_of(directory: Path) -> Path:
    for name in ("Kbuild", "Makefile", "makefile", "GNUmakefile"):
        if (directory / name).is_file():
            return directory / name
    raise KedrError(f"{directory}: no Kbuild or Makefile (not a kbuild module directory)")


def discover(driver: Path, kdir: Path, cache: Path | None = None,
             make_args: tuple[str, ...] = ()) -> list[ModuleSpec]:
    """The modules a driver directory builds, in obj-m order.

    With ``cache``, the answer is kept in that JSON file, keyed by the bytes of
    every makefile in the tree and the kernel's config: a null build then
    spawns no make at all.
    """
    if not driver.is_dir():
        raise KedrError(f"MODULE={driver}: not a directory")
    key = _discover_key(driver, kdir, make_args) if cache is not None else ""
    if cache is not None:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return [ModuleSpec(**m) for m in data["modules"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    found = _discover(driver.resolve(), "", kdir, make_args, depth=0)
    if not found:
        raise KedrError(f"{makefile_of(driver)}: builds no module (obj-m is empty)")
    # kbuild builds a module listed twice once (scripts/Makefile.lib sorts obj-m);
    # two different files of one module name would collide in the kernel.
    specs = list(dict.fromkeys(found))
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


def _discover_key(driver: Path, kdir: Path, make_args: tuple[str, ...]) -> str:
    h = hashlib.sha256(str(kdir.resolve()).encode())
    h.update("\0".join(make_args).encode() + b"\1")
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


def _discover(top: Path, sub: str, kdir: Path, make_args: tuple[str, ...],
              depth: int) -> list[ModuleSpec]:
    directory = top / sub if sub else top
    makefile = makefile_of(directory)
    if depth > 8:
        raise KedrError(f"{makefile}: subdirectories nest too deep")
    objm, objy = _eval_obj_vars(makefile, directory, kdir, make_args)
    specs: list[ModuleSpec] = []
    for word in objm + objy:
        if word.endswith("/"):
            specs += _discover(top, f"{sub}{word}", kdir, make_args, depth + 1)
        elif word.endswith(".o") and word in objm:
            rel = f"{sub}{word[:-2]}.ko"
            specs.append(ModuleSpec(name=Path(rel).stem.replace("-", "_"), relpath=rel))
    return specs


_PROBE = """\
KERNELRELEASE := kedr-probe
src := {src}
obj := {src}
M := {top}
srctree := {kdir}
-include {kdir}/include/config/auto.conf
include {makefile}
$(info KEDR-OBJ-M $(obj-m))
$(info KEDR-OBJ-Y $(obj-y))
.PHONY: kedr-probe
kedr-probe: ;
"""


def _eval_obj_vars(makefile: Path, directory: Path, kdir: Path,
                   make_args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    make = hosttools.require(["make"])["make"]
    probe = _PROBE.format(src=directory, top=directory, kdir=kdir, makefile=makefile)
    proc = subprocess.run([make, "-s", "--no-print-directory", "-f", "-", "kedr-probe",
                           *make_args],
                          input=probe, cwd=directory, capture_output=True, text=True,
                          env=shell_env(directory))
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
            if not os.path.exists(os.path.join(dirpath, name)):
                continue   # a dangling symlink: kbuild never reads it, nor do we
            yield name if rel_dir == "." else os.path.join(rel_dir, name)


_ERROR_LINE = re.compile(r"\b(?:error|ERROR|Error)\b:|undefined reference|undefined!|"
                         r"No rule to make target|No such file or directory|not found")


def first_error(output: str) -> str:
    """The line of kbuild's output that says what went wrong: the first compiler,
    linker or modpost error, not make's closing "Error 2" (its lines start with make)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    own = [ln for ln in lines if not re.match(r"make(?:\[\d+\])?: ", ln)]
    for ln in own:
        if _ERROR_LINE.search(ln):
            return ln
    return (own or lines or ["no output"])[-1]


def shell_env(directory: Path) -> dict[str, str]:
    """The environment of a shell whose current directory is ``directory``: make takes
    ``$(PWD)`` from the environment, and Makefiles use it (``ccflags-y := -I$(PWD)``)."""
    return {**os.environ, "PWD": str(directory)}


# The instrumented build keeps every call a call. gcc -O2 turns a call that ends a
# function into a jump (sibling-call optimisation: "jmp kfree", opcode e9, instead of
# "call kfree", e8), and the replacement function then sees the return address of the
# driver's caller (for an exit that ends in kfree(), the kernel's delete_module): call
# sites, leak sites and fault sites would point outside the driver. The kernel adds the
# same flag itself only with CONFIG_FRAME_POINTER (top Makefile); Debian's x86_64 kernels
# use the ORC unwinder instead. KCFLAGS is appended last to KBUILD_CFLAGS (top Makefile:
# "Add user supplied CPPFLAGS, AFLAGS, CFLAGS ... as the last assignments"), after -O2.
INSTRUMENT_CFLAGS = ("-fno-optimize-sibling-calls",)


@dataclass(frozen=True)
class BuildRequest:
    driver: Path
    kdir: Path
    outdir: Path        # .ko files and Module.symvers land here
    modules: tuple[ModuleSpec, ...]
    jobs: int = 1
    verbose: bool = False
    make_args: tuple[str, ...] = ()    # VAR=value for make's command line (MAKE_ARGS=)
    instrumented: bool = True          # INSTRUMENT_CFLAGS added (False: as the kernel builds it)


def _kcflags(req: BuildRequest) -> list[str]:
    """``make_args`` with INSTRUMENT_CFLAGS added to KCFLAGS: to the user's own KCFLAGS=
    word (a second one on the command line would replace it), else to KCFLAGS from the
    environment, which a command-line KCFLAGS= overrides."""
    if not req.instrumented:
        return list(req.make_args)
    ours = " ".join(INSTRUMENT_CFLAGS)
    args = list(req.make_args)
    for i in reversed(range(len(args))):
        if args[i].startswith("KCFLAGS="):
            args[i] = f"{args[i]} {ours}"
            return args
    env = os.environ.get("KCFLAGS", "").strip()
    return [*args, f"KCFLAGS={env} {ours}" if env else f"KCFLAGS={ours}"]


def make_command(req: BuildRequest) -> list[str]:
    cmd = ["make", "-C", str(req.kdir), f"M={req.driver}", f"-j{req.jobs}", *_kcflags(req)]
    if req.verbose:
        cmd.append("V=1")
    cmd.append("modules")
    return cmd


def build(req: BuildRequest) -> list[Path]:
    """Build in the driver's directory, then install every module and Module.symvers
    into ``outdir`` - all of them, or none when one is missing."""
    import fcntl

    hosttools.require(["make", "gcc"])
    cmd = make_command(req)
    if req.verbose:
        print(shlex.join(cmd), flush=True)
    # Two builds of one driver directory at once would race in kbuild's outputs
    # there: the second waits. (flock on the directory itself: nothing is written.)
    lock = os.open(req.driver, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"kedr-build: waiting for another build of {req.driver}", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        # kbuild's messages go to the user as they come, line by line, unchanged; kept
        # too, so a failure names the compiler's first error (a batch's report says why).
        sys.stdout.flush()
        kept: list[str] = []
        with subprocess.Popen(cmd, cwd=req.driver, env=shell_env(req.driver), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              errors="replace") as proc:
            for line in proc.stdout or ():
                sys.stdout.write(line)
                sys.stdout.flush()
                kept.append(line)
        if proc.returncode != 0:
            raise KedrError(f"{req.driver}: kbuild failed (make exit {proc.returncode}): "
                            f"{first_error(''.join(kept))}")
        # All or nothing: a module missing means no module is installed, so the output
        # directory never holds some of the modules as if they were the result.
        missing = [spec.name for spec in req.modules
                   if not (req.driver / spec.relpath).is_file()]
        if missing:
            raise KedrError(f"{req.driver}: kbuild finished but did not produce "
                            f"{len(missing)} of {len(req.modules)} modules "
                            f"({', '.join(missing)}); nothing installed")
        symvers = req.driver / "Module.symvers"
        if not symvers.is_file():
            raise KedrError(f"{symvers}: kbuild finished but wrote no Module.symvers; "
                            "nothing installed")
        built = [(req.driver / spec.relpath, req.outdir / spec.filename) for spec in req.modules]
        built.append((symvers, req.outdir / "Module.symvers"))
        req.outdir.mkdir(parents=True, exist_ok=True)
        return [install(src, dest) for src, dest in built]
    finally:
        os.close(lock)


def install(src: Path, dest: Path) -> Path:
    """Copy atomically: a reader never sees a half-written file."""
    write_atomic(dest, src.read_bytes())
    return dest
