"""TARGET=: where ``run`` happens, parsed once into a typed target.

* ``qemu`` (the default): the pinned kernel booted in QEMU, as always.
* ``ssh://[user@]host[:port]``: a real machine running a kernel the build is for.
* ``labgrid:ENV.yaml[:place]``: a labgrid environment (or a coordinator place).

A real machine is opt-in only (an explicit TARGET=), and a run that fails the
driver's calls on purpose (FAULTS=, sweep) can crash it: that asks for
``I_KNOW_THIS_MAY_CRASH=1`` too. Cheap on purpose: parsed at SConstruct time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kedr_build.errors import KedrError


@dataclass(frozen=True)
class QemuTarget:
    """The pinned kernel in QEMU: nothing outside this machine is touched."""

    @property
    def real(self) -> bool:
        return False

    def __str__(self) -> str:
        return "qemu"


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str = "root"
    port: int = 22

    @property
    def real(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


@dataclass(frozen=True)
class LabgridTarget:
    environment: Path          # the labgrid environment file
    # Coordinator places (a name, or a comma list of names and patterns: places.py),
    # else the environment's own target.
    place: str | None = None

    @property
    def real(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"labgrid:{self.environment}" + (f":{self.place}" if self.place else "")


Target = QemuTarget | SshTarget | LabgridTarget

# user@host:port; a host is a DNS name or an IPv4 address, or an IPv6 one in brackets.
_SSH = re.compile(r"^(?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]*)@)?"
                  r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                  r"(?::(?P<port>[0-9]+))?$")
# A place name, or several: a comma list of names and shell-style patterns (lab-*).
_PLACE = re.compile(r"^[A-Za-z0-9_.*?\[\]-]+(?:,[A-Za-z0-9_.*?\[\]-]+)*$")


def parse_target(text: str, launch_dir: str = ".") -> Target:
    """TARGET='s value; one line naming the value and what is wrong with it otherwise."""
    value = text.strip()
    if value in ("", "qemu"):
        return QemuTarget()
    if value.startswith("ssh://"):
        m = _SSH.match(value[len("ssh://"):])
        if not m:
            raise KedrError(f"TARGET={text}: not ssh://[user@]host[:port]")
        port = int(m.group("port")) if m.group("port") else 22
        if not 1 <= port <= 65535:
            raise KedrError(f"TARGET={text}: port {port} is not 1-65535")
        return SshTarget(host=m.group("host").strip("[]"), user=m.group("user") or "root",
                         port=port)
    if value.startswith("labgrid:"):
        rest = value[len("labgrid:"):]
        env, sep, place = rest.partition(":")
        if not env:
            raise KedrError(f"TARGET={text}: labgrid: needs an environment file, "
                            "labgrid:ENV.yaml[:place]")
        if sep and not _PLACE.match(place):
            raise KedrError(f"TARGET={text}: place {place!r} is not a labgrid place name "
                            "(or a comma list of names and patterns such as lab-*)")
        path = Path(os.path.join(launch_dir, os.path.expanduser(env)))
        if not path.is_file():
            raise KedrError(f"TARGET={text}: {env}: no such labgrid environment file")
        return LabgridTarget(environment=path.resolve(), place=place or None)
    raise KedrError(f"TARGET={text}: unknown target; one of qemu, ssh://[user@]host[:port], "
                    "labgrid:ENV.yaml[:place]")


CONSENT = "I_KNOW_THIS_MAY_CRASH"


def check_consent(target: Target, what: str, consent: str,
                  why: str = "fails the driver's kernel calls on purpose") -> None:
    """Refuse a run that fails kernel calls on purpose (``what``: "FAULTS=", "sweep"), or
    that may crash the machine otherwise (``why``: a pack's fuzz test), on a real machine
    unless ``I_KNOW_THIS_MAY_CRASH=1``: it may oops the machine."""
    if target.real and consent.strip() != "1":
        raise KedrError(f"TARGET={target}: {what} {why} "
                        f"and may crash that machine: add {CONSENT}=1 to go ahead")
