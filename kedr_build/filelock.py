"""One process at a time in a section that fills a shared cache: ``with locked(path):``
holds an exclusive ``flock`` on ``path`` (created if missing) for the block.

Used where two processes may provision the same thing at once - the pytest-xdist
workers of one test session asking for the same kernel or data on a fresh machine.
The kernel drops the lock when the holder dies, so a killed run leaves none behind.
(Output directories of builds have their own lock: :mod:`kedr_build.buildlock`.)
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
