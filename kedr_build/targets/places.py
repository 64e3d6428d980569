"""TARGET=labgrid:ENV.yaml:PLACES: the places of a labgrid coordinator, acquired while
we use them.

labgrid gives the coordinator (``labgrid-coordinator``: places, who holds each, the
exporters' resources of each) and its client session (labgrid.remote.client): we
list the places, acquire one as ``labgrid-client acquire`` does (refusing one someone
holds), and release it when the process ends, normally, on an error or on
Ctrl-C/SIGTERM (pytest and scons end through ``atexit`` then). ``PLACES`` is one
name, a comma list, or shell-style patterns (``lab-*``), matched against the
coordinator's place names; several places are one session's machines, one for each
pytest-xdist worker (packs/check.py starts one worker per place, and worker ``gwK``
takes the K-th: :func:`place_of_worker`).

The coordinator is the environment's ``options: coordinator_address``, else
``LG_COORDINATOR``, else labgrid's default 127.0.0.1:20408. scons asks it in a child
process (:func:`query`): a process with a gRPC session open must not fork pytest.
"""

from __future__ import annotations

import atexit
import fnmatch
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Any

from kedr_build.errors import KedrError
from kedr_build.targets.spec import LabgridTarget

DEFAULT_COORDINATOR = "127.0.0.1:20408"       # labgrid's own default
CONNECT_TIMEOUT = 20.0                        # seconds to reach the coordinator


def patterns(target: LabgridTarget) -> tuple[str, ...]:
    return tuple(p for p in (target.place or "").split(",") if p)


def coordinator_address(target: LabgridTarget) -> str:
    """Where the coordinator is, as labgrid's RemotePlace looks for it."""
    from labgrid import Environment

    address = os.environ.get("LG_COORDINATOR", DEFAULT_COORDINATOR)
    try:
        env = Environment(config_file=str(target.environment))
    except Exception:   # the file's own errors are said by labgrid.labgrid_target
        return address
    found: str = env.config.get_option("coordinator_address", address)
    return found


@dataclass
class Coordinator:
    """A client session of the coordinator at ``address`` (labgrid's ClientSession)."""

    target: LabgridTarget
    address: str
    session: Any

    def sync(self) -> None:
        self.session.loop.run_until_complete(self.session.sync_with_coordinator())

    def names(self) -> list[str]:
        self.sync()
        return sorted(self.session.places)

    def place(self, name: str) -> Any:
        self.sync()
        place = self.session.places.get(name)
        if place is None:
            raise KedrError(f"TARGET={self.target}: no place {name!r} at the labgrid "
                            f"coordinator {self.address}")
        return place


_SESSIONS: dict[str, Coordinator] = {}


def coordinator(target: LabgridTarget) -> Coordinator:
    """A session of the target's coordinator (one per process); one line when it does
    not answer."""
    address = coordinator_address(target)
    if address in _SESSIONS:
        return replace(_SESSIONS[address], target=target)
    from labgrid.remote.client import start_session

    # labgrid's client logs why it could not connect (on the root logger, which
    # would print it as a second line): kept, and said in our one line.
    said = _Said()
    root = logging.getLogger()
    root.addHandler(said)
    try:
        # The thread's event loop, which labgrid's RemotePlace then shares.
        session = start_session(address)
        _SESSIONS[address] = Coordinator(target, address, session)
        atexit.register(_close, _SESSIONS[address])
    except Exception as e:  # gRPC's, labgrid's ServerError: no coordinator there
        raise KedrError(f"TARGET={target}: cannot reach the labgrid coordinator at "
                        f"{address}: {said.last or _one_line(e)}") from None
    finally:
        root.removeHandler(said)
    return replace(_SESSIONS[address], target=target)


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = _one_line_text(record.getMessage())


def _close(coord: Coordinator) -> None:
    try:
        coord.session.loop.run_until_complete(coord.session.stop())
        coord.session.loop.run_until_complete(coord.session.close())
    except Exception:   # at exit, nothing is left to tell
        pass


def resolve(target: LabgridTarget) -> tuple[str, ...]:
    """The coordinator's places that TARGET='s PLACES names, in its order (each
    pattern's matches sorted); one line naming a pattern that matches none."""
    coord = coordinator(target)
    names = coord.names()
    found: list[str] = []
    for pattern in patterns(target):
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise KedrError(f"TARGET={target}: place {pattern!r} matches none of the "
                            f"labgrid coordinator {coord.address}'s places "
                            f"({', '.join(names) or 'it has none'})")
        found.extend(n for n in matched if n not in found)
    return tuple(found)


# The pack session's pytest-xdist worker this process is (``gwK``), set by the pack
# plugin in each worker (packs/plugin.py). Not PYTEST_XDIST_WORKER: a ``scons run`` or
# ``check`` started from a test in someone else's xdist worker inherits that one, and
# would take the place of a worker it is not (one place, "worker gw1 has no place").
WORKER_ENV = "KEDR_PACK_WORKER"


