"""The function catalog: loading, bad input, variants, and every entry that
applies to each pinned kernel compiled into one module and checked against its
Module.symvers."""

from __future__ import annotations

import re

from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kedr_build.intercept import catalog
from kedr_build.intercept import generate
from kedr_build.intercept.catalog import Catalog
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.symvers import SymversEntry, read_symvers

# Named by the issue: the catalog must have each of them for Debian's 6.1.
REQUIRED_ON_6_1 = """
    kmalloc_trace kmalloc_large kmalloc_node_trace kmalloc_large_node __kmalloc __kmalloc_node
    krealloc kmemdup kstrdup kvmalloc_node kvfree kfree kmem_cache_create kmem_cache_alloc
    kmem_cache_free kmem_cache_destroy __get_free_pages free_pages alloc_pages vmalloc vzalloc
    vfree _copy_to_user _copy_from_user strndup_user memdup_user mutex_lock mutex_unlock
    mutex_trylock mutex_lock_interruptible _raw_spin_lock _raw_spin_unlock _raw_spin_lock_irqsave
    _raw_spin_unlock_irqrestore _raw_spin_lock_bh _raw_spin_unlock_bh request_threaded_irq
    free_irq ioremap iounmap kasprintf devm_kmalloc msleep schedule_timeout
""".split()


def _exports(*names: str) -> dict[str, SymversEntry]:
    return {n: SymversEntry(0x1234, "vmlinux", "EXPORT_SYMBOL") for n in names}


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return catalog.load()


@pytest.fixture(scope="module")
def kernel_exports(kernel: ProvisionedKernel) -> dict[str, SymversEntry]:
    return read_symvers(kernel.symvers)


