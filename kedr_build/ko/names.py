"""Names as the kernel spells and limits them: symbols, modules, module files.

One home for three facts used across the pipeline:

* a symbol (and a module) name is a C identifier;
* ``struct modversion_info`` (``__versions``) holds a symbol name in
  ``64 - sizeof(unsigned long)`` bytes, and ``struct module`` a module name in
  ``MODULE_NAME_LEN = 64 - sizeof(unsigned long)`` bytes: 55 characters and a NUL
  on x86_64, for both (include/linux/module.h, include/linux/moduleparam.h);
* a module file ``foo-bar.ko[.xz|.zst|.gz]`` is the module ``foo_bar`` to
  modprobe, lsmod and /sys/module (kbuild's ``KBUILD_MODNAME`` turns dashes
  into underscores).
"""

from __future__ import annotations

import re
from pathlib import Path

C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NAME_MAX = 55
COMPRESSED_SUFFIXES = (".xz", ".zst", ".gz")
# Every replacement module kedr-build generates is called kedr_repl_<driver>: a
# module whose depends= names one has been patched already.
REPLACEMENT_MODULE_PREFIX = "kedr_repl_"
_MODULE_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")


def is_c_identifier(text: str) -> bool:
    return C_IDENTIFIER.match(text) is not None


def is_module_name(text: str) -> bool:
    """A name ``depends=``, modprobe and /sys/module accept: [A-Za-z0-9_-], at most 55."""
    return _MODULE_NAME.match(text) is not None and len(text) <= NAME_MAX


def plain_name(path: Path) -> str:
    """The file name without a compression suffix (``foo-bar.ko.xz`` -> ``foo-bar.ko``)."""
    name = path.name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(".ko" + suffix):
            return name.removesuffix(suffix)
    return name


def is_module_file(path: Path) -> bool:
    """``*.ko`` or a compressed ``*.ko.xz``/``.ko.zst``/``.ko.gz``."""
    name = plain_name(path)
    return name.endswith(".ko") and len(name) > 3


def module_name(path: Path) -> str:
    """The module a file holds, by its file name (``foo-bar.ko.xz`` -> ``foo_bar``)."""
    return plain_name(path).removesuffix(".ko").replace("-", "_")
