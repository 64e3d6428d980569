"""The guest's packed dumps (kedr_build/vm/packed.py): what the guest's busybox
``gzip -1 | base64`` (the same binary the initramfs carries) writes between the marks
comes back as the text it holds, in its place; a block cut short gives back what it
holds and says so; a block that is not gzip in base64 stays as it came."""

from __future__ import annotations

import subprocess

from kedr_build.kernel import hosttools
from kedr_build.vm import packed

TEXT = "".join(f"  insmod-{i} [000] ..... {i}.5: kedr_call: kmalloc size={i}\n"
               for i in range(3000))


def _busybox_packed(text: str) -> str:
    """What the guest's ``packed`` shell function prints for ``text``."""
    bb = str(hosttools.static_busybox())
    gz = subprocess.run([bb, "gzip", "-1"], input=text.encode(), capture_output=True,
                        check=True).stdout
    b64 = subprocess.run([bb, "base64"], input=gz, capture_output=True, check=True).stdout
    return f"{packed.BEGIN}\n{b64.decode()}{packed.END}\n"


def test_a_packed_dump_unpacks_in_place() -> None:
    block = _busybox_packed(TEXT)
    assert len(block) < len(TEXT) / 5, len(block)
    output = f"KEDR-STEP insmod e1000 0\n{block}KEDR-STEP rmmod e1000 0\n"
    assert packed.unpack(output) == f"KEDR-STEP insmod e1000 0\n{TEXT}KEDR-STEP rmmod e1000 0\n"
    # Two blocks, and output without any, are left alone around them.
    assert packed.unpack(block + "x\n" + block) == TEXT + "x\n" + TEXT
    assert packed.unpack("plain\n") == "plain\n"


def test_a_block_cut_short_gives_what_it_holds() -> None:
    lines = _busybox_packed(TEXT).splitlines()
    cut = "\n".join(lines[: len(lines) // 2]) + "\n"      # no END: the guest died
    out = packed.unpack(cut).splitlines()
    assert out[-1] == packed.CUT
    assert 0 < len(out) - 1 < TEXT.count("\n")
    assert "\n".join(out[:-2]) + "\n" in TEXT        # whole lines, from the start


def test_a_block_that_is_not_gzip_stays_as_it_came() -> None:
    output = f"{packed.BEGIN}\nnot base64 at all!\n{packed.END}\nrest\n"
    assert packed.unpack(output) == output
