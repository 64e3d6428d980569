"""`scons MODULE=dir` end to end, in temporary copies of the examples."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel


@pytest.fixture
def make_log(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose `make` logs each call, then runs the real make."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "make.log"
    real = shutil.which("make")
    assert real
    wrapper = bindir / "make"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}, log


def copy_example(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(REPO / "examples" / name, dest)
    return dest


def copy_kdir(kernel: ProvisionedKernel, dest: Path) -> Path:
    """Another kernel build tree: a copy of the pinned one (so it builds)."""
    shutil.copytree(kernel.kdir, dest, symlinks=True)
    for link in ("scripts", "tools"):
        target = (kernel.kdir / link).resolve()
        (dest / link).unlink()
        (dest / link).symlink_to(target)
    return dest


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_build_incremental_and_null(tmp_path: Path, make_log: tuple[dict[str, str], Path],
                                    pinned_kernel: ProvisionedKernel) -> None:
    env, log = make_log
    driver = copy_example("chardev", tmp_path)
    build = tmp_path / "build"
    args = [f"MODULE={driver}", f"BUILD_DIR={build}"]
    run_scons(args, env)
    ko = build / "chardev" / "kedr_chardev.ko"
    assert ko.read_bytes()[:4] == b"\x7fELF"
    assert (build / "chardev" / "Module.symvers").is_file()
    # kbuild ran in the driver's directory and left what it leaves there on its own.
    plain = copy_example("chardev", tmp_path / "plain")
    subprocess.run(["make", "-C", str(pinned_kernel.kdir), f"M={plain}", "modules"],
                   check=True, capture_output=True)
    assert sorted(str(p.relative_to(driver)) for p in driver.rglob("*")) == \
        sorted(str(p.relative_to(plain)) for p in plain.rglob("*"))
    assert any("modules" in c for c in calls(log))

    log.unlink()
    proc = run_scons(args, env)
    assert "is up to date" in proc.stdout
    assert calls(log) == [], "a null build must not spawn make"

    # Editing a header rebuilds; kbuild recompiles only what includes it.
    before = ko.read_bytes()
    header = driver / "include" / "buffer.h"
    header.write_text(header.read_text() + "\n/* edited */\n")
    run_scons(args, env)
    assert any(c.endswith("modules") for c in calls(log))
    log.unlink()
    src = driver / "main.c"
    src.write_text(src.read_text().replace("ready, buffer", "ready (edited), buffer"))
    run_scons(args, env)
    assert any(c.endswith("modules") for c in calls(log))
    assert ko.read_bytes() != before
    assert b"ready (edited), buffer" in ko.read_bytes()


def test_changing_kdir_rebuilds(tmp_path: Path, make_log: tuple[dict[str, str], Path],
                                pinned_kernel: ProvisionedKernel) -> None:
    env, log = make_log
    driver = copy_example("multi", tmp_path)
    build = tmp_path / "build"
    run_scons([f"MODULE={driver}", f"BUILD_DIR={build}"], env)
    # Another kernel tree (a copy of the same kernel's, so it builds): KDIR is part of
    # the signature.
    other = copy_kdir(pinned_kernel, tmp_path / "other-kdir")
    log.unlink()
    run_scons([f"MODULE={driver}", f"BUILD_DIR={build}", f"KDIR={other}"], env)
    assert any(c.endswith("modules") for c in calls(log))
    names = sorted(p.name for p in (build / "multi").glob("*.ko"))
    assert names == ["multi_consumer.ko", "multi_crc.ko", "multi_provider.ko"]


def test_clean_parallel_and_verbose(tmp_path: Path, pinned_kernel: ProvisionedKernel) -> None:
    driver = copy_example("multi", tmp_path)
    build = tmp_path / "build"
    args = [f"MODULE={driver}", f"BUILD_DIR={build}"]
    proc = run_scons(["-j", "2", "V=1", *args])
    assert "-j2" in proc.stdout                      # make got the job count
    assert "gcc-12" in proc.stdout                   # V=1: kbuild shows its commands
    assert (build / "multi" / "multi_crc.ko").is_file()
    run_scons(["-c", *args])
    assert not list((build / "multi").glob("*.ko"))


def test_compile_error_reaches_user_verbatim(tmp_path: Path,
                                             pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={REPO / 'tests/drivers/broken'}", f"BUILD_DIR={build}"],
                     check=False)
    assert proc.returncode != 0
    assert re.search(r"error: .this_identifier_does_not_exist. undeclared",
                     proc.stdout + proc.stderr)
    assert "kedr-build:" in proc.stdout and "kbuild failed" in proc.stdout
    assert not (build / "broken" / "kedr_broken.ko").exists()


@pytest.mark.parametrize("args,message", [
    ([], "MODULE=<driver directory> is required"),
    (["MODULE=/nonexistent/driver"], "MODULE=/nonexistent/driver: no such directory"),
    (["MODULE=SConstruct"], "MODULE=SConstruct: not a directory"),
    (["MODULE=tests", "BUILD_DIR=/tmp/kedr-x"], "no Kbuild or Makefile"),
    (["MODULE=examples/chardev", "KDIR=/tmp"], "KDIR=/tmp: not a kernel build tree"),
    (["MODULE=examples/chardev", "FOO=1"], "unknown variable FOO="),
    (["MODULE=examples/chardev", "KERNEL=debian-7"],
     "KERNEL=debian-7: unknown kernel; known: debian-6.1, debian-6.12"),
    (["MODULE=examples/chardev", "WORKLOAD=/nope.sh"], "WORKLOAD=/nope.sh: no such file"),
    # It once said "no such file".
    (["MODULE=examples/chardev", "WORKLOAD=examples"],
     "WORKLOAD=examples: is a directory; give the script the guest runs (a file)"),
])
def test_bad_input_is_one_clear_line(args: list[str], message: str,
                                     pinned_kernel: ProvisionedKernel) -> None:
    proc = run_scons(args, check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kedr-build:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_interception_outputs_and_function_selection(tmp_path: Path,
                                                     pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}",
                      "FUNCTIONS=kfree,mutex_lock,vfree"])
    out = build / "chardev"
    plan = json.loads((out / "plan.json").read_text())
    assert plan == {"replacement_module": "kedr_repl_chardev",
                    "rename": {"kfree": "Kfree", "mutex_lock": "Mutex_lock"}}
    assert "FUNCTIONS: vfree is not imported by kedr_chardev.ko; skipped" in proc.stdout
    manifest = json.loads((out / "patched" / "kedr_chardev.ko.json").read_text())
    assert {r["old"]: r["call_sites"] for r in manifest["renames"]} == \
        {"kfree": 3, "mutex_lock": 2}
    assert (out / "kedr_repl_chardev" / "kedr_repl_chardev.ko").is_file()
    # No interruptible wait among these functions: kedr_signal_possible() goes unused,
    # and was "defined but not used" in every such module's build.
    log = (out / "kedr_repl_chardev" / "build.log").read_text()
    assert [line for line in log.splitlines() if "warning:" in line] == []
    for script in ("load.sh", "unload.sh"):
        assert os.access(out / script, os.X_OK)
    assert "insmod" in (out / "load.sh").read_text()


def test_unknown_function_lists_close_matches(tmp_path: Path,
                                              pinned_kernel: ProvisionedKernel) -> None:
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={tmp_path}",
                      "FUNCTIONS=kfre"], check=False)
    assert proc.returncode != 0
    assert "kedr-build: no catalog entry for function 'kfre'; close matches: kfree" \
        in proc.stdout
    assert not (tmp_path / "chardev" / "patched" / "kedr_chardev.ko").exists()


def test_run_without_a_bootable_kernel_says_so(tmp_path: Path,
                                               pinned_kernel: ProvisionedKernel) -> None:
    kdir = copy_kdir(pinned_kernel, tmp_path / "kdir")
    assert not Path(f"/boot/vmlinuz-{pinned_kernel.release}").exists()
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"KDIR={kdir}",
                      f"BUILD_DIR={tmp_path / 'build'}", "run"], check=False)
    assert proc.returncode != 0
    assert f"kedr-build: KDIR={kdir}: no kernel image to boot" in proc.stdout


@pytest.fixture
def no_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An empty kernel cache, and a PATH whose make and apt-get only log that they ran."""
    bindir = tmp_path / "nobin"
    bindir.mkdir()
    log = tmp_path / "tools.log"
    for tool in ("make", "apt-get", "dpkg-deb"):
        (bindir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit 1\n')
        (bindir / tool).chmod(0o755)
    cache = tmp_path / "empty-cache"
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "KEDR_CACHE": str(cache)}, log


