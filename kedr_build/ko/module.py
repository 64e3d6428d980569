"""A module file as the loader sees it: its name, what it depends on, the kernel it is for.

:class:`ModuleRef` is read from the module's ``.modinfo`` (``name=``,
``depends=``, ``vermagic=``) and is what the VM runner, the load scripts and the
SCons tools pass around. :func:`load_order` is the one place that decides in
which order a set of modules is inserted: each after the ones it depends on,
and which in-tree modules (dependencies outside the set) must be loaded first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.ko.names import module_name


@dataclass(frozen=True)
class ModuleRef:
    path: Path
    name: str                    # .modinfo name=, else from the file name
    depends: tuple[str, ...]     # .modinfo depends=, in its order
    vermagic: str | None         # None: the module has no vermagic= (not built by kbuild)

    @property
    def release(self) -> str | None:
        """The kernel release the module is built for (first word of vermagic)."""
        return self.vermagic.split()[0] if self.vermagic else None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ModuleRef:
        from kedr_build.ko.imports import inspect_module

        p = Path(path)
        info = inspect_module(p)
        names = info.modinfo_values("name")
        depends = [d for v in info.modinfo_values("depends") for d in v.split(",") if d]
        vermagic = info.modinfo_values("vermagic")
        return cls(path=p, name=names[0] if names else module_name(p),
                   depends=tuple(dict.fromkeys(depends)),
                   vermagic=vermagic[0] if vermagic else None)


def load_order(modules: Iterable[ModuleRef]) -> tuple[list[ModuleRef], list[str]]:
    """The modules in load order (each after those of the set it depends on), and the
    in-tree modules they need (dependencies outside the set, in order of first use)."""
    by_name: dict[str, ModuleRef] = {}
    for m in modules:
        if m.name in by_name:
            raise KedrError(f"{m.path}: module {m.name} is also {by_name[m.name].path}")
        by_name[m.name] = m
    ordered: list[ModuleRef] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(m: ModuleRef) -> None:
        if m.name in done:
            return
        if m.name in visiting:
            raise KedrError(f"{m.path}: circular module dependency")
        visiting.add(m.name)
        for dep in m.depends:
            if dep in by_name:
                visit(by_name[dep])
        visiting.discard(m.name)
        done.add(m.name)
        ordered.append(m)

    for m in by_name.values():
        visit(m)
    intree: list[str] = []
    for m in ordered:
        intree += [d for d in m.depends if d not in by_name and d not in intree]
    return ordered, intree
