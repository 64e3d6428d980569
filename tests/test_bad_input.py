"""Bad input to ``python -m kedr_build patch`` and to ``scons``: one line
``kedr-build: <file>: <cause>``, exit status 1, no traceback, no partial output, and
the input never modified (issue 9)."""

from __future__ import annotations

import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, kernel_name, outputs, run_scons
from kedr_build import config
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.imports import inspect_module


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own, as a user runs it (a traceback would show)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "kedr_build", *map(str, args)],
                          capture_output=True, text=True, env=env)


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kedr-build: "), proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def hello(built: Path, tmp_path: Path) -> Path:
    src = tmp_path / "hello_mod.ko"
    src.write_bytes((built / "hello_mod.ko").read_bytes())
    return src


def patch_args(src: Path, out: Path, built: Path, *extra: str) -> list[str | Path]:
    return ["patch", src, "-o", out, "--functions", "kfree", "--symvers",
            built / "Module.symvers", *extra]


# --- --manifest: never the input, never the output, all or nothing ----------------------

def test_manifest_is_the_input(hello: Path, built: Path, tmp_path: Path) -> None:
    before = hello.read_bytes()
    out = tmp_path / "out.ko"
    proc = cli(*patch_args(hello, out, built, "--manifest", str(hello)))
    one_line_error(proc, str(hello), "manifest is the input")
    assert hello.read_bytes() == before and not out.exists()
    # The same file by another spelling.
    proc = cli(*patch_args(hello, out, built, "--manifest", f"{tmp_path}/./hello_mod.ko"))
    one_line_error(proc, "manifest is the input")
    assert hello.read_bytes() == before and not out.exists()