def test_help_lists_every_variable_without_a_kernel(no_tools: tuple[dict[str, str], Path],
                                                    tmp_path: Path) -> None:
    from kedr_build.config import VARIABLES

    env, log = no_tools
    for args in (["-h"], ["-h", f"MODULE={REPO / 'examples/chardev'}"]):
        proc = run_scons(args, env)
        for name, var in VARIABLES.items():
            assert f"\n{name}: {var.help}" in proc.stdout, name
            assert f"default: {var.default}" in proc.stdout
    assert calls(log) == []
    assert not (tmp_path / "empty-cache").exists()


def test_clean_needs_no_kernel_and_no_make(tmp_path: Path, no_tools: tuple[dict[str, str], Path],
                                           pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    args = [f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}"]
    run_scons(args)
    out = build / "chardev"
    assert (out / "patched" / "kedr_chardev.ko").is_file()
    env, log = no_tools
    proc = run_scons(["-c", *args], env)
    assert calls(log) == [] and not (tmp_path / "empty-cache").exists()
    # Every declared output is gone: emitters named them all.
    for gone in ("kedr_chardev.ko", "Module.symvers", "plan.json", "tail_calls.json",
                 "load.sh", "unload.sh",
                 "patched/kedr_chardev.ko", "patched/kedr_chardev.ko.json",
                 "kedr_repl_chardev/kedr_repl_chardev.ko", "kedr_repl_chardev/Module.symvers",
                 "kedr_repl_chardev/kedr_repl_chardev.c"):
        assert not (out / gone).exists(), (gone, proc.stdout)


def test_every_output_is_a_known_target(tmp_path: Path,
                                        pinned_kernel: ProvisionedKernel) -> None:
    """Emitters declare every output: SCons knows how to make each one by name."""
    out = tmp_path / "build" / "chardev"
    names = ["kedr_chardev.ko", "Module.symvers", "plan.json", "tail_calls.json",
             "load.sh", "unload.sh",
             "patched/kedr_chardev.ko", "patched/kedr_chardev.ko.json",
             *(f"kedr_repl_chardev/{f}" for f in ("kedr_repl_chardev.ko", "Module.symvers",
                                                 "kedr_repl_chardev.c", "Kbuild",
                                                 "kedr_repl_chardev_trace.h",
                                                 "kedr_tailcall.c")),
             "run/result.json", "run/console.log", "run/qemu.cmd"]
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={out.parent}", "-n",
                      *(str(out / n) for n in names)])
    assert "Do not know how to make" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args,message", [
    (["NAMING=bogus"], "NAMING=bogus: unknown naming 'bogus'; use same-length or prefix:"),
    (["VM_TIMEOUT=nan"], "VM_TIMEOUT=nan: not a positive, finite number of seconds"),
    (["VM_TIMEOUT=-5"], "VM_TIMEOUT=-5: not a positive, finite number of seconds"),
    (["KERNEL=debian-0.1"], "KERNEL=debian-0.1: unknown kernel; known: debian-6.1, debian-6.12"),
])
def test_bad_variable_values(args: list[str], message: str,
                             pinned_kernel: ProvisionedKernel) -> None:
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", *args], check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kedr-build:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def _own_build(directory: Path, kdir: Path, *args: str) -> None:
    """The developer's own recipe, typed in the driver's directory."""
    subprocess.run(["make", f"KDIR={kdir}", *args], cwd=directory, check=True,
                   capture_output=True, env={**os.environ, "PWD": str(directory)})


