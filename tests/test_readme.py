"""Every command of README.md's code blocks, run verbatim from a clean copy of the
checkout, in README order, as a user would type them (issue 17: the README's own
`check` command once ended in a traceback that no test saw).

What a command needs that the README leaves to the reader is in ONE table below:
PLACEHOLDERS maps the README's placeholders to this checkout's files, NOT_HERE lists
the commands that cannot run here with the reason, EXPECTED the commands that must
fail (with why). A README command that still has a placeholder after the mapping and
is not listed fails the test (`test_every_readme_command_is_runnable_or_listed`,
no VM), so a new command is either run or explained. Optional parts of a synopsis
(`[V=1]`) are left out and `# comments` dropped. The `reproduce:` lines a failing
check prints are then run verbatim from the checkout's top, where a user is.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, checkout_env, copy_checkout

# --- the table -----------------------------------------------------------------------

# README placeholder -> what it stands for here (longest first when they overlap).
PLACEHOLDERS = {
    "path/to/driver": "examples/chardev",
    "/usr/src/foo-1.0": "tests/drivers/dkms-hello",
    # built by an earlier command; with its workload, which basic's workload test needs
    "KO=prebuilt.ko": "KO=build/chardev/kedr_chardev.ko WORKLOAD=examples/chardev/workload.sh",
    "PACK=my-pack.toml": "PACK=kedr_build/packs/builtin/basic.toml",
    "DRIVERS=a,b,c check PACK=full": "DRIVERS=examples/chardev check PACK=full",
    "DRIVERS=a,b,c check": "DRIVERS=tests/drivers/leaker check",   # a failing check
    "MODULE=dir": "MODULE=tests/drivers/faulty",
    "inspect FILE.ko": "inspect build/chardev/kedr_chardev.ko",
    "build/NAME/run": "build/chardev/run",
}
# README command (as written) -> why it is not run here.
NOT_HERE = {
    "./kedr-env pytest": "the whole suite, this test included (CI runs it)",
    "./kedr-env pytest --junitxml=build/junit.xml": "the whole suite, this test included",
    "./kedr-env pytest --quick": "the quick tier of this suite (about 17 min); CI runs the "
                                 "whole suite, which holds every test of it",
    "./kedr-env python tools/support_table.py build/junit.xml --write README.md":
        "needs the JUnit file of a whole run, and rewrites README.md",
    "./kedr-env python bench/attach_reach.py --write README.md":
        "reads every module of both pinned kernels (2 min) and rewrites README.md; "
        "tests/test_reach.py checks the classifier and the table on a real module",
    "python -m kedr_build attach KO -o DIR [--kernel K] [--functions F,G]  # hot patching files":
        "a synopsis; the README's `python -m kedr_build attach loop` runs attach",
    "python -m kedr_build patch IN.ko -o OUT.ko …  # cold-patch imports (see --help)":
        "a synopsis with its options elided (…); tests/test_patch.py runs patch",
    **{f"./kedr-env python bench/{b}": "a benchmark: minutes of timing on an idle machine, "
       "run by hand for the numbers the README quotes"
       for b in ("bench_kbuild.py      # scons vs plain kbuild, clean and null builds",
                 "bench_patch.py [--kernel debian-6.12]",
                 "bench_intercept.py   # per-call cost in the VM vs kprobe_events",
                 "bench_smp.py         # tracked pairs/s with 1 and 2 kthreads",
                 "bench_sweep.py       # seconds per swept site vs one VM boot",
                 "bench_pack.py        # the basic pack end to end vs one VM boot",
                 "bench_dkms.py        # DKMS mode vs dkms build",
                 "bench_fuzz.py        # the fuzzer's syscall rate, patched vs not",
                 "bench_reduce_boots.py  # boots a hang/taint reduction takes, by strategy",
                 "bench_devices.py     # DEVICES= run, unplug/re-plug, sweep vs one VM boot",
                 "bench_device.py      # the device pack on e1000, its sweep, a re-plug vs one boot",
                 "bench_attach.py      # hot vs cold patching per call, attach time",
                 "attach_reach.py      # import uses each mechanism reaches, whole corpus",
                 "attach_calls.py      # calls cold and hot patching each saw in the VM")},
    "./kedr-env python bench/attach_calls.py --write README.md":
        "two boots of 2.5 min and rewrites README.md; tests/test_attach_calls.py checks "
        "its reading and its explanations on a recorded guest run",
    "scons MODULE=dir check PACK=fundamentals [TEST=fuzz] [FUZZ_SEED=1234]":
        "four boots; tests/test_fundamentals_vm.py runs the pack on four drivers, both "
        "kernels",
}
NOT_HERE.update({
    "scons MODULE=path/to/driver KDIR=/path/to/its/kernel/headers TARGET=ssh://root@lab-host run":
        "needs a lab machine: tests/test_target_ssh_vm.py runs over ssh on a QEMU guest "
        "playing one, both kernels",
    "scons MODULE=path/to/driver KERNEL=debian-6.1 TARGET=ssh://root@lab-host:2222 "
    "SSH_CONFIG=lab.ssh check PACK=basic":
        "needs a lab machine: tests/test_target_ssh_vm.py checks PACK=basic over ssh on a "
        "QEMU guest playing one, both kernels",
    "scons MODULE=path/to/driver KERNEL=debian-6.1 TARGET=ssh://root@lab-host attach":
        "needs a lab machine: tests/test_target_ssh_vm.py attaches over ssh on a QEMU "
        "guest playing one (and test_target_labgrid_vm.py through labgrid), both kernels",
    "scons MODULE=path/to/driver KERNEL=debian-6.1 TARGET=labgrid:lab.yaml check PACK=basic":
        "needs a lab's labgrid environment: tests/test_target_labgrid_vm.py checks "
        "PACK=basic through labgrid on a QEMUDriver guest playing one",
    "scons MODULE=path/to/driver KERNEL=debian-6.1 TARGET=labgrid:lab.yaml "
    "I_KNOW_THIS_MAY_CRASH=1 sweep":
        "needs a lab's labgrid environment: tests/test_target_sweep_vm.py sweeps through "
        "labgrid on a QEMUDriver guest playing one, both kernels",
    "scons MODULE=path/to/driver KERNEL=debian-6.1 TARGET=ssh://root@lab-host "
    "I_KNOW_THIS_MAY_CRASH=1 check PACK=fundamentals":
        "needs a lab machine: tests/test_target_kinds_vm.py checks fuzz, reload and faults "
        "tests over ssh on a QEMU guest playing one, both kernels",
    "scons DRIVERS=path/to/a,path/to/b KERNEL=debian-6.1 TARGET=labgrid:lab.yaml:'lab-*' "
    "check PACK=basic":
        "needs a lab's labgrid coordinator: tests/test_target_labgrid_places_vm.py runs "
        "it on two places of a local coordinator and exporter (two QEMU guests)",
    "./kedr-env python bench/device_corpus.py --kernel debian-6.1 --write README.md":
        "the device corpus: 21 devices through the device pack, over an hour of VM runs, "
        "and rewrites README.md; tests/test_device_corpus.py checks its parsing and table",
    "./kedr-env scons KO=e1000 DEVICES=e1000,nvme run":
        "a VM run with devices: tests/test_devices_vm.py runs it on both kernels",
    "./kedr-env scons MODULE=tests/drivers/edu DEVICES=edu sweep":
        "a sweep with a device: tests/test_devices_vm.py sweeps edu on both kernels",
    "./kedr-env python tools/device_repeat.py debian-6.1 10 [--stock] [--toggle] "
    "[--accel tcg]":
        "a synopsis; 10 boots of the suspend step per setting (minutes), run by hand for "
        "the counts the README quotes",
})
# Command as run -> (exit status, why it fails).
EXPECTED = {
    "scons DRIVERS=tests/drivers/leaker check":
        (2, "tests/drivers/leaker leaks on purpose: the check fails, printing reproduce lines"),
}

# -------------------------------------------------------------------------------------

COMMAND = re.compile(r"(\./kedr-env|scons|python|pytest|sh|make)\b")
PLACEHOLDER = re.compile(r"…|\.\.\.|<[^>]*>|\b(NAME|FILE|IN|OUT)\b|path/to|/usr/src/foo|a,b,c"
                         r"|\bdir\b|prebuilt\.ko|my-pack")


def code_lines(text: str) -> list[str]:
    """The lines of the Markdown's code blocks: fenced ones, and indented ones (4 spaces
    after a blank line, as Markdown reads them)."""
    out: list[str] = []
    fenced = False
    block = False
    blank = True
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            blank = False
            continue
        if fenced:
            out.append(line)
            continue
        if block and (line.startswith("    ") or not line.strip()):
            out.append(line)
            continue
        block = line.startswith("    ") and blank
        if block:
            out.append(line)
        blank = not line.strip()
    return out


def readme_commands(text: str) -> list[str]:
    return [s for s in (ln.strip() for ln in code_lines(text)) if COMMAND.match(s)]


def as_run(command: str) -> str:
    """The command as run here: comment dropped, optional parts left out, placeholders
    mapped."""
    line = re.sub(r"\s+#\s.*$", "", command)
    line = re.sub(r"\s*\[[^\]]*\]", "", line).strip()
    for key in sorted(PLACEHOLDERS, key=len, reverse=True):
        line = line.replace(key, PLACEHOLDERS[key])
    return line


@dataclass(frozen=True)
class Step:
    readme: str          # as written
    command: str         # as run
    status: int          # the exit status it must have


def plan(text: str) -> list[Step]:
    steps = []
    for cmd in readme_commands(text):
        if cmd in NOT_HERE:
            continue
        run = as_run(cmd)
        left = PLACEHOLDER.search(run)
        if left:
            raise AssertionError(f"README command {cmd!r} still has a placeholder "
                                 f"({left.group()!r}) as {run!r}: map it in PLACEHOLDERS or "
                                 "list the command in NOT_HERE with the reason")
        steps.append(Step(cmd, run, EXPECTED.get(run, (0, ""))[0]))
    return steps


def test_every_readme_command_is_runnable_or_listed() -> None:
    text = (REPO / "README.md").read_text()
    commands = readme_commands(text)
    assert len(commands) >= 20, commands      # the extraction found the blocks
    steps = plan(text)
    stale = [c for c in NOT_HERE if c not in commands]
    assert not stale, f"NOT_HERE lists commands the README no longer has: {stale}"
    unused = [k for k in PLACEHOLDERS if not any(k in c for c in commands)]
    assert not unused, f"PLACEHOLDERS maps what the README no longer has: {unused}"
    assert set(EXPECTED) <= {s.command for s in steps}
    assert {c.split()[0] for c in commands} <= {"./kedr-env", "scons", "python"}


def _user_env(top: Path) -> dict[str, str]:
    """A user's shell in the checkout with the environment activated (README: `. .venv/
    bin/activate`, `PYTHONPATH=$PWD`): plain scons and python -m kedr_build work."""
    venv = top / ".venv"
    env = checkout_env({"VIRTUAL_ENV": str(venv), "PYTHONPATH": str(top)})
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return env


def _run(top: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], cwd=top, env=_user_env(top),
                          capture_output=True, text=True)


@pytest.mark.vm
def test_readme_commands_run_verbatim(tmp_path: Path) -> None:
    top = copy_checkout(tmp_path / "checkout")
    text = (top / "README.md").read_text()
    outputs: dict[str, str] = {}
    for step in plan(text):
        proc = _run(top, step.command)
        out = proc.stdout + proc.stderr
        outputs[step.command] = proc.stdout
        assert proc.returncode == step.status and "Traceback" not in out, (
            f"README: {step.readme}\nran: {step.command}\nexit {proc.returncode}, "
            f"expected {step.status}\n{out[-6000:]}")

    # The outputs where the README says they are.
    for path in ("build/chardev/run/trace.txt", "build/chardev/run/leaks.json",
                 "build/chardev/run/console.log", "build/chardev/run/qemu.cmd",
                 "build/chardev/load.sh", "build/chardev/plan.json",
                 "build/chardev/patched/kedr_chardev.ko.json",
                 "build/chardev/kedr_repl_chardev/kedr_repl_chardev.ko",
                 "build/debian-6.12/loop/run/leaks.txt",
                 "build/chardev/report/junit.xml", "build/chardev/report/report.json",
                 "build/chardev/report/report.html", "build/leaker/report/report.json",
                 "build/faulty/report/report.json", "build/faulty/run/result.json",
                 "build/dkms-hello/patched"):
        assert (top / path).exists(), path

    # The failing check's reproduce lines, verbatim from the checkout's top: each fails
    # the same way (and the README's example line is one of them).
    failing = outputs["scons DRIVERS=tests/drivers/leaker check"]
    lines = list(dict.fromkeys(ln.split("reproduce: ", 1)[1].strip()
                               for ln in failing.splitlines() if "reproduce: " in ln))
    example = next(ln.split("reproduce: ", 1)[1].strip() for ln in text.splitlines()
                   if "reproduce: ./kedr-env scons MODULE=tests/drivers/leaker" in ln)
    assert example in lines, lines
    assert len(lines) == 2, lines           # load-unload and workload fail leaks
    for command in lines:
        proc = _run(top, command)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out, f"{command}:\n{out[-6000:]}"
        test = command.rsplit("TEST=", 1)[1]
        assert f"{test}.leaks[leaker] FAILED" in proc.stdout, proc.stdout
        again = {ln.split("reproduce: ", 1)[1].strip() for ln in proc.stdout.splitlines()
                 if "reproduce: " in ln}
        assert again == {command}, again
