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

from . import kbuild, kernels, provision
from .errors import KedrError

VARIABLES = {
    "MODULE": "driver directory to build (a Kbuild file or an obj-m Makefile)",
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
    driver: Path
    name: str
    kernel: kernels.ProvisionedKernel
    kernel_name: str
    specs: tuple[kbuild.ModuleSpec, ...]
    build_dir: str
    outdir: str
    workload: str | None
    verbose: bool
    vm_timeout: float
    functions: tuple[str, ...] = ()
    naming: str = "same-length"

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

    module = args.get("MODULE")
    if not module:
        raise KedrError("MODULE=<driver directory> is required, "
                        "e.g. scons MODULE=examples/chardev")
    driver = path(module).resolve()
    if not driver.exists():
        raise KedrError(f"MODULE={module}: no such directory")
    if not driver.is_dir():
        raise KedrError(f"MODULE={module}: not a directory")
    kernel_name = args.get("KERNEL", kernels.DEFAULT_KERNEL)
    if args.get("KDIR"):
        kernel = kernels.from_kdir(path(args["KDIR"]))
    else:
        kernel = provision.ensure(kernel_name)
    build_dir = str(path(args["BUILD_DIR"]).resolve()) if args.get("BUILD_DIR") \
        else os.path.join(top, "build")
    name = driver.name
    specs = tuple(kbuild.discover(driver, kernel.kdir,
                                  cache=Path(build_dir, name, ".kedr-modules.json")))
    workload = str(path(args["WORKLOAD"]).resolve()) if args.get("WORKLOAD") else None
    if workload is not None and not os.path.isfile(workload):
        raise KedrError(f"WORKLOAD={args['WORKLOAD']}: no such file")
    try:
        vm_timeout = float(args.get("VM_TIMEOUT", "300"))
    except ValueError:
        raise KedrError(f"VM_TIMEOUT={args['VM_TIMEOUT']}: not a number of seconds") from None
    return BuildConfig(driver=driver, name=name, kernel=kernel, kernel_name=kernel_name,
                       specs=specs, build_dir=build_dir,
                       outdir=os.path.join(build_dir, name), workload=workload,
                       verbose=args.get("V", "0") not in ("", "0"), vm_timeout=vm_timeout,
                       functions=tuple(f.strip() for f in args.get("FUNCTIONS", "").split(",")
                                       if f.strip()),
                       naming=_naming(args.get("NAMING", "same-length")))


def _naming(text: str) -> str:
    if text == "same-length" or (text.startswith("prefix:") and
                                 re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text[7:])):
        return text
    raise KedrError(f"NAMING={text}: use same-length or prefix:P (P a C identifier prefix)")
