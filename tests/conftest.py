"""Shared fixtures. The pinned kernel is provisioned on first use (no skipping:
a test that needs it fails if it cannot be had)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kedr_build.filelock import locked
from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import (DEFAULT_KERNEL, ProvisionedKernel, available,
                                            cache_dir)
from kedr_build.ko.symvers import read_symvers

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pinned_kernel() -> ProvisionedKernel:
    return provision.ensure()


@pytest.fixture(scope="session")
def junit_xsd() -> Path:
    """The JUnit XML schema CI tools validate against (the Jenkins xunit plugin's
    junit-10.xsd), as pytest's own test suite uses it: taken from the source
    distribution of the installed pytest on PyPI, once, into the cache."""
    version = pytest.__version__
    xsd = cache_dir() / "schemas" / f"pytest-{version}-junit-10.xsd"
    with locked(xsd.parent / ".lock"):      # one xdist worker downloads it
        if not xsd.is_file():
            _download_xsd(version, xsd)
    return xsd


def _download_xsd(version: str, xsd: Path) -> None:
    download = xsd.parent / f"pytest-{version}-sdist"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", f"pytest=={version}", "-d", str(download)],
                   check=True, capture_output=True)
    (sdist,) = download.glob("pytest-*.tar.gz")
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(f"pytest-{version}/testing/example_scripts/junit-10.xsd")
        assert member is not None
        tmp = xsd.with_name(xsd.name + ".tmp")
        tmp.write_bytes(member.read())
    tmp.rename(xsd)


# Every pinned kernel (kedr_build/kernel/pinned/*.toml), provisioned on first use:
# tests that take `kernel` run once per kernel, ids "debian-6.1", "debian-6.12".
KERNELS = available()


@pytest.fixture(scope="session", params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> ProvisionedKernel:
    name: str = request.param
    return provision.ensure(name)


def on_kernel(name: str) -> pytest.MarkDecorator:
    """Run a test on one pinned kernel only (instead of each): for the real-machine
    tests (TARGET=ssh://, labgrid:) whose steps beyond the QEMU guest's are the host's
    Python, the same for every kernel, while the guest scripts they run are proven on
    each kernel in QEMU. The machine files spread over the kernels (the suite's time:
    each of these costs 2-4 min a kernel): labgrid's single machine on 6.12 (its
    basic, refusal, attach and fuzz-crash tests), its two places and the sweep on
    real machines on 6.1, ssh on 6.1 (kinds: chardev and errleak on 6.1, labgrid's
    panic_on_warn machine on 6.12). Also racefree's race (test_fundamentals_vm.py) on
    6.12: its reduction is the host's Python."""
    assert name in KERNELS, f"{name} is not a pinned kernel ({', '.join(KERNELS)})"
    return pytest.mark.parametrize("kernel", [name], indirect=True)


def kernel_name(kernel: ProvisionedKernel) -> str:
    assert kernel.description is not None
    return kernel.description.name


def exported(kernel: ProvisionedKernel, *candidates: str) -> str:
    """The first of the names the kernel exports: which variant of an API a call on
    this kernel compiles to (kmalloc_trace on 6.1, __kmalloc_cache_noprof on 6.12),
    decided by its Module.symvers, never by its version number."""
    exports = _exports(kernel.symvers)
    for name in candidates:
        if name in exports:
            return name
    raise AssertionError(f"kernel {kernel.release} exports none of {candidates}")


def has_export(kernel: ProvisionedKernel, name: str) -> bool:
    """Does the kernel export ``name`` (its Module.symvers)?"""
    return name in _exports(kernel.symvers)


_EXPORTS: dict[Path, set[str]] = {}


def _exports(symvers: Path) -> set[str]:
    if symvers not in _EXPORTS:
        _EXPORTS[symvers] = set(read_symvers(symvers))
    return _EXPORTS[symvers]


