"""Where fault trials run: a fresh QEMU boot of the pinned kernel per run (the default),
or a real machine (kedr_build/targets/trials.py: TARGET=ssh://, labgrid:).

:func:`kedr_build.faults.trials.run_trials` renders the guest script and judges what
comes back; a :class:`Guest` only runs the script and, after a run that ended early
(a taint, a hang, a machine that stopped answering), puts a healthy kernel under the
next one: QEMU boots afresh anyway, a machine is power-cycled (or cannot be).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, VmResult, run_guest


class Guest(Protocol):
    @property
    def name(self) -> str:
        """Where the trials run, for messages: "qemu", TARGET='s value."""
        ...

    @property
    def root(self) -> str:
        """The job's files there (GuestJob.files' paths are under it)."""
        ...

    @property
    def scratch(self) -> str:
        """A directory for the script's own files."""
        ...

    @property
    def one_at_a_time(self) -> bool:
        """One trial a run: a machine's evidence of the trial that crashed it is gone
        with it (no console streamed to tell which one it was)."""
        ...

    @property
    def boots(self) -> int:
        """Boots of the kernel so far: the one the last run ran in."""
        ...

    def run(self, job: GuestJob, workdir: Path, timeout: float,
            stream: Callable[[str], None]) -> VmResult:
        """Run ``job`` (its logs in ``workdir``), each kernel log line to ``stream``."""
        ...

    def recover(self) -> str:
        """After a run that ended early: a healthy kernel for the next run; "" when it
        is, else one line saying why it cannot be (the trials stop there)."""
        ...


@dataclass
class QemuGuest:
    """The pinned kernel in QEMU: every run is a fresh boot."""

    kernel: ProvisionedKernel
    boots: int = 0

    name = "qemu"
    root = "/kedr"
    scratch = "/tmp"
    one_at_a_time = False

    def run(self, job: GuestJob, workdir: Path, timeout: float,
            stream: Callable[[str], None]) -> VmResult:
        self.boots += 1
        return run_guest(self.kernel, job, workdir, timeout=timeout, stream=stream)

    def recover(self) -> str:
        return ""