def test_manifest_is_the_output(hello: Path, built: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ko"
    proc = cli(*patch_args(hello, out, built, "--manifest", str(out)))
    one_line_error(proc, str(out), "manifest and output are the same file")
    assert not out.exists()
    out.write_bytes(b"an older output")
    proc = cli(*patch_args(hello, out, built, "--manifest", str(out)))
    one_line_error(proc, "same file")
    assert out.read_bytes() == b"an older output"


@pytest.mark.parametrize("where", ["missing", "readonly"])
def test_manifest_unwritable_leaves_no_output(hello: Path, built: Path, tmp_path: Path,
                                              where: str) -> None:
    out = tmp_path / "out.ko"
    mdir = tmp_path / "mdir"
    if where == "readonly":
        mdir.mkdir()
        mdir.chmod(0o555)
        if os.access(mdir, os.W_OK):   # root ignores the mode: use a read-only mount
            mdir.chmod(0o755)
            mdir = Path("/proc/self")
    proc = cli(*patch_args(hello, out, built, "--manifest", str(mdir / "m.json")))
    one_line_error(proc, "m.json", "cannot write")
    assert not out.exists(), "the output was written although its manifest was not"
    assert [p.name for p in tmp_path.rglob("*") if not p.is_dir()] == ["hello_mod.ko"]


def test_output_unwritable_leaves_no_manifest(hello: Path, built: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "out.ko"
    manifest = tmp_path / "m.json"
    proc = cli(*patch_args(hello, out, built, "--manifest", str(manifest)))
    one_line_error(proc, str(out), "cannot write")
    assert not manifest.exists()


def test_output_and_manifest_written_together(hello: Path, built: Path, tmp_path: Path) -> None:
    out, manifest = tmp_path / "out.ko", tmp_path / "sub" / "m.json"
    manifest.parent.mkdir()
    proc = cli(*patch_args(hello, out, built, "--manifest", str(manifest)))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x7fELF" and manifest.read_text().startswith("{")
    leftovers = [p for p in tmp_path.rglob(".*.tmp")]
    assert leftovers == []


# --- depends=: a real replacement module -------------------------------------------------

def test_kernel_export_as_replacement_is_refused(hello: Path, tmp_path: Path,
                                                 pinned_kernel: ProvisionedKernel) -> None:
    out = tmp_path / "out.ko"
    proc = cli("patch", hello, "-o", out, "--rename", "kfree=vfree", "--symvers",
               pinned_kernel.symvers)
    one_line_error(proc, str(pinned_kernel.symvers), "vfree", "vmlinux")
    assert not out.exists()
    # Not with an explicit --depends either: the module would call vfree for kfree.
    proc = cli("patch", hello, "-o", out, "--rename", "kfree=vfree", "--symvers",
               pinned_kernel.symvers, "--depends", "repl")
    one_line_error(proc, str(pinned_kernel.symvers), "vfree", "vmlinux")
    assert not out.exists()


@pytest.mark.parametrize("bad", ["a b,c", "a,b", "", "x" * 56, "vmlinux;rm"])
def test_depends_must_be_a_module_name(hello: Path, built: Path, tmp_path: Path,
                                       bad: str) -> None:
    out = tmp_path / "out.ko"
    proc = cli(*patch_args(hello, out, built, "--depends", bad))
    one_line_error(proc, "--depends", "not a module name")
    assert not out.exists()


def test_depends_good_name(hello: Path, built: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ko"
    proc = cli(*patch_args(hello, out, built, "--depends", "my-repl_2"))
    assert proc.returncode == 0, proc.stderr
    assert inspect_module(out).modinfo_values("depends") == ["my-repl_2"]


# --- files that are not what they claim --------------------------------------------------

def test_plan_not_utf8(hello: Path, tmp_path: Path) -> None:
    for name, data in (("p.json", b'{"functions": ["kfree\xff"]}'),
                       ("p.toml", b'functions = ["\xc3\x28"]\n')):
        plan = tmp_path / name
        plan.write_bytes(data)
        proc = cli("patch", hello, "-o", tmp_path / "out.ko", "--plan", plan)
        one_line_error(proc, str(plan), "not UTF-8")
    assert not (tmp_path / "out.ko").exists()


def test_plain_object_is_not_a_module(built: Path, tmp_path: Path) -> None:
    c = tmp_path / "plain.c"
    c.write_text("void kfree(const void *);\nvoid f(void *p) { kfree(p); }\n")
    obj = tmp_path / "plain.ko"
    subprocess.run(["gcc", "-c", "-O2", "-o", str(obj), str(c)], check=True)
    before = obj.read_bytes()
    out = tmp_path / "out.ko"
    proc = cli(*patch_args(obj, out, built))
    one_line_error(proc, str(obj), "not a kernel module")
    assert not out.exists() and obj.read_bytes() == before


def test_xz_data_named_ko(hello: Path, built: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.ko"
    fake.write_bytes(lzma.compress(hello.read_bytes(), format=lzma.FORMAT_XZ,
                                   check=lzma.CHECK_CRC32))
    out = tmp_path / "out.ko"
    proc = cli(*patch_args(fake, out, built))
    one_line_error(proc, str(fake), "xz-compressed", "fake.ko.xz")
    assert not out.exists()


def test_compressed_output_needs_its_suffix(hello: Path, built: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.ko.xz"
    src.write_bytes(lzma.compress(hello.read_bytes(), format=lzma.FORMAT_XZ,
                                  check=lzma.CHECK_CRC32))
    out = tmp_path / "out.ko"
    proc = cli(*patch_args(src, out, built))
    one_line_error(proc, str(out), "xz-compressed", "out.ko.xz")
    assert not out.exists()
    proc = cli(*patch_args(src, out, built, "--compress", "none"))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x7fELF"


# --- a module patched once is not patched again ------------------------------------------

def test_patched_module_is_refused_with_another_plan(hello: Path, built: Path,
                                                     tmp_path: Path) -> None:
    once = tmp_path / "once.ko"
    assert cli(*patch_args(hello, once, built)).returncode == 0
    assert inspect_module(once).modinfo_values("depends") == ["repl"]
    before = once.read_bytes()
    # The second plan names other functions: the import table alone would not tell.
    proc = cli("patch", once, "-o", tmp_path / "twice.ko", "--functions", "mutex_lock",
               "--symvers", built / "Module.symvers")
    one_line_error(proc, str(once), "already patched", "repl")
    assert not (tmp_path / "twice.ko").exists() and once.read_bytes() == before


def test_kedr_replacement_in_depends_is_refused(hello: Path, built: Path,
                                                tmp_path: Path) -> None:
    once = tmp_path / "once.ko"
    assert cli(*patch_args(hello, once, built, "--depends", "kedr_repl_hello")).returncode == 0
    proc = cli("patch", once, "-o", tmp_path / "twice.ko", "--functions", "mutex_lock",
               "--symvers", built / "Module.symvers", "--depends", "other")
    one_line_error(proc, "already patched", "kedr_repl_hello")


def test_scons_ko_of_patched_module(built_chardev: Path, tmp_path: Path) -> None:
    patched = built_chardev / "patched" / "kedr_chardev.ko"
    assert "kedr_repl_chardev" in inspect_module(patched).modinfo_values("depends")[0]
    copy = tmp_path / "kedr_chardev.ko"
    copy.write_bytes(patched.read_bytes())
    build = tmp_path / "build"
    proc = run_scons([f"KO={copy}", f"BUILD_DIR={build}"], check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "kedr-build:" in ln]
    assert errors == [f"kedr-build: {copy}: already patched (depends= lists the replacement "
                      "module kedr_repl_chardev); patch the original module instead"], errors
    assert not (build / "kedr_chardev" / "load.sh").exists()
    assert not (build / "kedr_chardev" / "patched").exists()


# --- scons variables (checked in config, before anything is built) -----------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "0", "soon"])
def test_vm_timeout_must_be_positive_and_finite(value: str, tmp_path: Path,
                                                pinned_kernel: ProvisionedKernel) -> None:
    with pytest.raises(KedrError, match=f"VM_TIMEOUT={value}: not a positive, finite"):
        config.from_arguments({"MODULE": str(REPO / "examples/chardev"),
                               "VM_TIMEOUT": value, "BUILD_DIR": str(tmp_path)},
                              str(REPO), str(REPO))


def test_ko_not_a_module_file(tmp_path: Path) -> None:
    build = tmp_path / "build"
    proc = run_scons(["KO=/etc/passwd", f"BUILD_DIR={build}"], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("kedr-build: KO=/etc/passwd: not a kernel module file "
                                   "(*.ko, *.ko.xz, *.ko.zst, *.ko.gz)")
    assert not (build / "passwd").exists()


def test_ko_plain_object_named_ko(tmp_path: Path) -> None:
    c = tmp_path / "plain.c"
    c.write_text("void kfree(const void *);\nvoid f(void *p) { kfree(p); }\n")
    obj = tmp_path / "plain.ko"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(c)], check=True)
    build = tmp_path / "build"
    proc = run_scons([f"KO={obj}", f"BUILD_DIR={build}"], check=False)
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "kedr-build:" in ln]
    assert len(errors) == 1 and "not a kernel module" in errors[0] and str(obj) in errors[0]
    assert not (build / "plain" / "patched").exists()


def test_functions_none_imported_says_so(tmp_path: Path,
                                         pinned_kernel: ProvisionedKernel) -> None:
    """FUNCTIONS=vfree on chardev (which imports other catalogue functions, not vfree)."""
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}",
                      "FUNCTIONS=vfree"])
    warnings = [ln for ln in proc.stdout.splitlines() if ln.startswith("kedr-build: warning")]
    assert warnings == [
        "kedr-build: warning: chardev: FUNCTIONS: vfree is not imported by kedr_chardev.ko; "
        "skipped",
        "kedr-build: warning: chardev: none of the functions in FUNCTIONS= is imported by the "
        "driver: nothing to intercept",
        "kedr-build: warning: kedr_chardev.ko: nothing to intercept: the patched module is a "
        "copy"], warnings


def test_ko_xz_is_planned_and_patched(built_chardev: Path, tmp_path: Path,
                                      kernel: ProvisionedKernel) -> None:
    """KO=x.ko.xz intercepts what KO=x.ko does (the plan once kept only *.ko names)."""
    ko = built_chardev / "kedr_chardev.ko"
    xz = tmp_path / "kedr_chardev.ko.xz"
    xz.write_bytes(lzma.compress(ko.read_bytes(), format=lzma.FORMAT_XZ,
                                 check=lzma.CHECK_CRC32))
    build = tmp_path / "build"
    run_scons([f"KO={xz}", f"BUILD_DIR={build}", f"KERNEL={kernel_name(kernel)}"])
    out = outputs(build, "kedr_chardev", kernel)
    plan = (out / "plan.json").read_text()
    assert plan == (built_chardev / "plan.json").read_text().replace(
        "kedr_repl_chardev", "kedr_repl_kedr_chardev")
    patched = inspect_module(out / "patched" / "kedr_chardev.ko")
    assert patched.modinfo_values("depends") == ["kedr_repl_kedr_chardev"]
    assert {i.name for i in patched.imports} >= {"Kfree", "Mutex_lock"}
