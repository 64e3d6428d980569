"""The catalog of kernel functions a replacement module can intercept.

One TOML file per family in ``replacements/catalog/`` (format:
``replacements/catalog/README.md``). An entry describes one *exported name*
of one kernel: prototype, headers, family, the value a simulated fault returns,
how the trace prints each value. Variants across kernels are separate entries;
an entry applies to a kernel when the kernel's ``Module.symvers`` exports its
name (plus the names in ``requires``, minus those in ``excludes``): detected,
never derived from a version number.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedr_build.errors import KedrError
from kedr_build.ko.names import is_c_identifier
from kedr_build.resources import CATALOG_DIR
from kedr_build.ko.symvers import read_symvers


FAMILIES = frozenset({"alloc", "free", "lock", "unlock", "user-copy", "sleep", "sync", "irq",
                      "io", "string", "timer", "device", "work"})

# How the trace event stores and prints a value (see replacements/catalog/README.md).
SHOWS = frozenset({"ptr", "hex", "int", "uint", "long", "ulong", "size", "gfp", "str", "fn",
                   "bool", "skip"})

# Trace event fields and generated locals that an argument name must not shadow.
RESERVED_NAMES = frozenset({"call_site", "ret"})

_ERRNO_FAULT = re.compile(r"-E[A-Z0-9]+\Z")
_C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
    float for goto if inline int long register restrict return short signed sizeof static struct
    switch typedef union unsigned void volatile while _Bool""".split())

_KNOWN_KEYS = frozenset({"name", "api", "kernels", "returns", "returns_show", "args", "variadic",
                         "headers", "family", "fault", "allocates", "frees", "requires",
                         "excludes", "track", "size", "order", "cache", "when", "sleeps",
                         "resource", "key", "key2", "fails_on"})

# Leak tracking (replacements/runtime/kedr_leak.c): what an allocating entry
# returns, how a freeing entry releases, and the reallocators that do both.
# Resources: acquired by an entry whose track is the kind, released by one with
# track = "release" and resource = the kind; identified by `key` (and `key2`).
RESOURCE_KINDS = frozenset({"netdev", "netdev_registered", "skb", "dma_coherent", "dma_mapping",
                            "irq", "iomap", "region", "pci_regions", "pci_enabled", "workqueue",
                            "firmware", "urb", "chrdev_region", "chrdev", "cdev", "misc", "class",
                            "device", "debugfs", "driver", "device_ref", "notifier",
                            "pernet"})
TRACK_KINDS = frozenset({"kmalloc", "cache", "vmalloc", "kvmalloc", "pages", "page",
                         "pages_exact", "kmem_cache", "mutex", "timer", "spinlock", "work",
                         "dwork"}) | RESOURCE_KINDS
TRACK_FREES = frozenset({"kfree", "kfree_const", "kvfree", "vfree", "cache_free", "free_pages",
                         "free_page", "free_pages_exact", "kmem_cache_destroy", "mutex_unlock",
                         "timer_delete", "spin_unlock", "work_cancel", "release", "kvfree_rcu",
                         "kvfree_rcu_offset"})
# reallocator -> (kind it returns, how it frees the old object)
TRACK_REALLOCS = {"krealloc": ("kmalloc", "kfree"), "kvrealloc": ("kvmalloc", "kvfree")}

# Default `show` for a C type; pointers are "ptr", function pointers "fn".
_SHOW_OF_TYPE = {
    "gfp_t": "gfp",
    "size_t": "size",
    "ssize_t": "long",
    "int": "int",
    "long": "long",
    "unsigned int": "uint",
    "unsigned": "uint",
    "unsigned long": "ulong",
    "bool": "bool",
    "resource_size_t": "hex",
    "phys_addr_t": "hex",
    "u32": "uint",
    "u64": "hex",
    "irq_handler_t": "fn",
    "va_list": "skip",
}


# The catalog needs a kernel's exports only as names (and the generator their
# export types): kedr_build.ko.symvers parses Module.symvers for both.
read_exports = read_symvers


