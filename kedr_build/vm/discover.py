"""What a driver registered, found from the kernel: the guest snapshots
``/proc/devices``, ``/sys/class/misc``, the device nodes devtmpfs made under
``/dev``, ``/sys/block`` and ``/sys/class/net`` before the first load and after
the last, and prints the lines that are new (``guest-run.sh.j2``). This reads
them back."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Interfaces:
    char_majors: tuple[str, ...] = ()     # "240 kedr_foo" (new in /proc/devices)
    block_majors: tuple[str, ...] = ()
    misc: tuple[str, ...] = ()            # /sys/class/misc/<name>
    char_nodes: tuple[str, ...] = ()      # /dev/... (devtmpfs)
    block_nodes: tuple[str, ...] = ()
    block: tuple[str, ...] = ()           # /sys/block/<name>
    net: tuple[str, ...] = ()             # /sys/class/net/<name>

    @property
    def empty(self) -> bool:
        return not any((self.char_majors, self.block_majors, self.misc, self.char_nodes,
                        self.block_nodes, self.block, self.net))

    def describe(self) -> str:
        parts = [f"{label}: {', '.join(v)}" for label, v in (
            ("char majors", self.char_majors), ("block majors", self.block_majors),
            ("misc", self.misc), ("char nodes", self.char_nodes),
            ("block nodes", self.block_nodes), ("block devices", self.block),
            ("net interfaces", self.net)) if v]
        return "; ".join(parts) or "no interface"


def parse(lines: list[str] | tuple[str, ...]) -> Interfaces:
    """The guest's new snapshot lines ("chr 240 foo", "misc foo", "node c /dev/foo", ...)."""
    got: dict[str, list[str]] = {k: [] for k in ("chr", "blk", "misc", "node c", "node b",
                                                 "block", "net")}
    for line in lines:
        words = line.split()
        if len(words) >= 3 and words[0] == "node" and words[1] in ("c", "b"):
            got[f"node {words[1]}"].append(words[2])
        elif len(words) >= 3 and words[0] in ("chr", "blk"):
            got[words[0]].append(f"{words[1]} {' '.join(words[2:])}")
        elif len(words) == 2 and words[0] in ("misc", "block", "net"):
            got[words[0]].append(words[1])
    return Interfaces(char_majors=tuple(got["chr"]), block_majors=tuple(got["blk"]),
                      misc=tuple(sorted(got["misc"])), char_nodes=tuple(sorted(got["node c"])),
                      block_nodes=tuple(sorted(got["node b"])), block=tuple(sorted(got["block"])),
                      net=tuple(sorted(got["net"])))


_SWEEP = re.compile(r"^KFUZZ sweep path=(\S+) ioctls=(\d+) answered=(\d+) cmds=(\S*)$")


def ioctl_commands(fuzz_lines: tuple[str, ...]) -> str:
    """The ioctl commands the fuzzer's sweep (``kfuzz -S``) found each node answers:
    ``ioctl commands answered (65536 tried a node: every type, nr 0 up, each range of 32
    as _IO, then _IOR/_IOW/_IOWR of 4 and 8 bytes; 0xDDSSTTNN, * any): /dev/x:
    0x******03; /dev/y: 0x8004**05, 0xc0086b01`` (``0x******03``: nr 3 of every type in
    every shape swept; ``0x****6b03``: that type and nr in every shape; all: every
    command swept; nodes by path); empty when no node answered any."""
    found, tried = [], ""
    for line in fuzz_lines:
        if m := _SWEEP.match(line.strip()):
            tried = m.group(2)
            if int(m.group(3)):
                found.append(f"{m.group(1)}: {m.group(4).replace(',', ', ')}")
    if not found:
        return ""
    return (f"ioctl commands answered ({tried} tried a node: every type, nr 0 up, each "
            f"range of 32 as _IO, then _IOR/_IOW/_IOWR of 4 and 8 bytes; 0xDDSSTTNN, * "
            f"any): {'; '.join(sorted(found))}")
