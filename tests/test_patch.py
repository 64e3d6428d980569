"""patch_module on modules built here against the pinned kernel, checked with GNU readelf,
kmod's modinfo and pyelftools."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kedr_build.cli import main as cli_main
from kedr_build.errors import KedrError
from kedr_build.ko.imports import inspect_module
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.container import Compression, compress, read_module
from kedr_build.ko.patch import _modinfo_with, patch_module
from kedr_build.ko.plan import Naming, build_plan
from kedr_build.ko.symvers import read_symvers

PLAN_FUNCS = ["kfree", "__kmalloc", "kmalloc_trace", "mutex_lock", "mutex_unlock"]


def readelf_syms(path: Path) -> dict[int, tuple[str, str]]:
    out = subprocess.run(["readelf", "-sW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0].rstrip(":").isdigit():
            syms[int(f[0].rstrip(":"))] = (f[6], f[7])
    return syms


def modinfo(path: Path, field: str) -> str:
    return subprocess.run(["/usr/sbin/modinfo", "-F", field, str(path)], capture_output=True,
                          text=True, check=True).stdout.strip()


def section_bytes(path: Path) -> dict[str, bytes]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {s.name: s.data() for s in elf.iter_sections() if s["sh_type"] != "SHT_NOBITS"}


def test_same_length_patch(built: Path, pinned_kernel: ProvisionedKernel, tmp_path: Path) -> None:
    src = built / "hello_mod.ko"
    before = src.read_bytes()
    plan = build_plan(PLAN_FUNCS, kernel_exports=read_symvers(pinned_kernel.symvers),
                      replacement_module="repl")
    out = tmp_path / "hello.ko"
    res = patch_module(src, out, plan, built / "Module.symvers")
    assert src.read_bytes() == before
    by_old = {r.old: r for r in res.renames}
    assert set(by_old) == set(PLAN_FUNCS)
    # "kmalloc" (tail.c) points into "__kmalloc": that rename must not be in place.
    assert by_old["__kmalloc"].strtab == "appended"
    assert by_old["kfree"].strtab == "in-place"
    assert by_old["kfree"].call_sites == 2
    syms_in, syms_out = readelf_syms(src), readelf_syms(out)
    for i, (ndx, name) in syms_in.items():
        want = plan.mapping().get(name, name) if ndx == "UND" else name
        assert syms_out[i] == (ndx, want)
    assert syms_out[next(i for i, v in syms_in.items() if v[1] == "kmalloc")][1] == "kmalloc"
    symvers = read_symvers(built / "Module.symvers")
    info = inspect_module(out)
    crcs = {v.name: v.crc for v in info.versions or ()}
    for r in res.renames:
        assert crcs[r.new] == symvers[r.new].crc
        assert r.old not in crcs
    assert modinfo(out, "depends") == "repl"
    assert modinfo(out, "vermagic") == modinfo(src, "vermagic")
    a, b = section_bytes(src), section_bytes(out)
    changed = {k for k in a if a[k] != b[k]}
    assert changed <= {".strtab", ".symtab", "__versions", ".modinfo"}
    manifest = json.loads((tmp_path / "hello.ko.json").read_text())
    assert manifest["renames"][0]["old"] in PLAN_FUNCS and manifest["verified"]


def test_prefix_patch_and_idempotence(built: Path, tmp_path: Path) -> None:
    plan = build_plan(["kfree"], Naming.parse("prefix:kedr_"), replacement_module="repl")
    out = tmp_path / "p.ko"
    res = patch_module(built / "hello_mod.ko", out, plan, built / "repl.ko")
    assert res.renames[0].strtab == "appended" and res.strtab_grown
    assert res.renames[0].crc_new == read_symvers(built / "Module.symvers")["kedr_kfree"].crc
    assert "kedr_kfree" in {n for _, n in readelf_syms(out).values()}
    with pytest.raises(KedrError, match="already patched"):
        patch_module(out, tmp_path / "again.ko", plan, built / "repl.ko")
    assert not (tmp_path / "again.ko").exists()


def test_missing_crc_and_collisions(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.ko"
    plan = build_plan(["kfree"], Naming.parse("prefix:nope_"))
    with pytest.raises(KedrError, match="no CRC for the replacement nope_kfree"):
        patch_module(built / "hello_mod.ko", out, plan, {})
    # Renaming kfree to a name the module defines ("kmalloc" from tail.c).
    plan = build_plan(["kfree"], explicit={"kfree": "h_alloc"})
    with pytest.raises(KedrError, match="defines h_alloc"):
        patch_module(built / "hello_mod.ko", out, plan, {"h_alloc": 1})
    plan = build_plan(["mutex_lock"], explicit={"mutex_lock": "mutex_unlock"})
    with pytest.raises(KedrError, match="imports both"):
        patch_module(built / "hello_mod.ko", out, plan, {"mutex_unlock": 1})
    assert not out.exists()


def test_nothing_to_rename_copies(built: Path, tmp_path: Path) -> None:
    plan = build_plan(["vfree"])
    res = patch_module(built / "hello_mod.ko", tmp_path / "c.ko", plan, {})
    assert res.skipped == ("vfree",) and not res.renames
    assert (tmp_path / "c.ko").read_bytes() == (built / "hello_mod.ko").read_bytes()


@pytest.mark.parametrize("comp", [Compression.XZ, Compression.GZIP, Compression.ZSTD])
def test_compressed_roundtrip(built: Path, tmp_path: Path, comp: Compression) -> None:
    src = tmp_path / f"hello_mod.ko{comp.value}"
    src.write_bytes(compress((built / "hello_mod.ko").read_bytes(), comp, str(src)))
    out = tmp_path / f"out.ko{comp.value}"
    plan = build_plan(["kfree"], replacement_module="repl")
    patch_module(src, out, plan, built / "Module.symvers")
    mod = read_module(out)
    assert mod.compression is comp
    plain = tmp_path / "plain.ko"
    patch_module(built / "hello_mod.ko", plain, plan, built / "Module.symvers")
    assert mod.elf == plain.read_bytes()
    if comp is not Compression.GZIP:  # Debian's kmod 30 is built without zlib (-ZLIB)
        assert modinfo(out, "depends") == "repl"  # kmod reads the compressed file itself


def test_signed_debian_module_is_stripped(pinned_kernel: ProvisionedKernel,
                                          tmp_path: Path) -> None:
    assert pinned_kernel.modules_dir is not None
    src = next(pinned_kernel.modules_dir.glob("kernel/fs/ext4/ext4.ko"))
    assert read_module(src).signed
    plan = build_plan(["kfree", "__kmalloc"], replacement_module="repl")
    res = patch_module(src, tmp_path / "ext4.ko", plan, {"Kfree": 1, "__Kmalloc": 2})
    assert res.signature_stripped and any("signature" in w for w in res.warnings)
    out = read_module(tmp_path / "ext4.ko")
    assert not out.signed
    assert modinfo(tmp_path / "ext4.ko", "depends") == "jbd2,mbcache,crc16,repl"
    assert modinfo(tmp_path / "ext4.ko", "signer") == ""


def test_resign(built: Path, pinned_kernel: ProvisionedKernel, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "1",
                    "-batch", "-x509", "-subj", "/CN=kedr test", "-outform", "PEM",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    rc = cli_main(["patch", str(built / "hello_mod.ko"), "-o", str(tmp_path / "s.ko"),
                   "--functions", "kfree", "--symvers", str(built / "Module.symvers"),
                   "--sign-key", str(key), "--sign-cert", str(cert),
                   "--kdir", str(pinned_kernel.kdir)])
    assert rc == 0
    assert read_module(tmp_path / "s.ko").signed
    assert modinfo(tmp_path / "s.ko", "signer") == "kedr test"
    assert modinfo(tmp_path / "s.ko", "depends") == "repl"  # from Module.symvers' module path


def test_modinfo_padding_is_used() -> None:
    data = b"license=GPL\0depends=a\0\0\0\0\0\0name=x\0"
    content, shifts = _modinfo_with(data, 12, 9, b"depends=a,bb")
    assert len(content) == len(data) and shifts[3] == 0
    assert content == b"license=GPL\0depends=a,bb\0\0\0name=x\0"
    content, shifts = _modinfo_with(data, 12, 9, b"depends=a,bbbbbbbb")
    assert content == b"license=GPL\0depends=a,bbbbbbbb\0\0\0\0\0\0name=x\0"
    assert shifts == (12, 9, 18, 9)
    content, _ = _modinfo_with(b"name=x\0", None, 0, b"depends=r")
    assert content == b"name=x\0depends=r\0"


def test_extended_modversions(built: Path, tmp_path: Path) -> None:
    """6.14+ __version_ext_* sections (added here with objcopy, as modpost would)."""
    info = inspect_module(built / "hello_mod.ko")
    assert info.versions is not None
    names = b"".join(v.name.encode() + b"\0" for v in info.versions)
    crcs = b"".join(struct.pack("<I", v.crc) for v in info.versions)
    (tmp_path / "n").write_bytes(names)
    (tmp_path / "c").write_bytes(crcs)
    src = tmp_path / "ext.ko"
    subprocess.run(["objcopy", "--add-section", f"__version_ext_names={tmp_path / 'n'}",
                    "--add-section", f"__version_ext_crcs={tmp_path / 'c'}",
                    str(built / "hello_mod.ko"), str(src)], check=True)
    long_name = "kedr_" + "x" * 60
    plan = build_plan(["kfree", "mutex_lock"], explicit={"kfree": long_name},
                      replacement_module="repl")
    res = patch_module(src, tmp_path / "out.ko", plan, {long_name: 7, "Mutex_lock": 9})
    out = inspect_module(tmp_path / "out.ko")
    ext = {v.name: v.crc for v in out.ext_versions or ()}
    assert ext[long_name] == 7 and ext["Mutex_lock"] == 9 and "kfree" not in ext
    ver = {v.name: v.crc for v in out.versions or ()}
    assert ver["Mutex_lock"] == 9 and "kfree" in ver  # too long for __versions: left alone
    assert any("too long" in w for w in res.warnings)
    # Without extended modversions a long name is an error.
    with pytest.raises(KedrError, match="too long"):
        patch_module(built / "hello_mod.ko", tmp_path / "o2.ko", plan, {long_name: 7,
                                                                         "Mutex_lock": 9})


def test_cli_errors_are_one_line(built: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ko"
    bad.write_bytes(b"\x7fELF\x01" + b"\0" * 100)
    out = tmp_path / "o.ko"
    assert cli_main(["patch", str(bad), "-o", str(out), "--functions", "kfree"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ELFCLASS32" in err and str(bad) in err
    assert cli_main(["patch", str(built / "hello_mod.ko"), "-o", str(out),
                     "--functions", "__fentry__"]) == 1
    assert "never be renamed" in capsys.readouterr().err
    assert cli_main(["patch", str(built / "hello_mod.ko"), "-o", str(out), "--functions",
                     "kfree", "--dry-run", "--symvers", str(built / "Module.symvers")]) == 0
    assert not out.exists()
    assert "would rename kfree -> Kfree" in capsys.readouterr().out
    assert cli_main(["inspect", str(built / "hello_mod.ko"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"name": "kfree", "call_sites": 2, "weak": False} in info["imports"]


def test_verifier_catches_stray_change(built: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A patcher bug (here: one extra byte changed in .text) fails verification: no output."""
    import kedr_build.ko.patch as patch_mod

    real = patch_mod.patch_elf

    def buggy(*args: object, **kw: object) -> patch_mod.PatchedImage:
        img = real(*args, **kw)  # type: ignore[arg-type]
        elf = bytearray(img.elf)
        elf[0x40] ^= 0xFF
        return patch_mod.PatchedImage(bytes(elf), *[getattr(img, f) for f in (
            "renames", "skipped", "warnings", "expectation", "strtab_grown", "modinfo_grown",
            "depends_before", "depends_after")])

    monkeypatch.setattr(patch_mod, "patch_elf", buggy)
    with pytest.raises(KedrError, match="failed verification"):
        patch_module(built / "hello_mod.ko", tmp_path / "o.ko", build_plan(["kfree"]),
                     built / "Module.symvers")
    assert not (tmp_path / "o.ko").exists() and not (tmp_path / "o.ko.json").exists()


def test_verifier_catches_tail_merge_damage(built: Path) -> None:
    """Renaming __kmalloc in place would also rename "kmalloc": the verifier refuses it."""
    from kedr_build.ko.elf import ElfRel
    from kedr_build.ko.verify import Expectation
    from kedr_build.ko.verify import verify_patch

    data = (built / "hello_mod.ko").read_bytes()
    elf = ElfRel(data, "hello")
    idx = next(i for i, n in elf.undefined() if n == "__kmalloc")
    off = elf.strtab.offset + elf.symbols[idx][0]
    bad = bytearray(data)
    bad[off + 2] = ord("K")
    with pytest.raises(KedrError, match="shares the string table bytes"):
        verify_patch(elf, bytes(bad), Expectation({idx: "__Kmalloc"}, {}, {}, None))
