"""load.sh / unload.sh, run by dash and by busybox sh against stub module tools
(insmod, rmmod, modprobe, uname, dmesg) and a fake /sys/module."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kedr_build.intercept import loadscript
from kedr_build.errors import KedrError
from kedr_build.intercept.loadscript import LoadPlan, ModuleFile

RELEASE = "6.1.0-56-amd64"
PLAN = LoadPlan(release=RELEASE, replacement=ModuleFile("kedr_repl_hello.ko", "kedr_repl_hello"),
                drivers=(ModuleFile("drv/helper.ko", "helper"), ModuleFile("drv/hello.ko", "hello")),
                intree=("loop",))

# Each stub logs its command line; $FAIL_ON (a command line) makes that one fail.
# insmod/modprobe create /sys/module/<name>/initstate, rmmod/modprobe -r remove it.
_STUB = """#!/bin/sh
tool=$(basename "$0")
echo "$tool $*" >> "$STUB_LOG"
[ "$tool $*" = "${FAIL_ON:-}" ] && { echo "$tool: simulated failure" >&2; exit 1; }
case $tool in
uname) echo "$FAKE_RELEASE" ;;
dmesg) echo "[  1.0] fake kernel message" ;;
insmod) name=$(basename "$1" .ko); mkdir -p "$KEDR_SYSFS/module/$name";
        echo live > "$KEDR_SYSFS/module/$name/initstate" ;;
rmmod) rm -rf "$KEDR_SYSFS/module/$1" ;;
modprobe) if [ "$1" = -r ]; then rm -rf "$KEDR_SYSFS/module/$2"; else
          mkdir -p "$KEDR_SYSFS/module/$1"; echo live > "$KEDR_SYSFS/module/$1/initstate"; fi ;;
