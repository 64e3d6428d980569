"""SCons tool: from built driver modules to patched ones and their replacement module.

    plan = env.KedrPlan(outdir/plan.json, kos)                  # what to rename
    repl = env.KedrReplacement(outdir/<repl>, plan)              # <repl>.ko, Module.symvers
    patched = env.KedrPatch(outdir/patched/x.ko, [x.ko, plan, repl symvers])
    scripts = env.KedrLoadScript([load.sh, unload.sh], [repl .ko, patched...])

Each action calls one function of :mod:`kedr_build.pipeline` and imports it
inside the action, so parsing the SConstruct never loads the ELF or template
libraries. ``varlist`` lists every variable an output depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_build import moddeps

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "replacements" / "catalog"
TEMPLATES = REPO / "replacements" / "templates"
RUNTIME = REPO / "replacements" / "runtime"


def _report(warnings: list[str], where: str) -> None:
    for w in warnings:
        print(f"kedr-build: warning: {where}: {w}")


def _plan_action(target: list[Any], source: list[Any], env: Any) -> int:
    from kedr_build import pipeline
    from kedr_build.errors import KedrError

    kos = [Path(str(s)) for s in source if str(s).endswith(".ko")]
    functions = [f for f in env.get("FUNCTIONS", "").split(",") if f]
    try:
        warnings = pipeline.make_plan(kos, Path(env["KERNEL_SYMVERS"]), Path(str(target[0])),
                                      env["REPLACEMENT_MODULE"], functions or None,
                                      env["NAMING"])
    except KedrError as e:
        print(f"kedr-build: {e}")
        return 1
    _report(warnings, env["KEDR_TITLE"])
    return 0


def _replacement_action(target: list[Any], source: list[Any], env: Any) -> int:
    from kedr_build import pipeline
    from kedr_build.errors import KedrError

    try:
        pipeline.make_replacement(Path(str(source[0])), Path(env["KERNEL_SYMVERS"]),
                                  Path(env["KDIR"]), Path(str(target[0])).parent,
                                  env["KEDR_TITLE"], env["KERNEL_RELEASE"],
                                  jobs=int(env.GetOption("num_jobs") or 1))
    except KedrError as e:
        print(f"kedr-build: {e}")
        return 1
    return 0


def _patch_action(target: list[Any], source: list[Any], env: Any) -> int:
    from kedr_build import pipeline
    from kedr_build.errors import KedrError

    ko, plan, symvers = (Path(str(s)) for s in source[:3])
    try:
        warnings = pipeline.patch_driver(ko, Path(str(target[0])), plan, symvers)
    except KedrError as e:
        print(f"kedr-build: {e}")
        return 1
    _report([w for w in warnings if "signature stripped" not in w], ko.name)
    return 0


def _loadscript_action(target: list[Any], source: list[Any], env: Any) -> int:
    from kedr_build import loadscript
    from kedr_build.errors import KedrError
    from kedr_build.runner import order_modules

    replacement, *drivers = (Path(str(s)) for s in source)
    try:
        ordered, _ = order_modules(drivers)
        loadscript.write(loadscript.plan_for(replacement, ordered, Path(str(target[0])).parent),
                         Path(str(target[0])).parent)
    except KedrError as e:
        print(f"kedr-build: {e}")
        return 1
    return 0


def _files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.iterdir() if p.is_file())


def generate(env: Any) -> None:
    env.SetDefault(KEDRPLANCOMSTR="plan    $TARGET", KEDRREPLCOMSTR="generate ${TARGET.dir}",
                   KEDRPATCHCOMSTR="patch   ${SOURCE.file} -> $TARGET",
                   KEDRLOADCOMSTR="script  $TARGETS", FUNCTIONS="",
                   NAMING="same-length")
    env["BUILDERS"]["_KedrPlan"] = SCons.Builder.Builder(action=SCons.Action.Action(
        _plan_action, "$KEDRPLANCOMSTR",
        varlist=["FUNCTIONS", "NAMING", "REPLACEMENT_MODULE", "KERNEL_ID"]))
    env["BUILDERS"]["_KedrReplacement"] = SCons.Builder.Builder(action=SCons.Action.Action(
        _replacement_action, "$KEDRREPLCOMSTR", varlist=["KDIR", "KERNEL_ID"]))
    env["BUILDERS"]["_KedrPatch"] = SCons.Builder.Builder(action=SCons.Action.Action(
        _patch_action, "$KEDRPATCHCOMSTR"))
    env["BUILDERS"]["_KedrLoadScript"] = SCons.Builder.Builder(action=SCons.Action.Action(
        _loadscript_action, "$KEDRLOADCOMSTR"))

    def kedr_intercept(env: Any, outdir: str, kos: list[Any]) -> dict[str, Any]:
        repl = env["REPLACEMENT_MODULE"]
        plan = env._KedrPlan(f"{outdir}/plan.json", kos + _files(CATALOG))
        repl_dir = f"{outdir}/{repl}"
        replacement = env._KedrReplacement(
            [f"{repl_dir}/{repl}.ko", f"{repl_dir}/Module.symvers"],
            plan + _files(CATALOG) + _files(TEMPLATES) + _files(RUNTIME))
        env.Clean(replacement, repl_dir)
        patched = []
        for ko in kos:
            # Always an uncompressed .ko: what the VM's busybox insmod loads.
            name = moddeps.module_name(Path(str(ko))) + ".ko"
            out = env._KedrPatch([f"{outdir}/patched/{name}", f"{outdir}/patched/{name}.json"],
                                 [ko, plan[0], replacement[1]])
            patched.append(out[0])
        scripts = env._KedrLoadScript([f"{outdir}/load.sh", f"{outdir}/unload.sh"],
                                      [replacement[0]] + patched)
        return {"plan": plan[0], "replacement": replacement[0], "patched": patched,
                "scripts": scripts}

    env.AddMethod(kedr_intercept, "KedrIntercept")


def exists(env: Any) -> bool:
    return True
