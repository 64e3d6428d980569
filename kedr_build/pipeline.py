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

from .atomic import write_atomic
from .errors import KedrError


@dataclass(frozen=True)
class Selection:
    functions: tuple[str, ...]
    warnings: tuple[str, ...]


def select_functions(kos: Sequence[Path], kernel_symvers: Path,
                     requested: Sequence[str] | None = None) -> Selection:
    from . import catalog as catalog_mod
    from .inspect import inspect_module

    imported: set[str] = set()
    for ko in kos:
        imported.update(sym.name for sym in inspect_module(ko).imports)
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
              requested: Sequence[str] | None = None, naming: str = "same-length") -> list[str]:
    """Write the plan for a driver's modules to ``out``; returns warnings."""
    from .plan import Naming, build_plan
    from .symvers import read_symvers

    selection = select_functions(kos, kernel_symvers, requested)
    warnings = list(selection.warnings)
    renames: dict[str, str] = {}
    if selection.functions:
        plan = build_plan(selection.functions, Naming.parse(naming),
                          kernel_exports=set(read_symvers(kernel_symvers)),
                          replacement_module=replacement_module)
        warnings += plan.warnings
        renames = plan.mapping()
    else:
        warnings.append("the driver imports no function the catalog knows: nothing to "
                        "intercept")
    data = {"replacement_module": replacement_module, "rename": renames}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return warnings


def read_plan(path: Path) -> tuple[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
        return str(data["replacement_module"]), dict(data["rename"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KedrError(f"{path}: unreadable plan ({e})") from None


def make_replacement(plan_path: Path, kernel_symvers: Path, kdir: Path, outdir: Path,
                     driver: str, kernel_release: str, jobs: int = 1) -> Path:
    """Generate and build the replacement module; returns its .ko."""
    from . import catalog as catalog_mod
    from .generate import build_replacement, generate

    module, renames = read_plan(plan_path)
    generated = generate(renames.items(), catalog_mod.load(), kernel_symvers, outdir, module,
                         driver=driver, kernel=kernel_release, allow_empty=True)
    return build_replacement(generated.directory, kdir, jobs=jobs)


def patch_driver(ko: Path, out: Path, plan_path: Path, replacement_symvers: Path) -> list[str]:
    """Cold-patch one driver module; returns warnings (the manifest goes beside ``out``)."""
    from .kofile import Compression
    from .patch import patch_module
    from .plan import build_plan

    module, renames = read_plan(plan_path)
    if not renames:
        from .kofile import read_module
        mod = read_module(ko)       # decompressed, like every patched output
        write_atomic(out, mod.elf + mod.signature)
        write_atomic(out.with_name(out.name + ".json"), (json.dumps(
            {"source": str(ko), "output": str(out), "renames": []}, indent=2) + "\n").encode())
        return ["nothing to intercept: the patched module is a copy"]
    plan = build_plan([], explicit=renames, replacement_module=module, where=str(plan_path))
    result = patch_module(ko, out, plan, replacement_symvers, compression=Compression.NONE)
    return list(result.warnings)