esac
exit 0
"""

_TOOLS = ("uname", "dmesg", "insmod", "rmmod", "modprobe")
SHELLS = [s for s in (["dash"], ["busybox", "sh"]) if shutil.which(s[0])]


class Sandbox:
    def __init__(self, root: Path, shell: list[str]) -> None:
        self.root, self.shell = root, shell
        self.bin = root / "bin"
        self.bin.mkdir()
        for tool in _TOOLS:
            (self.bin / tool).write_text(_STUB)
            (self.bin / tool).chmod(0o755)
        self.sysfs = root / "sys"
        (self.sysfs / "module").mkdir(parents=True)
        self.log = root / "calls.log"
        self.log.touch()
        self.scripts = root / "scripts"
        loadscript.write(PLAN, self.scripts)

    def preload(self, name: str) -> None:
        (self.sysfs / "module" / name).mkdir()
        (self.sysfs / "module" / name / "initstate").write_text("live\n")

    def loaded(self) -> set[str]:
        return {p.parent.name for p in self.sysfs.glob("module/*/initstate")}

    def run(self, script: str, *args: str, release: str = RELEASE,
            fail_on: str = "") -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bin}:{os.environ['PATH']}", "STUB_LOG": str(self.log),
               "KEDR_SYSFS": str(self.sysfs), "KEDR_STATE_DIR": str(self.root),
               "FAKE_RELEASE": release, "FAIL_ON": fail_on}
        cmd = [*self.shell, str(self.scripts / script), *args]
        if self.shell[0] == "busybox":
            # busybox sh runs its own applets before $PATH: shadow them with functions
            # that call the stubs, then source the script ($0 stays the script).
            shadow = "; ".join(f'{t}() {{ "{self.bin}/{t}" "$@"; }}' for t in _TOOLS)
            cmd = [*self.shell, "-c", f'{shadow}; . "$0"', str(self.scripts / script), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)

    def calls(self) -> list[str]:
        return [c for c in self.log.read_text().splitlines()
                if not c.startswith(("uname", "dmesg"))]


@pytest.fixture(params=SHELLS, ids=[s[0] for s in SHELLS])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path, request.param)


def test_loads_in_order_and_passes_parameters(box: Sandbox) -> None:
    proc = box.run("load.sh", "debug=1", "name=a b")
    assert proc.returncode == 0, proc.stderr
    s = box.scripts
    assert box.calls() == ["modprobe loop",
                           f"insmod {s}/kedr_repl_hello.ko",
                           f"insmod {s}/drv/helper.ko",
                           f"insmod {s}/drv/hello.ko debug=1 name=a b"]
    assert box.loaded() == {"loop", "kedr_repl_hello", "helper", "hello"}
    assert "loaded loop, kedr_repl_hello, helper, hello" in proc.stdout


def test_unload_reverses_the_load(box: Sandbox) -> None:
    assert box.run("load.sh").returncode == 0
    box.log.write_text("")
    proc = box.run("unload.sh")
    assert proc.returncode == 0, proc.stderr
    assert box.calls() == ["rmmod hello", "rmmod helper", "rmmod kedr_repl_hello",
                           "modprobe -r loop"]
    assert box.loaded() == set()


def test_refuses_another_kernel(box: Sandbox) -> None:
    proc = box.run("load.sh", release="6.12.0-1-amd64")
    assert proc.returncode == 1
    assert (f"built for kernel {RELEASE}; this is 6.12.0-1-amd64" in proc.stderr)
    assert box.calls() == []


def test_a_failed_driver_load_rolls_back_and_says_why(box: Sandbox) -> None:
    proc = box.run("load.sh", fail_on=f"insmod {box.scripts}/drv/hello.ko")
    assert proc.returncode == 1
    assert "load.sh: insmod drv/hello.ko failed" in proc.stderr
    assert "kernel: [  1.0] fake kernel message" in proc.stderr
    assert "unloading what was loaded: helper kedr_repl_hello loop" in proc.stderr
    assert box.calls()[-3:] == ["rmmod helper", "rmmod kedr_repl_hello", "modprobe -r loop"]
    assert box.loaded() == set()


def test_a_failed_replacement_load_rolls_back(box: Sandbox) -> None:
    proc = box.run("load.sh", fail_on=f"insmod {box.scripts}/kedr_repl_hello.ko")
    assert proc.returncode == 1
    assert "insmod kedr_repl_hello.ko failed (the replacement module)" in proc.stderr
    assert box.calls()[-1] == "modprobe -r loop" and box.loaded() == set()


def test_an_intree_module_loaded_before_is_left_alone(box: Sandbox) -> None:
    box.preload("loop")
    assert box.run("load.sh").returncode == 0
    assert box.run("unload.sh").returncode == 0
    assert "modprobe loop" not in box.calls() and "modprobe -r loop" not in box.calls()
    assert box.loaded() == {"loop"}


def test_refuses_when_the_driver_is_already_loaded(box: Sandbox) -> None:
    box.preload("hello")
    proc = box.run("load.sh")
    assert proc.returncode == 1
    assert "hello is already loaded; unload it first" in proc.stderr
    assert box.calls() == []


# --- plan_for: names, vermagic and dependencies from the modules' .modinfo ------------

def fake_ko(path: Path, **modinfo: str) -> Path:
    """An ELF object with just a .modinfo section, as modpost writes it."""
    strings = "".join(f'"{k}={v}\\0"' for k, v in modinfo.items())
    src = path.with_suffix(".c")
    src.write_text(f'__attribute__((section(".modinfo"), used)) static const char m[] = '
                   f'{strings};\n')
    subprocess.run(["gcc", "-c", "-o", str(path), str(src)], check=True)
    return path


def test_plan_from_built_modules(tmp_path: Path) -> None:
    magic = f"{RELEASE} SMP preempt mod_unload modversions "
    repl = fake_ko(tmp_path / "kedr_repl_hello.ko", name="kedr_repl_hello", vermagic=magic)
    (tmp_path / "drv").mkdir()
    drv = fake_ko(tmp_path / "drv" / "hello.ko", depends="kedr_repl_hello,loop,crc32c_generic",
                  name="hello", vermagic=magic)
    plan = loadscript.plan_for(repl, [drv], tmp_path)
    assert plan == LoadPlan(release=RELEASE,
                            replacement=ModuleFile("kedr_repl_hello.ko", "kedr_repl_hello"),
                            drivers=(ModuleFile("drv/hello.ko", "hello"),),
                            intree=("loop", "crc32c_generic"))


def test_plan_refuses_modules_for_different_kernels(tmp_path: Path) -> None:
    repl = fake_ko(tmp_path / "r.ko", name="r", vermagic="6.1.0-56-amd64 SMP ")
    drv = fake_ko(tmp_path / "d.ko", name="d", vermagic="6.1.0-55-amd64 SMP ")
    with pytest.raises(KedrError, match="built for different kernels"):
        loadscript.plan_for(repl, [drv], tmp_path)


def test_plan_refuses_a_file_that_is_not_a_module(tmp_path: Path) -> None:
    (tmp_path / "x.ko").write_text("not elf")
    with pytest.raises(KedrError, match="x.ko: not an ELF file"):
        loadscript.plan_for(tmp_path / "x.ko", [tmp_path / "x.ko"], tmp_path)
