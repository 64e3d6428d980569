"""The ``check`` target's job, without SCons: the pack session of the configured drivers,
the commands that reproduce a failure, and why a driver of a batch was not built.

``site_scons/site_tools/kedr_check.py`` only declares the target: it hands this module
the configs, the module files each check loads (absolute paths) and whether SCons
built them, and runs the session (:func:`kedr_build.packs.check.run_session`).

A reproducing command starts with ``./kedr-env``: it is typed in the checkout, so
every path in it is relative to the checkout (absolute when outside it), whatever
directory scons was started from.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kedr_build.config import BuildConfig
from kedr_build.errors import KedrError
from kedr_build.packs import kinds, pack as packs
from kedr_build.packs.session import AUTO_JOBS, DriverUnderTest, Session
from kedr_build.targets.spec import LabgridTarget

# Variables that say which driver and how it is built and run: kept in a failure's
# reproducing command. (PACK and TEST are set by the command itself; DRIVERS and
# SHARD never reach a single driver's command.)
REPRODUCE = ("MODULE", "DKMS", "KO", "KERNEL", "KDIR", "WORKLOAD", "MODPROBE", "BUILD_DIR",
             "FUNCTIONS", "NAMING", "MAKE_ARGS", "DEVICES", "VM_TIMEOUT", "VM_CPUS", "SUPPRESS",
             "TARGET", "SSH_CONFIG", "I_KNOW_THIS_MAY_CRASH")
# Variables whose value may be a path (relative to where scons was started).
PATHS = ("MODULE", "DKMS", "KO", "KDIR", "WORKLOAD", "BUILD_DIR", "SUPPRESS", "PACK",
         "SSH_CONFIG")


@dataclass(frozen=True)
class CheckedDriver:
    """One driver of the check: its config, the modules its check loads (the
    replacement module first), and whether this run built them."""

    config: BuildConfig
    modules: tuple[str, ...]
    built: bool = True


def from_checkout(cfg: BuildConfig, name: str, value: str) -> str:
    """A variable's value as typed in the checkout: a path that exists (relative to
    where scons started) becomes relative to the checkout, or absolute outside it;
    anything else (KO=vfat, PACK=basic) stays as given."""
    if name not in PATHS or not value or not cfg.launch_dir:
        return value
    where = os.path.normpath(os.path.join(cfg.launch_dir, os.path.expanduser(value)))
    if not os.path.exists(where):
        return value
    top = os.path.normpath(cfg.top) if cfg.top else ""
    if top and (where == top or where.startswith(top + os.sep)):
        return os.path.relpath(where, top)
    return where


def _arguments(cfg: BuildConfig) -> list[str]:
    return [f"{k}={from_checkout(cfg, k, v)}" for k, v in cfg.arguments if k in REPRODUCE]


def command(cfg: BuildConfig, pack: str) -> str:
    """The command that checks this one driver with the pack (a failure's reproducer)."""
    return shlex.join(["./kedr-env", "scons", *_arguments(cfg), "check",
                       f"PACK={from_checkout(cfg, 'PACK', pack)}"])


def run_command(cfg: BuildConfig) -> str:
    """The command that runs this one driver once in the VM (a fault's reproducer adds
    FAULTS=)."""
    args = _arguments(cfg)
    workload = workload_of(cfg)
    if workload is not None and "WORKLOAD" not in dict(cfg.arguments):
        args.append(f"WORKLOAD={from_checkout(cfg, 'WORKLOAD', str(workload))}")
    return shlex.join(["./kedr-env", "scons", *args, "run"])


def workload_of(cfg: BuildConfig) -> Path | None:
    """WORKLOAD=, else the driver's own workload.sh (so a batch gives each its own)."""
    if cfg.workload is not None:
        return cfg.workload
    own = cfg.driver / "workload.sh" if cfg.driver is not None else None
    return own if own is not None and own.is_file() else None


def build_error(cfg: BuildConfig, built: bool, causes: Sequence[str]) -> str:
    """Why this driver's modules were not built in this run ("" when they were): the
    first cause reported about its source or its outputs. A batch's check goes on
    (scons keeps going) with the drivers that were built."""
    if built:
        return ""
    where = tuple(str(p) for p in (cfg.driver, cfg.prebuilt, cfg.outdir) if p is not None)
    cause = next((e for e in causes if e.startswith(where)), "")
    return cause or "its build failed (the messages are above)"


def session(drivers: Sequence[CheckedDriver], report_dir: str,
            causes: Sequence[str] = ()) -> Session:
    """The pack session of the check: every path in it absolute, so the session runs
    from any directory."""
    first = drivers[0].config
    if first.kernel.description is None:
        raise KedrError(f"KDIR={first.kernel.kdir}: check boots a pinned kernel: drop KDIR=")
    pack_file = first.pack or packs.resolve("basic")
    if first.target.real:
        _vm_kind_only(first, Path(pack_file))
    pack_arg = dict(first.arguments).get("PACK", "basic")
    under_test = []
    for d in drivers:
        cfg = d.config
        workload = workload_of(cfg)
        under_test.append(DriverUnderTest(
            build_error=build_error(cfg, d.built, causes),
            name=cfg.name, modules=tuple(os.path.abspath(m) for m in d.modules),
            replacement=cfg.replacement_module, command=command(cfg, pack_arg),
            run_command=run_command(cfg),
            workload=str(workload.resolve()) if workload else None, modprobe=cfg.modprobe,
            suppress=str(cfg.suppress.resolve()) if cfg.suppress else None,
            devices=tuple(dev.name for dev in cfg.devices)))
    target, jobs = str(first.target) if first.target.real else "", jobs_of(first)
    if isinstance(first.target, LabgridTarget) and first.target.place is not None:
        # Several places: one pytest-xdist worker each (worker K acquires the K-th,
        # targets/places.py), the session's groups dealt among them as JOBS= deals them.
        from kedr_build.targets.places import query

        names = query(first.target)
        target, jobs = str(replace(first.target, place=",".join(names))), len(names)
    return Session(pack=str(Path(pack_file).resolve()), kernel=first.kernel.description.name,
                   drivers=tuple(under_test), report_dir=os.path.abspath(report_dir),
                   vm_timeout=first.vm_timeout, vm_cpus=first.vm_cpus, tests=first.tests,
                   shard=first.shard, jobs=jobs, retries=first.retries,
                   kcidb_origin=first.kcidb_origin,
                   env={k: v for k, v in first.arguments if k == "FUZZ_SEED"},
                   target=target,
                   ssh_config=str(first.ssh_config) if first.ssh_config else "")


def jobs_of(cfg: BuildConfig) -> int:
    """JOBS= as the session takes it: JOBS=auto on a real machine is 1 (one machine: one
    test on it at a time, unless JOBS= says otherwise)."""
    return 1 if cfg.target.real and cfg.jobs == AUTO_JOBS else cfg.jobs


def _vm_kind_only(cfg: BuildConfig, pack_file: Path) -> None:
    """A real machine runs the test kinds of ``kinds.ON_MACHINE`` only so far: a pack with
    another kind (device) is refused before anything runs."""
    pack = packs.parse(pack_file.read_text(), pack_file)
    other = [t for t in pack.tests if t.kind not in kinds.ON_MACHINE
             and (not cfg.tests or t.name in cfg.tests)]
    if other:
        raise KedrError(f"TARGET={cfg.target}: pack {pack.name} test {other[0].name} is of "
                        f"kind {other[0].kind}, which runs in QEMU only so far (the "
                        f"{', '.join(kinds.ON_MACHINE)} kinds run on this target)")
