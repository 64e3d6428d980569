"""All-or-nothing file writes: a reader sees the old file or the new one, never half.

Light on purpose (os and tempfile only): the SConstruct-time modules use it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kedr_build.errors import KedrError


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file in the same directory and os.replace: all or nothing."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise KedrError(f"{p}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise KedrError(f"{p}: cannot write: {e.strerror}") from None
        raise
