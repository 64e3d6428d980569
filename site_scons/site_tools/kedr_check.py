"""SCons tool: run a test pack on built and patched drivers.

``env.KedrCheck(report_dir/report.json, modules)`` (with ``KEDR_CHECK``: each
driver's config and the modules its check loads) runs the pack session
(kedr_build/checkjob.py makes it: reproducing commands, build failures of a batch)
through pytest (kedr_build/packs/plugin.py): per-test progress as it goes, reports
in the report directory (junit.xml, report.json, report.html), and a failed target
when a driver fails a check. Always built: a VM run is not deterministic.
"""

from __future__ import annotations

import os
from typing import Any

import SCons.Action
import SCons.Builder

from kedr_build.config import BuildConfig
from kedr_scons import action


@action
def _check(target: list[Any], source: list[Any], env: Any) -> int:
    # Imported here: only the check pays for them.
    import SCons.Node

    import kedr_scons
    from kedr_build import checkjob
    from kedr_build.packs.check import run_session

    checked: list[tuple[BuildConfig, list[Any]]] = env["KEDR_CHECK"]
    drivers = [checkjob.CheckedDriver(
        config=cfg, modules=tuple(m.abspath for m in modules),
        built=all(m.get_state() in (SCons.Node.up_to_date, SCons.Node.executed)
                  for m in modules)) for cfg, modules in checked]
    session = checkjob.session(drivers, os.path.dirname(target[0].abspath), kedr_scons.errors)
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
