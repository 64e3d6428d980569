"""The installable package: a wheel built from the checkout works from anywhere.

The catalog, templates and C runtime live in the checkout's top-level
replacements/; the wheel must carry them inside the package. The test builds
the wheel from a copy of the tracked files, installs it into a fresh virtualenv
and, from a directory outside the checkout with no PYTHONPATH, runs the CLI and
generates a replacement module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO
from kedr_build.kernel.descriptions import ProvisionedKernel


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    # Tracked files and new ones not yet committed (but not what .gitignore ignores).
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                 REPO).split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(tmp / "dist"), str(src)], tmp)
    (wheel,) = (tmp / "dist").glob("kedr_build-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp)
    # Its dependencies (jinja2, scons) from the test environment, not from the network.
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   tmp).strip()
    Path(purelib, "kedr-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def _outside_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env


def test_wheel_runs_from_outside_the_checkout(installed: Path, tmp_path: Path,
                                             pinned_kernel: ProvisionedKernel) -> None:
    env = _outside_env()
    where = _run([str(installed), "-c", "import kedr_build, kedr_build.resources as r; "
                  "print(kedr_build.__file__); print(r.REPLACEMENTS)"], tmp_path, env)
    package, replacements = where.split()
    assert not Path(package).is_relative_to(REPO), package
    assert Path(replacements) == Path(package).parent / "_replacements"
    # Every module of the checkout's package is in the wheel.
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts)
                     for p in (REPO / "kedr_build").rglob("*.py") if p.name != "__main__.py")
    _run([str(installed), "-c", "import importlib, sys; "
          "[importlib.import_module(m) for m in sys.argv[1:]]", *modules], tmp_path, env)

    info = _run([str(installed), "-m", "kedr_build", "kernel", "--json"], tmp_path, env)
    assert pinned_kernel.release in info
    ko = next(pinned_kernel.modules_dir.rglob("loop.ko*"))  # type: ignore[union-attr]
    assert "kfree" in _run([str(installed), "-m", "kedr_build", "inspect", str(ko)],
                           tmp_path, env)

    out = tmp_path / "repl"
    _run([str(installed), "-c", f"""
from pathlib import Path
from kedr_build.intercept import catalog, generate
m = generate.generate([("kfree", "Kfree"), ("mutex_lock", "Mutex_lock")], catalog.load(),
                      Path({str(pinned_kernel.symvers)!r}), Path({str(out)!r}), "kedr_repl_x")
print(m.source)
"""], tmp_path, env)
    for name in generate_files("kedr_repl_x"):
        assert (out / name).is_file(), name
    assert "Kfree" in (out / "kedr_repl_x.c").read_text()


def test_wheel_carries_the_packs(installed: Path, tmp_path: Path) -> None:
    """Built-in packs, the report's JSON Schema and HTML template are package data."""
    out = _run([str(installed), "-c", """
import json
from kedr_build.packs import pack, report
from kedr_build.packs.results import PackReport
basic = pack.load("basic")
print(basic.path, [t.name for t in basic.tests])
print(json.loads(report.SCHEMA.read_text())["title"])
print(len(report.html(PackReport("basic", "k", "passed", (), ()))))
"""], tmp_path, _outside_env())
    path, rest = out.split(" ", 1)
    assert not Path(path).is_relative_to(REPO) and "['load-unload', 'workload']" in rest
    assert "kedr-build pack report, version 2" in out


def generate_files(module: str) -> list[str]:
    from kedr_build.intercept.naming import generated_files
    return [f for f in generated_files(module) if f != "Module.symvers"]
