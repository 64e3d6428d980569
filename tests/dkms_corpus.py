"""Debian 12's DKMS packages as a corpus of real out-of-tree driver trees.

:func:`provision` downloads every package listed in ``tests/data/dkms-packages.txt``
(``apt-get download``) into the kernel cache, unpacks each into its own root
(``<cache>/dkms/pkgs/<package>/usr/src/<name>-<version>/``) and installs what a
DKMS user's apt would: ``dkms`` itself and each package's other dependencies
(gawk, libelf-dev, libxtables-dev, ...). Nothing is added to the host's
/usr/src or /var/lib/dkms: :func:`dkms_build` runs Debian's own ``dkms build``
with ``--sourcetree``/``--dkmstree`` pointing into scratch directories, which is
the oracle kedr-build's DKMS mode is compared with.

The oracle's outcome depends only on the package (its .deb, name and version),
the kernel release and the dkms version. Debian's outcomes are recorded under that
key in ``tests/data/dkms-oracle.json`` (real ``dkms build`` runs, recorded with
``./kedr-env python tests/dkms_corpus.py record``), so a fresh machine compares
kedr-build's build against them instead of building every package twice (openafs
alone takes 4.5 min a side; the 30 packages took 12 min of the CI run).
``tests/test_dkms_corpus.py`` rebuilds a SAMPLE of them live each run and checks the
record against Debian's dkms. A key the record lacks (a newer .deb, kernel or dkms)
is built live and kept in the cache; ``KEDR_DKMS_ORACLE=fresh`` builds every one
live.

    ./kedr-env python tests/dkms_corpus.py record    # re-record every package
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kedr_build.filelock import locked
from kedr_build.kernel.descriptions import ProvisionedKernel, cache_dir
from kedr_build.kernel.dkms import with_lib_modules

LIST = Path(__file__).resolve().parent / "data" / "dkms-packages.txt"
ORACLE = Path(__file__).resolve().parent / "data" / "dkms-oracle.json"
# Rebuilt live by every run and compared with the record (test_dkms_corpus.py): the
# quickest package dkms builds and the quickest one it refuses.
SAMPLE = ("vpoll-dkms", "librem-ec-acpi-dkms")
LOG_TAIL = 2000      # of a recorded log: the end, where dkms says why it failed


def packages() -> list[str]:
    return [ln.strip() for ln in LIST.read_text().splitlines() if ln.strip()]


@dataclass(frozen=True)
class Package:
    deb: str             # Debian package name, e.g. gost-crypto-dkms
    source: Path         # .../usr/src/<name>-<version>, holding dkms.conf
    depends: tuple[str, ...]
    debfile: str = ""    # the .deb it came from: <package>_<version>_<arch>.deb

    @property
    def source_tree(self) -> Path:
        return self.source.parent


@dataclass(frozen=True)
class Outcome:
    ok: bool
    modules: tuple[str, ...]     # .ko file names built
    seconds: float
    log: str


def _root() -> Path:
    return cache_dir() / "dkms"


def provision() -> dict[str, Package]:
    """Every package of the list, downloaded and unpacked once; the host tools installed
    (one process at a time: apt and the unpacking are not for two xdist workers at once)."""
    with locked(_root() / ".lock"):
        return _provision()


def _provision() -> dict[str, Package]:
    root = _root()
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    wanted = packages()
    missing = [p for p in wanted if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True,
                       capture_output=True)
    out: dict[str, Package] = {}
    deps: set[str] = {"dkms"}
    for name in wanted:
        (deb,) = debs.glob(f"{name}_*.deb")
        dest = root / "pkgs" / name
        if not dest.is_dir():
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            tmp.rename(dest)
        (conf,) = (dest / "usr" / "src").glob("*/dkms.conf")
        field = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], check=True,
                               capture_output=True, text=True).stdout
        depends = tuple(re.split(r"[\s(:]", alt.strip())[0] for alt in
                        (d.split("|")[0] for d in field.split(",")) if alt.strip())
        deps.update(depends)
        out[name] = Package(name, conf.parent, depends, deb.name)
    # The dependencies among the packages themselves (west-chamber needs
    # xtables-addons-dkms) are in the corpus, not installed on the host.
    _install(sorted(deps - set(wanted)))
    return out


def _install(debian_packages: list[str]) -> None:
    absent = [p for p in debian_packages if subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", p], capture_output=True,
        text=True).stdout != "install ok installed"]
    if not absent:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"the DKMS corpus needs Debian packages: {' '.join(absent)} "
                           "(run as root, or apt-get install them)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *absent],
                   check=True, capture_output=True, env=env)


def dkms_version() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dkms"],
                          capture_output=True, text=True, check=True).stdout


def oracle_key(pkg: Package, kernel: ProvisionedKernel, dkms: str) -> str:
    return f"{pkg.debfile}+{kernel.release}+dkms{dkms}"


def recorded() -> dict[str, Outcome]:
    """Debian's dkms outcomes recorded in the repository, by :func:`oracle_key`."""
    if not ORACLE.is_file():
        return {}
    data = json.loads(ORACLE.read_text())
    return {key: _outcome(value) for key, value in data["outcomes"].items()}


