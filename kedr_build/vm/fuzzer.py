"""The guest fuzzer (``replacements/guest/kfuzz.c``), built on the host with
``gcc -static`` (the guest has busybox only), cached by the source's hash under
the kernel cache (``$KEDR_CACHE/guest/``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import cache_dir
from kedr_build.resources import REPLACEMENTS

SOURCE = REPLACEMENTS / "guest" / "kfuzz.c"
FLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread")


def build() -> Path:
    """The static kfuzz binary for this source (built once, then reused)."""
    text = SOURCE.read_bytes()
    key = hashlib.sha256(text + " ".join(FLAGS).encode()).hexdigest()[:16]
    dest = cache_dir() / "guest" / f"kfuzz-{key}"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise KedrError("gcc not found: the guest fuzzer (replacements/guest/kfuzz.c) is "
                        "built on the host with gcc -static")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        proc = subprocess.run([gcc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
            raise KedrError(f"{SOURCE}: gcc -static failed: {first}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
