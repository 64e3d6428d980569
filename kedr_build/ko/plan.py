"""What to rename to what: a :class:`RenamePlan` built from function names and a naming scheme.

Naming schemes
--------------
``same-length`` (default)
    The replacement has the length of the original, so the patcher can usually
    rewrite the name in place in ``.strtab``. Candidates, first free one wins:

    1. toggle the case of the first letter after any leading underscores
       (``kfree`` → ``Kfree``, ``__kmalloc`` → ``__Kmalloc``);
    2. the same plus the case of one later letter toggled, left to right
       (``KFree``, ``KfRee``, ``KfrEe``, ``KfreE``);
    3. only one later letter toggled, left to right (``kFree``, ``kfRee``, …).

    A candidate is taken if the target kernel does not export it (Module.symvers)
    and no other entry of the plan uses it as a source or a replacement.
``prefix:P``
    ``P`` + name (``prefix:kedr_`` gives ``kedr_kfree``); any length.
explicit mapping
    ``{"kfree": "my_kfree"}`` — wins over the scheme for the names it lists.

Checks made here, once per plan: never-rename names (below) are refused; a
replacement must be a C identifier, unique in the plan, never also a source (no
chains such as kfree→Kfree→KFree) and not exported by the target kernel. A name
the target kernel's Module.symvers does not export is kept with a warning: it may
be a data symbol or a typo. Per-module checks (is it imported? does the module
already define or import the replacement?) are made by the patcher.

Plan files (TOML or JSON, same keys)::

    naming = "same-length"            # or "prefix:kedr_"
    functions = ["kfree", "__kmalloc"]
    replacement_module = "kedr_repl"  # optional: added to the module's depends=
    [rename]                          # optional explicit mapping
    kmalloc_trace = "kedr_kmalloc_trace"
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedr_build.errors import KedrError
from kedr_build.ko.names import is_c_identifier, is_module_name

# Imports that must keep their names: calls whose bytes the kernel checks or rewrites
# (ftrace's __fentry__, return and indirect-branch thunks patched by objtool/alternatives),
# static calls and keys, tracepoints and CRC/ksymtab data, sanitizer hooks.
NEVER_RENAME_EXACT = frozenset({
    "__fentry__", "mcount", "_mcount", "__x86_return_thunk", "__stack_chk_guard",
    "module_layout", "__this_module", "__static_call_return0",
    "__x86_indirect_thunk_array", "__x86_indirect_call_thunk_array",
})
NEVER_RENAME_PREFIXES = (
    "__x86_indirect_thunk_", "__x86_indirect_call_thunk_", "__x86_indirect_jump_thunk_",
    "__x86_indirect_alt_", "__x86_return_", "__SCT__", "__SCK__", "__tracepoint_",
    "__traceiter_", "__asan_", "__kasan_", "__hwasan_", "__kcsan_", "__tsan_", "__msan_",
    "__ubsan_handle_", "__sanitizer_cov_", "__gcov_", "__crc_", "__ksymtab_", "__kstrtab_",
)
NAMING_HELP = "same-length or prefix:PREFIX (e.g. prefix:kedr_)"
_PLAN_KEYS = ("naming", "functions", "replacement_module", "rename")


def never_rename_reason(name: str) -> str | None:
    if name in NEVER_RENAME_EXACT:
        return f"{name} must never be renamed (the kernel checks or rewrites its uses)"
    for p in NEVER_RENAME_PREFIXES:
        if name.startswith(p):
            return f"{name} must never be renamed ({p}* symbols are patched or data)"
    return None


@dataclass(frozen=True)
class Naming:
    scheme: str  # "same-length" or "prefix"
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Naming:
        if text == "same-length":
            return cls("same-length")
        if text.startswith("prefix:"):
            prefix = text[len("prefix:"):]
            if not prefix or not is_c_identifier(prefix):
                raise KedrError(f"naming {text!r}: the prefix must be a C identifier")
            return cls("prefix", prefix)
        raise KedrError(f"unknown naming {text!r}; use {NAMING_HELP}")

    def __str__(self) -> str:
        return self.scheme if self.scheme == "same-length" else f"prefix:{self.prefix}"


SAME_LENGTH = Naming("same-length")


@dataclass(frozen=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True)
class RenamePlan:
    renames: tuple[Rename, ...]
    replacement_module: str | None = None
    warnings: tuple[str, ...] = ()

    def mapping(self) -> dict[str, str]:
        return {r.old: r.new for r in self.renames}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rename": self.mapping()}
        if self.replacement_module:
            out["replacement_module"] = self.replacement_module
        return out


def same_length_candidates(name: str) -> Iterator[str]:
    """Replacement names of the same length, in the documented order."""
    lead = len(name) - len(name.lstrip("_"))
    letters = [i for i in range(lead, len(name)) if name[i].isalpha()]
    if not letters:
        return

    def toggle(s: str, *positions: int) -> str:
        chars = list(s)
        for p in positions:
            chars[p] = chars[p].swapcase()
        return "".join(chars)

    first, later = letters[0], letters[1:]
    yield toggle(name, first)
    for p in later:
        yield toggle(name, first, p)
    for p in later:
        yield toggle(name, p)


def build_plan(functions: Iterable[str], naming: Naming = SAME_LENGTH,
               explicit: Mapping[str, str] | None = None,
               kernel_exports: Collection[str] | None = None,
               replacement_module: str | None = None, where: str = "plan",
               allow_empty: bool = False) -> RenamePlan:
    """A checked plan. ``kernel_exports``: names the target kernel exports (Module.symvers)."""
    explicit = dict(explicit or {})
    sources: list[str] = []
    for f in [*functions, *explicit]:
        if f not in sources:
            sources.append(f)
    if not sources and not allow_empty:
        raise KedrError(f"{where}: no functions to rename")
    warnings: list[str] = []
    for s in sources:
        if not is_c_identifier(s):
            raise KedrError(f"{where}: {s!r} is not a symbol name")
        reason = never_rename_reason(s)
        if reason:
            raise KedrError(f"{where}: {reason}")
        if kernel_exports is not None and s not in kernel_exports:
            warnings.append(f"{s} is not exported by the target kernel (data symbol, typo, or "
                            "a module's export?)")
    taken = set(sources)
    exported = kernel_exports if kernel_exports is not None else frozenset()
    renames: list[Rename] = []
    for s in sources:
        if s in explicit:
            new = explicit[s]
            if not is_c_identifier(new):
                raise KedrError(f"{where}: replacement {new!r} for {s} is not a C identifier")
            problem = _collision(new, s, taken, exported)
            if problem:
                raise KedrError(f"{where}: replacement {new} for {s}: {problem}")
        elif naming.scheme == "prefix":
            new = naming.prefix + s
            problem = _collision(new, s, taken, exported)
            if problem:
                raise KedrError(f"{where}: replacement {new} for {s}: {problem}")
        else:
            for new in same_length_candidates(s):
                if _collision(new, s, taken, exported) is None:
                    break
            else:
                raise KedrError(f"{where}: no free same-length replacement name for {s}")
        taken.add(new)
        renames.append(Rename(s, new))
    if replacement_module is not None and not is_module_name(replacement_module):
        raise KedrError(f"{where}: bad replacement module name {replacement_module!r}")
    return RenamePlan(tuple(renames), replacement_module, tuple(warnings))


def _collision(new: str, old: str, taken: set[str], exported: Collection[str]) -> str | None:
    if new == old:
        return "same as the original"
    if new in taken:
        return "already used in the plan (as a function to rename or a replacement)"
    if new in exported:
        return "the target kernel already exports that name"
    if never_rename_reason(new):
        return "reserved name"
    return None


def load_plan(path: str | os.PathLike[str], naming: Naming | None = None,
              kernel_exports: Collection[str] | None = None,
              allow_empty: bool = False) -> RenamePlan:
    """Read a TOML (``.toml``) or JSON plan file; ``naming`` overrides the file's."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise KedrError(f"{p}: cannot read plan: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise KedrError(f"{p}: bad plan file: not UTF-8 text (byte {e.start})") from None
    try:
        data: Any = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KedrError(f"{p}: bad plan file: {e}") from None
    if not isinstance(data, dict):
        raise KedrError(f"{p}: a plan is a table/object with keys {', '.join(_PLAN_KEYS)}")
    unknown = sorted(set(data) - set(_PLAN_KEYS))
    if unknown:
        raise KedrError(f"{p}: unknown plan key(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(_PLAN_KEYS)}")
    functions = data.get("functions", [])
    rename = data.get("rename", {})
    module = data.get("replacement_module")
    if not (isinstance(functions, list) and all(isinstance(f, str) for f in functions)):
        raise KedrError(f"{p}: 'functions' must be a list of names")
    if not (isinstance(rename, dict) and all(isinstance(v, str) for v in rename.values())):
        raise KedrError(f"{p}: 'rename' must map names to names")
    if module is not None and not isinstance(module, str):
        raise KedrError(f"{p}: 'replacement_module' must be a string")
    if naming is None:
        n = data.get("naming", "same-length")
        if not isinstance(n, str):
            raise KedrError(f"{p}: 'naming' must be a string: {NAMING_HELP}")
        naming = Naming.parse(n)
    return build_plan(functions, naming, rename, kernel_exports, module, where=str(p),
                      allow_empty=allow_empty)
