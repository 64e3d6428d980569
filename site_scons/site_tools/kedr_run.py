"""SCons tool: run built modules in the pinned kernel's VM.

``env.KedrRun(logdir, modules, VM_KERNEL=kernel, WORKLOAD=...)`` boots QEMU, inserts the modules,
runs the workload, removes them, prints the driver's kernel log and a verdict,
and fails the build when the run fails. Always built: typing ``scons ... run``
means "run it now", and a VM run is not deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder


def _action(target: list[Any], source: list[Any], env: Any) -> int:
    # Imported here: a null build or a plain build never pays for it.
    from kedr_build.errors import KedrError
    from kedr_build.printer import format_report
    from kedr_build.runner import run_modules

    try:
        # The kernel config.py chose (pinned, or KDIR='s with a bootable image):
        # the one the modules were built for.
        kernel = env["VM_KERNEL"]
        modules = [Path(str(s)) for s in source if str(s).endswith(".ko")]
        workload = Path(env["WORKLOAD"]) if env.get("WORKLOAD") else None
        stream = print if env.get("KBUILD_VERBOSE") else None
        report = run_modules(kernel, modules, Path(str(target[0])).parent,
                             workload=workload, timeout=float(env["VM_TIMEOUT"]),
                             stream=stream,
                             trace_providers=tuple(env.get("TRACE_PROVIDERS", ())),
                             intree=tuple(env.get("MODPROBE", ())))
    except KedrError as e:
        print(f"kedr-build: {e}")
        return 1
    print(format_report(report, env["KEDR_TITLE"]))
    return 0 if report.ok else 1


def generate(env: Any) -> None:
    env.SetDefault(KEDRRUNCOMSTR="vm      ${SOURCES.file} -> $TARGET", VM_TIMEOUT=300)
    action = SCons.Action.Action(_action, "$KEDRRUNCOMSTR")
    env["BUILDERS"]["_KedrRun"] = SCons.Builder.Builder(action=action)

    def kedr_run(env: Any, result: str, modules: list[Any], **kw: Any) -> list[Any]:
        sources = list(modules)
        if kw.get("WORKLOAD"):
            sources.append(kw["WORKLOAD"])
        nodes: list[Any] = env._KedrRun(result, sources, **kw)
        env.AlwaysBuild(nodes)
        return nodes

    env.AddMethod(kedr_run, "KedrRun")


def exists(env: Any) -> bool:
    return True
