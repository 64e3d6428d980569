"""SCons tool: ``scons MODULE=dir|KO=name attach`` -- hot patching in the VM, or on the
real machine TARGET= names (:mod:`kedr_build.targets.attach`).

``env.KedrAttach(outdir/attach/run/result.json, kos)`` builds the replacement
module for attaching and the attach scripts into ``outdir/attach/``
(:func:`kedr_build.intercept.attach.prepare`), then boots the VM: the plain
module is loaded, runs the workload, is attached to, runs it again, is detached
from, runs it a third time and is unloaded
(:mod:`kedr_build.vm.attachrun`). Always built, as ``run`` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_build.config import BuildConfig
from kedr_scons import action, vm_job


@action
def _attach(target: list[Any], source: list[Any], env: Any) -> int:
    from kedr_build.errors import KedrError
    from kedr_build.intercept.attach import AttachRequest, prepare
    from kedr_build.vm.attachrun import format_attach, run_attach

    cfg: BuildConfig = env["KEDR"]
    kos = [Path(str(s)) for s in source if ".ko" in Path(str(s)).name]
    if len(kos) != 1:
        raise KedrError(f"attach: {cfg.name} has {len(kos)} modules; attach takes one "
                        "(KO=one of them)")
    ko = kos[0]
    logdir = Path(str(target[0])).parent
    intree = (cfg.prebuilt is not None and cfg.kernel.modules_dir is not None
              and cfg.kernel.modules_dir in ko.resolve().parents)
    prepared = prepare(AttachRequest(ko=ko, kernel=cfg.kernel, outdir=logdir.parent,
                                     replacement_module=cfg.replacement_module,
                                     functions=cfg.functions, jobs=cfg.jobs))
    if cfg.target.real:
        from kedr_build.targets.attach import attach_on_machine

        report = attach_on_machine(cfg.target, cfg.ssh_config, prepared, ko, intree, logdir,
                                   cfg.workload, cfg.vm_timeout)
    else:
        report = run_attach(cfg.kernel, prepared, ko, intree, logdir, cfg.workload,
                            cfg.vm_timeout)
    print("\n".join(format_attach(report, logdir)))
    return 0 if report.verdict == "passed" else 1


def generate(env: Any) -> None:
    env.SetDefault(KEDRATTACHCOMSTR="attach  ${SOURCES.file} -> $TARGET")
    env["BUILDERS"]["_KedrAttach"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_attach, "$KEDRATTACHCOMSTR"))

    def kedr_attach(env: Any, result: str, modules: list[Any]) -> list[Any]:
        return vm_job(env, env._KedrAttach, result, modules)

    env.AddMethod(kedr_attach, "KedrAttach")


def exists(env: Any) -> bool:
    return True