@dataclass(frozen=True)
class Arg:
    type: str       # C type; a function pointer is written "void (*)(void *)"
    name: str
    show: str

    def decl(self) -> str:
        """The C parameter declaration: ``const void *objp``, ``void (*ctor)(void *)``."""
        if "(*)" in self.type:
            return self.type.replace("(*)", f"(*{self.name})", 1)
        sep = "" if self.type.endswith("*") else " "
        return f"{self.type}{sep}{self.name}"


@dataclass(frozen=True)
class CatalogEntry:
    name: str                       # exported name: "kmalloc_trace"
    api: str                        # source-level API it implements: "kmalloc"
    returns: str                    # C return type
    returns_show: str               # "" for void
    args: tuple[Arg, ...]
    headers: tuple[str, ...]
    family: str
    fault: str                      # "none", "NULL", "0", "-ENOMEM", "ERR_PTR(-ENOMEM)", or an arg
    source: Path                    # the catalog file it comes from
    variadic: str | None = None     # the va_list twin called for a "..." function
    allocates: str | None = None    # "ret" (the return value is a new resource) or the
                                    # argument acquired (mutex_lock: "lock")
    frees: str | None = None        # the argument whose resource is released
    requires: tuple[str, ...] = ()  # also exported, for the entry to apply
    excludes: tuple[str, ...] = ()  # not exported, for the entry to apply
    kernels: str = ""               # informational: where this name was seen
    track: str | None = None        # leak tracking: a TRACK_KINDS/TRACK_FREES/TRACK_REALLOCS name
    size: str | None = None         # C expression: the object's size (args, kedr_ret)
    order: str | None = None        # C expression: the page order (pages, page, free_page[s])
    cache: str | None = None        # the kmem_cache argument (cache, cache_free)
    when: str | None = None         # C condition for tracking a result (kstrdup_const)
    sleeps: str | None = None       # may sleep: "yes", or the gfp argument that says so
    resource: str | None = None     # track "release": the RESOURCE_KINDS kind released
    key: str | None = None          # C expression: the value naming a resource
    key2: str | None = None         # C expression: a second one (free_irq's dev_id)
    fails_on: str | None = None     # "signal": fails only when a signal is pending

    @property
    def returns_void(self) -> bool:
        return self.returns == "void"

    def prototype(self, fname: str | None = None) -> str:
        """``void *kmalloc_trace(struct kmem_cache *s, gfp_t flags, size_t size)``."""
        params = [a.decl() for a in self.args]
        if self.variadic:
            params.append("...")
        sep = "" if self.returns.endswith("*") else " "
        return f"{self.returns}{sep}{fname or self.name}({', '.join(params) or 'void'})"

    def applies_to(self, exports: Mapping[str, object]) -> bool:
        return (self.name in exports and all(r in exports for r in self.requires)
                and not any(x in exports for x in self.excludes))


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]

    def names(self) -> list[str]:
        return sorted({e.name for e in self.entries})

    def for_kernel(self, exports: Mapping[str, object]) -> dict[str, CatalogEntry]:
        """The entries that apply to a kernel, by exported name."""
        found: dict[str, CatalogEntry] = {}
        for e in self.entries:
            if not e.applies_to(exports):
                continue
            if e.name in found:
                raise KedrError(f"catalog: two entries for {e.name} apply to this kernel "
                                f"({found[e.name].source.name} and {e.source.name}); "
                                "tell them apart with 'requires'/'excludes'")
            found[e.name] = e
        return found

    def lookup(self, name: str, exports: Mapping[str, object]) -> CatalogEntry:
        """The entry for an exported name on this kernel, or a KedrError saying why not."""
        applicable = self.for_kernel(exports)
        if name in applicable:
            return applicable[name]
        if name in self.names():
            if name not in exports:
                raise KedrError(f"catalog entry {name} does not apply: the kernel does not "
                                "export it")
            raise KedrError(f"catalog entry {name} does not apply: its 'requires'/'excludes' "
                            "do not match this kernel's exports")
        close = difflib.get_close_matches(name, self.names(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise KedrError(f"no catalog entry for function {name!r}{hint}")


@dataclass(frozen=True)
class ValidationReport:
    applicable: tuple[CatalogEntry, ...]
    missing: tuple[CatalogEntry, ...]       # entries whose exported name the kernel lacks
    unmatched: tuple[CatalogEntry, ...]     # exported, but requires/excludes rule them out
    apis_unavailable: tuple[str, ...]       # APIs for which no variant applies


def validate(catalog: Catalog, exports: Mapping[str, object]) -> ValidationReport:
    """Check the catalog against one kernel's exports (a read_exports() result)."""
    applicable = catalog.for_kernel(exports)
    missing = tuple(e for e in catalog.entries if e.name not in exports)
    unmatched = tuple(e for e in catalog.entries
                      if e.name in exports and applicable.get(e.name) is not e)
    apis = {e.api for e in catalog.entries}
    covered = {e.api for e in applicable.values()}
    return ValidationReport(applicable=tuple(applicable.values()), missing=missing,
                            unmatched=unmatched, apis_unavailable=tuple(sorted(apis - covered)))


def load(directory: Path = CATALOG_DIR) -> Catalog:
    """Read every ``*.toml`` of a catalog directory."""
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise KedrError(f"{directory}: no catalog files (*.toml)")
    return load_files(files)


def load_files(files: Iterable[Path]) -> Catalog:
    entries: list[CatalogEntry] = []
    for path in files:
        entries += _load_file(path)
    _check_duplicates(entries)
    return Catalog(entries=tuple(entries))


def _load_file(path: Path) -> list[CatalogEntry]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise KedrError(f"{path}: cannot read catalog file: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise KedrError(f"{path}: not valid TOML: {e}") from None
    unknown = set(data) - {"function"}
    if unknown:
        raise KedrError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))} "
                        "(entries are [[function]] tables)")
    functions = data.get("function", [])
    if not isinstance(functions, list):
        raise KedrError(f"{path}: 'function' must be an array of tables ([[function]])")
    return [_entry(path, i, raw) for i, raw in enumerate(functions, 1)]