def test_vendor_tree_builds_as_its_own_recipe_does(tmp_path: Path,
                                                   make_log: tuple[dict[str, str], Path],
                                                   pinned_kernel: ProvisionedKernel) -> None:
    """A shared include directory beside the driver ($(src)/.., $(PWD)/.., $(M)/..),
    KBUILD_EXTRA_SYMBOLS from a sibling module, a name listed twice in obj-m, a dash
    in a module name, a dangling symlink, and a module selected by a make variable."""
    kdir = pinned_kernel.kdir
    own, ours = tmp_path / "own", tmp_path / "ours"
    for tree in (own, ours):
        shutil.copytree(REPO / "tests/drivers/vendor", tree)
        (tree / "drv" / "README.gz").symlink_to("nowhere")    # dangling, as in a real package
    subprocess.run(["make", "-C", str(kdir), f"M={own / 'common'}", "modules"], check=True,
                   capture_output=True)
    _own_build(own / "drv", kdir, "VENDOR_EXTRA=1")

    env, log = make_log
    build = tmp_path / "build"
    run_scons([f"MODULE={ours / 'common'}", f"BUILD_DIR={build}"], env)
    args = [f"MODULE={ours / 'drv'}", f"BUILD_DIR={build}", "MAKE_ARGS=VENDOR_EXTRA=1"]
    proc = run_scons(args, env)
    kos = sorted(p.name for p in (build / "drv").glob("*.ko"))
    assert kos == sorted(p.name for p in (own / "drv").glob("*.ko")) == \
        ["vendor-drv.ko", "vendor_extra.ko"], proc.stdout
    # The trees are left alike: kbuild's own outputs, nothing more.
    assert sorted(str(p.relative_to(ours)) for p in ours.rglob("*")) == \
        sorted(str(p.relative_to(own)) for p in own.rglob("*"))
    plan = json.loads((build / "drv" / "plan.json").read_text())
    assert "kfree" in plan["rename"]
    assert (build / "drv" / "patched" / "vendor-drv.ko").is_file()

    log.unlink()
    run_scons(args, env)
    assert calls(log) == [], "a null build must not spawn make"
    # A different MAKE_ARGS value is a different build: the extra module is gone.
    run_scons([*args[:2], "MAKE_ARGS=VENDOR_EXTRA=0"], env)
    assert any(c.endswith("modules") for c in calls(log))


