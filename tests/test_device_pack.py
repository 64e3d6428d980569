"""The device pack as data (no VM): every test needs DEVICES=, a bad ``devices`` value
is one line, and the guest script of each step drives the devices a driver under test
holds (PCI addresses hold ':', so the attached devices' fields are split on ','; a held
device's on '/', since a driver's name may hold spaces: "i6300ESB timer"). The steps
in a guest: tests/test_device_steps_vm.py, tests/test_device_pack_hw_vm.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kedr_build.devices.attach import Attached, Attachment
from kedr_build.devices.catalog import lookup
from kedr_build.errors import KedrError
from kedr_build.kernel.hosttools import static_busybox
from kedr_build.packs import devkind, pack


def test_device_pack_needs_devices_in_every_test() -> None:
    p = pack.load("device")
    assert [t.name for t in p.tests] == ["probe", "rebind", "hotplug", "suspend", "reload",
                                         "faults"]
    assert all(t.devices == "required" and t.blocker for t in p.tests)
    assert [t.params.get("step") for t in p.tests[:4]] == list(devkind.STEPS)


def test_bad_devices_value_is_one_line(tmp_path: Path) -> None:
    text = ('[pack]\nname = "x"\n[[test]]\nname = "a"\nkind = "device"\n'
            'devices = "always"\n')
    with pytest.raises(KedrError, match=r':6: \[\[test\]\] a: devices: .always. is not'):
        pack.parse(text, tmp_path / "x.toml")


@pytest.mark.parametrize("step", devkind.STEPS)
def test_step_script_names_each_device_with_its_address(step: str) -> None:
    devs = Attachment(tuple(Attached(d, 4 + i) for i, d in enumerate(lookup("e1000,edu"))),
                      None)
    script = devkind.step_script(step, devs, ["kedr-edu"], 2)
    assert "for d in e1000,e1000,0000:00:04.0 edu,edu,0000:00:05.0; do" in script
    assert 'targets="kedr_edu"' in script
    # Only the suspend step asks for one (the runner boots a resumable kernel for it).
    assert ("kedr-device suspend" in script) == (step == "suspend")
    with pytest.raises(KedrError, match="not one of probe, rebind"):
        devkind.step_script("reboot", devs, [], 1)


@pytest.mark.parametrize("step", devkind.STEPS)
def test_step_script_is_sh_the_guest_shell_parses(step: str, tmp_path: Path) -> None:
    devs = Attachment(tuple(Attached(d, 4 + i) for i, d in enumerate(
        lookup("virtio-net,i6300esb"))), None)
    script = tmp_path / "step.sh"
    script.write_text(devkind.step_script(step, devs, ["virtio_net", "i6300esb"], 1))
    proc = subprocess.run([str(static_busybox()), "sh", "-n", str(script)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _report(output: str, events: tuple[tuple[str, str], ...], status: int = 0) -> object:
    from kedr_build.vm.qmp import DeviceEvent
    from kedr_build.vm.runner import RunReport, Step, Verdict

    return RunReport(Verdict.PASSED if status == 0 else Verdict.FAILED, "",
                     (Step("workload", "device-hotplug.sh", status),), (), output, (), 1.0,
                     Path("/nonexistent"),
                     device_events=tuple(DeviceEvent(r, a, 0.1) for r, a in events))


# ahci's re-plug on QEMU 7.2 (the controller back, its ide-hd refused), as the guest
# and QMP record it: the guest's lines and the run's device events.
_AHCI_REFUSED = (("unplug ahci", "ok"), ("plug ahci: ide-hd on ahci.0",
                 "not re-plugged: Bus 'ahci.0' does not support hotplugging"),
                 ("plug ahci", "ok; ahci: ide-hd on ahci.0: not re-plugged: Bus 'ahci.0' "
                  "does not support hotplugging"))
_AHCI_DONE = (devkind.MARK + "1 hot-unplug/re-plug cycles of ahci (0000:00:04.0 on pci, "
              "driver ahci) with the workload running (3 runs in the background); the "
              "workload not run after 1 re-plug(s): QEMU refused a device it needs\n")


def test_a_workload_qemu_left_without_its_device_is_not_run_with_qemus_refusal() -> None:
    """QEMU refused to re-plug the disk the workload needs: the device check is not run,
    QEMU's refusal verbatim its reason (never passed, never failed)."""
    output = (devkind.NOT_RUN + "ahci (cycle 1): ahci: ide-hd on ahci.0: not re-plugged: "
              "Bus 'ahci.0' does not support hotplugging\n" + _AHCI_DONE)
    result = devkind.device_check(_report(output, _AHCI_REFUSED))  # type: ignore[arg-type]
    assert result.skipped and not result.passed
    assert result.message.startswith(
        "not run: the workload after the re-plug: QEMU refused plug ahci: ide-hd on ahci.0: "
        "not re-plugged: Bus 'ahci.0' does not support hotplugging (1 hot-unplug/re-plug")


def test_a_workload_failing_after_a_full_re_plug_still_fails() -> None:
    """The re-plug brought everything back (no refusal): a workload failure is the
    driver's, FAIL; and a skip that QEMU's events do not back fails too."""
    failed = devkind.FAIL + "the workload failed after re-plug 1 of ahci\n"
    full = (("unplug ahci", "ok"), ("plug ahci", "ok"))
    result = devkind.device_check(_report(failed, full, 1))  # type: ignore[arg-type]
    assert not result.passed and not result.skipped
    assert result.message == "status 1: the workload failed after re-plug 1 of ahci"
    # A refusal, but the step failed before (the controller never came back bound).
    gone = devkind.FAIL + "ahci: no device of it held by a driver under test after the re-plug (cycle 1)\n"
    result = devkind.device_check(_report(gone, _AHCI_REFUSED, 1))  # type: ignore[arg-type]
    assert not result.passed and not result.skipped
    unbacked = devkind.NOT_RUN + "ahci (cycle 1): something\n" + _AHCI_DONE
    result = devkind.device_check(_report(unbacked, full))  # type: ignore[arg-type]
    assert not result.passed and not result.skipped
    assert result.message.startswith("the workload was skipped after a re-plug, but QEMU "
                                     "refused no device")
    passed = devkind.MARK + "1 hot-unplug/re-plug cycles of ahci (...); the workload passed\n"
    assert devkind.device_check(_report(passed, full)).passed  # type: ignore[arg-type]


def test_the_hotplug_step_skips_only_the_workload_after_a_refused_re_plug() -> None:
    """The guest's hotplug step: a plug reply naming a refusal ("ok; ...") skips the
    workload after that re-plug and says so; any other reply runs it."""
    att = Attachment((Attached(lookup("ahci")[0], 4),), None)
    script = devkind.step_script("hotplug", att, ["ahci"], 1)
    assert "wait_for 'plugged=$(kedr-device plug $qid)'" in script
    assert ('*": ok; "*) echo "' + devkind.NOT_RUN + '$name (cycle $n): ${plugged#*: ok; }"'
            in script)
    assert '*) io || fail "the workload failed after re-plug $n of $name";;' in script
