"""Fault trials (sweep) on a real machine: the guest of kedr_build/faults/guest.py that
runs the trials' script over a :class:`~kedr_build.targets.machine.Transport`.

The trials' script is the QEMU guest's (faults/trials.py renders it, rooted in a
directory of ours under /tmp) and runs one trial a job: a trial that crashes the
machine takes its output with it, and the one running is then the one asked for.
The modules go in once a boot; each job's evidence is the script's output, its
status and the kernel log since the job's start marker (``dmesg``), judged as the
QEMU guest's console is.

After a trial that left the kernel tainted, a module loaded, or the machine silent
(no answer within the trial's bound: a console that stays quiet, an ssh session
that ended), :meth:`MachineGuest.recover` power-cycles it when the target has a
power driver (labgrid), then checks its kernel release against the modules'
vermagic and its taint again before the next trial; without one (ssh://) it cleans
up what it can and says, in one line, what state the machine is left in: the sweep
stops there. A machine is never reused tainted.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.ko.module import ModuleRef
from kedr_build.targets.machine import (Power, Transport, _tar, _without_debug_info, _wrapper,
                                        checked_state, cleanup_script, fresh_state, leave,
                                        run_job)
from kedr_build.targets.spec import LabgridTarget, SshTarget, Target
from kedr_build.vm.qemu import GuestJob, VmResult


@dataclass
class MachineGuest:
    """A real machine the trials run on, one trial a job."""

    conn: Transport
    restarts: Power | None = None       # None: no power driver (ssh://)
    boots: int = 1                      # the boot it was found in is the first
    root: str = field(default_factory=lambda: f"/tmp/kedr-build-{secrets.token_hex(6)}")
    one_at_a_time = True
    _copied: bool = False               # this boot has the modules
    _before: frozenset[str] = frozenset()   # modules loaded when we came
    _intree: tuple[str, ...] = ()       # in-tree modules the script modprobes
    _ours: tuple[str, ...] = ()
    _kos: tuple[ModuleRef, ...] = ()
    done: list[str] = field(default_factory=list)   # what happened to the machine
    checked: bool = False               # found fit (release, taint, ours not loaded)

    @property
    def name(self) -> str:
        return str(self.conn)

    @property
    def scratch(self) -> str:
        return self.root

    @property
    def power(self) -> str:
        """How it is restarted, for messages ("" when it cannot be)."""
        return self.restarts.how if self.restarts else ""

    def _copy(self, job: GuestJob) -> None:
        if not self._kos:
            self._kos = tuple(ModuleRef.read(p) for n, p in job.files.items()
                              if n.endswith(".ko"))
            self._ours = tuple(reversed([m.name for m in self._kos]))
            self._intree = tuple(job.intree_modules)
            boots = len(self.done)
            self.conn, state = fresh_state(self.conn, self._kos, self.restarts, self.done)
            self.boots += len(self.done) - boots
            self._before = state.modules
            busy = [m for m in self._ours if m in state.modules]
            if busy:
                raise KedrError(f"TARGET={self.conn}: {busy[0]} is already loaded there; "
                                "nothing was copied (unload it first)")
            self.checked = True
        files = {name: (_without_debug_info(path) if self.conn.slow and name.endswith(".ko")
                        else path.read_bytes()) for name, path in job.files.items()}
        self.conn.check(f"mkdir -p {self.root} && tar -x -f - -C {self.root}",
                        f"copying the files to {self.root}", _tar(files))
        self._copied = True

    def run(self, job: GuestJob, workdir: Path, timeout: float,
            stream: Callable[[str], None]) -> VmResult:
        workdir.mkdir(parents=True, exist_ok=True)
        if not self._copied:
            self._copy(job)
        token = secrets.token_hex(6)
        command = f"sh {self.root}/wrapper.sh"
        (workdir / self.conn.log_name).write_text(shlex.join(self.conn.command_line(command))
                                                  + "\n")
        self.conn.check(f"tar -x -f - -C {self.root}", f"copying the job to {self.root}",
                        _tar({"job.sh": job.script.encode(),
                              "wrapper.sh": _wrapper(self.root, token).encode()}))
        result = run_job(self.conn, self.root, token, workdir, timeout, time.monotonic())
        for line in result.console.splitlines():
            stream(line)
        return result

    def _cleanup(self) -> str:
        return leave(self.conn, self.root, cleanup_script(
            self.root, list(self._ours), list(reversed(self._intree)), self._before))

    def recover(self) -> str:
        """A fresh boot (power cycle), its kernel checked again; or why not."""
        if self.restarts is None:
            left = self._cleanup()
            self._copied = False
            return (f"TARGET={self.conn} has no power driver to restart it; "
                    f"{left or 'modules unloaded, files removed'}: reboot it before "
                    "using it again")
        try:
            self.conn = self.restarts.restart()
            self.boots += 1
            self.done.append(f"power-cycled through {self.power}")
            checked_state(self.conn, self._kos, "after a power cycle")
        except KedrError as e:
            return str(e)
        # A /tmp that outlived the boot: the last boot's files go.
        self._cleanup()
        self._copied = False
        return ""

    def close(self) -> str:
        """Leave the machine as found: "" when it is, else what is left and why."""
        return self._cleanup()


def machine_guest(target: Target, ssh_config: Path | None = None) -> MachineGuest:
    """The machine of TARGET= for the trials, with its power driver if it has one."""
    from kedr_build.targets.connect import connect, power_for

    if isinstance(target, (LabgridTarget, SshTarget)):
        return MachineGuest(connect(target, ssh_config), restarts=power_for(target))
    raise KedrError(f"TARGET={target}: not a real machine")
