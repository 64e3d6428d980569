"""Generate the replacement module: one kbuild directory, one .ko.

Input: which kernel functions to replace and by what exported name
(``[("kfree", "Kfree"), ...]``, decided by the plan), the catalog and the
target kernel's ``Module.symvers``. Output: ``<module>.c`` (the replacements),
``<module>_trace.h`` (their trace events), ``Kbuild`` and the C runtime files
copied from ``replacements/runtime/``. :func:`build_replacement` runs kbuild
there; the module's own ``Module.symvers`` then holds the CRCs the patcher
writes into the driver's ``__versions``.

A catalog prototype that no longer matches the kernel stops the build with an
error naming the catalog entry (each function in the generated files follows a
``kedr-entry: <name>`` marker, and gcc's error lines are mapped back to it).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kedr_build.kernel import hosttools
from kedr_build.intercept.catalog import (RESOURCE_KINDS, TRACK_REALLOCS, Arg, Catalog,
                                          CatalogEntry)
from kedr_build.intercept import faultpoints
from kedr_build.intercept.tailcalls import TailCalls
from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.resources import RUNTIME_DIR, template_env
from kedr_build.intercept.naming import RUNTIME_FILES
from kedr_build.kernel.kbuild import first_error
from kedr_build.ko.names import NAME_MAX, is_c_identifier
from kedr_build.ko.symvers import SymversEntry, read_symvers

ENTRY_MARKER = "kedr-entry: "


@dataclass(frozen=True)
class Replacement:
    """One kernel function and the exported function that replaces it."""

    original: str                  # "kfree"
    replacement: str               # "Kfree"
    entry: CatalogEntry
    export_type: str               # the original's: "EXPORT_SYMBOL" / "EXPORT_SYMBOL_GPL"


@dataclass(frozen=True)
class ReplacementModule:
    name: str
    directory: Path
    replacements: tuple[Replacement, ...]

    @property
    def source(self) -> Path:
        return self.directory / f"{self.name}.c"

    @property
    def ko(self) -> Path:
        return self.directory / f"{self.name}.ko"

    @property
    def symvers(self) -> Path:
        return self.directory / "Module.symvers"


def plan_replacements(pairs: Iterable[tuple[str, str]], catalog: Catalog,
                      exports: Mapping[str, SymversEntry],
                      allow_empty: bool = False) -> tuple[Replacement, ...]:
    """Check the requested pairs against the catalog and the kernel, in request order."""
    result: list[Replacement] = []
    seen_orig: set[str] = set()
    seen_repl: set[str] = set()
    for original, replacement in pairs:
        if original in seen_orig:
            raise KedrError(f"function {original} is to be replaced twice")
        if replacement in seen_repl:
            raise KedrError(f"replacement name {replacement} is used twice")
        seen_orig.add(original)
        seen_repl.add(replacement)
        if not is_c_identifier(replacement) or len(replacement) > NAME_MAX:
            raise KedrError(f"replacement name {replacement!r} for {original}: must be a C "
                            f"identifier of at most {NAME_MAX} characters")
        if replacement in exports:
            raise KedrError(f"replacement name {replacement} for {original}: the kernel already "
                            f"exports {replacement} ({exports[replacement].module}); the loader "
                            "refuses duplicate exports")
        entry = catalog.lookup(original, exports)
        export = exports[original]
        if export.export_type not in ("EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL"):
            raise KedrError(f"{original}: unknown export type {export.export_type!r} "
                            "in Module.symvers")
        result.append(Replacement(original, replacement, entry, export.export_type))
    if not result and not allow_empty:
        raise KedrError("no functions to replace: a replacement module needs at least one")
    return tuple(result)


def generate(pairs: Iterable[tuple[str, str]], catalog: Catalog, symvers: Path, outdir: Path,
             module_name: str, *, driver: str = "", kernel: str = "",
             allow_empty: bool = False, tail_calls: TailCalls | None = None,
             hot: bool = False) -> ReplacementModule:
    """Write the replacement module's source directory; files whose text is unchanged
    are left alone, so kbuild and SCons see nothing to rebuild. ``tail_calls``: where
    the driver's modules jump to intercepted functions (prebuilt modules only). ``hot``:
    a module that attaches to a loaded, unpatched one (``replacements/runtime/kedr_attach.c``)."""
    if not is_c_identifier(module_name) or len(module_name) > NAME_MAX:
        raise KedrError(f"replacement module name {module_name!r}: must be a C identifier "
                        f"of at most {NAME_MAX} characters")
    exports = read_symvers(symvers)
    # allow_empty: a driver that imports nothing the catalog knows still gets its
    # (empty) replacement module, so the outputs and the load script do not change shape.
    replacements = plan_replacements(pairs, catalog, exports, allow_empty)
    views = [_view(r, i) for i, r in enumerate(replacements)]
    points = faultpoints.fault_points(r.entry for r in replacements)
    point_index = {p.name: i for i, p in enumerate(points)}
    for r, v in zip(replacements, views):
        capable = faultpoints.fault_capable(r.entry)
        v["fault_points_of"] = (
            (point_index.get(r.original, point_index[faultpoints.family_point(r.entry)]),
             point_index[faultpoints.family_point(r.entry)]) if capable else (-1, -1))
    targets = list(tail_calls.modules) if tail_calls else []
    tail_sites = []
    for v in views:
        site = tail_calls.sites.get(v["name"]) if tail_calls else None
        v["caller"] = "_RET_IP_"
        if site is None:
            continue
        # Only when a payload runs: the pass-through stays a plain (tail) call.
        v["caller"] = f"kedr_on ? kedr_tail_caller(&kedr_tail_{v['name']}, _RET_IP_) : _RET_IP_"
        tail_sites.append({
            "function": v["name"], "outside": site.outside,
            "importers": hex(sum(1 << targets.index(m) for m in site.importers)),
            "jumps": [{**asdict(j), "target": targets.index(j.module)} for j in site.jumps]})
    headers = sorted({h for r in replacements for h in r.entry.headers})
    context: dict[str, Any] = {
        "hot": hot,
        "tail_targets": targets,
        "tail_sites": tail_sites,
        "module": module_name,
        "driver": driver,
        "kernel": f"kernel {kernel}" if kernel else f"the kernel of {symvers}",
        "headers": headers,
        "module_headers": sorted(set(headers) | {"linux/build_bug.h", "linux/kernel.h",
                                                 "linux/module.h"}),
        "replacements": views,
        "fault_points": [p.name for p in points],
        "guard": f"KEDR_TRACE_{module_name.upper()}_H",
        "uses_gfp": any(f.gfp for v in views for f in v["fields"]),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    env = template_env()
    _write_if_changed(outdir / f"{module_name}.c", env.get_template("module.c.j2").render(context))
    _write_if_changed(outdir / f"{module_name}_trace.h",
                      env.get_template("trace.h.j2").render(context))
    _write_if_changed(outdir / "Kbuild", env.get_template("Kbuild.j2").render(context))
    for name in RUNTIME_FILES:
        _write_if_changed(outdir / name, (RUNTIME_DIR / name).read_text())
    _write_if_changed(outdir / faultpoints.POINTS_FILE, faultpoints.points_json(points))
    return ReplacementModule(name=module_name, directory=outdir, replacements=replacements)


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    write_atomic(path, text.encode())


# --- the C text of one replacement ----------------------------------------------------

@dataclass(frozen=True)
class _Field:
    """One value in a trace event: struct member, assignment, printk format and argument."""

    struct: str
    assign: str
    fmt: str
    arg: str
    gfp: bool = False


# show -> (field type, assignment cast, printk format, printk argument wrapper)
_SCALAR_SHOWS: dict[str, tuple[str, str, str, str]] = {
    "ptr": ("unsigned long", "(unsigned long)", "0x%lx", "{}"),
    "hex": ("u64", "(__force u64)", "0x%llx", "{}"),
    "int": ("int", "", "%d", "{}"),
    "uint": ("unsigned int", "", "%u", "{}"),
    "long": ("long", "", "%ld", "{}"),
    "ulong": ("unsigned long", "", "%lu", "{}"),
    "size": ("size_t", "", "%zu", "{}"),
    "bool": ("bool", "", "%d", "{}"),
    "gfp": ("unsigned long", "(__force unsigned long)", "%s", "show_gfp_flags({})"),
    "fn": ("unsigned long", "(unsigned long)", "%pS", "(void *){}"),
}


def _field(name: str, show: str) -> _Field:
    if show == "str":
        # What __assign_str(dst, src) expanded to up to 6.9, written out: 6.10 dropped
        # its second argument ("tracing: Remove second parameter to __assign_str()"),
        # so neither spelling compiles on both kernels. __string() sized the field
        # with the same "(null)" fallback on both.
        return _Field(struct=f"__string({name}, {name})",
                      assign=f'strcpy(__get_str({name}), {name} ? (const char *){name} : "(null)");',
                      fmt=f'{name}=\\"%s\\"', arg=f"__get_str({name})")
    ftype, cast, fmt, wrap = _SCALAR_SHOWS[show]
    return _Field(struct=f"__field({ftype}, {name})", assign=f"__entry->{name} = {cast}{name};",
                  fmt=f"{name}={fmt}", arg=wrap.format(f"__entry->{name}"), gfp=show == "gfp")


def _wrap(head: str, items: list[str], tail: str, cont: str, width: int = 96) -> str:
    """``head`` + comma-separated items + ``tail``, broken before an item that would pass
    ``width``; continuation lines start with ``cont`` (kernel style: under the parenthesis)."""
    lines = [head]
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else tail)
        if len(lines[-1].expandtabs(8)) + len(piece.rstrip()) > width and lines[-1] != head:
            lines[-1] = lines[-1].rstrip()
            lines.append(cont)
        lines[-1] += piece
    if not items:
        lines[-1] += tail
    return "\n".join(lines)


# Catalog "track" of a free -> the kedr_free_op in kedr_leak.c.
_FREE_OPS = {"kfree": "KEDR_FREE_KFREE", "kfree_const": "KEDR_FREE_KFREE_CONST",
             "kvfree": "KEDR_FREE_KVFREE", "vfree": "KEDR_FREE_VFREE",
             "cache_free": "KEDR_FREE_CACHE", "free_pages": "KEDR_FREE_PAGES",
             "free_page": "KEDR_FREE_PAGE", "free_pages_exact": "KEDR_FREE_PAGES_EXACT",
             "kmem_cache_destroy": "KEDR_FREE_KMEM_CACHE",
             "mutex_unlock": "KEDR_FREE_MUTEX_UNLOCK", "timer_delete": "KEDR_FREE_TIMER",
             "spin_unlock": "KEDR_FREE_SPIN_UNLOCK", "work_cancel": "KEDR_FREE_WORK",
             "kvfree_rcu": "KEDR_FREE_KVFREE_RCU", "kvfree_rcu_offset": "KEDR_FREE_KVFREE_RCU"}


def _leak_hooks(e: CatalogEntry, fn: str) -> tuple[str, str, str]:
    """C for the leak payload: (check before the call, condition after it, record after it).

    The check decides whether the real call runs (a bad free does not); see
    replacements/runtime/kedr_leak.c for the hooks.
    """
    if e.track is None:
        return "", "", ""
    ip = "kedr_ip"
    if e.track in RESOURCE_KINDS or e.track == "release":
        return _resource_hooks(e, fn)
    if e.track in TRACK_REALLOCS:
        kind, free = TRACK_REALLOCS[e.track]
        old = f"(unsigned long){e.frees}"
        # The old object's record leaves the table before the call, so that an
        # allocation meanwhile that gets its address (krealloc freed it) is not taken
        # for it; kedr_leak_realloc() puts it back or retires it (kedr_leak.c).
        pre = f"kedr_leak_detach(&{fn}, {_FREE_OPS[free]}, {old}, {ip}, &kedr_detached)"
        post = (f"kedr_leak_realloc(&{fn}, KEDR_KIND_{kind.upper()}, {_FREE_OPS[free]}, {old}, "
                f"(unsigned long)kedr_ret, {e.size or 0}, {ip}, kedr_detached)")
        return pre, "(kedr_on & KEDR_PAYLOAD_LEAKS)", post
    if e.allocates:
        aux = e.cache if e.track == "cache" else e.order if e.track in ("pages", "page") else "0"
        got = "kedr_ret" if e.allocates == "ret" else e.allocates   # mutex_lock: the lock
        cond = "(kedr_on & KEDR_PAYLOAD_LEAKS)"
        if e.allocates == "ret":
            cond += " && kedr_leak_valid(kedr_ret)"
        if e.when:
            cond += f" && ({e.when})"
        post = (f"kedr_leak_alloc(&{fn}, KEDR_KIND_{e.track.upper()}, (unsigned long){got}, "
                f"{e.size or 0}, (unsigned long)({aux}), {ip})")
        return "", cond, post
    aux = (e.cache if e.track == "cache_free" else e.order if e.track in ("free_pages", "free_page")
           else e.size if e.track == "free_pages_exact" else "0")
    obj = f"(unsigned long){e.frees}"
    if e.track == "kvfree_rcu_offset":
        # kvfree_call_rcu(head, offset of head in the object) up to 6.1 (kedr_leak.c)
        obj = f"kedr_rcu_offset_object({obj}, (unsigned long){e.args[1].name})"
    pre = (f"kedr_leak_free(&{fn}, {_FREE_OPS[e.track]}, {obj}, "
           f"(unsigned long)({aux}), {ip})")
    return pre, "", ""


def _resource_hooks(e: CatalogEntry, fn: str) -> tuple[str, str, str]:
    """A resource acquired after the call succeeded; released before the call (after
    it, the same resource may be acquired again meanwhile, in an interrupt or on
    another CPU, and that record would be dropped): a void release as the check
    (never refused), one that returns a value through :func:`_release_before`."""
    leaks = "(kedr_on & KEDR_PAYLOAD_LEAKS)"
    key2 = f"(unsigned long)({e.key2})" if e.key2 else "0"
    if e.track == "release":
        assert e.resource is not None and e.frees is not None
        key = f"(unsigned long)({e.key or e.frees})"
        call = (f"kedr_res_release(&{fn}, KEDR_KIND_{e.resource.upper()}, {key}, {key2}, "
                "kedr_ip)")
        return (call, "", "") if e.returns_void else ("", "", "")
    assert e.allocates is not None and e.track is not None
    key = f"(unsigned long)({e.key or ('kedr_ret' if e.allocates == 'ret' else e.allocates)})"
    cond = leaks + (" && kedr_leak_valid(kedr_ret)" if e.allocates == "ret" else "")
    if e.when:
        cond += f" && ({e.when})"
    return "", cond, (f"kedr_res_acquire(&{fn}, KEDR_KIND_{e.track.upper()}, {key}, {key2}, "
                      f"{e.size or 0}, kedr_ip)")


def _release_before(e: CatalogEntry, fn: str) -> str:
    """A release that returns a value (netif_rx, free_irq): never refused, so not a
    check with a value to return instead; a statement before the call."""
    if e.track != "release" or e.returns_void:
        return ""
    assert e.resource is not None and e.frees is not None
    key2 = f"(unsigned long)({e.key2})" if e.key2 else "0"
    return (f"kedr_res_release(&{fn}, KEDR_KIND_{e.resource.upper()}, "
            f"(unsigned long)({e.key or e.frees}), {key2}, kedr_ip)")


def _view(r: Replacement, index: int) -> dict[str, Any]:
    e = r.entry
    leak_pre, leak_cond, leak_post = _leak_hooks(e, f"kedr_fn_{r.original}")
    leak_before = _release_before(e, f"kedr_fn_{r.original}")
    if leak_pre and e.variadic:
        raise KedrError(f"catalog entry {e.name}: a variadic function cannot be a tracked free")
    if leak_pre and not e.returns_void and e.fault in ("none", *(a.name for a in e.args)):
        raise KedrError(f"catalog entry {e.name}: a tracked free that returns a value needs a "
                        "fault value to return when the free is refused")
    capable = faultpoints.fault_capable(e)
    payloads = ("KEDR_PAYLOAD_TRACE" + (" | KEDR_PAYLOAD_LEAKS" if e.track else "")
                + (" | KEDR_PAYLOAD_RULES" if e.sleeps else "")
                + (" | KEDR_PAYLOAD_FAULTS" if capable else ""))
    size, gfp = faultpoints.size_expr(e), faultpoints.gfp_arg(e)
    sleep_cond = ("" if e.sleeps in (None, "yes")
                  else f" && gfpflags_allow_blocking({e.sleeps})")
    traced = [a for a in e.args if a.show != "skip"]
    ret = [] if e.returns_void else [Arg(type=e.returns, name="ret", show=e.returns_show)]
    fields = [_field("call_site", "fn")] + [_field(a.name, a.show) for a in traced + ret]
    call_args = ", ".join(a.name for a in e.args)
    head = e.prototype(r.replacement).split("(", 1)[0] + "("
    params = [a.decl() for a in e.args] + (["..."] if e.variadic else [])
    trace_args = ["kedr_ip"] + [a.name for a in traced] + ([] if e.returns_void else ["kedr_ret"])
    return {
        "name": r.original,
        "replacement": r.replacement,
        "export": r.export_type,
        "where": e.source.name,
        "proto": _wrap(head, params or ["void"], ")", " " * len(head)),
        "void": e.returns_void,
        "ret_decl": "" if e.returns_void else Arg(e.returns, "kedr_ret", "").decl(),
        "assign_ret": "" if e.returns_void else "kedr_ret = ",
        "variadic": e.variadic or "",
        "last_arg": e.args[-1].name if e.args else "",
        "call_args": call_args,
        "tp_proto": _wrap("\tTP_PROTO(", ["unsigned long call_site"]
                          + [a.decl() for a in traced + ret], "),", "\t\t "),
        "tp_args": _wrap("\tTP_ARGS(", ["call_site"] + [a.name for a in traced + ret], "),",
                         "\t\t"),
        "printk": _wrap("\tTP_printk(", ['"' + " ".join(f.fmt for f in fields) + '"']
                        + [f.arg for f in fields], ")", "\t\t  "),
        "trace_call": _wrap(f"\t\ttrace_call_{r.original}(", trace_args, ");", "\t\t\t"),
        "fields": fields,
        "index": index,
        "payloads": payloads,
        "fault": e.fault,
        # Fault payload (kedr_faults.c): kedr_fault(fn, has_size, size, has_gfp, gfp, caller)
        "fault_capable": capable,
        # Only a call some signal can interrupt can fail (kedr_faults.c).
        "fault_cond": " && kedr_signal_possible()" if e.fails_on == "signal" else "",
        "fault_args": (f"{'true' if size else 'false'}, {f'(size_t)({size})' if size else '0'}, "
                       f"{'true' if gfp else 'false'}, "
                       f"{f'(__force unsigned long){gfp}' if gfp else '0'}"),
        "leak_pre": _wrap("\tkedr_pass = !(kedr_on & KEDR_PAYLOAD_LEAKS) || ",
                          _split_call(leak_pre), ";", "\t\t") if leak_pre else "",
        "leak_cond": leak_cond,
        "leak_before": _wrap("\t\t", _split_call(leak_before), ";", "\t\t\t")
        if leak_before else "",
        "leak_detach": e.track in TRACK_REALLOCS,
        "sleeps": bool(e.sleeps),
        "sleep_cond": sleep_cond,
        "leak_post": _wrap("\t\t", _split_call(leak_post), ";", "\t\t\t") if leak_post else "",
    }


def _split_call(call: str) -> list[str]:
    """``f(a, b)`` as wrap items ``["f(a", "b)"]``; splits only at top-level commas."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(call):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 1:
            items.append(call[start:i].strip())
            start = i + 1
    items.append(call[start:].strip())
    return items


