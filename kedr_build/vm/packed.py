"""The guest's big dumps over its serial line, gzipped and in base64, and unpacked here.

The job's output reaches the host through an emulated 16550 UART (ttyS1), one port
write per byte: about 340 KB of guest time a second under TCG (1 MB of text took
2.96 s, debian-6.1). A device pack test's kallsyms, trace and leak report are 0.3 to
1.5 MB of text; gzip -1 and base64 make them a ninth of that (e1000's hotplug step:
1.49 MB, 167 KB packed). The guest (guest-run.sh.j2, ``packed``) writes such a
dump between :data:`BEGIN` and :data:`END`, one base64 line after another, when its
busybox has gzip and base64 (else plain); :func:`unpack` puts the text back in its
place, so every reader of the output sees what the guest printed. A block cut short
(the guest crashed or hung in the middle of it) gives back what it holds, and a
line saying it was cut; a block that is not gzip in base64 is left as it came.
"""

from __future__ import annotations

import base64
import binascii
import zlib

BEGIN = "--- packed: gzip, base64 ---"
END = "--- end of packed ---"
CUT = "kedr-build: packed output cut short"


def unpack(output: str) -> str:
    """``output`` with each packed block replaced by the text it holds."""
    if BEGIN not in output:
        return output
    out: list[str] = []
    block: list[str] | None = None
    for line in output.split("\n"):
        if block is None:
            if line == BEGIN:
                block = []
            else:
                out.append(line)
        elif line == END:
            out.extend(_text(block, complete=True))
            block = None
        else:
            block.append(line)
    if block is not None:
        out.extend(_text(block, complete=False))
    return "\n".join(out)


def _text(block: list[str], complete: bool) -> list[str]:
    data = "".join(ln.strip() for ln in block)
    try:
        raw = base64.b64decode(data[:len(data) // 4 * 4], validate=True)
        inflate = zlib.decompressobj(wbits=31)      # gzip's header and trailer
        text = inflate.decompress(raw).decode("utf-8", "replace")
    except (binascii.Error, ValueError, zlib.error):
        return [BEGIN, *block] + ([END] if complete else [])
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not complete or not inflate.eof:
        lines.append(CUT)
    return lines
