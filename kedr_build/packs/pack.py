"""A test pack: a TOML file listing tests and their parameters.

::

    [pack]
    name = "basic"
    format = 1
    description = "..."

    [[test]]
    name = "load-unload"          # unique in the pack; TEST=load-unload runs it alone
    kind = "vm"                   # a registered test kind (kedr_build/packs/kinds.py)
    checks = ["loads", "kernel"]  # what is judged; each check is one pytest item
    cycles = 3                    # the kind's own parameters
    blocker = true                # (the default) a check of it not run fails the verdict;
                                  # false: reported as not run (with why), verdict unchanged
    devices = "required"          # not run (with why) when the driver has no DEVICES=
                                  # (the default, "optional": run either way)

The built-in packs are ``kedr_build/packs/builtin/<name>.toml``; ``PACK=`` takes one
of their names or a path. A malformed pack is one :class:`KedrError` line naming
the file, the line and the cause.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedr_build.errors import KedrError
from kedr_build.packs import kinds

FORMAT = 1
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMON = {"name", "kind", "checks", "description", "blocker", "devices"}


@dataclass(frozen=True)
class PackTest:
    name: str
    kind: str
    checks: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)   # the kind's parameters
    description: str = ""
    blocker: bool = True          # not run (no workload, ...) fails the verdict
    devices: str = "optional"     # "required": not run without DEVICES=


@dataclass(frozen=True)
class Pack:
    name: str
    path: Path
    tests: tuple[PackTest, ...]
    description: str = ""

    def test(self, name: str) -> PackTest:
        for t in self.tests:
            if t.name == name:
                return t
        raise KedrError(f"{self.path}: pack {self.name!r} has no test {name!r}; "
                        f"its tests: {', '.join(t.name for t in self.tests)}")


def builtin() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def resolve(spec: str, launch_dir: Path | None = None) -> Path:
    """PACK=: a built-in pack's name, or a path to a pack file."""
    if "/" not in spec and not spec.endswith(".toml"):
        path = BUILTIN_DIR / f"{spec}.toml"
        if path.is_file():
            return path
        raise KedrError(f"PACK={spec}: unknown pack; built in: {', '.join(builtin())} "
                        "(or give the path of a pack file)")
    path = Path(spec) if launch_dir is None else launch_dir / spec
    if not path.is_file():
        raise KedrError(f"PACK={spec}: no such pack file; built in: {', '.join(builtin())}")
    return path.resolve()


def load(spec: str, launch_dir: Path | None = None) -> Pack:
    path = resolve(spec, launch_dir)
    return parse(path.read_text(), path)


def parse(text: str, path: Path) -> Pack:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line 3, column 5)": put the place first, as compilers do.
        m = re.search(r"^(.*) \(at line (\d+), column \d+\)$", str(e))
        if m:
            raise KedrError(f"{path}:{m.group(2)}: {m.group(1)}") from None
        raise KedrError(f"{path}: {e}") from None
    where = _Locator(text, path)
    head = data.get("pack")
    if not isinstance(head, dict):
        raise KedrError(f"{path}:1: no [pack] table (name, format)")
    for key in head:
        if key not in ("name", "format", "description"):
            raise where.error(f"[pack]: unknown key {key!r} (known: name, format, description)",
                              "pack", 0, key)
    name = head.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise where.error("[pack] name must be a name like \"basic\"", "pack", 0, "name")
    if head.get("format", FORMAT) != FORMAT:
        raise where.error(f"[pack] format {head.get('format')!r}: this kedr-build reads "
                          f"format {FORMAT}", "pack", 0, "format")
    for key in data:
        if key not in ("pack", "test"):
            raise where.error(f"unknown table {key!r} (a pack has [pack] and [[test]])", key, 0)
    raw_tests = data.get("test", [])
    if not isinstance(raw_tests, list) or not raw_tests:
        raise KedrError(f"{path}: the pack lists no [[test]]")
    tests: list[PackTest] = []
    for i, raw in enumerate(raw_tests):
        tests.append(_test(raw, i, where, {t.name for t in tests}))
    return Pack(name=name, path=path, tests=tuple(tests),
                description=str(head.get("description", "")))


def _test(raw: dict[str, Any], index: int, where: _Locator, seen: set[str]) -> PackTest:
    def error(cause: str, key: str | None = None) -> KedrError:
        return where.error(f"[[test]] {raw.get('name', index + 1)!s}: {cause}", "test", index,
                           key)

    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise error("name must be a name like \"load-unload\"", "name")
    if name in seen:
        raise error("a test of that name comes earlier in the pack", "name")
    kind_name = raw.get("kind")
    if not isinstance(kind_name, str):
        raise error(f"kind is required (known: {', '.join(kinds.names())})", "kind")
    try:
        kind = kinds.get(kind_name)
    except KedrError as e:
        raise error(str(e), "kind") from None
    checks = raw.get("checks", list(kind.checks))
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks) or not checks:
        raise error("checks must be a non-empty list of names", "checks")
    for c in checks:
        if c not in kind.checks:
            raise error(f"check {c!r} is not one of kind {kind_name!r}'s: "
                        f"{', '.join(kind.checks)}", "checks")
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _COMMON:
            continue
        param = kind.params.get(key)
        if param is None:
            known = sorted(_COMMON | set(kind.params))
            raise error(f"unknown key {key!r} (known for kind {kind_name!r}: "
                        f"{', '.join(known)})", key)
        cause = param.check(value)
        if cause:
            raise error(f"{key}: {cause}", key)
        params[key] = value
    for key, param in kind.params.items():
        params.setdefault(key, param.default)
    blocker = raw.get("blocker", True)
    if not isinstance(blocker, bool):
        raise error(f"blocker: {blocker!r} is not true or false", "blocker")
    devices = raw.get("devices", "optional")
    if devices not in ("optional", "required"):
        raise error(f"devices: {devices!r} is not \"optional\" or \"required\"", "devices")
    return PackTest(name=name, kind=kind_name, checks=tuple(dict.fromkeys(checks)),
                    params=params, description=str(raw.get("description", "")),
                    blocker=blocker, devices=devices)


class _Locator:
    """Finds the line of a table or key in the pack's text (tomllib keeps no positions)."""

    def __init__(self, text: str, path: Path) -> None:
        self.lines = text.splitlines()
        self.path = path

    def error(self, cause: str, table: str, index: int, key: str | None = None) -> KedrError:
        return KedrError(f"{self.path}:{self.line(table, index, key)}: {cause}")

    def line(self, table: str, index: int, key: str | None) -> int:
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
        any_header = re.compile(r"^\s*\[")
        start, count = None, 0
        for n, text in enumerate(self.lines):
            if header.match(text):
                if count == index:
                    start = n
                    break
                count += 1
        if start is None:
            return 1
        if key is None:
            return start + 1
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for n in range(start + 1, len(self.lines)):
            if any_header.match(self.lines[n]):
                break
            if pattern.match(self.lines[n]):
                return n + 1
        return start + 1
