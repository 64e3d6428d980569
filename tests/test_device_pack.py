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
