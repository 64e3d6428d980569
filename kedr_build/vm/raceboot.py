"""The boots of a race's reduction (:mod:`kedr_build.vm.races`): each replays a
sequence concurrently in fresh loads of the drivers, up to N times, until one fails
(``replacements/templates/guest-race.sh.j2``), and says how it went."""

from __future__ import annotations

import re
from pathlib import Path

from kedr_build.devices.attach import Attachment
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import CRASHES, run_guest
from kedr_build.vm.races import Boot
from kedr_build.vm.reboots import FreshLoads

_REPLAYED = re.compile(r"^KFUZZ race-replay fails=([01]) of (\d+)$", re.M)
_STARTED = re.compile(r"^KFUZZ race-replay-start (\d+)$", re.M)
BOOT_SECONDS = 120.0      # a boot's timeout beyond its replays'
# A replay still running after this many seconds hangs (the guest's watchdog): racefree's
# 20000 recorded operations replay in about 5 s here (6.1, 6.12, on a loaded host).
REPLAY_SECONDS = 90


def parse(output: str, crashed: bool = False) -> tuple[int, int]:
    """(failures, replays judged) of one boot; (0, 0): no answer (the guest was lost).
    A kernel that crashed (an oops, BUG, GPF or panic on the console) before the end,
    while a replay ran: that replay failed (the boot was fresh; on 6.12 racefree's race
    hit shows so: a general protection fault, then the guest idle)."""
    if m := _REPLAYED.search(output):
        return int(m.group(1)), int(m.group(2))
    started = _STARTED.findall(output)
    return (1, int(started[-1])) if crashed and started else (0, 0)


def booter(kernel: ProvisionedKernel, modules: list[Path], trace_providers: tuple[str, ...],
           intree: tuple[str, ...], check: str, logdir: Path,
           cpus: int | None = None, devices: Attachment | None = None) -> Boot:
    """``devices``: the judged run's DEVICES=, attached to each boot the same way."""
    loads = FreshLoads.of(modules, trace_providers, intree, devices)
    boots = 0

    def boot(sequence: str, replays: int) -> tuple[int, int]:
        nonlocal boots
        boots += 1
        workdir = logdir / f"race-{check}-{boots}"
        job = loads.job("guest-race.sh.j2", workdir, sequence, check=check, replays=replays,
                        limit=REPLAY_SECONDS)
        timeout = BOOT_SECONDS + (REPLAY_SECONDS + 30) * replays
        result = run_guest(kernel, job, workdir, timeout=timeout, cpus=cpus,
                           cut_after_crash=True)
        return parse(result.output, any(p.kind in CRASHES for p in result.problems))

    return boot