# --- building ------------------------------------------------------------------------

# gcc diagnostics; an error inside a kernel macro is followed by notes that point
# back into the generated file ("in expansion of macro 'static_assert'").
_GCC_DIAG = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?:\d+:)? "
                       r"(?P<kind>fatal error|error|note): (?P<msg>.*)$")
_MARKER = re.compile(re.escape(ENTRY_MARKER) + r"(\w+) \(([^)]*)\)")
_MODULE_OF_KBUILD = re.compile(r"^obj-m\s*:?=\s*(\w+)\.o\s*$", re.M)


def build_replacement(directory: Path, kdir: Path, *, jobs: int | None = None) -> Path:
    """``make -C kdir M=directory modules``; returns the built .ko.

    kbuild's output is kept in ``directory/build.log``. A compile error is
    reported as a KedrError naming the catalog entries it comes from.
    """
    directory = directory.resolve()
    kbuild = directory / "Kbuild"
    match = _MODULE_OF_KBUILD.search(kbuild.read_text()) if kbuild.is_file() else None
    if match is None:
        raise KedrError(f"{kbuild}: not a generated replacement module (no 'obj-m := X.o')")
    name = match.group(1)
    make = hosttools.require(["make"])["make"]
    cmd = [make, "-C", str(kdir), f"M={directory}", f"-j{jobs or os.cpu_count() or 1}",
           "modules"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = directory / "build.log"
    log.write_text(proc.stdout)
    if proc.returncode != 0:
        raise KedrError(_explain_failure(directory, name, proc.stdout, log))
    ko = directory / f"{name}.ko"
    if not ko.is_file():
        raise KedrError(f"{directory}: kbuild succeeded but did not produce {ko.name} (see {log})")
    return ko


def entry_at(path: Path, line: int) -> str | None:
    """The catalog entry whose generated code holds ``path:line`` (1-based)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for text in reversed(lines[:line]):
        pos = text.find(ENTRY_MARKER)
        if pos >= 0:
            return text[pos + len(ENTRY_MARKER):].split()[0]
    return None


def compile_errors(directory: Path, output: str) -> list[tuple[str | None, str]]:
    """(catalog entry or None, "file:line: message") for each gcc error in kbuild output.

    An error is attributed to the entry whose code holds its location, or the
    location of a note that follows it (an error raised inside a kernel macro).
    """
    errors: list[tuple[str | None, str]] = []
    for raw in output.splitlines():
        m = _GCC_DIAG.match(raw.strip())
        if m is None:
            continue
        path = Path(m.group("file"))
        if not path.is_absolute():
            path = directory / path
        line = int(m.group("line"))
        entry = entry_at(path, line) if path.parent == directory else None
        if m.group("kind") != "note":
            errors.append((entry, f"{path.name}:{line}: {m.group('msg')}"))
        elif errors and errors[-1][0] is None and entry is not None:
            errors[-1] = (entry, errors[-1][1])
    return errors


def _message_rank(message: str) -> int:
    """Which of an entry's errors explains it best: our own prototype check first."""
    if "static assertion failed" in message:
        return 0
    return 1 if message.split(":", 1)[0].endswith(".c") else 2


def _explain_failure(directory: Path, name: str, output: str, log: Path) -> str:
    errors = compile_errors(directory, output)
    by_entry: dict[str, str] = {}
    for entry, message in errors:
        if entry is not None and (entry not in by_entry
                                  or _message_rank(message) < _message_rank(by_entry[entry])):
            by_entry[entry] = message
    if by_entry:
        sources = dict(_MARKER.findall((directory / f"{name}.c").read_text()))
        parts = "; ".join(f"catalog entry {e} ({sources.get(e, '?')}): {msg}"
                          for e, msg in by_entry.items())
        return (f"{directory / (name + '.c')}: {len(by_entry)} catalog entr"
                f"{'y does' if len(by_entry) == 1 else 'ies do'} not compile against this "
                f"kernel: {parts} (full log: {log})")
    if errors:
        return f"{directory}: replacement module {name} does not compile: {errors[0][1]} " \
               f"(full log: {log})"
    return f"{directory}: kbuild failed for {name}: {first_error(output)} (full log: {log})"
