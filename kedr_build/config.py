"""The command-line variables of ``scons`` (MODULE=, KDIR=, ...) as one typed config.

Parsed once at SConstruct time; cheap (no ELF or template libraries), because a
null build pays for everything done here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import kbuild, kernels, moddeps, provision
from .errors import KedrError

VARIABLES = {
    "MODULE": "driver directory to build (a Kbuild file or an obj-m Makefile)",
    "KO": "a prebuilt module to patch instead of building one: a .ko/.ko.xz/.ko.zst/.ko.gz "
          "path, or the name of a module of the pinned kernel (e.g. KO=loop)",
    "MODPROBE": "comma-separated in-tree modules shipped to the guest for the WORKLOAD or "
                "the kernel to load (e.g. brd,nls_cp437)",
    "KDIR": "kernel build tree to build against (default: the pinned kernel)",
    "KERNEL": f"pinned kernel to use (default {kernels.DEFAULT_KERNEL}; "
              f"known: {', '.join(kernels.available())})",
    "WORKLOAD": "shell script run in the guest while the modules are loaded (run target)",
    "BUILD_DIR": "where outputs go (default: build/ beside SConstruct)",
    "FUNCTIONS": "comma-separated kernel functions to intercept (default: every imported "
                 "function the catalog knows)",
    "NAMING": "replacement names: same-length (default, kfree -> Kfree) or prefix:P",
    "V": "1 shows kbuild's commands and the VM console",
    "VM_TIMEOUT": "seconds before a VM run counts as hung (default 300)",
}


@dataclass(frozen=True)
class BuildConfig:
    driver: Path | None          # MODULE=: built with kbuild
    prebuilt: Path | None        # KO=: patched as it is
    name: str
    kernel: kernels.ProvisionedKernel
    specs: tuple[kbuild.ModuleSpec, ...]
    build_dir: str
    outdir: str
    workload: str | None
    verbose: bool
    vm_timeout: float
    functions: tuple[str, ...] = ()
    naming: str = "same-length"
    modprobe: tuple[str, ...] = ()

    @property
    def replacement_module(self) -> str:
        """kedr_repl_<name>: also the trace system and debugfs directory name."""
        return "kedr_repl_" + re.sub(r"\W", "_", self.name)

    @property
    def kernel_id(self) -> str:
        """Changes when the kernel behind KDIR changes, even at the same path."""
        try:
            mtime = self.kernel.symvers.stat().st_mtime_ns
        except OSError:
            mtime = 0
        return f"{self.kernel.release}:{mtime}"


def from_arguments(args: Mapping[str, str], top: str, launch_dir: str) -> BuildConfig:
    unknown = sorted(set(args) - set(VARIABLES))
    if unknown:
        raise KedrError(f"unknown variable {unknown[0]}=; known: {', '.join(VARIABLES)}")

    def path(value: str) -> Path:
        return Path(os.path.join(launch_dir, os.path.expanduser(value)))

    module, ko = args.get("MODULE"), args.get("KO")
    if module and ko:
        raise KedrError("MODULE= and KO= exclude each other: build a driver, or patch a .ko")
    if not module and not ko:
        raise KedrError("MODULE=<driver directory> is required, "
                        "e.g. scons MODULE=examples/chardev (or KO=<prebuilt .ko>)")
    kernel_name = args.get("KERNEL", kernels.DEFAULT_KERNEL)
    driver: Path | None = None
    prebuilt: Path | None = None
    if module:
        driver = path(module).resolve()
        if not driver.exists():
            raise KedrError(f"MODULE={module}: no such directory")
        if not driver.is_dir():
            raise KedrError(f"MODULE={module}: not a directory")
    if args.get("KDIR"):
        kernel = kernels.from_kdir(path(args["KDIR"]))
    else:
        kernel = provision.ensure(kernel_name)
    if ko:
        prebuilt = _prebuilt(ko, path(ko), kernel)
    build_dir = str(path(args["BUILD_DIR"]).resolve()) if args.get("BUILD_DIR") \
        else os.path.join(top, "build")
    if driver is not None:
        name = driver.name
        specs = tuple(kbuild.discover(driver, kernel.kdir,
                                      cache=Path(build_dir, name, ".kedr-modules.json")))
    else:
        assert prebuilt is not None
        name = moddeps.module_name(prebuilt)
        specs = ()
    workload = str(path(args["WORKLOAD"]).resolve()) if args.get("WORKLOAD") else None
    if workload is not None and not os.path.isfile(workload):
        raise KedrError(f"WORKLOAD={args['WORKLOAD']}: no such file")
    try:
        vm_timeout = float(args.get("VM_TIMEOUT", "300"))
    except ValueError:
        raise KedrError(f"VM_TIMEOUT={args['VM_TIMEOUT']}: not a number of seconds") from None
    return BuildConfig(driver=driver, prebuilt=prebuilt, name=name, kernel=kernel,
                       specs=specs, build_dir=build_dir,
                       outdir=os.path.join(build_dir, name), workload=workload,
                       verbose=args.get("V", "0") not in ("", "0"), vm_timeout=vm_timeout,
                       functions=_names(args.get("FUNCTIONS", "")),
                       naming=_naming(args.get("NAMING", "same-length")),
                       modprobe=_names(args.get("MODPROBE", "")))


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _prebuilt(text: str, candidate: Path, kernel: kernels.ProvisionedKernel) -> Path:
    """KO=: a file, or the name of a module of the kernel's own tree."""
    if candidate.is_file():
        return candidate.resolve()
    if "/" not in text and kernel.modules_dir is not None:
        matches = sorted(p for p in kernel.modules_dir.rglob("*.ko*")
                         if moddeps.module_name(p) == text.replace("-", "_"))
        if matches:
            return matches[0]
        raise KedrError(f"KO={text}: no such file, and no module {text!r} in "
                        f"{kernel.modules_dir}")
    raise KedrError(f"KO={text}: no such file")


def _naming(text: str) -> str:
    if text == "same-length" or (text.startswith("prefix:") and
                                 re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text[7:])):
        return text
    raise KedrError(f"NAMING={text}: use same-length or prefix:P (P a C identifier prefix)")
