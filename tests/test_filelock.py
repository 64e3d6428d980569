"""Two processes provisioning the same thing at once (two `./kedr-env` runs on a fresh
machine, or the xdist workers of one test session): the second waits for the first
and then finds it done, instead of renaming a tree over the one in use."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from kedr_build.filelock import locked
from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, describe


def test_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / ".lock"
    waiter = [sys.executable, "-c", "import sys; from pathlib import Path; "
              "from kedr_build.filelock import locked\n"
              f"with locked(Path({str(lock)!r})): print('got it')"]
    with locked(lock):
        proc = subprocess.Popen(waiter, stdout=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(1.0)
        assert proc.poll() is None, "the second process did not wait for the lock"
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "got it"


def test_kernel_is_provisioned_once_by_two_at_once(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    desc = describe(DEFAULT_KERNEL)
    root = provision.kernel_root(desc, tmp_path)
    calls: list[str] = []

    def slow_provision(d: object, r: Path, log: bool) -> str:
        calls.append(threading.current_thread().name)
        time.sleep(0.5)                  # the download: the other caller arrives meanwhile
        r.mkdir(parents=True)
        (r / provision.STAMP).write_text("test\n")
        return "provisioned"

    monkeypatch.setattr(provision, "_provision", slow_provision)
    monkeypatch.setattr(provision, "layout", lambda d, r: "found")
    monkeypatch.setattr(provision, "_with_vmlinux", lambda k, log: k)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(
        provision.ensure_description(desc, tmp_path, log=False)), name=f"t{i}")
        for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(calls) == 1, f"provisioned by {calls}"
    assert sorted(map(str, results)) == ["found", "provisioned"]
    assert root.is_dir()
