"""Memory the host reads after the guest is gone: the fuzzer's record, and a reduction
boot's resume state, kept in an ivshmem device's BAR backed by a file in the run's
directory (``-object memory-backend-file,share=on`` + ``-device ivshmem-plain``). A
guest that panics, or locks up until the host stops it, takes its tmpfs with it; the
file stays, with what kfuzz wrote there up to the last op (``kfuzz -F``, KFUZZ_SHM:
``replacements/guest/kfuzz.c``).

``kfuzz -B`` beats in it while the guest lives: the host stops a guest whose beat
stopped (:func:`beat`; ``qemu.Stall``), a lockup of the whole kernel nothing in the
guest can report.

The guest finds the device (vendor 0x1af4, device 0x1110) under /sys/bus/pci/devices
and maps its ``resource2`` (:data:`GUEST_FIND`). The host reads the file with the same
static kfuzz the guest runs (``kfuzz -E``: it only reads a file), not a second parser
of its layout.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kedr_build.vm import fuzzer
from kedr_build.vm.reduction import describe_ops

FILE = "kfuzz.shm"          # in the boot's directory
# seconds without a heartbeat after which the host stops the guest as locked up (a
# guest starved by a loaded host beats late, not never: 4 times a second when it runs)
STALL = 20.0
QEMU_ID = "kedrshm"

# Sets $shm to the device's memory (sysfs resource2), enabled; "" when there is none.
GUEST_FIND = """shm=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)" = 0x1af4:0x1110 ] || continue
  [ "$(cat $d/enable)" = 1 ] || echo 1 > $d/enable
  [ -e $d/resource2 ] && shm=$d/resource2
done"""

_RESUME = re.compile(r"^KFUZZ resume inflight=(\d) ops=(\d+) gran=(\d+) attempts=(\d+) "
                     r"located=(\d) at=(\d+)$")


def size(threads: int) -> int:
    """Bytes of shared memory for a record of ``threads`` threads, or a reduction of
    their ops (kfuzz -z; at most 16 threads)."""
    out = subprocess.run([str(fuzzer.build()), "-z", str(min(threads, 16))], capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip())


def beat(path: Path) -> int | None:
    """The guest's heartbeat (``kfuzz -B``: the memory's last 8 bytes, counted up 4 times
    a second); None when it does not beat (not started, or stopped on purpose: 0)."""
    try:
        with path.open("rb") as f:
            f.seek(-8, 2)
            value = int.from_bytes(f.read(8), "little")
    except OSError:
        return None
    return value or None


def qemu_args(path: Path, nbytes: int) -> list[str]:
    """The device, its memory the file ``path`` (made afresh: an old file's bytes would
    be read as this boot's)."""
    path.unlink(missing_ok=True)
    return ["-object", f"memory-backend-file,id={QEMU_ID},share=on,mem-path={path},"
            f"size={nbytes}", "-device", f"ivshmem-plain,memdev={QEMU_ID}"]


@dataclass(frozen=True)
class Readback:
    """What the file held: a fuzz record's operations, or a reduction's attempt in
    flight when the guest ended (``inflight``) and how to resume from it."""

    sequence: str = ""              # a kfuzz sequence file ("" : nothing recorded)
    resume: bool = False            # a reduction's resume state (else a fuzz record)
    inflight: bool = False          # ... an attempt was in flight
    ops: tuple[str, ...] = ()       # ... its ops, described (t0#3 open path=...)
    gran: int = 2
    attempts: int = 0
    located: bool = False           # ... cut after the op in flight


def read(path: Path) -> Readback:
    """The file's record or resume state; an empty :class:`Readback` when it holds
    neither (the guest never wrote it)."""
    if not path.is_file():
        return Readback()
    with tempfile.TemporaryDirectory(prefix="kedr-shm-") as tmp:
        seq = Path(tmp) / "out.seq"
        proc = subprocess.run([str(fuzzer.build()), "-E", str(path), "-o", str(seq)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not seq.is_file():
            return Readback()
        return parse(proc.stdout, seq.read_text())


def parse(stdout: str, sequence: str) -> Readback:
    """``kfuzz -E``'s output and the sequence it wrote."""
    lines = stdout.splitlines()
    m = next(filter(None, map(_RESUME.match, lines)), None)
    if m is None:
        return Readback(sequence if "\nop " in sequence else "")
    return Readback(sequence, True, m.group(1) == "1", describe_ops(lines),
                    int(m.group(3)), int(m.group(4)), m.group(5) == "1")
