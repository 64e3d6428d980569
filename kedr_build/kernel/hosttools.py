"""Host tools kedr-build runs, and the Debian packages that provide them.

The one list: ``./kedr-env`` runs ``python3 -m kedr_build.kernel.hosttools`` (with
the system Python, before any virtualenv exists) to learn which packages to
install, and the code calls :func:`require` before running a tool.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kedr_build.errors import KedrError

# tool -> Debian package
PACKAGES: dict[str, str] = {
    "make": "make",
    "bash": "bash",
    "gcc": "gcc",
    "gcc-12": "gcc-12",
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "modprobe": "kmod",
    "readelf": "binutils",
    "objcopy": "binutils",
    "xz": "xz-utils",
    "zstd": "zstd",
    # 6.12's kbuild (CONFIG_DEBUG_INFO_BTF_MODULES) runs pahole on every module it
    # links; Debian's linux-kbuild-6.12 package depends on it.
    "pahole": "pahole",
    # The HTML test report is checked as a person sees it: rendered by a real headless
    # browser (tests/test_packs_vm.py) driven through selenium; PyPI cannot fetch one.
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    # TARGET=ssh:// reaches a real machine with the OpenSSH client; the tests make a
    # QEMU guest play that machine with Dropbear's server (tests/labmachine.py).
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dropbear": "dropbear-bin",
}

# The static busybox goes into the guest; a dynamic one would need its libc.
BUSYBOX_STATIC = Path("/bin/busybox")
# python3-venv: ./kedr-env creates the virtualenv with the system Python.
PYTHON_VENV_PACKAGE = "python3-venv"


def find(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def require(tools: list[str]) -> dict[str, str]:
    """Paths of the tools, or one error naming every missing tool's package."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for tool in tools:
        path = find(tool)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    if missing:
        pkgs = sorted({PACKAGES.get(t, t) for t in missing})
        raise KedrError(f"missing host tools: {', '.join(missing)}; "
                        f"install them with: apt-get install {' '.join(pkgs)}")
    return found


def static_busybox() -> Path:
    path = find("busybox")
    candidates = [BUSYBOX_STATIC] + ([Path(path)] if path else [])
    for cand in candidates:
        if cand.is_file() and _is_static(cand):
            return cand
    raise KedrError("no statically linked busybox for the guest; "
                    "install it with: apt-get install busybox-static")


def _is_static(path: Path) -> bool:
    # A static ELF has no PT_INTERP; reading the program headers by hand keeps
    # this check free of ELF libraries.
    import struct
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def missing_packages() -> list[str]:
    """Debian packages to install so that every tool above (and a static busybox and
    the venv module) is present; [] when nothing is missing."""
    import importlib.util

    missing = {pkg for tool, pkg in PACKAGES.items() if tool != "busybox" and find(tool) is None}
    try:
        static_busybox()
    except KedrError:
        missing.add(PACKAGES["busybox"])
    if importlib.util.find_spec("ensurepip") is None or importlib.util.find_spec("venv") is None:
        missing.add(PYTHON_VENV_PACKAGE)
    return sorted(missing)


if __name__ == "__main__":
    print(" ".join(missing_packages()))
