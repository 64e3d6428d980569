"""SCons tool: the systematic fault sweep (kedr_build/faults/sweep.py).

``env.KedrSweep(logdir/sweep.json, [replacement .ko, patched driver .ko])``
discovers the driver's fault sites in its init, the WORKLOAD and its exit, fails
each once in the VM, prints progress and a table, and fails the build when a
site ends in a leak, a crash, a hang or a driver that does not unload. Always
built: a sweep is a VM run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_build.config import BuildConfig
from kedr_build.errors import KedrError
from kedr_scons import action, vm_job


@action
def _sweep(target: list[Any], source: list[Any], env: Any) -> int:
    from kedr_build.faults.sweep import sweep, table

    cfg: BuildConfig = env["KEDR"]
    kos = [Path(str(s)) for s in source if str(s).endswith(".ko")]
    repl = next(p for p in kos if p.stem == cfg.replacement_module)
    drivers = [p for p in kos if p != repl]
    if len(drivers) != 1:
        raise KedrError(f"sweep: {len(drivers)} driver modules ({', '.join(p.name for p in drivers)})"
                        "; the sweep fails the sites of one module")
    devices = None
    if cfg.devices:
        from kedr_build.devices.attach import attach

        devices = attach(cfg.devices, cfg.kernel)
    machine = None
    if cfg.target.real:
        # TARGET=ssh://, labgrid: (with I_KNOW_THIS_MAY_CRASH=1: config.check_targets)
        from kedr_build.targets.trials import machine_guest

        machine = machine_guest(cfg.target, cfg.ssh_config)
    left = ""
    try:
        result = sweep(cfg.kernel, repl, drivers[0], Path(str(target[0])).parent,
                       workload=cfg.workload, intree=cfg.modprobe, devices=devices,
                       site_timeout=min(cfg.vm_timeout, 60.0),
                       progress=lambda line: print(line, flush=True), guest=machine)
    finally:
        if machine is not None:
            left = machine.close()
    print("\n".join(table(result)))
    if machine is not None:
        print(f"--- target {cfg.target} ---\n"
              + "".join(f"{line}\n" for line in machine.done)
              + (left or "left as found (modules unloaded, files removed)"))
    print(f"kedr-build: {cfg.name}: sweep {'PASSED' if result.ok else 'FAILED'} "
          f"(results: {target[0]})")
    return 0 if result.ok else 1


def generate(env: Any) -> None:
    env.SetDefault(KEDRSWEEPCOMSTR="sweep   ${SOURCES.file} -> $TARGET")
    env["BUILDERS"]["_KedrSweep"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_sweep, "$KEDRSWEEPCOMSTR"))

    def kedr_sweep(env: Any, result: str, modules: list[Any]) -> list[Any]:
        return vm_job(env, env._KedrSweep, result, modules)

    env.AddMethod(kedr_sweep, "KedrSweep")


def exists(env: Any) -> bool:
    return True
