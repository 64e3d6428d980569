"""What every kedr-build SCons tool shares: error reporting and rebuild signatures.

* :func:`action` wraps an action function so that a :class:`KedrError` is one
  line ``kedr-build: <cause>`` and a failed target, never a traceback.
* :func:`signature` is a ``Value`` node holding the typed settings an output
  depends on, as sorted JSON: a source of the target, so changing one of them
  (KDIR, FUNCTIONS, ...) rebuilds exactly what depends on it. The action itself
  reads the typed values from the construction environment.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

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
    return run


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