def write_catalog(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "cat"
    d.mkdir(exist_ok=True)
    (d / "test.toml").write_text(text)
    return d


GOOD = """
[[function]]
name = "kfree"
returns = "void"
args = [["const void *", "objp"]]
headers = ["linux/slab.h"]
family = "free"
fault = "none"
"""


# --- loading ----------------------------------------------------------------------

def test_catalog_has_the_required_functions(cat: Catalog) -> None:
    names = set(cat.names())
    assert not [n for n in REQUIRED_ON_6_1 if n not in names]
    assert len(names) >= 60


def test_entry_fields(cat: Catalog) -> None:
    e = cat.lookup("kmem_cache_create", _exports("kmem_cache_create"))
    assert e.family == "alloc" and e.fault == "NULL" and e.allocates == "ret"
    assert e.prototype("Kc") == ("struct kmem_cache *Kc(const char *name, unsigned int size, "
                                 "unsigned int align, slab_flags_t flags, void (*ctor)(void *))")
    assert [a.show for a in e.args] == ["str", "uint", "uint", "hex", "fn"]
    copy = cat.lookup("_copy_from_user", _exports("_copy_from_user"))
    assert copy.fault == "n" and copy.family == "user-copy"
    kasprintf = cat.lookup("kasprintf", _exports("kasprintf"))
    assert kasprintf.variadic == "kvasprintf"
    assert kasprintf.prototype() == "char *kasprintf(gfp_t gfp, const char *fmt, ...)"


def test_tracking_keys(cat: Catalog) -> None:
    kmalloc = cat.lookup("kmalloc_trace", _exports("kmalloc_trace"))
    assert (kmalloc.track, kmalloc.size, kmalloc.sleeps) == ("kmalloc", "size", "flags")
    pages = cat.lookup("free_pages", _exports("free_pages"))
    assert (pages.track, pages.order, pages.frees) == ("free_pages", "order", "addr")
    cache = cat.lookup("kmem_cache_free", _exports("kmem_cache_free"))
    assert (cache.track, cache.cache) == ("cache_free", "s")
    assert cat.lookup("krealloc", _exports("krealloc")).track == "krealloc"
    assert cat.lookup("mutex_lock", _exports("mutex_lock")).sleeps == "yes"
    assert cat.lookup("devm_kmalloc", _exports("devm_kmalloc")).track is None
    # Only a pending signal makes these fail (the fault payload asks whether one can
    # reach the caller); an allocation fails on its own.
    assert {n: cat.lookup(n, _exports(n)).fails_on for n in (
        "wait_for_completion_interruptible", "mutex_lock_interruptible", "mutex_lock_killable",
        "down_interruptible", "kmalloc_trace")} == {
        "wait_for_completion_interruptible": "signal", "mutex_lock_interruptible": "signal",
        "mutex_lock_killable": "signal", "down_interruptible": "signal", "kmalloc_trace": None}


def test_resource_keys(cat: Catalog) -> None:
    irq = cat.lookup("request_threaded_irq", _exports("request_threaded_irq"))
    assert (irq.track, irq.allocates, irq.key2, irq.when) == ("irq", "irq", "dev", "kedr_ret == 0")
    free = cat.lookup("free_irq", _exports("free_irq"))
    assert (free.track, free.resource, free.key, free.key2) == ("release", "irq", "irq", "dev_id")
    chrdev = cat.lookup("alloc_chrdev_region", _exports("alloc_chrdev_region"))
    assert (chrdev.track, chrdev.key) == ("chrdev_region", "*dev")
    # class_destroy's argument became const in 6.4: the variant follows __class_create.
    old = cat.lookup("class_destroy", _exports("class_destroy", "__class_create"))
    new = cat.lookup("class_destroy", _exports("class_destroy", "class_create"))
    assert (old.args[0].type, new.args[0].type) == ("struct class *", "const struct class *")
    assert cat.lookup("_raw_spin_lock", _exports("_raw_spin_lock")).track == "spinlock"
    assert cat.lookup("cancel_work_sync", _exports("cancel_work_sync")).track == "work_cancel"


def test_minimal_file_loads(tmp_path: Path) -> None:
    c = catalog.load(write_catalog(tmp_path, GOOD))
    (e,) = c.entries
    assert e.name == "kfree" and e.api == "kfree" and e.args[0].show == "ptr"
    assert e.returns_show == "" and e.source.name == "test.toml"


@pytest.mark.parametrize("change, message", [
    (("family = \"free\"", "family = \"freeing\""), "unknown family 'freeing'"),
    (("fault = \"none\"", "faults = \"none\""), "unknown key(s): faults (did you mean fault?)"),
    (("fault = \"none\"", "fault = \"NULL\""), "a void function's fault must be \"none\""),
    (("\"objp\"]", "\"ret\"]"), "'ret' is reserved"),
    (("[\"const void *\", \"objp\"]", "[\"const void *\", \"objp\", \"str\"]"),
     "show \"str\" needs a kernel 'const char *'"),
    (("[\"const void *\", \"objp\"]", "[\"struct foo\", \"objp\"]"),
     "cannot tell how to print type 'struct foo'"),
    (("headers = [\"linux/slab.h\"]", "headers = []"), "'headers' must be a non-empty list"),
    (("name = \"kfree\"", "name = \"k free\""), "'name' must be a C identifier"),
    (("returns = \"void\"\n", ""), "missing 'returns'"),
    (("[[function]]", "[[function]\n"), "not valid TOML"),
    (("fault = \"none\"", "fault = \"none\"\ntrack = \"kfree\""),
     "'track' needs 'allocates' or 'frees'"),
    (("fault = \"none\"", "fault = \"none\"\nfrees = \"objp\"\ntrack = \"vmalloc\""),
     "track 'vmalloc' for a free; known: cache_free, free_page, free_pages"),
    (("fault = \"none\"", "fault = \"none\"\nfrees = \"objp\"\ntrack = \"free_pages\""),
     "track 'free_pages' needs 'order'"),
    (("fault = \"none\"", "fault = \"none\"\nfrees = \"objp\"\ntrack = \"cache_free\""),
     "track 'cache_free' needs 'cache' naming the kmem_cache argument"),
    (("fault = \"none\"", "fault = \"none\"\nsize = \"8\""), "size given without 'track'"),
    (("fault = \"none\"", "fault = \"none\"\nsleeps = \"objp\""),
     "'sleeps' must be \"yes\" or the name of a gfp_t argument"),
    (("fault = \"none\"", "fault = \"none\"\nfails_on = \"signal\""),
     "'fails_on' must be \"signal\", for a function whose fault is not \"none\""),
    (("fault = \"none\"", "fault = \"none\"\nfails_on = \"interrupt\""),
     "'fails_on' must be \"signal\""),
    (("fault = \"none\"", "fault = \"none\"\nfrees = \"objp\"\ntrack = \"release\""),
     "track \"release\" needs 'resource', one of cdev, chrdev"),
    (("fault = \"none\"", "fault = \"none\"\nfrees = \"objp\"\ntrack = \"release\"\n"
      "resource = \"netdevs\""), "track \"release\" needs 'resource'"),
    (("fault = \"none\"", "fault = \"none\"\nfrees = \"objp\"\ntrack = \"kfree\"\n"
      "key2 = \"objp\""), "key2 given, but track 'kfree' is not a resource"),
])
def test_bad_entries_are_refused_with_file_and_cause(tmp_path: Path, change: tuple[str, str],
                                                     message: str) -> None:
    d = write_catalog(tmp_path, GOOD.replace(*change))
    with pytest.raises(KedrError) as err:
        catalog.load(d)
    assert str(d / "test.toml") in str(err.value)
    assert message in str(err.value)


def test_same_name_twice_needs_requires_or_excludes(tmp_path: Path) -> None:
    with pytest.raises(KedrError, match=r"kfree is described 2 times \(test.toml\)"):
        catalog.load(write_catalog(tmp_path, GOOD + GOOD))


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KedrError, match="no catalog files"):
        catalog.load(tmp_path)


