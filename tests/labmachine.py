"""A QEMU guest that plays a lab machine: the pinned kernel, Dropbear's SSH server and
user-mode networking with a host port forwarded to its port 22.

Nothing of kedr-build's runner is in it beyond booting: the guest job only brings
up the network and the server, then waits to be told to stop (``touch
/tmp/kedr-lab-stop`` over ssh). Dropbear (Debian's dropbear-bin, dynamically
linked) goes in with the libraries ``ldd`` names; its host keys are made on the
first connection (-R), and root logs in with a key made for the test.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kedr_build.kernel import hosttools
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, VmResult, run_guest

STOP = "/tmp/kedr-lab-stop"
BOOT_WAIT = 300.0      # seconds the guest may take to answer ssh (TCG on a loaded host)
LIFETIME = 1800.0      # the guest's own timeout, should the test never stop it


@dataclass(frozen=True)
class LabMachine:
    port: int
    ssh_config: Path       # SSH_CONFIG= for scons: the key, no host-key checks

    @property
    def target(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", "-F", str(self.ssh_config), "-p", str(self.port),
                               "root@127.0.0.1", "--", command],
                              capture_output=True, text=True, timeout=120)


def _libraries(binary: Path) -> dict[str, Path]:
    """The name the loader looks for (libz.so.1) -> the file it is, as ldd says."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                         check=True).stdout
    libs = {}
    for line in out.splitlines():
        words = line.split()
        path = words[2] if "=>" in words and len(words) > 2 else words[0]
        if path.startswith("/"):
            libs[Path(words[0]).name] = Path(path).resolve()
    return libs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _script(port: int) -> str:
    return f"""
mkdir -p /lib64 /lib/x86_64-linux-gnu /etc/dropbear /root/.ssh /var/log
cp /kedr/lab/ld-linux-x86-64.so.2 /lib64/
for f in /kedr/lab/lib*; do cp $f /lib/x86_64-linux-gnu/; done
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
echo 'root:x:0:' > /etc/group
cp /kedr/lab/authorized_keys /root/.ssh/authorized_keys
chmod 700 /root/.ssh; chmod 600 /root/.ssh/authorized_keys
modprobe e1000 || exit 1
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up || exit 1
ip route add default via 10.0.2.2
/kedr/lab/dropbear -R -F -E -s -p 22 2>&1 &    # its log: output.log
echo "lab machine up (host port {port})"
while [ ! -e {STOP} ]; do sleep 1; done
kill %1
"""


@contextlib.contextmanager
def lab_machine(kernel: ProvisionedKernel, workdir: Path) -> Iterator[LabMachine]:
    """Boot the guest; yield once root can log in over ssh; stop it at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "id_ed25519"
    key.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    dropbear = Path(hosttools.require(["dropbear"])["dropbear"])
    files = {"lab/dropbear": dropbear, "lab/authorized_keys": key.with_suffix(".pub")}
    for name, lib in _libraries(dropbear).items():
        files[f"lab/{name}"] = lib
    port = _free_port()
    config = workdir / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                      "  LogLevel ERROR\n")
    # loop: shipped, not loaded (a test loads it to attach to a module loaded before).
    job = GuestJob(script=_script(port), files=files, intree_modules=("e1000", "loop"),
                   qemu_args=("-netdev", f"user,id=lab,hostfwd=tcp:127.0.0.1:{port}-:22",
                              "-device", "e1000,netdev=lab"))
    results: list[VmResult] = []
    thread = threading.Thread(target=lambda: results.append(
        run_guest(kernel, job, workdir / "vm", timeout=LIFETIME)), daemon=True)
    thread.start()
    machine = LabMachine(port, config)
    deadline = time.monotonic() + BOOT_WAIT
    try:
        while True:
            if not thread.is_alive():
                raise AssertionError(f"lab machine ended before ssh answered: {results}")
            try:
                if machine.ssh("true").returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"lab machine: no ssh after {BOOT_WAIT:.0f} s "
                                     f"(console: {workdir / 'vm' / 'console.log'})")
            time.sleep(2)
        yield machine
    finally:
        with contextlib.suppress(Exception):
            machine.ssh(f"touch {shlex.quote(STOP)}")
        thread.join(timeout=120)
        if thread.is_alive():
            raise AssertionError("lab machine did not stop when told to")
