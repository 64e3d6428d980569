"""SCons tool: run built modules in the kernel's VM.

``env.KedrRun(logdir/result.json, modules)`` boots QEMU, inserts the modules,
runs the workload, removes them, prints the driver's kernel log and a verdict,
and fails the build when the run fails. The emitter lists the logs the run
writes. Always built: typing ``scons ... run`` means "run it now", and a VM run
is not deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder

import kedr_scons
from kedr_build.config import BuildConfig
from kedr_scons import action, signature, vm_job

LOGS = ("console.log", "output.log", "status.log", "qemu.cmd", "initramfs.cpio")


@action
def _run(target: list[Any], source: list[Any], env: Any) -> int:
    # Imported here: a null build or a plain build never pays for it.
    from kedr_build.vm.printer import format_report
    from kedr_build.vm.runner import run_modules

    from kedr_build.checks import suppress

    cfg: BuildConfig = env["KEDR"]
    modules = [Path(str(s)) for s in source if str(s).endswith(".ko")]
    suppressions = suppress.load(cfg.suppress) if cfg.suppress else ()
    faults: dict[str, str] = {}
    if cfg.faults:
        # Resolved by _faults, a node of its own the run depends on.
        faults = json.loads((Path(str(target[0])).parent / FAULTS_FILE).read_text())
    devices = None
    if cfg.devices:
        from kedr_build.devices.attach import attach

        devices = attach(cfg.devices, cfg.kernel)
    if cfg.target.real:
        from kedr_build.targets.connect import connect, power_for
        from kedr_build.targets.machine import run_on_machine

        report = run_on_machine(connect(cfg.target, cfg.ssh_config), modules,
                                Path(str(target[0])).parent,
                                workload=cfg.workload, timeout=cfg.vm_timeout,
                                trace_providers=(cfg.replacement_module,),
                                suppressions=suppressions, faults=faults, intree=cfg.modprobe,
                                power=power_for(cfg.target))
        print(format_report(report, cfg.name))
        return 0 if report.ok and report.checks_ok else 1
    report = run_modules(cfg.kernel, modules, Path(str(target[0])).parent,
                         workload=cfg.workload, timeout=cfg.vm_timeout,
                         stream=print if cfg.verbose else None,
                         trace_providers=(cfg.replacement_module,), intree=cfg.modprobe,
                         cpus=cfg.vm_cpus, suppressions=suppressions, faults=faults,
                         devices=devices)
    print(format_report(report, cfg.name))
    # Leaks and bad frees fail the run too: the driver has a bug to fix.
    return 0 if report.ok and report.checks_ok else 1


FAULTS_FILE = "faults.json"


@action
def _faults(target: list[Any], source: list[Any], env: Any) -> int:
    """FAULTS= against the generated replacement module's points: point -> the text the
    kernel reads. A node of its own, so that a bad FAULTS= stops the build before the
    run's node is prepared (which removes the last run's results)."""
    from kedr_build.atomic import write_atomic
    from kedr_build.faults.scenario import FaultsError, resolve_for

    cfg: BuildConfig = env["KEDR"]
    try:
        faults = resolve_for(cfg.faults, Path(str(source[0])))
    except FaultsError as e:
        # Bad input, like a FAULTS= syntax error in the config: exit status 1. A
        # failed action makes scons exit 2 whatever it returns (SCons 4 Script/Main.py
        # BuildTask.failed: "always exit with 2 on build errors"); SystemExit is
        # turned into an ExplicitExit with its own status (Taskmaster Task.execute).
        print(f"kedr-build: {e}", flush=True)
        kedr_scons.errors.append(str(e))
        raise SystemExit(1) from None
    write_atomic(Path(str(target[0])), json.dumps(faults, indent=2).encode())
    return 0


def _emitter(target: list[Any], source: list[Any], env: Any) -> tuple[list[Any], list[Any]]:
    logdir = Path(str(target[0])).parent
    return target + [env.File(str(logdir / name)) for name in LOGS], source


def generate(env: Any) -> None:
    env.SetDefault(KEDRRUNCOMSTR="vm      ${SOURCES.file} -> $TARGET")
    env.SetDefault(KEDRFAULTSCOMSTR="faults  $TARGET")
    env["BUILDERS"]["_KedrRun"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_run, "$KEDRRUNCOMSTR"), emitter=_emitter)
    env["BUILDERS"]["_KedrFaults"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_faults, "$KEDRFAULTSCOMSTR"))

    def kedr_run(env: Any, result: str, modules: list[Any]) -> list[Any]:
        nodes = vm_job(env, env._KedrRun, result, modules)
        cfg: BuildConfig = env["KEDR"]
        if cfg.faults:
            from kedr_build.faults.scenario import render

            repl = next(m for m in modules if Path(str(m)).stem == cfg.replacement_module)
            resolved = env._KedrFaults(str(Path(result).parent / FAULTS_FILE),
                                       [repl, signature(env, faults=render(cfg.faults))])
            env.Depends(nodes, resolved)
        return nodes

    env.AddMethod(kedr_run, "KedrRun")


def exists(env: Any) -> bool:
    return True