# --- lookup and variants -------------------------------------------------------------

def test_unknown_function_lists_close_matches(cat: Catalog) -> None:
    with pytest.raises(KedrError) as err:
        cat.lookup("kmaloc_trace", _exports("kmalloc_trace"))
    assert str(err.value).startswith("no catalog entry for function 'kmaloc_trace'; close "
                                     "matches: kmalloc_trace")


def test_known_function_the_kernel_lacks(cat: Catalog) -> None:
    with pytest.raises(KedrError, match="kmem_cache_alloc_trace does not apply: the kernel "
                                        "does not export it"):
        cat.lookup("kmem_cache_alloc_trace", _exports("kmalloc_trace"))


def test_variant_chosen_by_what_the_kernel_exports(cat: Catalog) -> None:
    # 6.0-style kernel: kmalloc() became kmem_cache_alloc_trace.
    old = cat.for_kernel(_exports("kmem_cache_alloc_trace", "kmalloc_order_trace", "kfree"))
    assert set(old) == {"kmem_cache_alloc_trace", "kmalloc_order_trace", "kfree"}
    # 6.11+: __kmalloc_node_noprof takes a bucket argument exactly when
    # kmem_buckets_create is exported (CONFIG_SLAB_BUCKETS).
    plain = cat.lookup("__kmalloc_node_noprof", _exports("__kmalloc_node_noprof"))
    buckets = cat.lookup("__kmalloc_node_noprof",
                         _exports("__kmalloc_node_noprof", "kmem_buckets_create"))
    assert [a.name for a in plain.args] == ["size", "flags", "node"]
    assert [a.name for a in buckets.args] == ["size", "b", "flags", "node"]


def test_validate_reports_names_the_kernel_lacks(cat: Catalog) -> None:
    report = catalog.validate(cat, _exports("kfree", "kmalloc_trace"))
    assert {e.name for e in report.applicable} == {"kfree", "kmalloc_trace"}
    assert "kmem_cache_alloc_trace" in {e.name for e in report.missing}
    assert "kmalloc" not in report.apis_unavailable and "vmalloc" in report.apis_unavailable


def _series(release: str) -> tuple[int, int]:
    major, minor = release.split(".")[:2]
    return int(major), int(minor)


def _note_covers(note: str, series: tuple[int, int]) -> bool | None:
    """Does an entry's informational ``kernels`` note ("<=6.9", "6.1-6.9", ">=6.11, ...")
    include this kernel series? None: it depends on a config option, not the version."""
    first = note.split(",")[0].strip()
    if not first:
        return True
    if first.startswith("CONFIG_"):
        return None
    if first.startswith("<="):
        return series <= _series(first[2:] + ".0")
    if first.startswith(">="):
        return series >= _series(first[2:] + ".0")
    low, _, high = first.partition("-")
    return _series(low + ".0") <= series <= _series((high or low) + ".0")


def test_validate_against_the_pinned_kernel(cat: Catalog, kernel: ProvisionedKernel,
                                            kernel_exports: dict[str, SymversEntry]) -> None:
    report = catalog.validate(cat, kernel_exports)
    assert len(report.applicable) >= 60
    series = _series(kernel.release)
    # Every API has its variant for this kernel, but those the kernel is too old for
    # (by the notes of all their variants: queue_limits_commit_update is 6.9+).
    assert [api for api in report.apis_unavailable
            if any(_note_covers(e.kernels, series) is not False
                   for e in cat.entries if e.api == api)] == []
    # An exported name ruled out by requires/excludes: only where a sibling variant
    # of the same name applies (the kmem_buckets forms on 6.12).
    applicable = cat.for_kernel(kernel_exports)
    assert [e.name for e in report.unmatched if e.name not in applicable] == []
    # The catalog applies entries by the kernel's exports, never by version; its
    # informational notes must agree: what this kernel lacks are other kernels'
    # variants (or config-dependent ones), and what applies claims this kernel.
    assert [e.name for e in report.missing if _note_covers(e.kernels, series)] == []
    assert [e.name for e in report.applicable if _note_covers(e.kernels, series) is False] == []


