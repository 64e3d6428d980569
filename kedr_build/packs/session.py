"""What a pack session tests: the drivers (built and patched already), the kernel,
the pack. Written by ``scons ... check`` as ``session.json`` beside the report and
read by the pytest plugin, so the session can be re-run or inspected alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedr_build.errors import KedrError

if TYPE_CHECKING:
    from kedr_build.devices.attach import Attachment
    from kedr_build.kernel.descriptions import ProvisionedKernel

# JOBS=auto (the default): as many VMs at once as the CPUs allow, decided when the
# session starts (kedr_build/packs/check.py workers()).
AUTO_JOBS = 0

@dataclass(frozen=True)
class DriverUnderTest:
    name: str
    modules: tuple[str, ...]          # the replacement module and the patched drivers (.ko)
    replacement: str                  # the replacement module's name (trace/leak provider)
    command: str                      # the scons command that checks this driver
    workload: str | None = None
    modprobe: tuple[str, ...] = ()
    suppress: str | None = None
    run_command: str = ""             # the scons command that runs it once (FAULTS= added)
    build_error: str = ""             # why it was not built (a batch checks the others)
    devices: tuple[str, ...] = ()     # DEVICES=: emulated devices attached to its VMs


@dataclass(frozen=True)
class Session:
    pack: str                         # the pack file
    kernel: str                       # pinned kernel name (debian-6.1)
    drivers: tuple[DriverUnderTest, ...]
    report_dir: str
    vm_timeout: float = 300.0
    vm_cpus: int | None = None
    tests: tuple[str, ...] = ()       # TEST=: only these pack tests ("" : all)
    shard: tuple[int, int] | None = None   # SHARD=k/N
    jobs: int = 1                     # JOBS=N: VMs at once (pytest-xdist workers); AUTO_JOBS
    env: dict[str, str] = field(default_factory=dict)   # extra, for test kinds
    retries: int = 0                  # RETRIES=N: runs of a failed test again, at most
    kcidb_origin: str = "kedr"        # KCIDB_ORIGIN=: the origin of kcidb.json's objects
    target: str = ""                  # TARGET= a real machine (ssh://...): "" the VM
    ssh_config: str = ""              # SSH_CONFIG=: ssh -F for it

    def to_json(self) -> str:
        data = asdict(self)
        if not self.target:
            # The QEMU guest's session.json as it always was.
            del data["target"], data["ssh_config"]
        return json.dumps(data, indent=2)

    @staticmethod
    def read(path: Path) -> Session:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            drivers = tuple(DriverUnderTest(**{**d, "modules": tuple(d["modules"]),
                                               "modprobe": tuple(d.get("modprobe", ())),
                                               "devices": tuple(d.get("devices", ()))})
                            for d in data.pop("drivers"))
            shard = data.pop("shard", None)
            return Session(drivers=drivers, tests=tuple(data.pop("tests", ())),
                           shard=(int(shard[0]), int(shard[1])) if shard else None, **data)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KedrError(f"{path}: not a pack session file ({e})") from None


def attached(driver: DriverUnderTest, kernel: ProvisionedKernel) -> Attachment | None:
    """The driver's DEVICES= on its slots, for a test kind that boots the VM."""
    if not driver.devices:
        return None
    from kedr_build.devices import catalog
    from kedr_build.devices.attach import attach

    return attach(catalog.lookup(",".join(driver.devices)), kernel)


def parse_shard(text: str) -> tuple[int, int]:
    """SHARD=k/N: the k-th of N shards, 1 <= k <= N."""
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n:
        raise KedrError(f"SHARD={text}: expected k/N with 1 <= k <= N, e.g. SHARD=2/4")
    return k, n
