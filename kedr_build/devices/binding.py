"""Which driver bound which device, as the guest read it from sysfs after the load.

The guest prints one ``KEDR-BIND <bus> <device> <module> <modalias> <driver>`` line
per PCI, USB and virtio device (``-`` where nothing is bound); :func:`parse` reads
them back and :func:`unbound_targets` names the drivers under test that bound none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BIND_BEGIN = "--- device bindings ---"
BIND_END = "--- end of device bindings ---"
_MARK = "KEDR-BIND "


@dataclass(frozen=True)
class Binding:
    bus: str          # pci, usb, virtio
    device: str       # 0000:00:04.0, 1-1:1.0, virtio0
    module: str       # the bound driver's module ("" when unbound or built in)
    modalias: str
    driver: str       # the driver's own name ("" when unbound)

    def __str__(self) -> str:
        who = f"{self.driver} ({self.module})" if self.module else (self.driver or "no driver")
        return f"{self.bus} {self.device} [{self.modalias}]: {who}"


def parse(output: str) -> tuple[tuple[Binding, ...], bool]:
    """The bindings, and whether the guest printed its bindings section at all."""
    out: list[Binding] = []
    seen = False
    inside = False
    for raw in output.splitlines():
        line = raw.strip()
        if line == BIND_BEGIN:
            seen = inside = True
        elif line == BIND_END:
            inside = False
        elif inside and line.startswith(_MARK):
            words = line[len(_MARK):].split(" ", 4)
            if len(words) < 5:
                continue     # a truncated line: never a guess
            bus, dev, mod, alias, drv = words

            def dash(x: str) -> str:
                return "" if x == "-" else x
            out.append(Binding(bus, dev, dash(mod).replace("-", "_"), dash(alias), dash(drv)))
    return tuple(out), seen


def unbound_targets(targets: Iterable[str], bindings: Iterable[Binding]) -> list[str]:
    """The drivers under test (module names) that no device is bound to."""
    bound = {b.module for b in bindings if b.module}
    return [t for t in targets if t.replace("-", "_") not in bound]
