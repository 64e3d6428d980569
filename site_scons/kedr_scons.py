"""What every kedr-build SCons tool shares: error reporting and rebuild signatures.

* :func:`action` wraps an action function so that a :class:`KedrError` is one
  line ``kedr-build: <cause>`` and a failed target, never a traceback.
* an interrupted build (SIGINT, SIGTERM, SIGHUP) stops its VM, pytest and QEMU
  children at once (:mod:`kedr_build.interrupt`, in front of SCons's own handler,
  which stops scheduling), each VM job prints its verdict as INTERRUPTED, and scons
  exits ``128 + signal`` (130, 143) instead of SCons's 2.
* :func:`signature` is a ``Value`` node holding the typed settings an output
  depends on, as sorted JSON: a source of the target, so changing one of them
  (KDIR, FUNCTIONS, ...) rebuilds exactly what depends on it. The action itself
  reads the typed values from the construction environment.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import SCons.Taskmaster.Job

from kedr_build import interrupt
from kedr_build.errors import KedrError

Action = Callable[[list[Any], list[Any], Any], int]
# Every cause reported by an action in this run, for the build's FAILED marker.
errors: list[str] = []


def action(fn: Callable[[list[Any], list[Any], Any], int | None]) -> Action:
    @functools.wraps(fn)
    def run(target: list[Any], source: list[Any], env: Any) -> int:
        try:
            return fn(target, source, env) or 0
        except KedrError as e:
            print(f"kedr-build: {e}", flush=True)
            errors.append(str(e))
            return 1
        except interrupt.Interrupted as e:
            # The job's driver (a check: its drivers), as its verdict line names it.
            names = [c.name for c, _ in env.get("KEDR_CHECK", ())] or [env["KEDR"].name]
            print(f"kedr-build: {','.join(names)}: INTERRUPTED by "
                  f"{interrupt.signal_name(e.signum)} (results: {target[0]})", flush=True)
            errors.append(str(e))
            return 1
    return run


def _interruptible() -> None:
    """SCons puts its signal handlers in place when the build starts (Jobs.run ->
    _setup_sig_handler, SCons 4.11 Taskmaster/Job.py) and they only stop scheduling:
    the job running goes on to its end. Ours go in front of them from there on."""
    jobs = SCons.Taskmaster.Job.Jobs
    setup = jobs._setup_sig_handler

    def setup_then_ours(self: Any) -> None:
        setup(self)
        interrupt.install()

    jobs._setup_sig_handler = setup_then_ours
    # Registered when SCons reads the SConstruct, before the SConstruct's own exit
    # functions (the FAILED marker): so it runs after them, last.
    atexit.register(_exit_interrupted)


def _exit_interrupted() -> None:
    status = interrupt.exit_status()
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


_interruptible()


def warn(warnings: list[str] | tuple[str, ...], where: str) -> None:
    for w in warnings:
        print(f"kedr-build: warning: {where}: {w}")


def signature(env: Any, **settings: Any) -> Any:
    return env.Value(json.dumps(settings, sort_keys=True, default=str))


def vm_job(env: Any, builder: Any, result: str, modules: list[Any]) -> list[Any]:
    """The node of a job that boots the VM (run, sweep): the modules and WORKLOAD=
    as sources, always built (typing the target means "do it now")."""
    cfg = env["KEDR"]
    sources = list(modules) + ([str(cfg.workload)] if cfg.workload else [])
    nodes: list[Any] = builder(result, sources)
    env.AlwaysBuild(nodes)
    return nodes
