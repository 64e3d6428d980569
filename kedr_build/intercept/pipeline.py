"""The interception steps between a built driver and a patched one.

:func:`select_functions` decides what to intercept (the driver's imports that the
catalog knows for this kernel, narrowed by the user's ``FUNCTIONS=``);
:func:`make_plan` turns that into a checked :class:`RenamePlan` written as JSON;
:func:`make_replacement` generates and builds the replacement module for a plan;
:func:`patch_driver` cold-patches one driver module against it. Each step reads
and writes files only, so SCons can cache every one of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.ko.names import NAME_MAX
from kedr_build.ko.plan import SAME_LENGTH, Naming, build_plan, load_plan


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
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n").encode())
    return warnings


def make_replacement(plan_path: Path, kernel_symvers: Path, kdir: Path, outdir: Path,
                     driver: str, kernel_release: str, jobs: int = 1) -> Path:
    """Generate and build the replacement module; returns its .ko."""
    from kedr_build.intercept import catalog as catalog_mod
    from kedr_build.intercept.generate import build_replacement, generate

    plan = load_plan(plan_path, allow_empty=True)
    assert plan.replacement_module is not None
    generated = generate(plan.mapping().items(), catalog_mod.load(), kernel_symvers, outdir,
                         plan.replacement_module,
                         driver=driver, kernel=kernel_release, allow_empty=True)
    return build_replacement(generated.directory, kdir, jobs=jobs)


def patch_driver(ko: Path, out: Path, plan_path: Path, replacement_symvers: Path) -> list[str]:
    """Cold-patch one driver module; returns warnings (the manifest goes beside ``out``)."""
    from kedr_build.ko.container import Compression
    from kedr_build.ko.patch import patch_module

    plan = load_plan(plan_path, allow_empty=True)
    if not plan.renames:
        from kedr_build.ko.container import read_module
        mod = read_module(ko)       # decompressed, like every patched output
        write_atomic(out, mod.elf + mod.signature)
        write_atomic(out.with_name(out.name + ".json"), (json.dumps(
            {"source": str(ko), "output": str(out), "renames": []}, indent=2) + "\n").encode())
        return ["nothing to intercept: the patched module is a copy"]
    result = patch_module(ko, out, plan, replacement_symvers, compression=Compression.NONE)
    return list(result.warnings)

