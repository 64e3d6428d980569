"""One build at a time per output directory, and one driver per output directory.

Two ``scons MODULE=examples/chardev`` started together would write the same
outputs (plan, replacement module, patched copies) at once. :func:`claim` takes an exclusive
``flock`` on ``<outdir>/.kedr-lock`` for the rest of the process (the kernel drops
it when the process ends, however it ends, so a killed build never leaves a stale
lock); a second build prints ``kedr-build: waiting for <holder>`` once and waits.
The lock file names its holder (pid and command line) for that message.

Output directories are named after the driver directory (``build/<name>/``), so
``a/drv`` and ``b/drv`` would share ``build/drv/``. :func:`claim` records which
source an output directory belongs to in ``<outdir>/.kedr-source`` and refuses
another one with one line (use ``BUILD_DIR=`` to keep both, or remove the old
outputs). Light on purpose: the SConstruct calls it on every run.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError

LOCK = ".kedr-lock"
SOURCE = ".kedr-source"
FAILED = "FAILED"
_held: dict[str, int] = {}   # outdir -> open lock fd, for the life of the process


def _describe(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another kedr-build"


def claim(outdir: str | os.PathLike[str], source: str | os.PathLike[str] | None,
          say: Callable[[str], None] | None = None) -> None:
    """Lock ``outdir`` for this process (waiting for another holder) and check that it
    holds the outputs of ``source`` (the driver directory or the KO= file; None: any)."""
    out = Path(outdir)
    key = str(out.resolve())
    if key in _held:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise KedrError(f"{out}: cannot create the output directory: {e.strerror or e}") \
            from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            (say or _stderr)(f"kedr-build: waiting for {_describe(fd)} (it holds {out})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode())
    except OSError as e:
        os.close(fd)
        raise KedrError(f"{out / LOCK}: cannot lock: {e.strerror or e}") from None
    except BaseException:
        os.close(fd)
        raise
    _held[key] = fd
    if source is not None:
        _check_source(out, Path(source))


def _check_source(out: Path, source: Path) -> None:
    record = out / SOURCE
    want = str(source.resolve())
    try:
        have = record.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        have = ""
    except (OSError, UnicodeDecodeError):
        have = ""
    if have and have != want:
        raise KedrError(f"{out}: holds the outputs of {have}, not of {want} (two sources "
                        f"with the same name); give BUILD_DIR= another directory, or "
                        f"remove {out}")
    if have != want:
        write_atomic(record, (want + "\n").encode())


def record_outcome(outdir: str | os.PathLike[str], failures: list[tuple[str, str]],
                   causes: Sequence[str] = ()) -> None:
    """After a build: ``<outdir>/FAILED`` lists the failed targets and the causes
    reported (so outputs left beside them are not taken for a result), or is removed
    when nothing failed."""
    marker = Path(outdir) / FAILED
    try:
        if failures:
            text = "".join(f"{target}: {why}\n" for target, why in failures)
            text += "".join(f"kedr-build: {cause}\n" for cause in causes)
            write_atomic(marker, ("this build failed; outputs here may be partial or stale:\n"
                                  + text).encode())
        else:
            marker.unlink(missing_ok=True)
    except (OSError, KedrError):
        pass   # reporting only: the build's own status stands


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
