"""TARGET=ssh://: the machine's shell over ssh, for the steps of targets/machine.py.

The job's output comes back on ssh's stdout and its exit status on stderr
(``KEDR-STATUS n``): both are streamed into the run's logs as they come.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.kernel import hosttools
from kedr_build.targets.machine import PROBE_TIMEOUT, Answer, JobEnd, last_line
from kedr_build.targets.spec import SshTarget

# No password prompt (BatchMode): a machine that wants one is refused in one line.
# ServerAlive: a machine that crashed mid-run ends the session within a minute.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4")
UNREACHABLE = 255          # ssh's own exit status: no connection, or it broke


@dataclass(frozen=True)
class Connection:
    """How to reach the machine: ssh with the user's configuration (or SSH_CONFIG=)."""

    target: SshTarget
    config: Path | None = None

    def __str__(self) -> str:
        return str(self.target)

    @property
    def log_name(self) -> str:
        return "ssh.cmd"

    @property
    def slow(self) -> bool:
        return False

    def command_line(self, command: str) -> list[str]:
        ssh = hosttools.require(["ssh"])["ssh"]
        return [ssh, *(["-F", str(self.config)] if self.config else []), *SSH_OPTIONS,
                "-p", str(self.target.port), "-l", self.target.user, self.target.host,
                "--", command]

    def run(self, command: str, data: bytes | None = None,
            timeout: float = PROBE_TIMEOUT) -> Answer:
        try:
            proc = subprocess.run(self.command_line(command), input=data, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise KedrError(f"TARGET={self.target}: no answer in {timeout:.0f} s") from None
        return Answer(proc.returncode, proc.stdout, proc.stderr)

    def check(self, command: str, what: str, data: bytes | None = None) -> str:
        proc = self.run(command, data)
        if proc.returncode == UNREACHABLE:
            raise KedrError(f"TARGET={self.target}: cannot reach it over ssh: "
                            f"{last_line(proc.stderr) or 'ssh failed'}")
        if proc.returncode != 0:
            raise KedrError(f"TARGET={self.target}: {what} failed (status {proc.returncode}): "
                            f"{last_line(proc.stderr) or last_line(proc.stdout)}")
        return proc.stdout.decode("utf-8", "replace")

    def run_job(self, command: str, out: Path, err: Path, timeout: float,
                workdir: str) -> JobEnd:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            try:
                proc = subprocess.run(self.command_line(command), stdin=subprocess.DEVNULL,
                                      stdout=stdout, stderr=stderr, timeout=timeout)
            except subprocess.TimeoutExpired:
                return JobEnd(timed_out=True)
        return JobEnd(lost="the ssh session ended without a status"
                      if proc.returncode == UNREACHABLE else "")

