"""What a driver's replacement module and its files are called.

Light on purpose (``re`` only): the SConstruct names every output at parse time,
and a null build pays for each import made then.
"""

from __future__ import annotations

import re
import zlib

from kedr_build.ko.names import NAME_MAX, REPLACEMENT_MODULE_PREFIX as MODULE_PREFIX

# The C runtime copied next to the generated source (replacements/runtime/).
RUNTIME_FILES = ("kedr_runtime.h", "kedr_trace.h", "kedr_objects.c", "kedr_leak.c",
                 "kedr_report.c", "kedr_judge.c", "kedr_rules.c",
                 "kedr_faults.c", "kedr_control.c")


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