def place_of_worker(target: LabgridTarget, worker: str | None = None) -> LabgridTarget:
    """The one place this process uses: the K-th of TARGET='s places in the pack
    session's worker ``gwK``, the first outside one (``run``, ``check`` with one
    place)."""
    if target.place is None:
        return target
    worker = worker if worker is not None else os.environ.get(WORKER_ENV, "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    names = resolve(target) if any(c in target.place for c in "*?[") else patterns(target)
    if index >= len(names):
        raise KedrError(f"TARGET={target}: worker {worker} has no place of its own "
                        f"({len(names)} places: {', '.join(names)})")
    return replace(target, place=names[index])


def check_places(target: LabgridTarget) -> tuple[str, ...]:
    """Before anything is built: the coordinator answers, every pattern matches a
    place, and none of them is held (one line naming it and its holder)."""
    names = resolve(target)
    coord = coordinator(target)
    for name in names:
        _refuse_held(replace(target, place=name), coord.place(name))
    return names


def query(target: LabgridTarget) -> tuple[str, ...]:
    """:func:`check_places` in a child process, for scons: gRPC's threads then never
    live in the process that goes on to start pytest (a fork there, with its
    ``preexec_fn``, failed 25 times in 300 while a coordinator session was open)."""
    proc = subprocess.run([sys.executable, "-m", "kedr_build.targets.places", str(target)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(_PREFIX)]
        raise KedrError(lines[-1][len(_PREFIX):] if lines else
                        f"TARGET={target}: asking the labgrid coordinator failed: "
                        f"{_one_line_text(proc.stderr) or proc.returncode}")
    return tuple(proc.stdout.split())


_PREFIX = "kedr-build: "


def main(argv: list[str]) -> int:
    """``python -m kedr_build.targets.places TARGET``: the places, one a line."""
    from kedr_build.targets.spec import parse_target

    try:
        target = parse_target(argv[0])
        if not isinstance(target, LabgridTarget) or target.place is None:
            raise KedrError(f"TARGET={argv[0]}: not labgrid:ENV.yaml:PLACES")
        names = check_places(target)
    except KedrError as e:
        print(f"{_PREFIX}{e}", file=sys.stderr)
        return 1
    print("\n".join(names))
    return 0


def _refuse_held(target: LabgridTarget, place: Any) -> None:
    if place.acquired:
        raise KedrError(f"TARGET={target}: place {target.place} is already acquired by "
                        f"{place.acquired}; nothing was done (it is theirs until they "
                        f"release it: labgrid-client -p {target.place} release)")


_HELD: dict[LabgridTarget, str] = {}     # acquired by this process -> place name


def acquire(target: LabgridTarget) -> None:
    """Acquire the (one) place, released when this process ends; a place someone
    holds (another user, or another run of ours) is refused in one line, before
    anything touches its machine."""
    assert target.place is not None and "," not in target.place
    if target in _HELD:
        return
    coord = coordinator(target)
    place = coord.place(target.place)
    _refuse_held(target, place)
    from labgrid.remote.generated import labgrid_coordinator_pb2

    request = labgrid_coordinator_pb2.AcquirePlaceRequest(placename=target.place)
    try:
        coord.session.loop.run_until_complete(coord.session.stub.AcquirePlace(request))
        coord.sync()        # the session's view of the place: acquired, its resources
    except Exception as e:  # gRPC's: taken in between, or a resource held by another place
        raise KedrError(f"TARGET={target}: cannot acquire place {target.place}: "
                        f"{_details(e)}; nothing was done") from None
    _HELD[target] = target.place
    atexit.register(_release_at_exit, target)


def release(target: LabgridTarget) -> str:
    """Release the place if this process holds it; "" or why it could not."""
    name = _HELD.pop(target, None)
    if name is None:
        return ""
    from labgrid.remote.generated import labgrid_coordinator_pb2

    coord = _SESSIONS.get(coordinator_address(target))
    if coord is None:
        return f"place {name} not released: no coordinator session"
    try:
        coord.session.loop.run_until_complete(coord.session.stub.ReleasePlace(
            labgrid_coordinator_pb2.ReleasePlaceRequest(placename=name)))
    except Exception as e:
        return f"place {name} not released: {_details(e)}"
    return ""


def _release_at_exit(target: LabgridTarget) -> None:
    why = release(target)
    if why:
        print(f"kedr-build: TARGET={target}: {why}", file=sys.stderr)


def _details(e: BaseException) -> str:
    details = getattr(e, "details", None)
    text = details() if callable(details) else str(e)
    return _one_line_text(str(text))


def _one_line(e: BaseException) -> str:
    return _one_line_text(str(e))


def _one_line_text(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
