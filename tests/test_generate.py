"""The replacement module generator: what it writes, what it refuses, and how a
prototype that no longer compiles is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedr_build.intercept import catalog
from kedr_build.intercept import generate
from kedr_build.intercept import loadscript
from kedr_build.intercept import naming
from kedr_build.intercept.catalog import Catalog
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.imports import inspect_module
from kedr_build.ko.module import ModuleRef
from kedr_build.ko.names import is_module_name
from kedr_build.ko.symvers import read_symvers

PAIRS = [("kfree", "Kfree"), ("kmalloc_trace", "Kmalloc_trace"), ("kasprintf", "Kasprintf"),
         ("devm_kmalloc", "Devm_kmalloc"), ("_raw_spin_lock_irqsave", "K_raw_spin_lock_irqsave")]


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return catalog.load()


@pytest.fixture
def symvers(tmp_path: Path) -> Path:
    """A small Module.symvers: generation needs no kernel tree."""
    path = tmp_path / "Module.symvers"
    path.write_text("".join(f"0x{i:08x}\t{name}\tvmlinux\t{kind}\t\n" for i, (name, kind) in
                            enumerate([("kfree", "EXPORT_SYMBOL"),
                                       ("kmalloc_trace", "EXPORT_SYMBOL"),
                                       ("kasprintf", "EXPORT_SYMBOL"),
                                       ("kmem_cache_free", "EXPORT_SYMBOL"),
                                       ("devm_kmalloc", "EXPORT_SYMBOL_GPL"),
                                       ("_raw_spin_lock_irqsave", "EXPORT_SYMBOL"),
                                       ("Kexisting", "EXPORT_SYMBOL")], 1)))
    return path


def test_module_name_for() -> None:
    assert naming.module_name_for("hello") == "kedr_repl_hello"
    assert naming.module_name_for("my-drv.ko") == "kedr_repl_my_drv"
    fits = "d" * (55 - len("kedr_repl_"))
    assert naming.module_name_for(fits) == "kedr_repl_" + fits
    long_a, long_b = naming.module_name_for(fits + "_a"), naming.module_name_for(fits + "_b")
    assert len(long_a) == len(long_b) == 55 and long_a != long_b
    assert is_module_name(long_a) and long_a.startswith("kedr_repl_ddd")


def test_generates_only_what_is_asked(cat: Catalog, symvers: Path, tmp_path: Path) -> None:
    module = generate.generate(PAIRS, cat, symvers, tmp_path / "out", "kedr_repl_hello",
                               driver="hello", kernel="6.1.0-56-amd64")
    files = sorted(p.name for p in module.directory.iterdir())
    assert files == ["Kbuild", "fault_points.json", "kedr_attach.c", "kedr_control.c", "kedr_faults.c",
                     "kedr_judge.c", "kedr_leak.c", "kedr_objects.c", "kedr_repl_hello.c",
                     "kedr_repl_hello_trace.h", "kedr_report.c", "kedr_rules.c",
                     "kedr_runtime.h", "kedr_tailcall.c", "kedr_tailcall.h",
                     "kedr_trace.h"]
    c = module.source.read_text()
    trace = (module.directory / "kedr_repl_hello_trace.h").read_text()
    for original, replacement in PAIRS:
        assert f"/* kedr-entry: {original} (" in c
        assert f"TRACE_EVENT(call_{original}," in trace
    assert "kmem_cache_free" not in c and "kmem_cache_free" not in trace
    assert "EXPORT_SYMBOL(Kfree);" in c
    assert "EXPORT_SYMBOL_GPL(Devm_kmalloc);" in c       # GPL-only stays GPL-only
    assert "EXPORT_SYMBOL_NS" not in c
    assert "kedr_ret = kvasprintf(gfp, fmt, kedr_va);" in c
    assert "void *Kmalloc_trace(struct kmem_cache *s, gfp_t flags, size_t size)\n{" in c
    assert "\t\treturn kmalloc_trace(s, flags, size);" in c
    assert 'MODULE_LICENSE("GPL");' in c
    assert "#define TRACE_INCLUDE_PATH .\n" in trace
    assert "#define TRACE_SYSTEM kedr_repl_hello\n" in trace
    assert ('TP_printk("call_site=%pS s=0x%lx flags=%s size=%zu ret=0x%lx"' in trace)
    kbuild = (module.directory / "Kbuild").read_text()
    assert "obj-m := kedr_repl_hello.o\n" in kbuild
    assert "CFLAGS_kedr_repl_hello.o := -I$(src)\n" in kbuild
    assert [r.export_type for r in module.replacements] == [
        "EXPORT_SYMBOL", "EXPORT_SYMBOL", "EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL", "EXPORT_SYMBOL"]


def test_resource_hooks(cat: Catalog, tmp_path: Path) -> None:
    """An acquire is recorded after the call succeeded, keyed by the catalog's key; a
    release is judged before the call (void or not: it is never refused); a variadic function with no
    va_list twin goes through the runtime's helper."""
    names = ["request_threaded_irq", "free_irq", "alloc_chrdev_region", "misc_deregister",
             "alloc_workqueue", "_raw_spin_unlock", "netlink_broadcast",
             "netlink_broadcast_filtered"]
    symvers = tmp_path / "Module.symvers"
    symvers.write_text("".join(f"0x{i:08x}\t{n}\tvmlinux\tEXPORT_SYMBOL\t\n"
                               for i, n in enumerate(names, 1)))
    module = generate.generate([(n, f"K{n}") for n in names], cat, symvers, tmp_path / "out",
                               "kedr_repl_res")
    c = " ".join(module.source.read_text().split())      # as one line: wrapping aside
    assert ("if ((kedr_on & KEDR_PAYLOAD_LEAKS) && (kedr_ret == 0)) "
            "kedr_res_acquire(&kedr_fn_request_threaded_irq, KEDR_KIND_IRQ, (unsigned long)(irq), "
            "(unsigned long)(dev), 0, kedr_ip);") in c
    # Released before the call: afterwards another acquire may get the same irq and dev_id.
    assert ("if (kedr_on & KEDR_PAYLOAD_LEAKS) kedr_res_release(&kedr_fn_free_irq, KEDR_KIND_IRQ, "
            "(unsigned long)(irq), (unsigned long)(dev_id), kedr_ip); "
            "kedr_ret = free_irq(irq, dev_id);") in c
    assert ("kedr_res_acquire(&kedr_fn_alloc_chrdev_region, KEDR_KIND_CHRDEV_REGION, "
            "(unsigned long)(*dev), 0, 0, kedr_ip);") in c
    assert ("kedr_pass = !(kedr_on & KEDR_PAYLOAD_LEAKS) || kedr_res_release("
            "&kedr_fn_misc_deregister, KEDR_KIND_MISC, (unsigned long)(misc), 0, kedr_ip); "
            "if (likely(kedr_pass)) misc_deregister(misc);") in c
    assert "kedr_ret = kedr_alloc_workqueue_va(fmt, flags, max_active, kedr_va);" in c
    # The skb is the kernel's from the call on, whatever it returns: released before it,
    # with a filter or without (the filter, a function pointer, passed on as it is).
    for fn, rest in (("netlink_broadcast", ""), ("netlink_broadcast_filtered",
                                                 ", filter, filter_data")):
        assert (f"if (kedr_on & KEDR_PAYLOAD_LEAKS) kedr_res_release(&kedr_fn_{fn}, "
                f"KEDR_KIND_SKB, (unsigned long)(skb), 0, kedr_ip); "
                f"kedr_ret = {fn}(ssk, skb, portid, group, allocation{rest});") in c
    assert "int (*filter)(struct sock *, struct sk_buff *, void *)" in c
    assert ("kedr_pass = !(kedr_on & KEDR_PAYLOAD_LEAKS) || kedr_leak_free("
            "&kedr_fn__raw_spin_unlock, KEDR_FREE_SPIN_UNLOCK, (unsigned long)lock,") in c


