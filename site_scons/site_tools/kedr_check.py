"""SCons tool: run a test pack on built and patched drivers.

``env.KedrCheck(report_dir/report.json, modules)`` (with ``KEDR_CHECK``: each
driver's config and the modules its check loads) writes the pack session and runs
it through pytest (kedr_build/packs/plugin.py): per-test progress as it goes,
reports in the report directory (junit.xml, report.json, report.html), and a
failed target when a driver fails a check. Always built: a VM run is not
deterministic.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_build.config import BuildConfig
from kedr_scons import action

# Variables that say which driver and how it is built and run: kept in a failure's
# reproducing command. (PACK and TEST are set by the command itself; DRIVERS and
# SHARD never reach a single driver's command.)
_REPRODUCE = ("MODULE", "DKMS", "KO", "KERNEL", "KDIR", "WORKLOAD", "MODPROBE", "BUILD_DIR",
              "FUNCTIONS", "NAMING", "MAKE_ARGS", "VM_TIMEOUT", "VM_CPUS", "SUPPRESS")


def command(cfg: BuildConfig, pack: str) -> str:
    """The command that checks this one driver with the pack (a failure's reproducer)."""
    args = [f"{k}={v}" for k, v in cfg.arguments if k in _REPRODUCE]
    return " ".join(shlex.quote(w) for w in ["./kedr-env", "scons", *args, "check",
                                               f"PACK={pack}"])


def run_command(cfg: BuildConfig) -> str:
    """The command that runs this one driver once in the VM (a fault's reproducer adds
    FAULTS=)."""
    args = [f"{k}={v}" for k, v in cfg.arguments if k in _REPRODUCE]
    workload = _workload(cfg)
    if workload is not None and "WORKLOAD" not in dict(cfg.arguments):
        args.append(f"WORKLOAD={workload}")
    return " ".join(shlex.quote(w) for w in ["./kedr-env", "scons", *args, "run"])


def _workload(cfg: BuildConfig) -> Path | None:
    """WORKLOAD=, else the driver's own workload.sh (so a batch gives each its own)."""
    if cfg.workload is not None:
        return cfg.workload
    own = cfg.driver / "workload.sh" if cfg.driver is not None else None
    return own if own is not None and own.is_file() else None


def _build_error(cfg: BuildConfig, modules: list[Any]) -> str:
    """Why this driver's modules were not built in this run ("" when they were). A
    batch's check goes on (scons keeps going) with the drivers that were built."""
    import SCons.Node
    import kedr_scons

    if all(m.get_state() in (SCons.Node.up_to_date, SCons.Node.executed) for m in modules):
        return ""
    where = [str(p) for p in (cfg.driver, cfg.prebuilt, cfg.outdir) if p is not None]
    cause = next((e for e in kedr_scons.errors if e.startswith(tuple(where))), "")
    return cause or "its build failed (the messages are above)"


@action
def _check(target: list[Any], source: list[Any], env: Any) -> int:
    # Imported here: only the check pays for them.
    from kedr_build.packs import pack as packs
    from kedr_build.packs.check import run_session
    from kedr_build.packs.session import DriverUnderTest, Session

    checked: list[tuple[BuildConfig, list[Any]]] = env["KEDR_CHECK"]
    first = checked[0][0]
    pack_file = first.pack or packs.resolve("basic")
    pack_arg = dict(first.arguments).get("PACK", "basic")
    drivers = []
    for cfg, modules in checked:
        workload = _workload(cfg)
        drivers.append(DriverUnderTest(
            build_error=_build_error(cfg, modules),
            name=cfg.name, modules=tuple(str(m) for m in modules),
            replacement=cfg.replacement_module, command=command(cfg, pack_arg),
            run_command=run_command(cfg),
            workload=str(workload) if workload else None, modprobe=cfg.modprobe,
            suppress=str(cfg.suppress) if cfg.suppress else None))
    if first.kernel.description is None:
        from kedr_build.errors import KedrError
        raise KedrError(f"KDIR={first.kernel.kdir}: check boots a pinned kernel: drop KDIR=")
    session = Session(pack=str(pack_file), kernel=first.kernel.description.name,
                      drivers=tuple(drivers), report_dir=os.path.dirname(str(target[0])),
                      vm_timeout=first.vm_timeout, vm_cpus=first.vm_cpus, tests=first.tests,
                      shard=first.shard, jobs=first.jobs)
    return 0 if run_session(session) == 0 else 1


def generate(env: Any) -> None:
    env.SetDefault(KEDRCHECKCOMSTR="check   $TARGET")
    env["BUILDERS"]["_KedrCheck"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_check, "$KEDRCHECKCOMSTR"))

    def kedr_check(env: Any, result: str, modules: list[Any]) -> list[Any]:
        nodes: list[Any] = env._KedrCheck(result, modules)
        env.AlwaysBuild(nodes)
        return nodes

    env.AddMethod(kedr_check, "KedrCheck")


def exists(env: Any) -> bool:
    return True
