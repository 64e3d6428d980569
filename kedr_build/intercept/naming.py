"""What a driver's replacement module and its files are called.

Light on purpose (``re`` only): the SConstruct names every output at parse time,
and a null build pays for each import made then.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

from kedr_build.ko.names import NAME_MAX, REPLACEMENT_MODULE_PREFIX as MODULE_PREFIX, plain_name

# The C runtime copied next to the generated source (replacements/runtime/).
RUNTIME_FILES = ("kedr_runtime.h", "kedr_trace.h", "kedr_objects.c", "kedr_leak.c",
                 "kedr_report.c", "kedr_judge.c", "kedr_rules.c",
                 "kedr_faults.c", "kedr_control.c", "kedr_tailcall.h", "kedr_tailcall.c",
                 "kedr_attach.c")


def module_name_for(driver: str) -> str:
    """``kedr_repl_<driver>``, a valid module (and trace system) name.

    A module name has at most 55 characters (MODULE_NAME_LEN - 1: insmod of a
    longer one fails with "module name too long"): a longer driver name is cut and
    ends in 8 hex digits of its CRC-32, so two long names stay two modules.
    """
    stem = re.sub(r"\W", "_", driver.removesuffix(".ko"))
    name = f"{MODULE_PREFIX}{stem}"
    if len(name) <= NAME_MAX:
        return name
    tag = f"_{zlib.crc32(stem.encode()):08x}"
    return name[:NAME_MAX - len(tag)] + tag


def generated_files(module_name: str) -> list[str]:
    """Every file generation and the kbuild run leave in the module's directory that
    others use, besides ``<module>.ko``."""
    return ["Module.symvers", f"{module_name}.c", f"{module_name}_trace.h", "Kbuild",
            "fault_points.json", *RUNTIME_FILES]

# Beside plan.json: where the modules jump to intercepted functions (intercept/tailcalls.py).
TAIL_CALLS_FILE = "tail_calls.json"


class Layout:
    """Where the interception of one driver puts its files, under ``outdir``:

    ``plan.json``, ``<module>/`` (the replacement module: sources, ``.ko``,
    ``Module.symvers``), ``patched/<driver>.ko`` (each with ``.json``, its
    manifest), ``load.sh`` and ``unload.sh``. :func:`~kedr_build.intercept.pipeline.intercept`
    and the SCons tool both name their outputs from here.
    """

    def __init__(self, outdir: str | os.PathLike[str], module: str) -> None:
        self.outdir = Path(outdir)
        self.module = module

    @property
    def plan(self) -> Path:
        return self.outdir / "plan.json"

    @property
    def replacement_dir(self) -> Path:
        return self.outdir / self.module

    @property
    def replacement_ko(self) -> Path:
        return self.replacement_dir / f"{self.module}.ko"

    @property
    def replacement_symvers(self) -> Path:
        return self.replacement_dir / "Module.symvers"

    def patched(self, ko: str | os.PathLike[str]) -> Path:
        """Always an uncompressed ``.ko``: what the VM's busybox insmod loads."""
        return self.outdir / "patched" / plain_name(Path(ko))

    @property
    def tail_calls(self) -> Path:
        """Where the modules jump to intercepted functions (kedr_build.intercept.tailcalls)."""
        return self.outdir / TAIL_CALLS_FILE

    @property
    def load_script(self) -> Path:
        return self.outdir / "load.sh"
