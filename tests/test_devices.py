"""The device catalog against real data: every driver it names is a module (or built
in) of each pinned kernel, and that module's modules.alias matches the modalias the
guest showed for the device; DEVICES= mistakes are one line; a recorded run whose
driver bound nothing is judged "no device"."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, kernel_name, run_scons
from kedr_build.devices import binding, catalog, kernelcheck
from kedr_build.devices.attach import attach
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm import qemu
from kedr_build.vm.qemu import GuestJob, Verdict, result_from_logs, run_guest
from kedr_build.vm.runner import interpret

DATA = Path(__file__).parent / "data" / "devices"

# Every device the issue names is in the catalog.
ISSUE_LIST = ("e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet", "e100", "virtio-net",
              "virtio-blk", "nvme", "ahci", "intel-hda", "ac97", "usb-storage",
              "usb-storage-ehci", "sdhci", "i6300esb", "lsi53c895a", "megasas", "pvscsi",
              "vmxnet3", "edu")


def test_catalog_covers_the_issue_list() -> None:
    assert set(ISSUE_LIST) <= set(catalog.known())


def test_every_driver_exists_and_its_alias_matches_the_device(kernel: ProvisionedKernel) -> None:
    name = kernel_name(kernel)
    checked = 0
    for dev in catalog.load().values():
        mods = dev.modules_for(name)
        assert dev.modalias, dev.name
        vendor, device = dev.pci.split(":")
        # The first modalias is the PCI function's, with the catalog's vendor:device.
        assert dev.modalias[0].startswith(f"pci:v0000{vendor.upper()}d0000{device.upper()}")
        assert kernelcheck.missing(dev, kernel) == [], dev.name
        for mod in (*mods.drivers, *mods.requires):
            if kernelcheck.is_builtin(kernel, mod):
                # Built-in drivers' device tables are in no file of the module tree
                # (6.12's modules.builtin.modinfo has no alias= for them): virtio_pci on
                # 6.12. The VM test sees it bind.
                continue
            assert any(kernelcheck.alias_matches(kernel, mod, a) for a in dev.modalias), \
                f"{name}: {mod} does not match {dev.name} ({', '.join(dev.modalias)})"
            checked += 1
        if dev.name != "edu":   # ours: tests/drivers/edu
            assert mods.drivers, dev.name
    assert checked >= 23


def test_alias_check_can_fail(kernel: ProvisionedKernel) -> None:
    e1000 = catalog.load()["e1000"].modalias[0]
    assert kernelcheck.alias_matches(kernel, "e1000", e1000)
    assert not kernelcheck.alias_matches(kernel, "e1000e", e1000)
    assert not kernelcheck.has_module(kernel, "no_such_driver")
    bogus = dataclasses.replace(catalog.load()["e1000"],
                                modules=catalog.KernelModules(("no_such_driver",)))
    with pytest.raises(KedrError, match=r"^DEVICES=x: kernel .* has no driver for e1000 "
                                         r"\(no no_such_driver in its modules\)$"):
        kernelcheck.check((bogus,), kernel, "DEVICES=x")


def test_unknown_and_repeated_devices_are_one_line() -> None:
    with pytest.raises(KedrError) as e:
        catalog.lookup("e1000,e1001")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("DEVICES=e1000,e1001: unknown device 'e1001'; known: e1000, e1000e,")
    assert "edu" in msg
    with pytest.raises(KedrError, match="device 'nvme' given twice"):
        catalog.lookup("nvme,e1000,nvme")
    assert [d.name for d in catalog.lookup(" nvme , e1000")] == ["nvme", "e1000"]


def test_scons_refuses_a_typo_in_one_line() -> None:
    proc = run_scons(["KO=e1000", "DEVICES=e1000,nvmee", "run"], check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "kedr-build" in ln]
    assert proc.returncode != 0
    assert len(lines) == 1 and "unknown device 'nvmee'; known: e1000" in lines[0], lines
    assert "Traceback" not in proc.stdout + proc.stderr


def test_attach_fills_slots_disks_and_modules(kernel: ProvisionedKernel,
                                              tmp_path: Path) -> None:
    att = attach(catalog.lookup("e1000,nvme,virtio-net,usb-storage"), kernel)
    args = att.qemu_args(tmp_path)
    assert args[:4] == ["-netdev", "user,id=e1000n", "-device",
                        "e1000,autonegotiation=off,netdev=e1000n,id=e1000,addr=0x04"]
    assert f"if=none,id=nvmed,file={tmp_path}/nvme.img,format=raw" in args
    assert not any("{" in a for a in args)
    att.make_disks(tmp_path)
    assert (tmp_path / "nvme.img").stat().st_size == 16 << 20
    assert not (tmp_path / "e1000.img").exists()
    # The driver under test binds its device: the stock one is not loaded.
    mods = att.intree(["e1000"])
    assert "e1000" not in mods and "nvme" in mods and "virtio_net" in mods
    assert mods.index("xhci_pci") < mods.index("usb_storage")
    # virtio_pci: loaded where it is a module, left out where it is built in.
    assert ("virtio_pci" in mods) == (not kernelcheck.is_builtin(kernel, "virtio_pci"))
    script = att.workload()
    assert "pci=/sys/bus/pci/devices/0000:00:05.0; name=nvme" in script


def test_binding_lines_parse_and_truncated_ones_are_dropped() -> None:
    text = ("--- device bindings ---\n"
            "KEDR-BIND pci 0000:00:04.0 e1000 pci:v00008086d0000100E e1000\n"
            "KEDR-BIND pci 0000:00:17.0 i6300esb pci:v00008086d000025AB i6300ESB timer\n"
            "KEDR-BIND pci 0000:00:18.0 - pci:v00001234d000011E8 -\n"
            "KEDR-BIND usb 2-1:1.0 usb_storage\n"
            "--- end of device bindings ---\n")
    found, listed = binding.parse(text)
    assert listed
    assert [b.device for b in found] == ["0000:00:04.0", "0000:00:17.0", "0000:00:18.0"]
    assert found[1].driver == "i6300ESB timer" and found[2].module == ""
    assert binding.unbound_targets(["e1000", "kedr_edu"], found) == ["kedr_edu"]
    assert binding.parse("KEDR-BIND pci x y z w\n") == ((), False)


def test_recorded_run_without_a_device_for_the_driver_fails() -> None:
    """A real run (debian-6.1, KO=e1000 DEVICES=nvme): e1000 loaded, bound nothing."""
    result = result_from_logs(DATA / "no-device")
    assert result.verdict is Verdict.PASSED       # the guest script itself succeeded
    report = interpret(result, devices="nvme", targets=("e1000",))
    assert report.verdict is Verdict.FAILED
    assert report.reason == "no device for e1000: DEVICES=nvme"
    assert any(b.module == "nvme" for b in report.bindings)
    # Without DEVICES= nothing is asked of the bindings.
    assert interpret(result, targets=("e1000",)).verdict is Verdict.PASSED


def test_qemu_refusing_a_device_is_its_message_in_one_line(pinned_kernel: ProvisionedKernel,
                                                            tmp_path: Path) -> None:
    job = GuestJob(script="true\n", qemu_args=("-device", "no-such-nic,id=x"))
    result = run_guest(pinned_kernel, job, tmp_path, timeout=60)
    assert result.verdict is Verdict.LOST
    assert result.reason() == ("QEMU failed: qemu-system-x86_64: -device no-such-nic,id=x: "
                               "'no-such-nic' is not a valid device model name")
    # No QEMU is left behind: none has this run's directory on its command line.
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in out


def test_hotplug_arguments_come_from_the_command_line(kernel: ProvisionedKernel,
                                                      tmp_path: Path) -> None:
    from kedr_build.vm.qmp import device_args

    att = attach(catalog.lookup("e1000,usb-storage"), kernel)
    args = device_args(att.qemu_args(tmp_path), {"e1000", "usb_storage"})
    assert args["e1000"] == {"driver": "e1000", "autonegotiation": "off", "netdev": "e1000n",
                             "id": "e1000", "addr": "0x04"}
    # The USB stick, not its controller (whose id is usb_storagec).
    assert args["usb_storage"]["driver"] == "usb-storage"
    assert set(args) == {"e1000", "usb_storage"}


def test_a_disk_is_re_plugged_with_a_node_for_its_drive(kernel: ProvisionedKernel,
                                                       tmp_path: Path) -> None:
    from kedr_build.vm.qmp import device_args, drive_args

    att = attach(catalog.lookup("nvme,e1000"), kernel)
    qemu_args = att.qemu_args(tmp_path)
    drives = drive_args(qemu_args)
    # The -drive if=none that QEMU deletes with the nvme, as a blockdev-add node of the
    # name its device_add arguments give and the same image; the NIC has none.
    assert device_args(qemu_args, {"nvme"})["nvme"]["drive"] == "nvmed"
    assert drives == {"nvmed": {"driver": "raw", "node-name": "nvmed",
                                "file": {"driver": "file",
                                         "filename": str(tmp_path / "nvme.img")}}}


def test_device_requests_are_checked_before_qmp(tmp_path: Path) -> None:
    from kedr_build.vm.qmp import DeviceControl

    control = DeviceControl(tmp_path / "q", tmp_path / "s", {"e1000": {"driver": "e1000"}})
    # No QMP command is sent for a request that is not one (the monitor is never used).
    monitor = object()
    assert control._handle(monitor, "eject e1000").startswith("error: not a request")
    assert control._handle(monitor, "unplug e1001") == \
        "error: no device 'e1001'; attached: e1000"
    assert control._handle(monitor, "unplug e1000 soon") == \
        "error: 'soon': not a number of seconds"
    # A PVH-booted guest would not come back from S3: refused before it suspends.
    control.resumable = False
    assert control._handle(monitor, "suspend").startswith(
        "error: this guest was booted through the kernel's PVH entry")
    control.resumable = True
    assert control._handle(monitor, "suspend") == "ok"


def test_a_failed_workload_is_not_explained_by_the_bindings_list() -> None:
    """The recorded run again, its workload made to fail: the reason is the workload's
    last line, not the bindings section the guest printed after the load."""
    result = result_from_logs(DATA / "no-device")
    output = result.output.replace("KEDR-STEP workload devices-workload.sh 0",
                                   "KEDR-STEP workload devices-workload.sh 1")
    assert output != result.output
    failed = dataclasses.replace(result, output=output, status=4)
    report = interpret(failed, targets=("e1000",))
    assert report.reason.startswith("workload devices-workload.sh failed (status 1)")
    assert "device bindings" not in report.reason, report.reason


def _monitor(listed: list[bool], refused: str = "",
             events: list[dict[str, object]] | None = None) -> object:
    """A QMP monitor (no QEMU) that never sends DEVICE_DELETED and lists intel_hda in
    /machine/peripheral as long as ``listed`` says (one answer a qom-list, the last one
    kept); device_add of the driver ``refused`` fails as QEMU 7.2 refuses a device on
    a bus that takes no hot-plugged device."""
    import asyncio

    from qemu.qmp.legacy import QEMUMonitorProtocol

    class Monitor(QEMUMonitorProtocol):
        def __init__(self) -> None:     # no socket
            self.sent: list[str] = []

        def __del__(self) -> None:      # nothing to close
            pass

        def clear_events(self) -> None:
            pass

        def cmd_raw(self, name: str, args: dict[str, object] | None = None) -> dict[str, object]:
            self.sent.append(name)
            if name == "qom-list":
                present = listed.pop(0) if len(listed) > 1 else listed[0]
                return {"return": [{"name": "intel_hda"}] if present else []}
            if name in ("query-block", "query-named-block-nodes"):
                return {"return": []}
            if name == "device_add" and args:
                self.sent[-1] = f"device_add {args['driver']}"
                if args["driver"] == refused == "scsi-hd":
                    return {"error": {"desc": "Property 'scsi-hd.drive' can't find value "
                                              f"'{args['drive']}'"}}
                if args["driver"] == refused:
                    return {"error": {"desc": f"Bus '{args['bus']}' does not support "
                                              "hotplugging"}}
            elif name == "blockdev-add" and args:
                self.sent[-1] = f"blockdev-add {args['node-name']}"
            return {"return": {}}

        def pull_event(self, wait: bool | float = False) -> dict[str, object]:
            if events:
                return events.pop(0)
            raise asyncio.TimeoutError

    return Monitor()


def test_an_unplug_is_done_once_the_device_left_qemus_tree(tmp_path: Path) -> None:
    """QEMU 7.2 sends DEVICE_DELETED when the object is finalized, and an ejected
    intel-hda never was: its guest released it at once (stock snd_hda_intel, gone from
    sysfs, its id free for the re-plug) and `kedr-device unplug` still waited out its
    time ("the guest did not release intel_hda in 15 s"). Gone from
    /machine/peripheral is released; still there when the time is up is a timeout."""
    from kedr_build.vm.qmp import DeviceControl

    control = DeviceControl(tmp_path / "q", tmp_path / "s",
                            {"intel_hda": {"driver": "intel-hda"}})
    monitor = _monitor([True, True, False])
    assert control._handle(monitor, "unplug intel_hda 10") == "ok"
    assert monitor.sent == ["device_del", "qom-list", "qom-list", "qom-list"]  # type: ignore[attr-defined]
    assert control._handle(_monitor([True]), "unplug intel_hda 0.6") == \
        "timeout: the guest did not release intel_hda in 0.6 s"


def test_an_earlier_unplugs_event_does_not_end_this_one(tmp_path: Path) -> None:
    """QEMU sends DEVICE_DELETED when the object is finalized, which may come after the
    device left the tree (the unplug said "ok" then), after a re-plug under the same
    id: the next unplug must not take that event for its own while the re-plugged
    device is still there."""
    from kedr_build.vm.qmp import DeviceControl

    control = DeviceControl(tmp_path / "q", tmp_path / "s",
                            {"intel_hda": {"driver": "intel-hda"}})
    stale: list[dict[str, object]] = [{"event": "DEVICE_DELETED",
                                       "data": {"device": "intel_hda"}}]
    assert control._handle(_monitor([True], events=stale), "unplug intel_hda 0.6") == \
        "timeout: the guest did not release intel_hda in 0.6 s"
    gone: list[dict[str, object]] = [{"event": "DEVICE_DELETED",
                                      "data": {"device": "intel_hda"}}]
    assert control._handle(_monitor([False], events=gone), "unplug intel_hda 10") == "ok"


def test_a_re_plug_brings_back_the_controllers_disk(kernel: ProvisionedKernel,
                                                    tmp_path: Path) -> None:
    """QEMU deletes a controller's disk (and its -drive) with the controller: the re-plug
    adds the controller, then its disk's drive node and the disk, on a SCSI bus. An IDE
    or HDA bus takes no hot-plugged device: the controller comes back alone, and
    QEMU's refusal is among the run's device events."""
    from kedr_build.vm.qmp import DeviceControl, child_args, device_args, drive_args

    att = attach(catalog.lookup("lsi53c895a,intel-hda,usb-storage,e1000,sdhci"), kernel)
    qemu_args = att.qemu_args(tmp_path)
    ids = {"lsi53c895a", "intel_hda", "usb_storage", "e1000", "sdhci"}
    children = child_args(qemu_args, ids)
    assert children == {
        "lsi53c895a": [{"driver": "scsi-hd", "drive": "lsi53c895ad", "bus": "lsi53c895a.0"}],
        "intel_hda": [{"driver": "hda-duplex", "bus": "intel_hda.0", "audiodev": "intel_hdaa"}],
        # An SD bus has a fixed name ("sd-bus"): the card's bus= is a path through
        # its controller.
        "sdhci": [{"driver": "sd-card", "drive": "sdhcid", "id": "sdhcicard",
                   "bus": "pci.0/sdhci/sd-bus"}]}
    control = DeviceControl(tmp_path / "q", tmp_path / "s", device_args(qemu_args, ids),
                            drives=drive_args(qemu_args), children=children)
    scsi = _monitor([False])
    assert control._handle(scsi, "plug lsi53c895a") == "ok"
    assert scsi.sent == ["device_add lsi53c895a", "query-block",  # type: ignore[attr-defined]
                         "query-named-block-nodes", "blockdev-add lsi53c895ad",
                         "device_add scsi-hd"]
    hda = _monitor([False], refused="hda-duplex")
    # The guest hears of the refusal in the reply (its workload after the re-plug is
    # then not run: tests/test_device_pack.py).
    assert control._handle(hda, "plug intel_hda") == (
        "ok; intel_hda: hda-duplex on intel_hda.0: "
        "not re-plugged: Bus 'intel_hda.0' does not support hotplugging")
    assert hda.sent == ["device_add intel-hda", "device_add hda-duplex"]  # type: ignore[attr-defined]
    assert [(e.request, e.reply) for e in control.events] == [
        ("plug intel_hda: hda-duplex on intel_hda.0",
         "not re-plugged: Bus 'intel_hda.0' does not support hotplugging")]
    # A disk QEMU refuses for another reason (lsi53c895a on debian-6.12: "Property
    # 'scsi-hd.drive' can't find value") is an event too, not a failed plug: the
    # controller is in, and the guest's retries only met "Duplicate device ID".
    scsi = _monitor([False], refused="scsi-hd")
    assert control._handle(scsi, "plug lsi53c895a").startswith(
        "ok; lsi53c895a: scsi-hd on lsi53c895a.0: not re-plugged: Property")
    assert (control.events[-1].request, control.events[-1].reply) == (
        "plug lsi53c895a: scsi-hd on lsi53c895a.0",
        "not re-plugged: Property 'scsi-hd.drive' can't find value 'lsi53c895ad'")
