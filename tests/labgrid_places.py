"""A labgrid lab on this machine: a real ``labgrid-coordinator`` and ``labgrid-exporter``
(free ports, stopped at the end) exporting one place per QEMU guest of a pinned
kernel. Each guest is the lab machine of tests/labgrid_machine.py (busybox, a login
on its console) with its serial console on a TCP port (QEMU's ``-serial
tcp:...,server``), which the exporter offers as the place's ``NetworkSerialPort``;
the environment file has no resources of its own, only the drivers (``SerialDriver``,
``ShellDriver``), so the place's machine is reached through the coordinator alone.
The guests are powered on by the lab (this module) before the test, as a rack's
machines are: the places have no power resource.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kedr_build.kernel import hosttools
from kedr_build.kernel.descriptions import ProvisionedKernel
from labgrid_machine import LOGIN, PROMPT, initramfs
from labmachine import _free_port

BIN = Path(sys.executable).parent        # the venv's labgrid-coordinator, -exporter, -client
EXPORTER = "kedrlab"
READY = 60.0         # seconds for the coordinator and the exporter to come up


@dataclass(frozen=True)
class Lab:
    address: str                 # the coordinator's HOST:PORT
    environment: Path            # ENV.yaml for TARGET=labgrid:ENV.yaml:place
    places: tuple[str, ...]

    def client(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LG_COORDINATOR": self.address}
        if user:
            env["LG_USERNAME"] = user
        return subprocess.run([str(BIN / "labgrid-client"), *args], capture_output=True,
                              text=True, env=env, timeout=60)

    def holder(self, place: str) -> str:
        """Who holds ``place`` ("" if nobody), as ``labgrid-client who`` lists it."""
        proc = self.client("who")
        for line in proc.stdout.splitlines()[1:]:
            words = line.split()
            if len(words) >= 3 and words[2] == place:
                return f"{words[1]}/{words[0]}"
        return ""


def _guest(kernel: ProvisionedKernel, initrd: Path, port: int, log: Path) -> list[str]:
    qemu = hosttools.require(["qemu-system-x86_64"])["qemu-system-x86_64"]
    cfg = kernel.qemu
    return [qemu, "-machine", "pc", "-cpu", cfg.cpu, "-m", f"{cfg.memory_mb}M",
            "-accel", "tcg,thread=single", "-smp", "1", "-nodefaults", "-display", "none",
            "-no-reboot", "-kernel", str(kernel.boot_image), "-initrd", str(initrd),
            "-append", cfg.cmdline,
            "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off",
            "-D", str(log)]


def _wait(what: str, ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + READY
    while not ready():
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"{what} ended: {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not ready after {READY:.0f} s "
                                 f"({log.read_text(errors='replace')[-2000:]})")
        time.sleep(0.5)


@contextlib.contextmanager
def lab(kernel: ProvisionedKernel, workdir: Path,
        places: tuple[str, ...] = ("lab-a", "lab-b")) -> Iterator[Lab]:
    """The coordinator, the exporter and one guest per place, all stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = initramfs(kernel, workdir)
    procs: list[subprocess.Popen[bytes]] = []
    address = f"127.0.0.1:{_free_port()}"
    serial = {p: _free_port() for p in places}
    try:
        for place in places:
            log = workdir / f"{place}.qemu.log"
            procs.append(subprocess.Popen(_guest(kernel, initrd, serial[place], log),
                                          stdin=subprocess.DEVNULL,
                                          stdout=(workdir / f"{place}.out").open("wb"),
                                          stderr=subprocess.STDOUT))
        clog = workdir / "coordinator.log"
        # Its places.yaml and resources go to its working directory.
        procs.append(subprocess.Popen([str(BIN / "labgrid-coordinator"), "-l", address],
                                      cwd=workdir, stdin=subprocess.DEVNULL,
                                      stdout=clog.open("wb"), stderr=subprocess.STDOUT))
        lab_ = Lab(address, workdir / "lab.yaml", places)
        _wait("labgrid-coordinator", lambda: lab_.client("places").returncode == 0, procs, clog)
        exports = workdir / "exports.yaml"
        exports.write_text("".join(f"{p}:\n  NetworkSerialPort:\n    host: 127.0.0.1\n"
                                   f"    port: {serial[p]}\n    protocol: raw\n"
                                   for p in places))
        elog = workdir / "exporter.log"
        procs.append(subprocess.Popen([str(BIN / "labgrid-exporter"), "-c", address,
                                       "-n", EXPORTER, "--hostname", "127.0.0.1",
                                       str(exports)], cwd=workdir, stdin=subprocess.DEVNULL,
                                      stdout=elog.open("wb"), stderr=subprocess.STDOUT))
        _wait("labgrid-exporter", lambda: all(
            f"{EXPORTER}/{p}/NetworkSerialPort" in lab_.client("resources").stdout
            for p in places), procs, elog)
        for place in places:
            for args in (("create",), ("add-match", f"{EXPORTER}/{place}/*")):
                made = lab_.client("-p", place, *args)
                assert made.returncode == 0, made.stderr
        lab_.environment.write_text(f"""targets:
  main:
    drivers:
      SerialDriver: {{}}
      ShellDriver:
        prompt: '{PROMPT}'
        login_prompt: '{LOGIN}'
        username: root
        login_timeout: 600
options:
  coordinator_address: {address}
""")
        yield lab_
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
