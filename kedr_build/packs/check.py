"""Run a pack session: write ``session.json`` into the report directory and run
pytest on the pack with the plugin (a subprocess: the caller, SCons, keeps its
own modules and output), streaming pytest's per-test progress. Returns pytest's
exit status: 0 when every check passed.

Every path handed to pytest is absolute (the session's own paths are made so
first): pytest runs in the report directory, whatever directory the caller is in.
A new run starts from an empty report directory (the old one is moved aside in one
rename, then removed), so an old report never sits beside a new one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

from kedr_build import interrupt
from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.packs import report
from kedr_build.packs.pack import parse
from kedr_build.packs.session import AUTO_JOBS, Session
from kedr_build.targets import places

SESSION_NAME = "session.json"


def pytest_command(session_file: Path, pack_file: Path, report_dir: Path,
                   extra: tuple[str, ...] = ()) -> list[str]:
    # no:labgrid: labgrid (TARGET=labgrid:) installs a pytest plugin that every pytest
    # loads, and its collection hook reads item.fixturenames, which the pack's items
    # (plugin.py: CheckItem) do not have: every item was an error with it.
    return [sys.executable, "-m", "pytest", "-p", "kedr_build.packs.plugin",
            "-p", "no:cacheprovider", "-p", "no:labgrid", "-c", str(report_dir / "pytest.ini"),
            "--rootdir", str(report_dir), "-v", "--tb=no", "-o", "junit_family=xunit2",
            "-o", "junit_logging=system-out",
            "-o", "console_output_style=classic",
            "--junitxml", str(report_dir / report.JUNIT_NAME),
            "--kedr-session", str(session_file), *extra, str(pack_file)]


def absolute(session: Session) -> Session:
    """The session with every path in it absolute (relative ones are from the current
    directory)."""
    def ab(p: str) -> str:
        return os.path.abspath(p)

    drivers = tuple(replace(d, modules=tuple(ab(m) for m in d.modules),
                            workload=ab(d.workload) if d.workload else None,
                            suppress=ab(d.suppress) if d.suppress else None)
                    for d in session.drivers)
    return replace(session, pack=ab(session.pack), report_dir=ab(session.report_dir),
                   drivers=drivers)


def groups(session: Session) -> int:
    """How many (driver, test) groups (VM boots) the session runs: what JOBS= can use."""
    pack = parse(Path(session.pack).read_text(), Path(session.pack))
    tests = [t for t in pack.tests if not session.tests or t.name in session.tests]
    count = len(session.drivers) * len(tests)
    if session.shard is not None:
        k, n = session.shard
        count = len(range(k - 1, count, n))
    return count


def workers(session: Session, cpus: int | None = None) -> tuple[int, str]:
    """The xdist workers to start, and the line saying why when it is not JOBS= as given
    ("" when it is). JOBS=N is capped at the session's groups and the CPUs. JOBS=auto
    (AUTO_JOBS, the default) is one VM per CPU this process may run on, at most one per
    group: every boot is single-threaded TCG (one host CPU busy), and most of a device
    pack's time is the guest waiting (QEMU's e1000 holds received frames 1 s after each
    open, the suspend, the unplug), so two groups at once on two CPUs take about the
    time of the longer share. Under an enclosing pytest-xdist run (a test suite's -n 2
    started this check) each of its workers gets its share of the CPUs."""
    cpus = cpus or len(os.sched_getaffinity(0))
    count = max(groups(session), 1)
    if session.jobs == AUTO_JOBS:
        enclosing = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
        share = max(1, cpus // int(enclosing)) if enclosing.isdigit() and int(enclosing) > 0 \
            else cpus
        n = min(count, share)
        return n, (f"kedr-build: JOBS=auto: {n} VMs at once (the session has {count} "
                   f"driver-test groups, one VM each; {share} of this machine's {cpus} "
                   f"CPUs)" if n > 1 else "")
    n = min(session.jobs, count, cpus)
    if n == session.jobs:
        return n, ""
    return n, (f"kedr-build: JOBS={session.jobs}: {n} at once (the session has "
               f"{groups(session)} driver-test groups, one VM each; this machine has "
               f"{cpus} CPUs)")


def fresh_dir(directory: Path) -> None:
    """An empty ``directory``: an old one (an earlier run's reports) is moved aside in one
    rename, then removed."""
    if directory.exists():
        aside = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        try:
            directory.rename(aside)
        except OSError as e:
            raise KedrError(f"{directory}: cannot move the old reports aside: "
                            f"{e.strerror or e}") from None
        shutil.rmtree(aside, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def run_session(session: Session) -> int:
    session = absolute(session)
    report_dir = Path(session.report_dir)
    pack_source = Path(session.pack)
    if pack_source.resolve().parent == report_dir.resolve():
        # The session of an earlier run, run again: keep its pack through the clean-up.
        pack_text = pack_source.read_bytes()
        fresh_dir(report_dir)
        pack_source.write_bytes(pack_text)
    else:
        fresh_dir(report_dir)
    # The pack as run, beside its report: the session collects this copy.
    pack_copy = report_dir / Path(session.pack).name
    if Path(session.pack).resolve() != pack_copy.resolve():
        shutil.copyfile(session.pack, pack_copy)
    session = Session(**{**session.__dict__, "pack": str(pack_copy)})
    write_atomic(report_dir / SESSION_NAME, session.to_json().encode())
    # An empty ini of its own: the session never reads the settings of whatever
    # project the report directory happens to be in.
    write_atomic(report_dir / "pytest.ini", b"[pytest]\n")
    # JOBS=N: N pytest-xdist workers, each booting its own VMs (plugin.py keeps the
    # items of one boot on one worker).
    n, why = workers(session)
    if why:
        print(why, flush=True)
    jobs = ("-n", str(n)) if n > 1 else ()
    cmd = pytest_command(report_dir / SESSION_NAME, pack_copy, report_dir, jobs)
    print(f"kedr-build: pack {Path(session.pack).stem}: {shlex.join(cmd)}", flush=True)
    return _run_pytest(cmd, report_dir)


# What a pytest-xdist worker is told, by xdist and by our plugin: the session's own
# workers get theirs; one inherited from an enclosing run (``scons check`` started by a
# test in someone's worker gw1) is not the session's.
_XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID",
              places.WORKER_ENV)


def _run_pytest(cmd: list[str], cwd: Path) -> int:
    """pytest's exit status. It gets SIGTERM when we die (even by SIGKILL) or are
    interrupted: it then writes its reports as interrupted and exits; so do we."""
    env = {k: v for k, v in os.environ.items() if k not in _XDIST_ENV}
    proc = interrupt.spawn(cmd, cwd=cwd, env=env, on_parent_death=signal.SIGTERM,
                           forward=signal.SIGTERM)
    try:
        status = proc.wait()
    finally:
        interrupt.release(proc)
    interrupt.check()
    return status