def _entry(path: Path, index: int, raw: Any) -> CatalogEntry:
    name = raw.get("name") if isinstance(raw, dict) else None
    where = f"{path}: function {name!r}" if isinstance(name, str) else f"{path}: function #{index}"

    def bad(msg: str) -> KedrError:
        return KedrError(f"{where}: {msg}")

    if not isinstance(raw, dict):
        raise bad("not a table")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        close = {k: difflib.get_close_matches(k, _KNOWN_KEYS, n=1) for k in sorted(unknown)}
        hints = ", ".join(f"{k}" + (f" (did you mean {c[0]}?)" if c else "")
                          for k, c in close.items())
        raise bad(f"unknown key(s): {hints}")

    def text(key: str, default: str | None = None) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise bad(f"'{key}' must be a non-empty string" if key in raw
                      else f"missing '{key}'")
        return value.strip()

    def names(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and is_c_identifier(v)
                                                  for v in value):
            raise bad(f"'{key}' must be a list of symbol names")
        return tuple(value)

    name = text("name")
    if not is_c_identifier(name):
        raise bad("'name' must be a C identifier")
    returns = _normalize_type(text("returns"))
    variadic = raw.get("variadic")
    if variadic is not None and not (isinstance(variadic, str) and is_c_identifier(variadic)):
        raise bad("'variadic' must name the va_list function to call")

    args = tuple(_arg(bad, i, a) for i, a in enumerate(_list(bad, raw.get("args", []), "args"), 1))
    arg_names = [a.name for a in args]
    dups = sorted({n for n in arg_names if arg_names.count(n) > 1})
    if dups:
        raise bad(f"duplicate argument name(s): {', '.join(dups)}")
    if variadic and not args:
        raise bad("a variadic function needs at least one fixed argument")

    headers = raw.get("headers")
    if not isinstance(headers, list) or not headers or not all(
            isinstance(h, str) and re.fullmatch(r"[\w/.-]+\.h", h) for h in headers):
        raise bad("'headers' must be a non-empty list like [\"linux/slab.h\"]")

    family = text("family")
    if family not in FAMILIES:
        raise bad(f"unknown family {family!r}; known: {', '.join(sorted(FAMILIES))}")

    if returns == "void":
        returns_show = ""
        if "returns_show" in raw:
            raise bad("'returns_show' given for a void function")
    else:
        returns_show = text("returns_show", _default_show(returns) or "")
        if returns_show not in SHOWS - {"skip"}:
            raise bad(f"cannot tell how to print return type {returns!r}: "
                      f"add returns_show (one of {', '.join(sorted(SHOWS - {'skip'}))})")

    fault = text("fault")
    _check_fault(bad, fault, returns, arg_names)

    allocates = raw.get("allocates")
    if allocates is not None and not ((allocates == "ret" and returns != "void")
                                      or allocates in arg_names):
        raise bad("'allocates' must be \"ret\" (for a function that returns a value) or name "
                  "the argument acquired")
    frees = raw.get("frees")
    # An argument, or a member of one (``&q->limits_lock``: the lock an API releases
    # on the caller's behalf).
    member = re.fullmatch(r"&?\s*([A-Za-z_]\w*)(?:(?:->|\.)[A-Za-z_]\w*)+", frees or "")
    if frees is not None and frees not in arg_names and not (
            member and member.group(1) in arg_names):
        raise bad(f"'frees' must name an argument ({', '.join(arg_names)}) or a member "
                  "of one (&arg->member)")

    kernels = raw.get("kernels", "")
    if not isinstance(kernels, str):
        raise bad("'kernels' must be a string")
    track, size, order, cache, when = _tracking(bad, raw, allocates, frees, arg_names)
    resource, key, key2 = _resource(bad, raw, track)
    sleeps = raw.get("sleeps")
    if sleeps is not None and sleeps != "yes" and not (
            sleeps in arg_names and next(a for a in args if a.name == sleeps).type == "gfp_t"):
        raise bad("'sleeps' must be \"yes\" or the name of a gfp_t argument")
    fails_on = raw.get("fails_on")
    if fails_on is not None and (fails_on != "signal" or fault == "none"):
        raise bad("'fails_on' must be \"signal\", for a function whose fault is not \"none\"")
    return CatalogEntry(
        name=name, api=text("api", name), returns=returns, returns_show=returns_show,
        args=args, headers=tuple(headers), family=family, fault=fault, source=path,
        variadic=variadic, allocates=allocates, frees=frees,
        requires=names("requires"), excludes=names("excludes"), kernels=kernels,
        track=track, size=size, order=order, cache=cache, when=when, sleeps=sleeps,
        resource=resource, key=key, key2=key2, fails_on=fails_on)


