"""Hot patching: attach a replacement module to a module that is already loaded.

The target runs unpatched; its call sites of the intercepted imports are read
from its ``.ko``'s relocations (:func:`kedr_build.ko.callsites.import_sites`),
exactly, with no decoder. :func:`prepare` builds a replacement module for
attaching (the same generated module and payloads, with
``replacements/runtime/kedr_attach.c``: one kprobe per site, whose pre-handler
emulates the ``call``/``jmp`` into the replacement) and writes beside it:

* ``attach.sites`` -- one line per site, ``<section> <offset> call|jmp <function>``;
* ``attach.sh`` / ``detach.sh`` -- POSIX sh for the guest or a real machine: the
  right kernel, root, the target loaded, its build id the ``.ko``'s (a different
  build is refused), then the section addresses from ``/sys/module/<name>/sections/``
  go with the sites to the module's debugfs ``attach`` file.

What cannot be reached this way is listed in :attr:`AttachSites.unreached`: a
conditional jump to an import (``0f 8x``) and a use of its address (``.func =
kfree``); the kernel calls those without passing through a site.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError

if TYPE_CHECKING:
    from kedr_build.kernel.descriptions import ProvisionedKernel

SITES_FILE = "attach.sites"
SECTIONS_FILE = "attach.sections"   # "<index> <name>": sections the tail-call table needs
BUILD_ID_SECTION = ".note.gnu.build-id"


@dataclass(frozen=True)
class HotSite:
    section: str           # its section's name, as in /sys/module/<name>/sections/
    offset: int            # of the instruction (the e8/e9 byte) in that section
    kind: str              # "call" or "jmp"
    function: str          # the intercepted import
    where: str             # function+0xoff, for people (a call: its return address)
    probe: str             # function+0xoff of the instruction itself, as kprobes names it


@dataclass(frozen=True)
class AttachSites:
    module: str                    # the target's name (.modinfo)
    sites: tuple[HotSite, ...]
    unreached: tuple[str, ...]     # "kfree: address taken at foo_ops+0x8" ...
    build_id: str                  # the .note.gnu.build-id section as hex ("" if none)


def find_sites(ko: Path, functions: Collection[str]) -> AttachSites:
    """The call and tail-call sites of ``functions`` in ``ko``, in file order."""
    from kedr_build.ko.callsites import SiteKind, import_sites
    from kedr_build.ko.container import read_module
    from kedr_build.ko.elf import ElfRel
    from kedr_build.ko.module import ModuleRef

    mod = read_module(ko)
    elf = ElfRel(mod.elf, str(ko))
    sites: list[HotSite] = []
    unreached: list[str] = []
    for s in import_sites(elf, functions):
        if s.kind is SiteKind.CALL or (s.kind is SiteKind.JUMP and s.end - s.start == 5):
            if s.section.startswith(".init") or s.section.startswith(".exit"):
                # .init.text is freed once init returns; .exit.text runs once, at unload
                unreached.append(f"{s.name}: {s.where} is in {s.section}")
                continue
            sites.append(HotSite(section=s.section, offset=s.start,
                                 kind="call" if s.kind is SiteKind.CALL else "jmp",
                                 function=s.name, where=s.where,
                                 probe=f"{s.function}+0x{s.start - s.function_start:x}"
                                 if s.function else f"{s.section}+0x{s.start:x}"))
        elif s.kind is SiteKind.JUMP:
            unreached.append(f"{s.name}: conditional jump at {s.where}")
        else:
            unreached.append(f"{s.name}: address taken at {s.where} ({s.section})")
    note = elf.section(BUILD_ID_SECTION)
    return AttachSites(module=ModuleRef.read(ko).name, sites=tuple(sites),
                       unreached=tuple(unreached),
                       build_id=elf.section_bytes(note).hex() if note else "")


@dataclass(frozen=True)
class AttachRequest:
    ko: Path                       # the target's .ko, as loaded (unpatched)
    kernel: ProvisionedKernel
    outdir: Path                   # attach/ of the driver's outputs
    replacement_module: str        # kedr_repl_<driver>
    functions: tuple[str, ...] = ()  # FUNCTIONS=; empty: every import the catalog knows
    jobs: int = 1


@dataclass(frozen=True)
class AttachResult:
    replacement: Path              # the hot replacement module's .ko
    sites: AttachSites
    attach_sh: Path
    detach_sh: Path
    warnings: tuple[str, ...]

    def guest_files(self, prefix: str) -> dict[str, Path]:
        """What attach.sh needs beside it, as guest path (under ``prefix``) -> file."""
        out = self.attach_sh.parent
        files = {f"{prefix}/{p.name}": p for p in (self.attach_sh, self.detach_sh,
                                                   out / SITES_FILE, out / SECTIONS_FILE)}
        files[f"{prefix}/{self.replacement.parent.name}/{self.replacement.name}"] = \
            self.replacement
        return files


def prepare(req: AttachRequest) -> AttachResult:
    """Plan, generate and build the hot replacement module, list the sites, write the
    scripts: what ``attach`` needs in the guest beside the target's plain ``.ko``."""
    from kedr_build.intercept import catalog as catalog_mod
    from kedr_build.intercept import tailcalls
    from kedr_build.intercept.generate import build_replacement, generate
    from kedr_build.ko.container import read_module
    from kedr_build.ko.elf import ElfRel
    from kedr_build.intercept.pipeline import make_plan
    from kedr_build.ko.plan import load_plan
    from kedr_build.resources import template_env

    out = req.outdir
    plan_path = out / "plan.json"
    warnings = make_plan([req.ko], req.kernel.symvers, plan_path, req.replacement_module,
                         req.functions or None)
    plan = load_plan(plan_path, allow_empty=True)
    if not plan.renames:
        raise KedrError(f"{req.ko}: imports no function to intercept: nothing to attach")
    # The jumps to intercepted functions: their calls are reported at the jump
    # (kedr_tailcall.c), the jumps' sections located at attach (attach.sections).
    tails = tailcalls.find([req.ko], set(plan.mapping()))
    generated = generate(plan.mapping().items(), catalog_mod.load(), req.kernel.symvers,
                         out / req.replacement_module, req.replacement_module,
                         driver=req.ko.name, kernel=req.kernel.release, allow_empty=True,
                         tail_calls=tails, hot=True)
    elf = ElfRel(read_module(req.ko).elf, str(req.ko))
    shndx = sorted({j.shndx for site in tails.sites.values() for j in site.jumps})
    write_atomic(out / SECTIONS_FILE, "".join(
        f"{i} {elf.sections[i].name}\n" for i in shndx).encode())
    replacement = build_replacement(generated.directory, req.kernel.kdir, jobs=req.jobs)
    sites = find_sites(req.ko, set(plan.mapping()))
    if not sites.sites:
        raise KedrError(f"{req.ko}: no call site of an intercepted function outside init "
                        f"code: nothing to attach ({'; '.join(sites.unreached) or 'none'})")
    write_atomic(out / SITES_FILE, "".join(
        f"{s.section} 0x{s.offset:x} {s.kind} {s.function}\n" for s in sites.sites).encode())
    write_atomic(out / "attach.json", (json.dumps({
        "target": sites.module, "ko": str(req.ko), "build_id": sites.build_id,
        "sites": [{"section": s.section, "offset": s.offset, "kind": s.kind,
                   "function": s.function, "where": s.where, "probe": s.probe}
                  for s in sites.sites],
        "unreached": list(sites.unreached)}, indent=2) + "\n").encode())
    context = {"replacement": req.replacement_module, "target": sites.module,
               "release": req.kernel.release, "sites": sites.sites, "build_id": sites.build_id,
               "ko": req.ko.name, "sites_file": SITES_FILE, "sections_file": SECTIONS_FILE,
               "replacement_path": os.path.relpath(replacement, out)}
    env = template_env()
    scripts = []
    for name in ("attach.sh", "detach.sh"):
        path = out / name
        write_atomic(path, env.get_template(f"{name}.j2").render(context).encode())
        path.chmod(0o755)
        scripts.append(path)
    return AttachResult(replacement=replacement, sites=sites, attach_sh=scripts[0],
                        detach_sh=scripts[1], warnings=tuple(warnings))