def outputs(build: Path, name: str, kernel: ProvisionedKernel | str) -> Path:
    """Where scons puts a driver's outputs for a pinned kernel under BUILD_DIR=build:
    build/<name> for the default kernel, build/<kernel>/<name> for another
    (kedr_build.config.kernel_build_dir)."""
    from kedr_build.kernel.descriptions import DEFAULT_KERNEL

    kname = kernel if isinstance(kernel, str) else kernel_name(kernel)
    return build / name if kname == DEFAULT_KERNEL else build / kname / name


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """Debian's chromium through selenium, headless: a report page as a browser renders it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    # Chromium's own profile directory (/tmp/org.chromium.Chromium.*) outlives quit():
    # a profile of ours is removed with the context.
    with tempfile.TemporaryDirectory(prefix="kedr-chromium-") as profile:
        options = Options()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    f"--user-data-dir={profile}"):
            options.add_argument(arg)
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            yield browser
        finally:
            browser.quit()


def kcidb_data(report_dir: Path) -> dict[str, Any]:
    """report/kcidb.json, validated by KernelCI's kcidb-io as its latest schema."""
    import json

    import kcidb_io  # type: ignore[import-untyped]

    data: dict[str, Any] = json.loads((report_dir / "kcidb.json").read_text())
    kcidb_io.schema.LATEST.validate_exactly(data)
    return data


def kcidb_statuses(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(driver, test path) -> KCIDB status, of a kcidb.json."""
    drivers = {b["id"]: b["misc"]["driver"] for b in data["builds"]}
    return {(drivers[t["build_id"]], t["path"]): t["status"] for t in data["tests"]}


def run_scons(args: list[str], env_extra: dict[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the project's scons (as a user would) and capture its output."""
    env = dict(os.environ)
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-m", "SCons", "-C", str(REPO), "-Q", *args],
                          capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"scons {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def built_multi(tmp_path_factory: pytest.TempPathFactory, pinned_kernel: ProvisionedKernel) -> Path:
    build = tmp_path_factory.mktemp("build-multi")
    run_scons([f"MODULE={REPO / 'examples/multi'}", f"BUILD_DIR={build}"])
    return build / "multi"


@pytest.fixture(scope="session")
def built_chardev(tmp_path_factory: pytest.TempPathFactory, kernel: ProvisionedKernel) -> Path:
    build = tmp_path_factory.mktemp("build-chardev")
    run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}",
               f"KERNEL={kernel_name(kernel)}"])
    return outputs(build, "chardev", kernel)


