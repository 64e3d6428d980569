"""In-tree module dependencies, resolved against the pinned kernel's module tree.

``modprobe --show-depends -d ROOT -S RELEASE`` (kmod) lists, in load order,
the .ko files a module needs; it reads the modules.dep that provisioning wrote
with ``depmod -b``. Built-in modules print ``builtin NAME`` and need nothing.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kedr_build.kernel import hosttools
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.names import module_name


@dataclass(frozen=True)
class InTreeModule:
    name: str          # as modprobe/lsmod spell it: dashes become underscores
    path: Path         # host path of the .ko
    relpath: str       # path under lib/modules/<release>/


def load_order(kernel: ProvisionedKernel, names: list[str]) -> list[InTreeModule]:
    """Every in-tree module the names need, dependencies first, each once."""
    if not names:
        return []
    if kernel.modules_dir is None or kernel.root is None:
        raise KedrError(f"kernel {kernel.release}: no module tree to resolve "
                        f"in-tree modules ({', '.join(names)}) from")
    modprobe = hosttools.require(["modprobe"])["modprobe"]
    seen: dict[str, InTreeModule] = {}
    for name in names:
        proc = subprocess.run([modprobe, "--show-depends", "-d", str(kernel.root),
                               "-S", kernel.release, name],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise KedrError(f"in-tree module {name!r} not found in {kernel.modules_dir}")
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) < 2 or words[0] != "insmod":
                continue  # "builtin NAME": part of vmlinux
            path = Path(words[1])
            mod = InTreeModule(name=module_name(path), path=path,
                               relpath=str(path.relative_to(kernel.modules_dir)))
            seen.setdefault(mod.name, mod)
    return list(seen.values())


def modules_dep_subset(kernel: ProvisionedKernel, mods: list[InTreeModule]) -> str:
    """The lines of modules.dep for just these modules (all their deps are in the set)."""
    assert kernel.modules_dir is not None
    wanted = {m.relpath for m in mods}
    out = []
    for line in (kernel.modules_dir / "modules.dep").read_text().splitlines():
        if line.split(":", 1)[0] in wanted:
            out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def modules_alias_subset(kernel: ProvisionedKernel, mods: list[InTreeModule]) -> str:
    """The lines of modules.alias that name these modules. The kernel's own
    request_module("crypto-crc32c") (libcrc32c's init, whose softdep busybox's
    modprobe does not read) runs the guest's modprobe, which needs the alias."""
    assert kernel.modules_dir is not None
    wanted = {m.name for m in mods}
    out = [line for line in (kernel.modules_dir / "modules.alias").read_text().splitlines()
           if line.startswith("alias ") and line.rsplit(" ", 1)[-1] in wanted]
    return "\n".join(out) + ("\n" if out else "")
