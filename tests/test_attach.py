"""Hot patching on the host: the call sites read from real modules' relocations, and
``python -m kedr_build attach`` (its outputs; bad input as one line)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from kedr_build.intercept.attach import find_sites
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.container import read_module
from kedr_build.ko.elf import ElfRel


def _loop(kernel: ProvisionedKernel) -> Path:
    assert kernel.modules_dir is not None
    return sorted(kernel.modules_dir.rglob("loop.ko*"))[0]


def test_sites_are_the_calls_and_jumps_outside_init_and_exit(
        pinned_kernel: ProvisionedKernel) -> None:
    ko = _loop(pinned_kernel)
    found = find_sites(ko, {"mutex_lock", "mutex_unlock", "kfree", "misc_register"})
    assert found.module == "loop" and len(found.build_id) > 40
    elf = ElfRel(read_module(ko).elf, str(ko))
    for s in found.sites:
        sec = elf.section(s.section)
        assert sec is not None and not s.section.startswith((".init", ".exit"))
        assert elf.section_bytes(sec)[s.offset] == (0xE8 if s.kind == "call" else 0xE9)
    kinds = {(s.function, s.kind) for s in found.sites}
    assert ("mutex_unlock", "jmp") in kinds and ("mutex_lock", "call") in kinds
    # misc_register is called from loop_init only: freed after init, not attachable.
    assert "misc_register" not in {s.function for s in found.sites}
    assert any(u.startswith("misc_register: loop_init+") and ".init.text" in u
               for u in found.unreached)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kedr_build", "attach", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_cli_writes_the_module_sites_and_scripts(tmp_path: Path,
                                                 pinned_kernel: ProvisionedKernel) -> None:
    out = tmp_path / "a"
    proc = _cli("loop", "-o", str(out), "--functions", "mutex_lock,mutex_unlock")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("kedr-build: loop: ") and " jmp sites of 2 functions" in proc.stdout
    assert (out / "kedr_repl_loop" / "kedr_repl_loop.ko").is_file()
    lines = (out / "attach.sites").read_text().splitlines()
    assert lines and all(line.split()[3] in ("mutex_lock", "mutex_unlock") for line in lines)
    meta = json.loads((out / "attach.json").read_text())
    assert meta["target"] == "loop" and len(meta["sites"]) == len(lines)
    script = (out / "attach.sh").read_text()
    assert pinned_kernel.release in script and meta["build_id"] in script
    assert "#define KEDR_HOT 1" in (out / "kedr_repl_loop" / "kedr_repl_loop.c").read_text()


def test_cli_bad_input_is_one_line(tmp_path: Path, pinned_kernel: ProvisionedKernel) -> None:
    for args, cause in ((("no_such_module",), "no module 'no_such_module'"),
                        (("loop", "--functions", "no_such_fn"), "no_such_fn")):
        proc = _cli(*args, "-o", str(tmp_path / "x"))
        assert proc.returncode == 1 and proc.stdout == ""
        assert len(proc.stderr.splitlines()) == 1 and cause in proc.stderr, proc.stderr
        assert proc.stderr.startswith("kedr-build: ")


_RUN = """step load 3.10
step before 3.20
workload rc=0
step attach 3.30
attach.sh: kedr_repl_x attached to x (4 sites)
step window 3.50
workload rc=0
== status
# enabled=1
# function replacement trace calls unrecorded
kfree Kfree 1 2 2
mutex_lock Mutex_lock 1 0 0
== leaks
kedr-leaks 1
attached target=x state=attached attaches=1 since_ns=1 until_ns=2 now_ns=2
object fn=__kmalloc kind=kmalloc ptr=0x1 size=64 caller=0xffffffffc0001000 stack=1 pid=5 comm=sh
totals allocs=3 frees=2 live=1 live_bytes=64 bad_frees=0 untracked_frees=1 gap=1
end
== end
step detach 3.60
step after 3.70
step unload 3.80
step done 3.90
"""


def test_attach_report_reads_the_window_and_judges_it() -> None:
    from kedr_build.vm.attachrun import format_attach, interpret

    r = interpret(_RUN, "x", 4, 0, [], False)
    assert r.verdict == "passed" and r.calls == {"kfree": 2}
    assert r.totals["untracked_frees"] == 1 and r.live == ["__kmalloc 64 bytes caller=0xffffffffc0001000"]
    lines = format_attach(r, Path("logs"))
    assert lines[0] == ("--- attached window: x, 4 sites, attached at 3.500 s, detached at "
                        "3.600 s (guest uptime) ---")
    assert lines[-1] == "kedr-build: x: attach PASSED (logs: logs)"
    bad = interpret(_RUN.replace("bad_frees=0", "bad_frees=2"), "x", 4, 0, [], False)
    assert bad.verdict == "failed" and bad.reason == "2 bad frees in the attached window"
    refused = interpret("step load 1.0\nstep before 1.1\nstep attach 1.2\n"
                        "attach.sh: module x is not loaded\nfailed: attach\n", "x", 4, 1, [],
                        False)
    assert refused.reason == "attach (attach.sh: module x is not loaded)"
    oops = interpret(_RUN, "x", 4, 0, ["oops"], False)
    assert oops.reason == "kernel oops"


# attach.sh's refusals before it touches anything, run by dash and busybox sh with
# stub uname/id/insmod and a fake /sys (KEDR_SYSFS): the VM test covers the ones that
# need a loaded target (not loaded, another build, twice, a probe in the way).
_ATTACH_STUB = """#!/bin/sh
tool=$(basename "$0")
echo "$tool $*" >> "$STUB_LOG"
case $tool in
uname) echo "$FAKE_RELEASE" ;;
id) echo "$FAKE_UID" ;;
esac
exit 0
"""


def test_attach_sh_refuses_another_kernel_and_a_user_in_one_line(tmp_path: Path) -> None:
    from kedr_build.resources import template_env
    from kedr_build.intercept.attach import HotSite

    site = HotSite(section=".text", offset=0x10, kind="call", function="kfree",
                   where="f+0x15", probe="f+0x10")
    script = tmp_path / "attach.sh"
    script.write_text(template_env().get_template("attach.sh.j2").render(
        replacement="kedr_repl_x", target="x", release="6.1.0-56-amd64", sites=[site],
        build_id="", ko="x.ko", sites_file="attach.sites", sections_file="attach.sections",
        replacement_path="kedr_repl_x/kedr_repl_x.ko"))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("uname", "id", "insmod"):
        (stubs / tool).write_text(_ATTACH_STUB)
        (stubs / tool).chmod(0o755)
    sysfs = tmp_path / "sys"
    (sysfs / "module" / "x").mkdir(parents=True)
    (sysfs / "module" / "x" / "initstate").write_text("live\n")
    log = tmp_path / "calls.log"
    shadow = "; ".join(f'{t}() {{ "{stubs}/{t}" "$@"; }}' for t in ("uname", "id", "insmod"))
    for shell in (["dash"], ["busybox", "sh"]):
        for release, uid, why in (
                ("6.12.117+deb12-amd64", "0", "attach.sh: kedr_repl_x is built for kernel "
                 "6.1.0-56-amd64; this is 6.12.117+deb12-amd64"),
                ("6.1.0-56-amd64", "1000", "attach.sh: run as root")):
            log.write_text("")
            env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log),
                   "KEDR_SYSFS": str(sysfs), "KEDR_DEBUGFS": str(tmp_path / "debug"),
                   "FAKE_RELEASE": release, "FAKE_UID": uid}
            proc = subprocess.run([*shell, "-c", f'{shadow}; . "$0"', str(script)], env=env,
                                  capture_output=True, text=True, timeout=30)
            assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", why + "\n"), shell
            assert "insmod" not in log.read_text()     # nothing loaded, nothing touched


def test_pack_kind_attach_judges_each_check_from_the_run(tmp_path: Path) -> None:
    from kedr_build.errors import KedrError
    from kedr_build.packs import kinds
    from kedr_build.packs.attachkind import judge, plain_module
    from kedr_build.packs.pack import PackTest
    from kedr_build.packs.session import DriverUnderTest
    from kedr_build.vm.attachrun import interpret

    kind = kinds.get("attach")
    test = PackTest("attached", "attach", kind.checks, {"workload": "required", "timeout": 0})
    run = _RUN.replace("step after 3.70\n", "step after 3.70\nworkload rc=0\n")
    ok = judge("x", test, interpret(run, "x", 4, 0, [], False), tmp_path)
    assert [(c.check, c.passed) for c in ok.checks] == [(c, True) for c in kind.checks], ok
    assert ok.check("attach").message.endswith("2 calls in the window, 4 sites")
    bad = judge("x", test, interpret(run.replace("bad_frees=0", "bad_frees=2").replace(
        "totals ", "violation rule=unlock-not-held fn=mutex_unlock\ntotals "), "x", 4, 0,
        ["oops"], False), tmp_path)
    assert {c.check: c.passed for c in bad.checks} == {
        "attach": True, "workload": True, "kernel": False, "leaks": False, "rules": False}
    assert bad.check("leaks").message.startswith("2 bad frees in the window")
    refused = judge("x", test, interpret("step load 1.0\nstep before 1.1\nworkload rc=0\n"
                                         "step attach 1.2\nattach.sh: module x is not loaded\n"
                                         "failed: attach\n", "x", 4, 1, [], False), tmp_path)
    assert not refused.check("attach").passed and refused.check("attach").message == "attach"
    assert not refused.check("workload").passed and not refused.check("leaks").passed

    # The plain module is the patched one's source (its manifest); one module only.
    patched = tmp_path / "patched" / "x.ko"
    patched.parent.mkdir()
    patched.write_bytes(b"")
    source = tmp_path / "x.ko"
    source.write_bytes(b"")
    driver = DriverUnderTest("x", (str(tmp_path / "kedr_repl_x.ko"), str(patched)),
                             "kedr_repl_x", "scons ...")
    with pytest.raises(KedrError, match=rf"^{re.escape(str(patched))}\.json: no source module "
                       "in the patch manifest"):
        plain_module(driver)
    (tmp_path / "patched" / "x.ko.json").write_text(json.dumps({"source": str(source)}))
    assert plain_module(driver) == source
    two = DriverUnderTest("x", (*driver.modules, str(tmp_path / "y.ko")), "kedr_repl_x", "")
    with pytest.raises(KedrError, match="^x: 2 modules; attach takes one$"):
        plain_module(two)
