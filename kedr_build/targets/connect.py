"""The transport of a real machine's TARGET=: ssh, or a labgrid environment's driver."""

from __future__ import annotations

from pathlib import Path

from kedr_build.targets.machine import Power, Transport
from kedr_build.targets.spec import LabgridTarget, SshTarget, Target


def connect(target: Target, ssh_config: Path | None = None) -> Transport:
    """How the steps of targets/machine.py reach ``target`` (a real machine)."""
    if isinstance(target, SshTarget):
        from kedr_build.targets.ssh import Connection

        return Connection(target, ssh_config)
    if isinstance(target, LabgridTarget):
        from kedr_build.targets.labgrid import open_shell

        return open_shell(target)
    raise ValueError(f"TARGET={target} is not a real machine")


def power_for(target: Target) -> Power | None:
    """How ``target`` is restarted after a crash: its labgrid environment's strategy or
    power driver (targets/labgrid.py), else None (ssh://: no power driver)."""
    if isinstance(target, LabgridTarget):
        from kedr_build.targets.labgrid import power_cycle, power_of

        how = power_of(target)
        return Power(how, lambda: power_cycle(target)) if how else None
    return None
