"""All-or-nothing file writes: a reader sees the old file or the new one, never half.

Light on purpose (os and tempfile only): the SConstruct-time modules use it too.

Temporary files are ``.<name>.<random>.tmp`` beside the target. A process killed
(SIGKILL) between creating one and renaming it leaves it behind;
:func:`sweep_stale` removes such leftovers of processes that are gone, and the
first write of a process into a directory calls it there.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from kedr_build.errors import KedrError

_TMP = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp\Z")
# A leftover older than this cannot belong to a write still in progress: a write is
# one open/write/rename (seconds at most even for a large module on a slow disk).
STALE_AFTER = 3600.0
# A write still between its last byte and its rename, in a process that started just
# before this one, is never older than this.
_GRACE = 2.0


def _fail(p: Path, e: OSError) -> KedrError:
    return KedrError(f"{p}: cannot write: {e.strerror or e}")


def sweep_stale(directory: str | os.PathLike[str], now: float | None = None) -> list[Path]:
    """Remove ``.<name>.*.tmp`` leftovers of killed writes in ``directory``.

    A leftover counts as stale when it was last modified (a couple of seconds)
    before this process started, so it is not one of ours, or more than
    :data:`STALE_AFTER` seconds ago (another process would have renamed it long
    since). Returns what was removed; errors are ignored (best effort).
    """
    now = time.time() if now is None else now
    started = now - time.monotonic() + _START_MONOTONIC
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")
                and _TMP.match(entry.name)):
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if mtime < started - _GRACE or now - mtime > STALE_AFTER:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


_START_MONOTONIC = time.monotonic()
_swept: set[str] = set()


def _sweep_once(directory: Path) -> None:
    """:func:`sweep_stale` the first time this process writes into ``directory``
    (leftovers are older than the process: once is enough, and a directory of
    thousands of outputs is not rescanned per file)."""
    key = os.path.abspath(directory)
    if key not in _swept:
        _swept.add(key)
        sweep_stale(directory)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file in the same directory and os.replace: all or nothing."""
    write_atomic_group([(path, data)], mode)


def write_section(path: Path, begin: str, end: str, body: str, what: str) -> None:
    """Put ``body`` between the marker lines ``begin`` and ``end`` of a text file (a
    table generated into README.md), all or nothing; ``what`` names the markers in
    the one-line error for a file without them."""
    text = path.read_text()
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise KedrError(f"{path}: no {what} markers ({begin!r} ... {end!r})")
    write_atomic(path, (head + begin + "\n" + body + end + rest.split(end, 1)[1]).encode())


def write_atomic_group(files: Sequence[tuple[str | os.PathLike[str], bytes]],
                       mode: int = 0o644) -> None:
    """Write several files all or nothing (e.g. a module and its manifest).

    Every temporary file is created and written first, so a missing or read-only
    directory fails before any target is touched; then each is renamed into
    place. Should a later rename fail, the targets already renamed are removed,
    so no file of the group is left without the others.
    """
    staged: list[tuple[Path, str]] = []
    try:
        for path, data in files:
            p = Path(path)
            _sweep_once(p.parent)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
            except OSError as e:
                raise _fail(p, e) from None
            staged.append((p, tmp))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, mode)
            except OSError as e:
                raise _fail(p, e) from None
        done: list[Path] = []
        for p, tmp in staged:
            try:
                os.replace(tmp, p)
            except OSError as e:
                for q in done:
                    try:
                        os.unlink(q)
                    except OSError:
                        pass
                raise _fail(p, e) from None
            done.append(p)
        staged = []
    finally:
        for _p, tmp in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