@pytest.mark.parametrize("value", ["modules", "-j8", "VENDOR_EXTRA", "A=1 clean", "'A=1"])
def test_make_args_must_be_assignments(value: str, pinned_kernel: ProvisionedKernel) -> None:
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"MAKE_ARGS={value}"],
                     check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kedr-build:")]
    assert len(lines) == 1 and lines[0].startswith(f"kedr-build: MAKE_ARGS={value}: "), \
        proc.stderr


DKMS_HELLO = REPO / "tests/drivers/dkms-hello"


def _dkms_copy(tmp_path: Path, edit: str = "") -> Path:
    src = tmp_path / "kedr-dkms-hello-1.0"
    shutil.copytree(DKMS_HELLO, src, symlinks=True)
    (src / "fail.sh").write_text("#!/bin/sh\necho failing on purpose\nexit 3\n")
    (src / "fail.sh").chmod(0o755)
    if edit:
        conf = src / "dkms.conf"
        conf.write_text(conf.read_text() + edit)
    return src


def test_dkms_package_builds_patches_and_null_builds(
        tmp_path: Path, make_log: tuple[dict[str, str], Path],
        pinned_kernel: ProvisionedKernel) -> None:
    env, log = make_log
    src = _dkms_copy(tmp_path)
    build = tmp_path / "build"
    args = [f"DKMS={src}", f"BUILD_DIR={build}"]
    run_scons(args, env)
    out = build / src.name
    assert sorted(p.name for p in out.glob("*.ko")) == ["dkms-hello.ko", "dkms_extra.ko"]
    assert (out / "patched" / "dkms-hello.ko").is_file()
    plan = json.loads((out / "plan.json").read_text())
    assert {"kasprintf", "kfree"} <= set(plan["rename"])
    assert not (src / "src" / "version.h").exists(), "DKMS builds in a copy"
    log.unlink()
    run_scons(args, env)
    assert calls(log) == [], "a null build must not spawn make"
    # MODULE= of a directory with a dkms.conf is the same build.
    assert "is up to date" in run_scons([f"MODULE={src}", f"BUILD_DIR={build}"], env).stdout


@pytest.mark.parametrize("edit,message", [
    ("if then fi\n", "dkms.conf: bash cannot read it: "),
    ('BUILT_MODULE_NAME[2]="ghost"\nDEST_MODULE_LOCATION[2]="/extra"\n',
     "dkms.conf: the build did not produce ghost.ko (BUILT_MODULE_NAME/"
     "BUILT_MODULE_LOCATION); nothing installed"),
    ('PRE_BUILD="fail.sh"\n', "dkms.conf: PRE_BUILD failed (exit 3)"),
    ('BUILT_MODULE_NAME[0]="dkms-hello.ko"\n', "BUILT_MODULE_NAME[0]=dkms-hello.ko must not end "
                                              "in .o or .ko"),
    ('BUILD_EXCLUSIVE_KERNEL="^4\\."\n', "not for kernel "),
])
def test_dkms_bad_input_is_one_line(edit: str, message: str, tmp_path: Path,
                                    pinned_kernel: ProvisionedKernel) -> None:
    src = _dkms_copy(tmp_path, edit)
    build = tmp_path / "build"
    proc = run_scons([f"DKMS={src}", f"BUILD_DIR={build}"], check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.startswith("kedr-build:") and "warning" not in ln]
    assert len(lines) == 1 and message in lines[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert list((build / src.name).glob("*.ko")) == []