@pytest.fixture(scope="session")
def dkms_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One BUILD_DIR per DKMS package for the session (``<this>/<package>``): the corpus
    test builds each package there, and the VM test's ``scons DKMS=... run`` finds it
    built (SCons: up to date) instead of building it again."""
    return tmp_path_factory.mktemp("dkms-builds")


@pytest.fixture(scope="session")
def built(pinned_kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/modsrc built once per session: hello_mod.ko, repl.ko, Module.symvers."""
    dest = tmp_path_factory.mktemp("kmods")
    shutil.copytree(REPO / "tests" / "data" / "modsrc", dest, dirs_exist_ok=True)
    proc = subprocess.run(["make", "-C", str(pinned_kernel.kdir), f"M={dest}", "modules"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


NOT_RUN = ("skipped", "xfailed", "xpassed")


def _reason(report: pytest.TestReport) -> str:
    if getattr(report, "wasxfail", None) is not None:
        return f"xfail: {report.wasxfail}" if report.wasxfail else "xfail"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A skipped test is a missing test, and an xfail (or an xpass) a test whose
    # verdict is ignored: either makes the run fail, naming the tests and why.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    offenders = [(kind, r) for kind in NOT_RUN for r in reporter.stats.get(kind, [])]
    if not offenders:
        return
    reporter.write_line("")
    reporter.write_line(f"kedr-build: {len(offenders)} test(s) skipped, xfailed or xpassed; "
                        "every test must run and pass:", red=True, bold=True)
    for kind, r in offenders:
        reporter.write_line(f"  {kind.upper()} {r.nodeid}: {_reason(r)}", red=True)
    if session.exitstatus == 0:
        session.exitstatus = 1


# The quick tier (README, "Quick start"): `./kedr-env pytest --quick` runs the unit and
# integration tests on the default kernel and, of the VM tests, only those marked
# `quick` (the main job's smoke); corpus and DKMS tests are left out. CI (.ci/run)
# runs everything.
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true",
                     help="kedr-build's quick tier: no corpus, no DKMS, VM tests marked "
                          "'quick' only, the default kernel only")


# The longest test files, with their seconds in the last full run (.ci/run --durations,
# 2026-12-07, 46.1 min: its 40 slowest tests summed per file). pytest-xdist gives each
# worker one file at a time (--dist loadfile) in the order of the collection
# (--no-loadscope-reorder; its own order is most tests first), so these start first,
# longest first, and the tail of the run is short files on both workers instead of
# one long file on one worker while the other idles (a file with a few long VM tests,
# the 2-test device pack or the 1-test 6.12 corpus, came last). Any other file
# follows, most tests first, as pytest-xdist would order it.
LONGEST = {
    "tests/test_fundamentals_vm.py": 900,   # racefree on 6.12 only: 264 s (-n 2, load 2)
    "tests/test_target_labgrid_places_vm.py": 265,  # one kernel since (was 526)
    "tests/test_dkms_corpus.py": 475,
    "tests/test_target_sweep_vm.py": 160,  # one kernel since (was 312)
    "tests/test_device_pack_hw_vm.py": 191,
    "tests/test_fuzz_reboots_vm.py": 360,   # + unload, guest death, lockup, sweep hang
    "tests/test_target_kinds_vm.py": 280,   # one kernel a test
    "tests/test_target_labgrid_vm.py": 250,  # attach (6.12) 169 s + basic, refused on 6.12
    "tests/test_patch_corpus_612.py": 154,
    "tests/test_device_pack_vm.py": 144,
    "tests/test_dkms_vm.py": 126,
    "tests/test_readme.py": 98,
    "tests/test_target_ssh_vm.py": 160,     # attach (6.1) 118 s + basic, refused on 6.1
    "tests/test_vm.py": 72,
}


def _by_length(items: list[pytest.Item]) -> None:
    """Each file's tests together, in their order; the files in LONGEST's order first,
    then the others, most tests first."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    order = sorted(files, key=lambda f: (-LONGEST.get(f, 0), -len(files[f])))
    items[:] = [item for f in order for item in files[f]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _by_length(items)
    if not config.getoption("--quick"):
        return
    keep = [i for i in items if _quick(i)]
    drop = [i for i in items if not _quick(i)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _quick(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("kernel", DEFAULT_KERNEL) != DEFAULT_KERNEL:
        return False
    if item.get_closest_marker("quick") is not None:
        return True
    return not any(item.get_closest_marker(m) for m in ("vm", "corpus", "dkms"))


def copy_checkout(dest: Path) -> Path:
    """A clean copy of this checkout in ``dest`` (the files git tracks or would track,
    as they are now: no build/, no kbuild outputs), sharing .venv by symlink and the
    kernel cache: what a user who just cloned it has."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if not src.is_file():
            continue        # deleted in the work tree, not yet in git
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to((REPO / ".venv").resolve())
    return dest


def checkout_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell: none of this session's own settings
    (PYTHONPATH names this checkout, not the copy)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("PYTEST_", "KEDR_VENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO)) and "/.venv/" not in p)
    env.update(extra or {})
    return env


def live_processes(marker: Path | str, program: str = "") -> list[str]:
    """Live processes (zombies excluded) whose command line names ``marker`` (and
    ``program``): QEMU names its log files, pytest its session file, both under it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(marker) in cmd and program in cmd and state != "Z":
            found.append(f"{proc.name}: {cmd[:300]}")
    return found


def sequence(trace: str, probe: str, remove: str) -> str:
    """The traced calls made from ``probe`` (P) and ``remove`` (R) in time order, each
    run of consecutive ones as one letter: "PRPR" is probe, remove, probe, remove."""
    calls = sorted((float(m.group(1)), "P" if m.group(2) == probe else "R")
                   for m in re.finditer(rf"\s([0-9]+\.[0-9]+): call_\w+: "
                                        rf"call_site=({probe}|{remove})\+", trace))
    return re.sub(r"(.)\1+", r"\1", "".join(k for _, k in calls))
