"""Device requests from the guest, carried out through QMP (hot-unplug, re-plug).

The guest's ``kedr-device unplug e1000`` writes one line on its fourth serial port
(ttyS3, a Unix socket on the host) and reads one line back. :class:`DeviceControl`
serves them on a thread:

* ``unplug ID`` is QMP ``device_del``, then a wait until the id has left QEMU's tree
  (``qom-list /machine/peripheral``: the guest ran the driver's remove() and ejected
  the device). ``DEVICE_DELETED`` only wakes the wait: QEMU sends it when the object
  is finalized (hw/core/qdev.c, device_finalize()), which QEMU 7.2 never did for an
  ejected intel-hda, and which may come after a re-plug under the same id.
* ``plug ID`` is ``device_add`` with the device's arguments from the command line (a
  disk's ``-drive if=none``, when QEMU deleted it with its device, is added again
  first as a ``blockdev-add`` node of the same name and image, which outlives the next
  unplug and is then reused), then the devices on its buses (a controller's disk:
  ``scsi-hd,bus=lsi53c895a.0``, which QEMU deleted with it). A bus that takes no
  hot-plugged device (IDE, HDA) refuses it, as may a disk whose old drive QEMU still
  holds: the controller comes back without it, QEMU's refusal among the run's device
  events and in the reply.
* ``suspend`` is answered at once, then the guest is woken with ``system_wakeup`` once
  QMP shows it suspended (S3: ``echo mem > /sys/power/state`` in the guest returns
  after the wake-up).

QMP goes through ``qemu.qmp``, the QEMU project's own client.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONNECT_SECONDS = 20.0
UNPLUG_SECONDS = 15.0
SUSPEND_SECONDS = 30.0
NOT_REPLUGGED = "not re-plugged: "   # a refused child's event reply, and the plug reply's tail
POLL_SECONDS = 0.25        # between two looks at QEMU's tree while an unplug is pending


@dataclass(frozen=True)
class DeviceEvent:
    request: str          # "unplug e1000"
    reply: str            # "ok", "timeout ...", "error ..."
    seconds: float


@dataclass
class DeviceControl:
    """Serves the guest's device requests for one VM; ``devices``: QEMU id -> the
    device_add arguments (driver, id, bus address, backend...)."""

    qmp_socket: Path
    serial_socket: Path
    devices: Mapping[str, Mapping[str, str]]
    drives: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    children: Mapping[str, Sequence[Mapping[str, str]]] = field(default_factory=dict)
    unplug_seconds: float = UNPLUG_SECONDS
    resumable: bool = True      # the boot can resume from S3 (not the PVH entry)
    events: list[DeviceEvent] = field(default_factory=list)
    error: str = ""
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _serve(self) -> None:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        try:
            serial = _connect(self.serial_socket)
            qmp = QEMUMonitorProtocol(str(self.qmp_socket))
            _retry(qmp.connect)
        except OSError as e:
            self.error = f"device control: cannot connect to QEMU ({e})"
            return
        except Exception as e:     # a QMP handshake that failed
            self.error = f"device control: QMP: {e}"
            return
        try:
            buf = b""
            while True:
                data = serial.recv(4096)
                if not data:
                    return            # QEMU ended
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace").strip()
                    if not line:
                        continue
                    start = time.monotonic()
                    reply = self._handle(qmp, line)
                    serial.sendall(reply.encode() + b"\n")
                    if line == "suspend" and reply == "ok":
                        reply = self._wake(qmp)
                    self.events.append(DeviceEvent(line, reply, time.monotonic() - start))
        except OSError:
            return                    # the VM went away mid-request
        except Exception as e:        # qemu.qmp's errors when QEMU ends mid-command
            self.error = f"device control: QMP: {e}"
        finally:
            serial.close()
            qmp.close()

    def _handle(self, qmp: object, line: str) -> str:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        words = line.split()
        if words == ["suspend"]:
            if not self.resumable:
                return ("error: this guest was booted through the kernel's PVH entry, from "
                        "which QEMU's S3 resume does not return; a WORKLOAD that names "
                        "'kedr-device suspend' boots vmlinuz instead")
            return "ok"       # the guest suspends next; _wake() wakes it (see _serve)
        if not 2 <= len(words) <= 3 or words[0] not in ("unplug", "plug"):
            return (f"error: not a request: {line!r} (unplug ID [SECONDS], plug ID, "
                    "suspend)")
        verb, dev = words[:2]
        wait = self.unplug_seconds
        if len(words) == 3:
            try:
                wait = float(words[2])
            except ValueError:
                return f"error: {words[2]!r}: not a number of seconds"
        if dev not in self.devices:
            return f"error: no device {dev!r}; attached: {', '.join(self.devices)}"
        assert isinstance(qmp, QEMUMonitorProtocol)
        if verb == "plug":
            error = self._add(qmp, self.devices[dev])
            if error:
                return error
            refused = []
            for child in self.children.get(dev, ()):
                # A child QEMU refuses (an IDE, HDA or SD bus takes no hot-plugged
                # device; a disk whose old drive QEMU still holds) leaves the
                # controller back without it: said in the run's device events, and
                # the workload will miss it. Not an error: the controller is plugged
                # in, and a second request would only meet its id ("Duplicate ID").
                error = self._add(qmp, child)
                if error:
                    event = DeviceEvent(
                        f"plug {dev}: {child['driver']} on {child.get('bus', '?')}",
                        f"{NOT_REPLUGGED}{error.removeprefix('error: ')}", 0.0)
                    self.events.append(event)
                    refused.append(f"{event.request.removeprefix('plug ')}: {event.reply}")
            # The guest hears of it too ("ok; not re-plugged: ..."): its workload
            # after this re-plug would find nothing (kedr_build/packs/devkind.py).
            return "; ".join(["ok", *refused])
        qmp.clear_events()
        r = qmp.cmd_raw("device_del", {"id": dev})
        if "error" in r:
            return f"error: {_desc(r)}"
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                ev = qmp.pull_event(wait=min(float(left), POLL_SECONDS))
            except asyncio.TimeoutError:
                ev = None
            # QEMU's tree decides, the event only wakes us: a DEVICE_DELETED of this id
            # may be an earlier unplug's, sent when that object was finalized, after
            # it had left the tree and we had said "ok" (an unplug right after a
            # re-plug took the old event for its own: test_devices_vm, debian-6.12).
            deleted = (ev is not None and ev.get("event") == "DEVICE_DELETED"
                       and ev.get("data", {}).get("device") == dev)
            if (ev is None or deleted) and not _in_tree(qmp, dev):
                return "ok"
        return f"timeout: the guest did not release {dev} in {wait:g} s"

    def _add(self, qmp: object, args: Mapping[str, str]) -> str:
        """device_add, its drive first when QEMU deleted it; "" or the error reply."""
        from qemu.qmp.legacy import QEMUMonitorProtocol

        assert isinstance(qmp, QEMUMonitorProtocol)
        drive = args.get("drive", "")
        if drive in self.drives:
            # Still there as the -drive (a device that keeps it) or as our node?
            backends = qmp.cmd_raw("query-block").get("return", [])
            nodes = qmp.cmd_raw("query-named-block-nodes").get("return", [])
            if not (any(b.get("device") == drive for b in backends)
                    or any(n.get("node-name") == drive for n in nodes)):
                r = qmp.cmd_raw("blockdev-add", dict(self.drives[drive]))
                if "error" in r:
                    return f"error: blockdev-add {drive}: {_desc(r)}"
        r = qmp.cmd_raw("device_add", dict(args))
        return "" if "error" not in r else f"error: {_desc(r)}"

    def _wake(self, qmp: object) -> str:
        """Wait for the guest to enter S3 (QMP query-status: "suspended"), wake it with
        system_wakeup, and wait until it runs again."""
        from qemu.qmp.legacy import QEMUMonitorProtocol

        assert isinstance(qmp, QEMUMonitorProtocol)

        def status() -> str:
            r = qmp.cmd_raw("query-status")
            return str(r.get("return", {}).get("status", ""))
        deadline = time.monotonic() + SUSPEND_SECONDS
        while status() != "suspended":
            if time.monotonic() > deadline:
                return f"timeout: the guest did not suspend in {SUSPEND_SECONDS:.0f} s"
            time.sleep(0.05)
        slept = time.monotonic()
        # Woken at once. QMP says "suspended" only once the guest is in S3: QEMU 7.2's
        # qemu_system_suspend() (softmmu/runstate.c) pauses every vCPU, then sets the
        # run state, after the guest's write of SLP_EN. A fixed 1 s wait here, with no
        # recorded reason, cost 1 s of every suspend; without it the resume passed on
        # both pinned kernels (tests/test_devices_vm.py's e1000, nvme and virtio-blk
        # suspend; tests/test_device_pack_hw_vm.py's e1000 and nvme suspend steps).
        r = qmp.cmd_raw("system_wakeup")
        if "error" in r:
            return f"error: system_wakeup: {_desc(r)}"
        while status() == "suspended":
            if time.monotonic() > deadline + SUSPEND_SECONDS:
                return "timeout: the guest did not wake up"
            time.sleep(0.05)
        return f"ok: suspended, woken by system_wakeup after {time.monotonic() - slept:.2f} s"


def _desc(reply: Mapping[str, object]) -> str:
    """A QMP error reply's description."""
    error = reply["error"]
    return str(error.get("desc", error) if isinstance(error, dict) else error)


