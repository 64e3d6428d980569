"""Bad TARGET= and its companions through scons, as a user types them: one line
``kedr-build: ...`` naming the value and the cause, exit status 1, no traceback,
nothing built, and no machine contacted (the hosts below do not exist: a refusal
that came after an ssh attempt would name the connection instead). Issue 21."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel
from test_faults_bad_input import refused

CHARDEV = REPO / "examples" / "chardev"
HOST = "ssh://root@lab.invalid"


@pytest.mark.parametrize("args, fragments", [
    ([f"TARGET={HOST}", "run", "FAULTS=kmalloc: nth=1"],
     (f"TARGET={HOST}: FAULTS= fails the driver's kernel calls on purpose and may crash "
      "that machine: add I_KNOW_THIS_MAY_CRASH=1 to go ahead",)),
    ([f"TARGET={HOST}", "sweep"],
     (f"TARGET={HOST}: sweep fails the driver's kernel calls on purpose", "I_KNOW_THIS_MAY_CRASH=1")),
    ([f"TARGET={HOST}", "sweep", "I_KNOW_THIS_MAY_CRASH=0"], ("add I_KNOW_THIS_MAY_CRASH=1",)),
    (["TARGET=lab", "run"], ("TARGET=lab: unknown target; one of qemu, ssh://",)),
    (["TARGET=ssh://root@host:99999", "run"], ("port 99999 is not 1-65535",)),
    (["TARGET=ssh://ro ot@host", "run"], ("not ssh://[user@]host[:port]",)),
    (["TARGET=labgrid:nowhere.yaml", "run"],
     ("TARGET=labgrid:nowhere.yaml: nowhere.yaml: no such labgrid environment file",)),
    (["SSH_CONFIG=/dev/null", "run"], ("SSH_CONFIG=/dev/null: applies to TARGET=ssh:// only",)),
    ([f"TARGET={HOST}", "SSH_CONFIG=/nowhere/config", "run"],
     ("SSH_CONFIG=/nowhere/config: no such file",)),
    ([f"TARGET={HOST}", "DEVICES=edu", "run"],
     (f"DEVICES=edu: emulated devices are QEMU's; TARGET={HOST} uses the machine's own",)),
    # check: the pack's tests that may crash the machine ask for consent, those that
    # need QEMU's emulated devices are refused (naming the test), before anything builds.
    ([f"TARGET={HOST}", "check", "PACK=faults"],
     (f"TARGET={HOST}: pack faults test faults (faults) fails the driver's kernel calls on "
      "purpose and may crash that machine: add I_KNOW_THIS_MAY_CRASH=1 to go ahead",)),
    ([f"TARGET={HOST}", "check", "PACK=fundamentals", "TEST=reload,fuzz"],
     (f"TARGET={HOST}: pack fundamentals test fuzz (fuzz) fuzzes the driver's device nodes "
      "and network interfaces (random operations and ioctls, the bugs that oops are what it "
      "looks for) and may crash that machine: add I_KNOW_THIS_MAY_CRASH=1",)),
    ([f"TARGET={HOST}", "check", "PACK=fundamentals", "TEST=chaos"],
     (f"TARGET={HOST}: pack fundamentals test chaos (chaos) ", "I_KNOW_THIS_MAY_CRASH=1")),
    ([f"TARGET={HOST}", "check", "PACK=device", "I_KNOW_THIS_MAY_CRASH=1"],
     (f"TARGET={HOST}: pack device test ", " needs emulated devices (DEVICES=), which exist "
      "in QEMU only: drop the test (TEST=) or use TARGET=qemu")),
], ids=["faults-no-consent", "sweep-no-consent", "sweep-consent-0",
        "unknown", "port", "user", "labgrid-no-file", "ssh-config-no-ssh",
        "ssh-config-missing", "devices", "check-faults-no-consent", "check-fuzz-no-consent",
        "check-chaos-no-consent", "check-device-pack"])
def test_bad_target(args: list[str], fragments: tuple[str, ...], tmp_path: Path,
                    pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}", *args], check=False)
    refused(proc, build, *fragments)


def test_check_on_a_real_machine_needs_a_pinned_kernel(tmp_path: Path,
                                                       pinned_kernel: ProvisionedKernel) -> None:
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={tmp_path / 'build'}",
                      f"KDIR={pinned_kernel.kdir}", f"TARGET={HOST}", "check"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("kedr-build: ")]
    assert len(lines) == 1 and lines[0].endswith(
        f": check on TARGET={HOST} needs a pinned KERNEL= so far (run takes KDIR=)"), lines
    assert not list((tmp_path / "build").rglob("*.ko"))