def _outcome(data: dict[str, object]) -> Outcome:
    modules = data["modules"]
    seconds = data["seconds"]
    assert isinstance(modules, list) and isinstance(seconds, (int, float))
    return Outcome(bool(data["ok"]), tuple(str(m) for m in modules), float(seconds),
                   str(data["log"]))


def _as_json(outcome: Outcome) -> dict[str, object]:
    return {"ok": outcome.ok, "modules": list(outcome.modules),
            "seconds": round(outcome.seconds, 1), "log": outcome.log[-LOG_TAIL:]}


def dkms_outcome(pkg: Package, kernel: ProvisionedKernel, scratch: Path) -> Outcome:
    """Debian's ``dkms build`` of the package: recorded (in the repository or the
    cache), or built now and kept in the cache."""
    key = oracle_key(pkg, kernel, dkms_version())
    fresh = os.environ.get("KEDR_DKMS_ORACLE") == "fresh"
    if not fresh and key in (repo := recorded()):
        return repo[key]
    record = _root() / "oracle" / f"{key}.json"
    if record.is_file() and not fresh:
        return _outcome(json.loads(record.read_text()))
    outcome = dkms_build(pkg, kernel, scratch)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps(_as_json(outcome)))
    tmp.rename(record)
    return outcome


def record_all(kernels: list[ProvisionedKernel]) -> Path:
    """Build every package with Debian's dkms for each kernel and write the record
    (temp, then renamed); outcomes of other keys already recorded are kept."""
    corpus = provision()
    dkms = dkms_version()
    data = json.loads(ORACLE.read_text()) if ORACLE.is_file() else {"outcomes": {}}
    data["about"] = ("Debian's own `dkms build` outcome per (.deb, kernel release, dkms "
                     "version), recorded by `./kedr-env python tests/dkms_corpus.py record`")
    for kernel in kernels:
        for name, pkg in corpus.items():
            with tempfile.TemporaryDirectory(prefix="kedr-dkms-oracle-") as scratch:
                outcome = dkms_build(pkg, kernel, Path(scratch))
            print(f"{name} on {kernel.release}: {'built' if outcome.ok else 'FAILED'} "
                  f"{' '.join(outcome.modules)} ({outcome.seconds:.0f} s)", flush=True)
            data["outcomes"][oracle_key(pkg, kernel, dkms)] = _as_json(outcome)
    data["outcomes"] = dict(sorted(data["outcomes"].items()))
    tmp = ORACLE.with_name(ORACLE.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.rename(ORACLE)
    return ORACLE


def dkms_build(pkg: Package, kernel: ProvisionedKernel, scratch: Path) -> Outcome:
    """Debian's ``dkms build`` of the package, into a scratch DKMS tree."""
    tree = scratch / "dkmstree"
    tree.mkdir(parents=True)
    conf = pkg.source / "dkms.conf"
    name, version = _name_version(conf)
    common = ["--sourcetree", str(pkg.source_tree), "--dkmstree", str(tree)]
    start = time.monotonic()
    add = subprocess.run(["dkms", "add", "-m", name, "-v", version, *common],
                         capture_output=True, text=True)
    # As on a DKMS user's machine, /lib/modules/<release>/build is the kernel's headers
    # (in a private mount namespace; the host's /lib/modules is untouched).
    proc = subprocess.run(with_lib_modules(kernel.release, kernel.kdir, [
        "dkms", "build", "-m", name, "-v", version, "-k", kernel.release,
        "--kernelsourcedir", str(kernel.kdir), *common]), capture_output=True, text=True)
    seconds = time.monotonic() - start
    built = tree / name / version / kernel.release
    kos = sorted(p.name.split(".ko")[0] + ".ko" for p in built.rglob("module/*.ko*"))
    log = add.stdout + add.stderr + proc.stdout + proc.stderr
    return Outcome(add.returncode == 0 and proc.returncode == 0, tuple(kos), seconds, log)


def _name_version(conf: Path) -> tuple[str, str]:
    out = subprocess.run(["bash", "-c", '. ./dkms.conf >&2; printf "%s\\n%s" '
                          '"$PACKAGE_NAME" "$PACKAGE_VERSION"'],
                         cwd=conf.parent, capture_output=True, text=True,
                         env={**os.environ, "PWD": str(conf.parent)}).stdout.split("\n")
    return out[0], out[1]


if __name__ == "__main__":
    # ./kedr-env python tests/dkms_corpus.py record [KERNEL...]  (default: the default kernel)
    from kedr_build.kernel import provision as kernels
    from kedr_build.kernel.descriptions import DEFAULT_KERNEL

    if len(sys.argv) < 2 or sys.argv[1] != "record":
        sys.exit("usage: tests/dkms_corpus.py record [KERNEL...]")
    names = sys.argv[2:] or [DEFAULT_KERNEL]
    print(record_all([kernels.ensure(n) for n in names]))