def _in_tree(qmp: object, dev: str) -> bool:
    """Is the device of QEMU id ``dev`` still in QEMU's tree? A device given an id on
    the command line or by device_add is /machine/peripheral/<id> until it is
    unplugged (object_unparent(), whatever still holds a reference to it)."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    assert isinstance(qmp, QEMUMonitorProtocol)
    r = qmp.cmd_raw("qom-list", {"path": "/machine/peripheral"})
    if "error" in r:
        return True                   # cannot tell: wait for the event
    return any(p.get("name") == dev for p in r.get("return", []))


def _retry(connect: object) -> None:
    """QEMU makes its sockets a moment after it starts: try until it has."""
    assert callable(connect)
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            connect()
            return
        except Exception as e:   # OSError, or qemu.qmp's ConnectError wrapping one
            if time.monotonic() > deadline:
                raise OSError(str(e)) from None
            time.sleep(0.05)


def _connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _retry(lambda: s.connect(str(path)))
    return s


def device_args(qemu_args: list[str], ids: set[str]) -> dict[str, dict[str, str]]:
    """From a QEMU command line, each ``-device`` whose id is in ``ids``, as
    device_add arguments: "e1000,netdev=n,id=e1000,addr=0x04" -> {"driver": "e1000", ...}."""
    return {args["id"]: args for args in _devices(qemu_args) if args.get("id") in ids}


def child_args(qemu_args: list[str], ids: set[str]) -> dict[str, list[dict[str, str]]]:
    """From a QEMU command line, the ``-device``s on a bus of each device whose id is in
    ``ids``, in order, as device_add arguments: a controller's disk, which QEMU deletes
    with the controller and a re-plug adds again."""
    out: dict[str, list[dict[str, str]]] = {}
    for args in _devices(qemu_args):
        parent = _bus_owner(args.get("bus", ""), ids)
        if parent:
            out.setdefault(parent, []).append(args)
    return out


def _bus_owner(bus: str, ids: set[str]) -> str:
    """The device of ``ids`` a ``bus=`` value names: its bus N (``ahci.0``), or a path
    through it to a bus with a fixed name (``pci.0/sdhci/sd-bus``: every SDHCI's bus is
    "sd-bus", QEMU 7.2 hw/sd/sdhci.c, and a path must start with a bus's name,
    qdev-monitor.c qbus_find()); "" if none."""
    for part in reversed(bus.split("/")):
        for name in (part, part.rsplit(".", 1)[0]):
            if name in ids:
                return name
    return ""


def _devices(qemu_args: list[str]) -> list[dict[str, str]]:
    """Each ``-device`` of a QEMU command line as device_add arguments, in order."""
    out: list[dict[str, str]] = []
    for flag, value in zip(qemu_args, qemu_args[1:]):
        if flag == "-device":
            driver, *props = value.split(",")
            out.append({"driver": driver,
                        **dict(p.split("=", 1) for p in props if "=" in p)})
    return out


def drive_args(qemu_args: list[str]) -> dict[str, dict[str, object]]:
    """From a QEMU command line, each ``-drive if=none`` with an image file, as the
    blockdev-add arguments of a node that stands in for it after QEMU deleted it with
    its device: "if=none,id=d,file=x.img,format=raw" -> {"driver": "raw", "node-name":
    "d", "file": {"driver": "file", "filename": "x.img"}}."""
    out: dict[str, dict[str, object]] = {}
    for flag, value in zip(qemu_args, qemu_args[1:]):
        if flag != "-drive":
            continue
        kv = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
        if kv.get("if") == "none" and "id" in kv and "file" in kv:
            out[kv["id"]] = {"driver": kv.get("format", "raw"), "node-name": kv["id"],
                             "file": {"driver": "file", "filename": kv["file"]}}
    return out
