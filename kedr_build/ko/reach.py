"""Which of a module's uses of its imported functions each interception mechanism reaches.

Read from the relocations (:func:`kedr_build.ko.callsites.import_sites`), every use is
one of:

* ``call``    -- ``call rel32``: the callee's return address is in the module;
* ``jmp``     -- ``jmp rel32``, a tail call: the callee returns to the caller's caller;
* ``jcc``     -- a conditional tail jump (``0f 8x rel32``);
* ``address`` -- the address taken (``.func = kfree`` in data, ``mov $kfree``, ``lea``):
  whoever holds the pointer calls it, usually the kernel's core.

and lies in init code (``.init.*``: run once, before anything can attach), exit code
(``.exit.*``) or the rest. The mechanisms:

* **cold** patching renames the import in the ``.ko`` before load: every use, of any
  kind, anywhere, goes to the replacement;
* **hot (a)**, a kprobe per site (``replacements/runtime/kedr_attach.c``): the ``call``
  and ``jmp`` instructions outside init and exit code (a conditional jump cannot be
  emulated as a call; an address is not a site);
* **hot (b)**, ftrace with ``FTRACE_OPS_FL_IPMODIFY`` on the imported function,
  redirecting when the return address lies in the module: ``call`` outside init code
  (exit code runs while attached). A tail jump's callee sees the return address of
  the caller's caller: when the jumping function is called only by the module
  itself (its address is never taken) the call is redirected but attributed to the
  wrong site; when its address is taken (a callback, the module's exit) the kernel
  calls it and the call is missed. An address-taken use is missed when the kernel
  calls the pointer (the usual case); only the module's own indirect calls through
  it are seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from kedr_build.ko.callsites import _CODE_METADATA, SiteKind, address_taken, import_sites
from kedr_build.ko.elf import ElfRel

KINDS = ("call", "jmp", "jcc", "address")
REGIONS = ("runtime", "init", "exit")
# Emitted by the compiler, not written by the driver: the ftrace entry, the
# retpoline/return thunks. No mechanism intercepts them and none should.
COMPILER_HELPERS = ("__fentry__", "__x86_return_thunk", "__x86_indirect_thunk_",
                    "__x86_indirect_call_thunk_", "__x86_indirect_jump_thunk_",
                    "__x86_indirect_alt_")


@dataclass(frozen=True)
class UseClass:
    """One use of an imported function, as the mechanisms see it."""
    kind: str              # one of KINDS
    region: str            # one of REGIONS
    entry: bool            # jmp/jcc: the function holding it is called from outside


@dataclass(frozen=True)
class Reach:
    """How each mechanism treats a use: ``reached``, ``misattributed`` (redirected,
    reported at the caller's caller) or ``missed``."""
    cold: str
    hot_a: str
    hot_b: str


def region_of(section: str) -> str:
    if section.startswith(".init"):
        return "init"
    if section.startswith(".exit"):
        return "exit"
    return "runtime"


def reach(use: UseClass) -> Reach:
    hot_a = "reached" if use.kind in ("call", "jmp") and use.region == "runtime" else "missed"
    if use.region == "init" or use.kind == "address":
        hot_b = "missed"
    elif use.kind == "call":
        hot_b = "reached"
    else:
        hot_b = "missed" if use.entry else "misattributed"
    return Reach(cold="reached", hot_a=hot_a, hot_b=hot_b)


def is_compiler_helper(name: str) -> bool:
    return name.startswith(COMPILER_HELPERS)


def classify(elf: ElfRel, is_function: Callable[[str], bool]) -> Counter[tuple[str, UseClass]]:
    """(import name, class) -> how many uses, for the imported functions the module uses
    (``is_function`` tells a function from data such as ``jiffies``)."""
    names = {n for _, n in elf.undefined() if not is_compiler_helper(n) and is_function(n)}
    out: Counter[tuple[str, UseClass]] = Counter()
    sites = import_sites(elf, names)
    entries = address_taken(elf) if any(s.kind is SiteKind.JUMP for s in sites) else set()
    for s in sites:
        if s.kind is SiteKind.CALL:
            kind = "call"
        elif s.kind is SiteKind.JUMP:
            kind = "jmp" if s.end - s.start == 5 else "jcc"
        elif s.section.startswith(_CODE_METADATA):
            continue        # the kernel's bookkeeping (static call sites...), not a use
        else:
            kind = "address"
        entry = s.kind is SiteKind.JUMP and (
            s.function is None or (s.shndx, s.function_start) in entries)
        out[(s.name, UseClass(kind, region_of(s.section), entry))] += 1
    return out
