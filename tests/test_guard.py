"""The guard in tests/conftest.py: a skipped, xfailed or xpassed test fails the run, and
the run names each one and its reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SAMPLE = '''
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="no hardware here")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known broken")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="thought broken")
def test_xpass():
    pass

def test_skip_inside():
    pytest.skip("decided at run time")
'''


def run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(body)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)


def test_skip_xfail_xpass_fail_the_run_with_reasons(tmp_path: Path) -> None:
    proc = run(tmp_path, SAMPLE)
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout
    assert "kedr-build: 4 test(s) skipped, xfailed or xpassed" in out
    assert "SKIPPED test_sample.py::test_skipped: Skipped: no hardware here" in out
    assert "SKIPPED test_sample.py::test_skip_inside: Skipped: decided at run time" in out
    assert "XFAILED test_sample.py::test_xfail: xfail: known broken" in out
    assert "XPASSED test_sample.py::test_xpass: xfail: thought broken" in out


def test_clean_run_passes(tmp_path: Path) -> None:
    proc = run(tmp_path, "def test_ok():\n    pass\n")
    assert proc.returncode == 0, proc.stdout
    assert "kedr-build:" not in proc.stdout