def test_regenerating_leaves_unchanged_files_alone(cat: Catalog, symvers: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate.generate(PAIRS, cat, symvers, out, "kedr_repl_hello")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    generate.generate(PAIRS, cat, symvers, out, "kedr_repl_hello")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.parametrize("pairs, message", [
    ([("kfree", "Kfree"), ("kfree", "Kfree2")], "function kfree is to be replaced twice"),
    ([("kfree", "K"), ("kmalloc_trace", "K")], "replacement name K is used twice"),
    ([("kfree", "Kexisting")], "the kernel already exports Kexisting"),
    ([("kfree", "K" * 56)], "at most 55 characters"),
    ([("kfre", "Kfre")], "no catalog entry for function 'kfre'; close matches: kfree"),
    ([("vmalloc", "Kvmalloc")], "vmalloc does not apply: the kernel does not export it"),
    ([], "no functions to replace"),
])
def test_refuses_bad_requests(cat: Catalog, symvers: Path, tmp_path: Path,
                              pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(KedrError, match=message):
        generate.generate(pairs, cat, symvers, tmp_path / "out", "kedr_repl_x")


def test_compile_errors_are_mapped_to_entries(cat: Catalog, symvers: Path,
                                              tmp_path: Path) -> None:
    module = generate.generate(PAIRS, cat, symvers, tmp_path / "out", "kedr_repl_hello")
    lines = module.source.read_text().splitlines()
    kfree_line = next(i for i, t in enumerate(lines, 1) if t.startswith("void Kfree("))
    d = module.directory
    output = "\n".join([
        f"{d}/kedr_repl_hello.c:{kfree_line}:6: error: conflicting types for 'Kfree'",
        "/kdir/include/linux/build_bug.h:78:41: error: static assertion failed: \"x\"",
        f"{d}/kedr_repl_hello.c:{kfree_line + 40}:1: note: in expansion of macro "
        "'static_assert'",
        "/kdir/include/linux/slab.h:10:1: error: something in a kernel header",
    ])
    errors = generate.compile_errors(d, output)
    assert errors[0] == ("kfree", f"kedr_repl_hello.c:{kfree_line}: conflicting types for 'Kfree'")
    assert errors[1][0] == generate.entry_at(module.source, kfree_line + 40) != "kfree"
    assert errors[2] == (None, "slab.h:10: something in a kernel header")


# --- kbuild ---------------------------------------------------------------------------

def test_builds_a_loadable_looking_module(cat: Catalog, pinned_kernel: ProvisionedKernel,
                                          tmp_path: Path) -> None:
    module = generate.generate(PAIRS, cat, pinned_kernel.symvers, tmp_path / "out",
                               "kedr_repl_hello", driver="hello", kernel=pinned_kernel.release)
    ko = generate.build_replacement(module.directory, pinned_kernel.kdir)
    assert ko == module.ko
    info = inspect_module(ko)
    assert info.modinfo_values("license") == ["GPL"]
    ref = ModuleRef.read(ko)
    assert ref.name == "kedr_repl_hello" and ref.release == pinned_kernel.release
    built = read_symvers(module.symvers)
    assert {n: e.export_type for n, e in built.items()} == {
        "Kfree": "EXPORT_SYMBOL", "Kmalloc_trace": "EXPORT_SYMBOL", "Kasprintf": "EXPORT_SYMBOL",
        "Devm_kmalloc": "EXPORT_SYMBOL_GPL", "K_raw_spin_lock_irqsave": "EXPORT_SYMBOL"}


def test_a_prototype_that_no_longer_compiles_names_the_entry(
        pinned_kernel: ProvisionedKernel, tmp_path: Path) -> None:
    catdir = tmp_path / "catalog"
    catdir.mkdir()
    slab = (catalog.CATALOG_DIR / "slab.toml").read_text()
    # As if the kernel had changed kfree's prototype under the catalog.
    slab = slab.replace('name = "kfree"\nreturns = "void"\nargs = [["const void *", "objp"]]',
                        'name = "kfree"\nreturns = "void"\nargs = [["void *", "objp"]]')
    (catdir / "slab.toml").write_text(slab)
    cat = catalog.load(catdir)
    module = generate.generate([("kfree", "Kfree"), ("kmalloc_trace", "Kmalloc_trace")], cat,
                               pinned_kernel.symvers, tmp_path / "out", "kedr_repl_broken")
    with pytest.raises(KedrError) as err:
        generate.build_replacement(module.directory, pinned_kernel.kdir)
    message = str(err.value)
    assert "1 catalog entry does not compile" in message
    assert "catalog entry kfree (slab.toml): " in message
    assert "static assertion failed" in message and "prototype of kfree differs" in message
    assert "kmalloc_trace" not in message
    assert (module.directory / "build.log").is_file()


def test_build_refuses_a_directory_that_is_not_generated(pinned_kernel: ProvisionedKernel,
                                                          tmp_path: Path) -> None:
    with pytest.raises(KedrError, match="not a generated replacement module"):
        generate.build_replacement(tmp_path, pinned_kernel.kdir)


def test_kbuild_failure_names_the_error_not_makes_last_line(
        pinned_kernel: ProvisionedKernel, tmp_path: Path) -> None:
    """A replacement module that compiles but fails in modpost: the message is
    modpost's error, not make's closing "Error 2"."""
    d = tmp_path / "kedr_repl_x"
    d.mkdir()
    (d / "Kbuild").write_text("obj-m := kedr_repl_x.o\n")
    (d / "kedr_repl_x.c").write_text(
        '#include <linux/module.h>\nextern void kedr_no_such_function(void);\n'
        'static int __init x_init(void) { kedr_no_such_function(); return 0; }\n'
        'module_init(x_init);\nMODULE_LICENSE("GPL");\n')
    with pytest.raises(KedrError) as info:
        generate.build_replacement(d, pinned_kernel.kdir)
    message = str(info.value)
    assert 'kbuild failed for kedr_repl_x: ERROR: modpost: "kedr_no_such_function"' in message
    assert "Error 2" not in message
