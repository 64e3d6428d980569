"""An initramfs written in Python: the cpio "newc" format the kernel unpacks.

No cpio binary, no root, no files staged on disk: entries are collected in
memory and written once (virtme-ng's mkinitramfs.py does the same).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from kedr_build.atomic import write_atomic


@dataclass
class Initramfs:
    _entries: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in self._entries:
                self._entries[sub] = (stat.S_IFDIR | mode, b"")

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        if "/" in path:
            self.add_dir(path.rsplit("/", 1)[0])
        self._entries[path] = (stat.S_IFREG | mode, data)

    def add_file(self, path: str, src: Path, mode: int | None = None) -> None:
        if mode is None:
            mode = 0o755 if os.access(src, os.X_OK) else 0o644
        self.add_bytes(path, src.read_bytes(), mode)

    def add_symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        if "/" in path:
            self.add_dir(path.rsplit("/", 1)[0])
        self._entries[path] = (stat.S_IFLNK | 0o777, target.encode())

    def paths(self) -> list[str]:
        return sorted(self._entries)

    def to_bytes(self) -> bytes:
        out = bytearray()
        ino = 1
        # Directories sort before their contents, so the kernel can create them first.
        for name in sorted(self._entries):
            mode, data = self._entries[name]
            _entry(out, ino, name, mode, data)
            ino += 1
        _entry(out, 0, "TRAILER!!!", 0, b"")
        while len(out) % 512:
            out += b"\0"
        return bytes(out)

    def write(self, dest: Path) -> None:
        write_atomic(dest, self.to_bytes())


def _entry(out: bytearray, ino: int, name: str, mode: int, data: bytes) -> None:
    raw_name = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(raw_name), 0)
    out += b"070701" + b"".join(b"%08X" % f for f in fields)
    out += raw_name
    _pad4(out)
    out += data
    _pad4(out)


def _pad4(out: bytearray) -> None:
    while len(out) % 4:
        out += b"\0"
