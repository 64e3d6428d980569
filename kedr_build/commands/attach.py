"""``attach KO -o DIR``: prepare hot patching of a module that is already loaded.

Usage::

    python -m kedr_build attach KO -o DIR [--kernel debian-6.12] [--functions kfree,...]

``KO`` is the module as it is loaded on the target machine, unpatched: a file
(.ko, .ko.xz, .ko.zst, .ko.gz) or the name of a module of the pinned kernel
(``loop``). Into ``DIR`` go the replacement module built for attaching
(``kedr_repl_<name>/``), ``attach.sites`` (its call sites of the intercepted
functions, from its relocations), ``attach.json`` (the same, and what cannot be
reached: address-taken uses, conditional jumps, init and exit code) and
``attach.sh``/``detach.sh`` for the machine (root, the kernel built for, the
module loaded, its build id the .ko's; see replacements/runtime/kedr_attach.c).
A problem is one line ``kedr-build: ...`` and exit status 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kedr_build.errors import KedrError


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("attach", help="prepare hot patching of a loaded module",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ko", help="the loaded module's .ko (or a module name of the pinned kernel)")
    p.add_argument("-o", "--output", required=True, help="directory for the attach files")
    p.add_argument("--kernel", default=None, help="pinned kernel (default: the default one)")
    p.add_argument("--functions", default="", help="comma-separated functions to intercept")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kedr_build.config import _prebuilt
    from kedr_build.intercept.attach import AttachRequest, prepare
    from kedr_build.intercept.naming import module_name_for
    from kedr_build.kernel import provision
    from kedr_build.kernel.descriptions import DEFAULT_KERNEL
    from kedr_build.ko.module import ModuleRef

    kernel = provision.ensure(args.kernel or DEFAULT_KERNEL)
    ko = _prebuilt(args.ko, Path(args.ko), kernel, offline=False)
    name = ModuleRef.read(ko).name
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise KedrError(f"{out}: not a directory")
    functions = tuple(f for f in args.functions.split(",") if f)
    res = prepare(AttachRequest(ko=ko, kernel=kernel, outdir=out,
                                replacement_module=module_name_for(name),
                                functions=functions))
    for w in res.warnings:
        print(f"kedr-build: warning: {name}: {w}")
    kinds = {k: sum(s.kind == k for s in res.sites.sites) for k in ("call", "jmp")}
    print(f"kedr-build: {name}: {kinds['call']} call and {kinds['jmp']} jmp sites of "
          f"{len({s.function for s in res.sites.sites})} functions; "
          f"{len(res.sites.unreached)} uses not reachable (attach.json); "
          f"sh {res.attach_sh} / sh {res.detach_sh}")
    return 0
