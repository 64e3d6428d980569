"""SCons tool: from built driver modules to patched ones and their replacement module.

    plan = env.KedrPlan(outdir/plan.json, kos)                       # what to rename
    repl = env.KedrReplacement(outdir/<repl>/<repl>.ko, plan)         # + its sources, symvers
    patched = env.KedrPatch(outdir/patched/x.ko, [x.ko, plan, repl symvers])  # + manifest
    scripts = env.KedrLoadScript(outdir/load.sh, [repl .ko, patched...])      # + unload.sh

``env.KedrIntercept(outdir, kos)`` declares all four, named by
:class:`~kedr_build.intercept.naming.Layout`: the steps of
:func:`kedr_build.intercept.pipeline.intercept`, one target each, so a changed
input redoes only the steps after it. Emitters list every output (the plan step
also writes ``tail_calls.json``). Each action reads the typed
:class:`~kedr_build.config.BuildConfig` from ``env["KEDR"]``, calls one function of :mod:`kedr_build.intercept.pipeline`
(imported inside the action, so parsing the SConstruct never loads the ELF or
template libraries), and depends on a signature of exactly the settings it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_build.config import BuildConfig
from kedr_build.intercept.naming import TAIL_CALLS_FILE, Layout
from kedr_build.resources import CATALOG_DIR, RUNTIME_DIR, TEMPLATES_DIR
from kedr_scons import action, signature, warn


def _paths(nodes: list[Any]) -> list[Path]:
    return [Path(str(n)) for n in nodes]


@action
def _plan(target: list[Any], source: list[Any], env: Any) -> None:
    from kedr_build.intercept import pipeline
    from kedr_build.ko.names import is_module_file

    cfg: BuildConfig = env["KEDR"]
    kos = [p for p in _paths(source) if is_module_file(p)]
    warnings = pipeline.make_plan(kos, cfg.kernel.symvers, Path(str(target[0])),
                                  cfg.replacement_module, cfg.functions or None, cfg.naming)
    warn(warnings, cfg.name)


@action
def _replacement(target: list[Any], source: list[Any], env: Any) -> None:
    from kedr_build.intercept import pipeline

    cfg: BuildConfig = env["KEDR"]
    pipeline.make_replacement(Path(str(source[0])), cfg.kernel.symvers, cfg.kernel.kdir,
                              Path(str(target[0])).parent, cfg.name, cfg.kernel.release,
                              jobs=int(env.GetOption("num_jobs") or 1))


def _replacement_emitter(target: list[Any], source: list[Any],
                         env: Any) -> tuple[list[Any], list[Any]]:
    from kedr_build.intercept.naming import generated_files

    ko = Path(str(target[0]))
    return target + [env.File(str(ko.parent / f)) for f in generated_files(ko.stem)], source


@action
def _patch(target: list[Any], source: list[Any], env: Any) -> None:
    from kedr_build.intercept import pipeline

    ko, plan, symvers = _paths(source[:3])
    warnings = pipeline.patch_driver(ko, Path(str(target[0])), plan, symvers)
    warn([w for w in warnings if "signature stripped" not in w], ko.name)


def _plan_emitter(target: list[Any], source: list[Any], env: Any) -> tuple[list[Any], list[Any]]:
    return target + [env.File(str(Path(str(target[0])).with_name(TAIL_CALLS_FILE)))], source


def _patch_emitter(target: list[Any], source: list[Any], env: Any) -> tuple[list[Any], list[Any]]:
    return target + [env.File(str(target[0]) + ".json")], source


@action
def _loadscript(target: list[Any], source: list[Any], env: Any) -> None:
    from kedr_build.intercept import pipeline

    replacement, *drivers = _paths(source)
    pipeline.write_load_scripts(replacement, drivers, Path(str(target[0])).parent)


def _loadscript_emitter(target: list[Any], source: list[Any],
                        env: Any) -> tuple[list[Any], list[Any]]:
    return target + [env.File(str(Path(str(target[0])).with_name("unload.sh")))], source


def _files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.iterdir() if p.is_file())


def _intercept(env: Any, outdir: str, kos: list[Any]) -> dict[str, Any]:
    cfg: BuildConfig = env["KEDR"]
    repl = cfg.replacement_module
    out = Layout(outdir, repl)
    plan = env.KedrPlan(str(out.plan), kos + _files(CATALOG_DIR) + [signature(
        env, functions=cfg.functions, naming=str(cfg.naming), module=repl,
        kernel=cfg.kernel_id)])
    replacement = env.KedrReplacement(
        str(out.replacement_ko),
        plan + _files(CATALOG_DIR) + _files(TEMPLATES_DIR) + _files(RUNTIME_DIR)
        + [signature(env, kdir=cfg.kernel.kdir, kernel=cfg.kernel_id)])
    env.Clean(replacement, str(out.replacement_dir))
    symvers = next(n for n in replacement if str(n).endswith("/Module.symvers"))
    patched = []
    for ko in kos:
        patched += env.KedrPatch(str(out.patched(str(ko))), [ko, plan[0], symvers])
    scripts = env.KedrLoadScript(str(out.load_script),
                                 [replacement[0]] + [p for p in patched if str(p).endswith(".ko")])
    return {"plan": plan[0], "replacement": replacement[0],
            "patched": [p for p in patched if str(p).endswith(".ko")],
            "scripts": scripts, "outputs": plan + replacement + patched + scripts}


def generate(env: Any) -> None:
    env.SetDefault(KEDRPLANCOMSTR="plan    $TARGET", KEDRREPLCOMSTR="generate ${TARGET.dir}",
                   KEDRPATCHCOMSTR="patch   ${SOURCE.file} -> $TARGET",
                   KEDRLOADCOMSTR="script  $TARGETS")

    def builder(fn: Any, comstr: str, emitter: Any = None) -> Any:
        return SCons.Builder.Builder(action=SCons.Action.Action(fn, comstr), emitter=emitter)

    env["BUILDERS"].update(
        KedrPlan=builder(_plan, "$KEDRPLANCOMSTR", _plan_emitter),
        KedrReplacement=builder(_replacement, "$KEDRREPLCOMSTR", _replacement_emitter),
        KedrPatch=builder(_patch, "$KEDRPATCHCOMSTR", _patch_emitter),
        KedrLoadScript=builder(_loadscript, "$KEDRLOADCOMSTR", _loadscript_emitter))
    env.AddMethod(_intercept, "KedrIntercept")


def exists(env: Any) -> bool:
    return True
