"""Run a pack session: write ``session.json`` into the report directory and run
pytest on the pack with the plugin (a subprocess: the caller, SCons, keeps its
own modules and output), streaming pytest's per-test progress. Returns pytest's
exit status: 0 when every check passed.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
from pathlib import Path

from kedr_build import interrupt
from kedr_build.atomic import write_atomic
from kedr_build.packs import report
from kedr_build.packs.session import Session

SESSION_NAME = "session.json"


def pytest_command(session_file: Path, pack_file: Path, report_dir: Path,
                   extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "kedr_build.packs.plugin",
            "-p", "no:cacheprovider", "-c", str(report_dir / "pytest.ini"),
            "--rootdir", str(report_dir), "-v", "--tb=no", "-o", "junit_family=xunit2",
            "-o", "console_output_style=classic",
            "--junitxml", str(report_dir / report.JUNIT_NAME),
            "--kedr-session", str(session_file), *extra, str(pack_file)]


def run_session(session: Session) -> int:
    report_dir = Path(session.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
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
    jobs = ("-n", str(session.jobs)) if session.jobs > 1 else ()
    cmd = pytest_command(report_dir / SESSION_NAME, pack_copy, report_dir, jobs)
    print(f"kedr-build: pack {Path(session.pack).stem}: {shlex.join(cmd)}", flush=True)
    return _run_pytest(cmd, report_dir)


def _run_pytest(cmd: list[str], cwd: Path) -> int:
    """pytest's exit status. It gets SIGTERM when we die (even by SIGKILL) or are
    interrupted: it then writes its reports as interrupted and exits; so do we."""
    proc = interrupt.spawn(cmd, cwd=cwd, on_parent_death=signal.SIGTERM,
                           forward=signal.SIGTERM)
    try:
        status = proc.wait()
    finally:
        interrupt.release(proc)
    interrupt.check()
    return status