def _resource(bad: Any, raw: dict[str, Any], track: str | None) -> tuple[str | None, ...]:
    """The resource keys: which kind a release releases, and what names a resource."""
    values: dict[str, str | None] = {}
    for k in ("resource", "key", "key2"):
        value = raw.get(k)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise bad(f"'{k}' must be a non-empty string")
        values[k] = value.strip() if isinstance(value, str) else None
    is_resource = track in RESOURCE_KINDS or track == "release"
    if not is_resource:
        extra = [k for k, v in values.items() if v is not None]
        if extra:
            raise bad(f"{', '.join(extra)} given, but track {track!r} is not a resource "
                      f"(one of {', '.join(sorted(RESOURCE_KINDS))}, or \"release\")")
        return None, None, None
    if track == "release":
        if values["resource"] not in RESOURCE_KINDS:
            raise bad(f"track \"release\" needs 'resource', one of "
                      f"{', '.join(sorted(RESOURCE_KINDS))}")
    elif values["resource"] is not None:
        raise bad("'resource' is for track \"release\" (an acquiring entry's track is its kind)")
    return values["resource"], values["key"], values["key2"]


def _tracking(bad: Any, raw: dict[str, Any], allocates: str | None, frees: str | None,
              arg_names: list[str]) -> tuple[str | None, ...]:
    """The leak-tracking keys, checked against allocates/frees."""
    values: dict[str, str | None] = {}
    for key in ("track", "size", "order", "cache", "when"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise bad(f"'{key}' must be a non-empty string")
        values[key] = value.strip() if isinstance(value, str) else None
    track = values["track"]
    if track is None:
        extra = [k for k in ("size", "order", "cache", "when") if values[k] is not None]
        if extra:
            raise bad(f"{', '.join(extra)} given without 'track'")
        return None, None, None, None, None
    if allocates and frees:
        allowed, what = set(TRACK_REALLOCS), "a reallocator (allocates and frees)"
    elif allocates:
        allowed, what = set(TRACK_KINDS), "an allocator"
    elif frees:
        allowed, what = set(TRACK_FREES), "a free"
    else:
        raise bad("'track' needs 'allocates' or 'frees'")
    if track not in allowed:
        raise bad(f"track {track!r} for {what}; known: {', '.join(sorted(allowed))}")
    kind = TRACK_REALLOCS[track][0] if track in TRACK_REALLOCS else track
    if kind in ("cache", "cache_free") and values["cache"] not in arg_names:
        raise bad(f"track {track!r} needs 'cache' naming the kmem_cache argument")
    if kind in ("pages", "page", "free_pages", "free_page") and values["order"] is None:
        raise bad(f"track {track!r} needs 'order'")
    if kind == "free_pages_exact" and values["size"] is None:
        raise bad("track 'free_pages_exact' needs 'size'")
    return track, values["size"], values["order"], values["cache"], values["when"]


def _list(bad: Any, value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise bad(f"'{key}' must be a list")
    return value


def _arg(bad: Any, index: int, raw: Any) -> Arg:
    if not (isinstance(raw, list) and len(raw) in (2, 3) and all(isinstance(v, str) for v in raw)):
        raise bad(f"argument #{index} must be [type, name] or [type, name, show]")
    ctype, name = _normalize_type(raw[0]), raw[1]
    if not is_c_identifier(name) or name in _C_KEYWORDS:
        raise bad(f"argument #{index}: {name!r} is not a usable C name")
    if name in RESERVED_NAMES or name.startswith("kedr_"):
        raise bad(f"argument #{index}: {name!r} is reserved by the generated code "
                  f"({', '.join(sorted(RESERVED_NAMES))}, kedr_*); rename it")
    show = raw[2] if len(raw) == 3 else _default_show(ctype)
    if show is None:
        raise bad(f"argument {name!r}: cannot tell how to print type {ctype!r}; add a third "
                  f"element, one of {', '.join(sorted(SHOWS))}")
    if show not in SHOWS:
        raise bad(f"argument {name!r}: unknown show {show!r}; known: {', '.join(sorted(SHOWS))}")
    if show == "str" and not re.fullmatch(r"(const )?char \*", ctype):
        raise bad(f"argument {name!r}: show \"str\" needs a kernel 'const char *' "
                  f"(got {ctype!r}); use \"ptr\"")
    return Arg(type=ctype, name=name, show=show)


def _normalize_type(ctype: str) -> str:
    """One spelling per type: single spaces, ``void *`` (space before the stars)."""
    t = " ".join(ctype.split())
    return re.sub(r"(?<=\w)\s*\*", " *", t)


def _default_show(ctype: str) -> str | None:
    if "(*)" in ctype:
        return "fn"
    if ctype.endswith("*"):
        return "ptr"
    return _SHOW_OF_TYPE.get(ctype)


def _check_fault(bad: Any, fault: str, returns: str, arg_names: list[str]) -> None:
    if returns == "void":
        if fault != "none":
            raise bad("a void function's fault must be \"none\"")
        return
    if fault in ("none", "NULL", "0") or re.fullmatch(r"-?\d+", fault):
        return
    if _ERRNO_FAULT.match(fault) or re.fullmatch(r"ERR_PTR\(-E[A-Z0-9]+\)", fault):
        return
    if fault in arg_names:
        return
    raise bad(f"fault {fault!r} is not none, NULL, a number, -E<NAME>, ERR_PTR(-E<NAME>) "
              "or an argument name")


def _check_duplicates(entries: list[CatalogEntry]) -> None:
    by_name: dict[str, list[CatalogEntry]] = {}
    for e in entries:
        by_name.setdefault(e.name, []).append(e)
    for name, group in by_name.items():
        if len(group) > 1 and not all(e.requires or e.excludes for e in group):
            files = ", ".join(sorted({e.source.name for e in group}))
            raise KedrError(f"catalog: {name} is described {len(group)} times ({files}); "
                            "variants of one name need 'requires'/'excludes' to tell them apart")
