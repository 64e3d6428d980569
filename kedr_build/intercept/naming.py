"""What a driver's replacement module and its files are called.

Light on purpose (``re`` only): the SConstruct names every output at parse time,
and a null build pays for each import made then.
"""

from __future__ import annotations

import re

from kedr_build.ko.names import REPLACEMENT_MODULE_PREFIX as MODULE_PREFIX

# The C runtime copied next to the generated source (replacements/runtime/).
RUNTIME_FILES = ("kedr_runtime.h", "kedr_trace.h", "kedr_leak.c", "kedr_rules.c",
                 "kedr_faults.c", "kedr_control.c")


def module_name_for(driver: str) -> str:
    """``kedr_repl_<driver>``, a valid module (and trace system) name."""
    stem = re.sub(r"\W", "_", driver.removesuffix(".ko"))
    return f"{MODULE_PREFIX}{stem}"


def generated_files(module_name: str) -> list[str]:
    """Every file generation and the kbuild run leave in the module's directory that
    others use, besides ``<module>.ko``."""
    return ["Module.symvers", f"{module_name}.c", f"{module_name}_trace.h", "Kbuild",
            "fault_points.json", *RUNTIME_FILES]
