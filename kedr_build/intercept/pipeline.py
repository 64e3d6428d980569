"""The interception steps between a built driver and a patched one.

:func:`intercept` is the one entry point: an :class:`InterceptRequest` (the
driver's modules, the kernel, where the outputs go) in, an
:class:`InterceptResult` (the plan, the replacement module, the patched modules,
the load order) out. It runs the steps below in order; the SCons tool
(``site_scons/site_tools/kedr_intercept.py``) calls the same steps one target
each, so a changed input redoes only what depends on it, and both name their
files from one :class:`~kedr_build.intercept.naming.Layout`.

:func:`select_functions` decides what to intercept (the driver's imports that the
catalog knows for this kernel, narrowed by the user's ``FUNCTIONS=``);
:func:`make_plan` turns that into a checked :class:`RenamePlan` written as JSON;
:func:`make_replacement` generates and builds the replacement module for a plan;
:func:`patch_driver` cold-patches one driver module against it. Each step reads
and writes files only, so SCons can cache every one of them;
:func:`write_load_scripts` then writes ``load.sh``/``unload.sh``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.intercept.naming import TAIL_CALLS_FILE, Layout
from kedr_build.ko.names import NAME_MAX
from kedr_build.ko.plan import SAME_LENGTH, Naming, RenamePlan, build_plan, load_plan

if TYPE_CHECKING:
    from kedr_build.intercept.loadscript import LoadPlan
    from kedr_build.kernel.descriptions import ProvisionedKernel


@dataclass(frozen=True)
class Selection:
    functions: tuple[str, ...]
    warnings: tuple[str, ...]


def select_functions(kos: Sequence[Path], kernel_symvers: Path,
                     requested: Sequence[str] | None = None) -> Selection:
    from kedr_build.intercept import catalog as catalog_mod
    from kedr_build.ko.imports import inspect_unpatched_module

    imported: set[str] = set()
    for ko in kos:
        imported.update(sym.name for sym in inspect_unpatched_module(ko).imports)
    cat = catalog_mod.load()
    exports = catalog_mod.read_exports(kernel_symvers)
    driver = ", ".join(ko.name for ko in kos)
    if not requested:
        applicable = cat.for_kernel(exports)
        return Selection(tuple(sorted(imported & set(applicable))), ())
    chosen: list[str] = []
    warnings: list[str] = []
    for name in requested:
        cat.lookup(name, exports)   # unknown -> error with close matches
        if name not in imported:
            warnings.append(f"FUNCTIONS: {name} is not imported by {driver}; skipped")
        elif name not in chosen:
            chosen.append(name)
    return Selection(tuple(chosen), tuple(warnings))


def make_plan(kos: Sequence[Path], kernel_symvers: Path, out: Path, replacement_module: str,
              requested: Sequence[str] | None = None,
              naming: Naming = SAME_LENGTH) -> list[str]:
    """Write the plan for a driver's modules to ``out``; returns warnings."""
    from kedr_build.ko.symvers import read_symvers

    selection = select_functions(kos, kernel_symvers, requested)
    warnings = list(selection.warnings)
    plan = build_plan(selection.functions, naming,
                      kernel_exports=set(read_symvers(kernel_symvers)),
                      replacement_module=replacement_module, allow_empty=True)
    warnings += plan.warnings
    too_long = [r for r in plan.renames if len(r.new) > NAME_MAX]
    if too_long:
        r = max(too_long, key=lambda r: len(r.new))
        raise KedrError(f"NAMING={naming}: replacement {r.new} for {r.old} is {len(r.new)} "
                        f"characters; a module's __versions entry (struct modversion_info) "
                        f"holds at most {NAME_MAX}: choose a shorter prefix or same-length")
    if not plan.renames:
        warnings.append("none of the functions in FUNCTIONS= is imported by the driver: "
                        "nothing to intercept" if requested else
                        "the driver imports no function the catalog knows: nothing to "
                        "intercept")
    from kedr_build.intercept import tailcalls

    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside the plan: the jumps to the renamed functions, for the replacement module.
    tailcalls.write(tailcalls.find(kos, set(plan.mapping())), tail_calls_path(out))
    write_atomic(out, (json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n").encode())
    return warnings


def tail_calls_path(plan_path: Path) -> Path:
    """``tail_calls.json``, written beside ``plan.json`` by :func:`make_plan`."""
    return plan_path.with_name(TAIL_CALLS_FILE)


def make_replacement(plan_path: Path, kernel_symvers: Path, kdir: Path, outdir: Path,
                     driver: str, kernel_release: str, jobs: int = 1) -> Path:
    """Generate and build the replacement module; returns its .ko."""
    from kedr_build.intercept import catalog as catalog_mod
    from kedr_build.intercept import tailcalls
    from kedr_build.intercept.generate import build_replacement, generate

    plan = load_plan(plan_path, allow_empty=True)
    assert plan.replacement_module is not None
    generated = generate(plan.mapping().items(), catalog_mod.load(), kernel_symvers, outdir,
                         plan.replacement_module, driver=driver, kernel=kernel_release,
                         allow_empty=True,
                         tail_calls=tailcalls.load(tail_calls_path(plan_path)))
    return build_replacement(generated.directory, kdir, jobs=jobs)


def patch_driver(ko: Path, out: Path, plan_path: Path, replacement_symvers: Path) -> list[str]:
    """Cold-patch one driver module; returns warnings (the manifest goes beside ``out``)."""
    from kedr_build.ko.container import Compression
    from kedr_build.ko.patch import patch_module

    plan = load_plan(plan_path, allow_empty=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not plan.renames:
        from kedr_build.ko.container import read_module
        mod = read_module(ko)       # decompressed, like every patched output
        write_atomic(out, mod.elf + mod.signature)
        write_atomic(out.with_name(out.name + ".json"), (json.dumps(
            {"source": str(ko), "output": str(out), "renames": []}, indent=2) + "\n").encode())
        return ["nothing to intercept: the patched module is a copy"]
    result = patch_module(ko, out, plan, replacement_symvers, compression=Compression.NONE)
    return list(result.warnings)



def write_load_scripts(replacement_ko: Path, patched: Sequence[Path],
                       script_dir: Path) -> LoadPlan:
    """Write ``load.sh``/``unload.sh`` into ``script_dir``; returns the load order."""
    from kedr_build.intercept import loadscript

    order = loadscript.plan_for(replacement_ko, patched, script_dir)
    loadscript.write(order, script_dir)
    return order


@dataclass(frozen=True)
class InterceptRequest:
    """Intercept the calls of one driver's modules into one kernel."""

    modules: tuple[Path, ...]      # the driver's .ko files, as built or shipped (KO=)
    kernel: ProvisionedKernel      # its Module.symvers, build tree and release
    outdir: Path                   # the files of :class:`~kedr_build.intercept.naming.Layout`
    replacement_module: str        # kedr_repl_<driver>: module, trace system, debugfs name
    driver: str = ""               # named in the replacement module's header comment
    functions: tuple[str, ...] = ()  # FUNCTIONS=; empty: every import the catalog knows
    naming: Naming = SAME_LENGTH
    jobs: int = 1                  # make -j for the replacement module

    @property
    def layout(self) -> Layout:
        return Layout(self.outdir, self.replacement_module)


@dataclass(frozen=True)
class InterceptResult:
    plan: RenamePlan
    replacement: Path              # the replacement module's .ko
    patched: tuple[Path, ...]      # one per requested module, in the request's order
    load: LoadPlan                 # what load.sh does: in-tree modules, then the modules
    load_order: tuple[Path, ...]   # what to insert, in order: the replacement, then the drivers
    warnings: tuple[str, ...]      # of every step, each "where: what"


def intercept(req: InterceptRequest) -> InterceptResult:
    """Select, plan, generate and build the replacement module, patch every module,
    write the load scripts: what ``scons MODULE=...`` does after kbuild."""
    if not req.modules:
        raise KedrError("intercept: no module to patch")
    out = req.layout
    driver = req.driver or ", ".join(ko.name for ko in req.modules)
    warnings = [f"{driver}: {w}" for w in make_plan(
        req.modules, req.kernel.symvers, out.plan, req.replacement_module,
        req.functions or None, req.naming)]
    replacement = make_replacement(out.plan, req.kernel.symvers, req.kernel.kdir,
                                   out.replacement_dir, req.driver, req.kernel.release,
                                   jobs=req.jobs)
    patched: list[Path] = []
    for ko in req.modules:
        dst = out.patched(ko)
        warnings += [f"{ko.name}: {w}" for w in patch_driver(ko, dst, out.plan,
                                                             out.replacement_symvers)]
        patched.append(dst)
    from kedr_build.ko.module import ModuleRef

    load = write_load_scripts(replacement, patched, out.outdir)
    by_name = {ModuleRef.read(p).name: p for p in patched}
    return InterceptResult(plan=load_plan(out.plan, allow_empty=True), replacement=replacement,
                           patched=tuple(patched), load=load,
                           load_order=(replacement, *(by_name[d.name] for d in load.drivers)),
                           warnings=tuple(warnings))
