"""Which intercepted calls of prebuilt modules arrive as tail calls, and where from.

A module built by kedr-build has none (:data:`kedr_build.kernel.kbuild.INSTRUMENT_CFLAGS`
turns sibling calls off). A module patched as shipped (``KO=``) may jump to an
import: the replacement function then sees the return address of the jumping
function's caller, outside the module. Decided here from the relocations
(:func:`kedr_build.ko.callsites.import_sites`), per intercepted function, over all
the driver's modules:

* a function that jumps to it once is reported at its jump (``tc_exit+0x10``: the
  jump's own address, as a jump that ends its function ends where the next
  function starts); one that jumps to it several times, at its start
  (``tc_exit+0x0``: a tail call from ``tc_exit``);
* a call whose return address is in a module that imports the function came
  from there: when the instruction before that address is a direct call of one
  of the jumping functions, it is reported at that function's site (the driver's
  ``tc_init`` calls ``tc_drop``, which ends in ``kfree()``), else where it is;
* a call from outside those modules came from a jumping function whose address
  is taken (an entry point: ``struct module``'s exit, a file operation, a
  callback): if exactly one jumping function is such an entry, and the
  intercepted function's own address is never taken (the kernel could call it
  through a pointer from anywhere), it is reported there; otherwise it keeps its
  return address and :attr:`TailCalls.unattributed` says why.

The result is ``tail_calls.json`` beside ``plan.json``; the generator turns it
into the replacement module's table (``replacements/runtime/kedr_tailcall.c``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError

# The runtime keeps the importing modules of a function as bits of an unsigned long.
MAX_MODULES = 64


@dataclass(frozen=True)
class TailJump:
    """A function of the driver that jumps to an intercepted function."""

    module: str            # its module (.modinfo name)
    shndx: int             # its section in that module's ELF
    start: int             # its start and end in that section
    end: int
    site: int              # in that section: where its tail calls are reported
    where: str             # the same as function+0xoff, for people
    entry: bool            # its address is taken: called from outside the module too


@dataclass(frozen=True)
class TailSite:
    """The jumps to one intercepted function, and which one a call from outside came from."""

    jumps: tuple[TailJump, ...]
    outside: int           # index in jumps; -1: a call from outside stays where it is
    importers: tuple[str, ...]  # the modules that import the function


@dataclass(frozen=True)
class TailCalls:
    sites: dict[str, TailSite]        # intercepted function -> its jumps
    unattributed: dict[str, str]      # intercepted function -> why a call from outside
                                      # of its importers keeps its return address
    modules: tuple[str, ...]          # every module of the driver, in request order

    def to_json(self) -> dict[str, Any]:
        return {"modules": list(self.modules),
                "sites": {f: {"jumps": [asdict(j) for j in s.jumps], "outside": s.outside,
                              "importers": list(s.importers)}
                          for f, s in sorted(self.sites.items())},
                "unattributed": dict(sorted(self.unattributed.items()))}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TailCalls:
        return cls(sites={f: TailSite(jumps=tuple(TailJump(**j) for j in s["jumps"]),
                                      outside=int(s["outside"]),
                                      importers=tuple(s["importers"]))
                          for f, s in data["sites"].items()},
                   unattributed=dict(data["unattributed"]), modules=tuple(data["modules"]))


def find(kos: Sequence[Path], functions: Collection[str]) -> TailCalls:
    from kedr_build.ko.callsites import ImportSite, SiteKind, address_taken, import_sites
    from kedr_build.ko.container import read_module
    from kedr_build.ko.elf import ElfRel
    from kedr_build.ko.module import ModuleRef

    refs: dict[str, list[tuple[str, ImportSite]]] = {}
    entries: dict[str, set[tuple[int, int]]] = {}
    modules: list[str] = []
    for ko in kos:
        name = ModuleRef.read(ko).name
        modules.append(name)
        elf = ElfRel(read_module(ko).elf, str(ko))
        sites = import_sites(elf, functions)
        for site in sites:
            refs.setdefault(site.name, []).append((name, site))
        if any(s.kind is SiteKind.JUMP for s in sites):
            entries[name] = address_taken(elf)
    out: dict[str, TailSite] = {}
    why: dict[str, str] = {}
    if len(modules) > MAX_MODULES:
        return TailCalls({}, {"*": f"a driver of more than {MAX_MODULES} modules"},
                         tuple(modules))
    for fn, fn_refs in sorted(refs.items()):
        by_function: dict[tuple[str, int, int], list[ImportSite]] = {}
        loose: list[str] = []
        for m, s in fn_refs:
            if s.kind is not SiteKind.JUMP:
                continue
            if s.function is None:
                loose.append(f"{s.where} [{m}]")
            else:
                by_function.setdefault((m, s.shndx, s.function_start), []).append(s)
        if not by_function and not loose:
            continue
        jumps = []
        for (m, shndx, start), js in by_function.items():
            one = js[0]
            single = len(js) == 1
            jumps.append(TailJump(module=m, shndx=shndx, start=start,
                                  end=start + one.function_size,
                                  site=one.site if single else start,
                                  where=one.where if single else f"{one.function}+0x0",
                                  entry=(shndx, start) in entries[m]))
        outside = [i for i, j in enumerate(jumps) if j.entry]
        taken = [f"{s.where} [{m}]" for m, s in fn_refs if s.kind is SiteKind.ADDRESS]
        if taken:
            why[fn] = f"its address is taken at {', '.join(taken)}: the kernel may call it"
        elif loose:
            why[fn] = f"jumps outside any function symbol: {', '.join(loose)}"
        elif len(outside) > 1:
            why[fn] = ("tail calls from several functions the kernel may call: "
                       + ", ".join(f"{jumps[i].where} [{jumps[i].module}]" for i in outside))
        out[fn] = TailSite(jumps=tuple(jumps),
                           outside=outside[0] if len(outside) == 1 and fn not in why else -1,
                           importers=tuple(dict.fromkeys(m for m, _ in fn_refs)))
    return TailCalls(out, why, tuple(modules))


def write(tail_calls: TailCalls, path: Path) -> None:
    write_atomic(path, (json.dumps(tail_calls.to_json(), indent=2, sort_keys=True)
                        + "\n").encode())


def load(path: Path) -> TailCalls:
    try:
        return TailCalls.from_json(json.loads(path.read_text()))
    except OSError as e:
        raise KedrError(f"{path}: cannot read: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise KedrError(f"{path}: not a tail-call table: {e}") from None
