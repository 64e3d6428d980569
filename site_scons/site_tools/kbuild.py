"""SCons tool: build an out-of-tree driver directory with kbuild.

``env.Kbuild(outdir/Module.symvers, sources, KBUILD=request)`` builds the
driver; the emitter adds one ``<name>.ko`` per module the directory builds
(``request.modules``), so ``--tree`` and ``scons -c`` know every output. The
action calls :func:`kedr_build.kernel.kbuild.build` with the typed request;
the sources are every file of the driver plus a signature of the settings
(KDIR and the kernel in it, V, MAKE_ARGS, the driver's path), so editing a .c
or header or changing KDIR or a MAKE_ARGS variable rebuilds, and nothing changed
spawns no make at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_scons import action


@action
def _build(target: list[Any], source: list[Any], env: Any) -> None:
    from dataclasses import replace

    from kedr_build.kernel import kbuild

    req: kbuild.BuildRequest = env["KBUILD"]
    kbuild.build(replace(req, jobs=int(env.GetOption("num_jobs") or 1)))


@action
def _dkms(target: list[Any], source: list[Any], env: Any) -> None:
    from kedr_build.kernel import dkms

    cfg = env["KEDR"]
    # DKMS runs make with -j$(nproc) (its parallel_jobs default): so do we, or more
    # with scons -j.
    jobs = max(int(env.GetOption("num_jobs") or 1), os.cpu_count() or 1)
    dkms.build(cfg.dkms, cfg.dkms_tree, cfg.kernel.release, cfg.kernel.kdir,
               Path(str(target[0])).parent, jobs=jobs, verbose=cfg.verbose)


def _emitter(target: list[Any], source: list[Any], env: Any) -> tuple[list[Any], list[Any]]:
    outdir = Path(str(target[0])).parent
    kos = [env.File(str(outdir / spec.filename)) for spec in env["KBUILD"].modules]
    return kos + target, source


def generate(env: Any) -> None:
    env.SetDefault(KBUILDCOMSTR="kbuild  ${KBUILD.driver} -> ${TARGET.dir}")
    env["BUILDERS"]["Kbuild"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_build, "$KBUILDCOMSTR"), emitter=_emitter)
    # env.Dkms([outdir/<module>.ko...], sources): a DKMS package (env["KEDR"].dkms), built
    # as `dkms build` does by kedr_build.kernel.dkms.
    env.SetDefault(DKMSCOMSTR="dkms    ${KEDR.dkms.conf} -> ${TARGET.dir}")
    env["BUILDERS"]["Dkms"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_dkms, "$DKMSCOMSTR"))


def exists(env: Any) -> bool:
    return True
