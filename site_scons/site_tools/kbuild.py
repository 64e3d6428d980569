"""SCons tool: build an out-of-tree driver directory with kbuild.

``env.KbuildModules(driver_dir)`` returns the targets: one ``<name>.ko`` per
module the directory builds, and its ``Module.symvers`` (the emitter lists every
output). The action calls :func:`kedr_build.kbuild.build`; ``varlist`` makes a
change of KDIR (or of the kernel in it: KERNEL_ID), V or the extra symbols rebuild, and every source file of the
driver is a dependency, so editing a .c or header rebuilds and nothing
changed spawns no make at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_build import kbuild
from kedr_build.errors import KedrError


def _action(target: list[Any], source: list[Any], env: Any) -> int:
    req = kbuild.BuildRequest(
        driver=Path(env["KBUILD_DRIVER"]),
        kdir=Path(env["KDIR"]),
        workdir=Path(env["KBUILD_WORKDIR"]),
        outdir=Path(str(target[0])).parent,
        modules=tuple(env["KBUILD_SPECS"]),
        jobs=int(env.GetOption("num_jobs") or 1),
        verbose=bool(env.get("KBUILD_VERBOSE")),
        extra_symbols=tuple(Path(p) for p in env.get("KBUILD_EXTRA_SYMBOLS", [])),
    )
    try:
        kbuild.build(req)
    except KedrError as e:
        print(f"kedr-build: {e}")
        return 1
    return 0


def _kbuild_modules(env: Any, outdir: str, driver: str, specs: list[kbuild.ModuleSpec],
                    workdir: str, **kw: Any) -> list[Any]:
    targets = [f"{outdir}/{s.name}.ko" for s in specs] + [f"{outdir}/Module.symvers"]
    sources = [str(p) for p in kbuild.source_files(Path(driver))]
    nodes: list[Any] = env._KbuildModules(
        targets, sources, KBUILD_DRIVER=driver, KBUILD_SPECS=specs,
        KBUILD_WORKDIR=workdir, **kw)
    env.Clean(nodes, workdir)
    return nodes


def generate(env: Any) -> None:
    action = SCons.Action.Action(
        _action, "$KBUILDCOMSTR",
        varlist=["KDIR", "KERNEL_ID", "KBUILD_VERBOSE", "KBUILD_EXTRA_SYMBOLS", "KBUILD_DRIVER"])
    env.SetDefault(KBUILDCOMSTR="kbuild  $KBUILD_DRIVER -> ${TARGET.dir}")
    env["BUILDERS"]["_KbuildModules"] = SCons.Builder.Builder(action=action)
    env.AddMethod(_kbuild_modules, "KbuildModules")


def exists(env: Any) -> bool:
    return True