# --- every applicable entry, compiled against each pinned kernel -----------------------

@pytest.fixture(scope="module")
def full_catalog_module(cat: Catalog, kernel: ProvisionedKernel,
                        kernel_exports: dict[str, SymversEntry],
                        tmp_path_factory: pytest.TempPathFactory) -> generate.ReplacementModule:
    pairs = [(name, f"kedr_{name}") for name in cat.for_kernel(kernel_exports)]
    module = generate.generate(pairs, cat, kernel.symvers,
                               tmp_path_factory.mktemp("catalog") / "kedr_repl_catalog",
                               "kedr_repl_catalog", kernel=kernel.release)
    generate.build_replacement(module.directory, kernel.kdir)
    return module


def test_every_applicable_entry_compiles_and_exports_like_the_kernel(
        full_catalog_module: generate.ReplacementModule,
        kernel_exports: dict[str, SymversEntry]) -> None:
    built = read_symvers(full_catalog_module.symvers)
    assert len(full_catalog_module.replacements) >= 60
    wrong = [(r.original, r.replacement, built.get(r.replacement))
             for r in full_catalog_module.replacements
             if r.replacement not in built
             or built[r.replacement].export_type != kernel_exports[r.original].export_type
             or built[r.replacement].namespace]
    assert wrong == []
    assert {e.export_type for e in built.values()} == {"EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL"}


def test_a_wait_only_a_signal_ends_is_failed_only_where_one_can_arrive(
        full_catalog_module: generate.ReplacementModule) -> None:
    """fails_on = "signal" puts kedr_signal_possible() before the fault decision of
    exactly those entries (kedr_faults.c: false in a kernel thread that ignores every
    signal, where failing the wait hung usb-storage's control thread)."""
    c = full_catalog_module.source.read_text()
    gated = {m.group(1) for m in re.finditer(
        r"/\* kedr-entry: (\w+) \((?:(?!kedr-entry).)*?KEDR_PAYLOAD_FAULTS\) && "
        r"kedr_signal_possible\(\)", c, re.S)}
    assert gated == {"wait_for_completion_interruptible", "mutex_lock_interruptible",
                     "mutex_lock_killable", "down_interruptible"}


def test_the_runtime_compiles_without_warnings(
        full_catalog_module: generate.ReplacementModule) -> None:
    """Every entry and the whole C runtime, with the kernel's own flags: no compiler
    warning (kedr_tail_caller() was "defined but not used" in every module without
    tail calls). Not -Werror in the generated Kbuild: a user's kernel and compiler may
    warn where these two do not, and that must not stop their build."""
    log = (full_catalog_module.directory / "build.log").read_text()
    assert [line for line in log.splitlines() if "warning:" in line] == []


ENDBR64 = bytes.fromhex("f30f1efa")


def test_replacements_carry_the_kernels_ibt_landing_pads(
        full_catalog_module: generate.ReplacementModule, kernel: ProvisionedKernel) -> None:
    """With CONFIG_X86_KERNEL_IBT (6.12) every replacement starts with endbr64, as the
    kernel's own exported functions do; without it (6.1) none does. (QEMU's TCG does not
    enforce IBT, so this is checked in the object code, with pyelftools.)"""
    ibt = "CONFIG_X86_KERNEL_IBT=y" in (kernel.kdir / ".config").read_text().splitlines()
    ko = full_catalog_module.directory / "kedr_repl_catalog.ko"
    with ko.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        starts = {}
        for r in full_catalog_module.replacements:
            sym = symtab.get_symbol_by_name(r.replacement)[0]
            assert sym["st_info"]["type"] == "STT_FUNC"
            section = elf.get_section(sym["st_shndx"])
            starts[r.replacement] = section.data()[sym["st_value"]:sym["st_value"] + 4]
    assert len(starts) >= 60
    assert {s == ENDBR64 for s in starts.values()} == {ibt}
