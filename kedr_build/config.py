"""The command-line variables of ``scons`` (MODULE=, KDIR=, ...) as one typed config.

:data:`VARIABLES` is the one list of them: the SConstruct declares each as an
SCons ``Variables`` entry (so ``scons -h`` shows its help and default) and
:func:`from_arguments` turns the values into a :class:`BuildConfig`. Parsed
once at SConstruct time and cheap (no ELF or template libraries), because a
null build pays for everything done here. ``offline=True`` (``scons -c``) never
downloads a kernel and never runs make: it describes the same outputs from
what earlier builds left (the pinned kernel's paths, the cached module list).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kedr_build.errors import KedrError
from kedr_build.kernel import descriptions, kbuild, provision
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.kernel.dkms import DkmsPackage, is_dkms_tree, read_conf
from kedr_build.ko.names import is_c_identifier, is_module_file, module_name
from kedr_build.ko.plan import Naming
from kedr_build.targets.spec import (LabgridTarget, QemuTarget, SshTarget, Target, check_consent,
                                     parse_target)

if TYPE_CHECKING:
    from kedr_build.devices.catalog import Device
    from kedr_build.faults.scenario import PointScenario


@dataclass(frozen=True)
class Variable:
    help: str
    default: str = ""


VARIABLES: dict[str, Variable] = {
    "MODULE": Variable("driver directory to build (a Kbuild file or an obj-m Makefile; "
                       "a directory with a dkms.conf is built as DKMS builds it)"),
    "DKMS": Variable("a DKMS source directory (with dkms.conf, e.g. /usr/src/foo-1.0) to "
                     "build as `dkms build` does"),
    "KO": Variable("a prebuilt module to patch instead of building one: a .ko/.ko.xz/"
                   ".ko.zst/.ko.gz path, or the name of a module of the pinned kernel "
                   "(e.g. KO=loop)"),
    "MODPROBE": Variable("comma-separated in-tree modules shipped to the guest for the "
                         "WORKLOAD or the kernel to load (e.g. brd,nls_cp437)"),
    "KDIR": Variable("kernel build tree to build against (default: the pinned kernel)"),
    "KERNEL": Variable(f"pinned kernel to use (known: {', '.join(descriptions.available())})",
                       descriptions.DEFAULT_KERNEL),
    "DEVICES": Variable("comma-separated emulated devices attached to the VM (e.g. "
                        "e1000,nvme; catalog: kedr_build/devices/catalog.toml)"),
    "WORKLOAD": Variable("shell script run in the guest while the modules are loaded "
                         "(run target)"),
    "BUILD_DIR": Variable("where outputs go (default: build/ beside SConstruct)"),
    "FUNCTIONS": Variable("comma-separated kernel functions to intercept (default: every "
                          "imported function the catalog knows)"),
    "NAMING": Variable("replacement names: same-length (kfree -> Kfree) or prefix:P",
                       "same-length"),
    "MAKE_ARGS": Variable("VAR=value words for make's command line, as the driver's own "
                          "build needs them (e.g. MAKE_ARGS='HDAPS=1 CONFIG_FOO=y')"),
    "V": Variable("1 shows kbuild's commands and the VM console", "0"),
    "VM_TIMEOUT": Variable("seconds before a VM run counts as hung", "300"),
    "VM_CPUS": Variable("guest CPUs (default: the kernel description's, 2)"),
    "FAULTS": Variable("fault scenarios for the run: 'point: scenario; ...', e.g. "
                       "FAULTS='kmalloc: nth=2 pid=1; kstrdup: init' (format: "
                       "kedr_build/faults/scenario.py)"),
    "SUPPRESS": Variable("suppressions file: leaks, bad frees, rule violations to ignore "
                         "(format: kedr_build/checks/suppress.py)"),
    "PACK": Variable("test pack the check target runs: a built-in pack's name (basic) or "
                     "a pack file (format: kedr_build/packs/pack.py)", "basic"),
    "TEST": Variable("comma-separated tests of the PACK to run (default: all)"),
    "DRIVERS": Variable("several drivers checked as one session: comma-separated driver "
                        "directories or .ko files, or @file listing one a line "
                        "(instead of MODULE=/KO=)"),
    "FUZZ_SEED": Variable("the seed of the pack's fuzz tests (check target): replays a "
                          "fuzz failure, e.g. FUZZ_SEED=1234"),
    "JOBS": Variable("VMs the check target runs at once (pytest-xdist workers); auto: one "
                     "per CPU, at most one per driver-test group (1 on a real machine)",
                     "auto"),
    "SHARD": Variable("k/N: the check target runs only the k-th of N shards of the "
                      "session (python -m kedr_build.packs.merge joins their reports)"),
    "RETRIES": Variable("the check target runs a pack test whose run failed a check again, "
                        "up to N times (0 to 10); a check that then passes is reported "
                        "flaky, never passed", "0"),
    "TARGET": Variable("where run and check happen: qemu (the pinned kernel in QEMU), "
                       "ssh://[user@]host[:port] (a machine running the kernel the build is "
                       "for), labgrid:ENV.yaml (the target main of a labgrid environment), "
                       "labgrid:ENV.yaml:PLACES (coordinator places: a name, a comma list, "
                       "patterns such as lab-*; check runs one worker per place)", "qemu"),
    "SSH_CONFIG": Variable("ssh client configuration file for TARGET=ssh:// (ssh -F; "
                           "default: ssh's own, ~/.ssh/config)"),
    "I_KNOW_THIS_MAY_CRASH": Variable("1: let FAULTS= or sweep fail kernel calls on a real "
                                      "machine (TARGET=ssh://, labgrid:), which may crash it"),
    "KCIDB_ORIGIN": Variable("the KCIDB origin (CI system name) of report/kcidb.json's "
                             "objects: lower-case letters, digits, '_'", "kedr"),
}


@dataclass(frozen=True)
class BuildConfig:
    driver: Path | None          # MODULE=: built with kbuild (or DKMS)
    prebuilt: Path | None        # KO=: patched as it is
    name: str
    kernel: ProvisionedKernel
    specs: tuple[kbuild.ModuleSpec, ...]
    build_dir: str
    outdir: str
    workload: Path | None
    verbose: bool
    vm_timeout: float
    functions: tuple[str, ...] = ()
    vm_cpus: int | None = None
    suppress: Path | None = None
    naming: Naming = Naming("same-length")
    modprobe: tuple[str, ...] = ()
    devices: tuple[Device, ...] = ()   # DEVICES=, looked up in the device catalog
    make_args: tuple[str, ...] = ()
    dkms: DkmsPackage | None = None    # the driver is a DKMS package
    # FAULTS=, parsed (kedr_build/faults/scenario.py); its points are checked against the
    # replacement module once it is generated (scenario.resolve, the run target)
    faults: tuple[PointScenario, ...] = ()
    pack: Path | None = None           # PACK=: the pack file (checked when read)
    tests: tuple[str, ...] = ()        # TEST=
    shard: tuple[int, int] | None = None   # SHARD=k/N
    jobs: int = 1                      # JOBS=N; 0: auto (packs/session.py AUTO_JOBS)
    retries: int = 0                   # RETRIES=N
    kcidb_origin: str = "kedr"         # KCIDB_ORIGIN=
    arguments: tuple[tuple[str, str], ...] = ()   # the command line's VAR=value, as given
    launch_dir: str = ""               # where scons was started: relative values are from here
    top: str = ""                      # the checkout (SConstruct's directory)
    target: Target = QemuTarget()      # TARGET=: where run happens
    ssh_config: Path | None = None     # SSH_CONFIG=: ssh -F for TARGET=ssh://

    @property
    def dkms_tree(self) -> Path:
        """Where a DKMS package is copied and built ($dkms_tree of its dkms.conf)."""
        return Path(self.outdir, "dkms")

    @property
    def replacement_module(self) -> str:
        """kedr_repl_<name>: also the trace system and debugfs directory name."""
        from kedr_build.intercept.naming import module_name_for

        return module_name_for(self.name)

    @property
    def kernel_id(self) -> str:
        """Changes when the kernel behind KDIR changes, even at the same path."""
        try:
            mtime = self.kernel.symvers.stat().st_mtime_ns
        except OSError:
            mtime = 0
        return f"{self.kernel.release}:{mtime}"


def from_arguments(args: Mapping[str, str], top: str, launch_dir: str,
                   offline: bool = False) -> BuildConfig:
    unknown = sorted(set(args) - set(VARIABLES))
    if unknown:
        raise KedrError(f"unknown variable {unknown[0]}=; known: {', '.join(VARIABLES)}")
    if args.get("DRIVERS"):
        raise KedrError("DRIVERS= is read by batch_from_arguments")

    def get(name: str) -> str:
        return args.get(name, VARIABLES[name].default)

    def path(value: str) -> Path:
        return Path(os.path.join(launch_dir, os.path.expanduser(value)))

    # Values checked on their own, before anything is discovered or cached in BUILD_DIR:
    # a bad one leaves nothing behind.
    faults = _faults(get("FAULTS"))
    target = parse_target(get("TARGET"), launch_dir)
    ssh_config = _ssh_config(path, get("SSH_CONFIG"), target)
    if isinstance(target, LabgridTarget):
        # Its target and drivers made (no machine touched): a bad environment file is
        # one line before anything is built.
        from kedr_build.targets.labgrid import check_environment

        check_environment(target)
    retries = _retries(get("RETRIES"))
    kcidb_origin = _kcidb_origin(get("KCIDB_ORIGIN"))
    if get("FUZZ_SEED"):
        from kedr_build.packs.fundkind import fuzz_seed

        fuzz_seed(get("FUZZ_SEED"))
    devices = _devices(get("DEVICES"))
    if devices and target.real:
        raise KedrError(f"DEVICES={get('DEVICES')}: emulated devices are QEMU's; TARGET={target} "
                        "uses the machine's own hardware (drop DEVICES=)")
    pack = _pack(get("PACK"), launch_dir) if "PACK" in args else None
    module, ko = get("MODULE") or get("DKMS"), get("KO")
    if get("MODULE") and get("DKMS"):
        raise KedrError("MODULE= and DKMS= exclude each other (a MODULE= directory with a "
                        "dkms.conf is built as DKMS does)")
    if module and ko:
        raise KedrError("MODULE= and KO= exclude each other: build a driver, or patch a .ko")
    if not module and not ko:
        raise KedrError("MODULE=<driver directory> is required, "
                        "e.g. scons MODULE=examples/chardev (or KO=<prebuilt .ko>)")
    driver: Path | None = None
    prebuilt: Path | None = None
    if module:
        driver = path(module).resolve()
        var = "MODULE" if get("MODULE") else "DKMS"
        if not driver.exists():
            raise KedrError(f"{var}={module}: no such directory")
        if not driver.is_dir():
            raise KedrError(f"{var}={module}: not a directory")
        if var == "DKMS" and not is_dkms_tree(driver):
            raise KedrError(f"DKMS={module}: no dkms.conf there")
        _make_safe(f"{var}={module}", driver)
    # TEST= is read, like PACK= and FAULTS= above, before anything is provisioned or built.
    tests = _names(get("TEST"))
    if tests:
        _check_tests(tests, pack, get("PACK"))
    if get("KDIR"):
        kernel = descriptions.from_kdir(path(get("KDIR")))
    elif get("KERNEL") not in descriptions.available():
        raise KedrError(f"KERNEL={get('KERNEL')}: unknown kernel; known: "
                        f"{', '.join(descriptions.available())} (kedr_build/kernel/pinned/*.toml)")
    elif offline:
        kernel = provision.layout(descriptions.describe(get("KERNEL")))
    else:
        kernel = provision.ensure(get("KERNEL"))
    if devices and not offline:
        from kedr_build.devices import kernelcheck
        kernelcheck.check(devices, kernel, f"DEVICES={get('DEVICES')}")
    if ko:
        prebuilt = _prebuilt(ko, path(ko), kernel, offline)
    build_dir = str(path(get("BUILD_DIR")).resolve()) if get("BUILD_DIR") \
        else os.path.join(top, "build")
    build_dir = kernel_build_dir(build_dir, kernel)
    _make_safe(f"BUILD_DIR={get('BUILD_DIR')}" if get("BUILD_DIR") else "build directory",
               Path(build_dir))
    make_args = _make_args(get("MAKE_ARGS"))
    package: DkmsPackage | None = None
    if driver is not None and is_dkms_tree(driver):
        name = driver.name
        package = read_conf(driver, kernel.release, kernel.kdir,
                            Path(build_dir, name, "dkms"))
        specs = tuple(kbuild.ModuleSpec(name=m.name.replace("-", "_"), relpath=f"{m.name}.ko")
                      for m in package.modules)
    elif driver is not None:
        name = driver.name
        cache = Path(build_dir, name, ".kedr-modules.json")
        specs = tuple(kbuild.cached_specs(cache) if offline
                      else kbuild.discover(driver, kernel.kdir, cache=cache,
                                           make_args=make_args))
    else:
        assert prebuilt is not None
        name = module_name(prebuilt)
        specs = ()
    workload = path(get("WORKLOAD")).resolve() if get("WORKLOAD") else None
    if workload is not None and workload.is_dir():
        raise KedrError(f"WORKLOAD={get('WORKLOAD')}: is a directory; give the script the "
                        "guest runs (a file)")
    if workload is not None and not workload.is_file():
        raise KedrError(f"WORKLOAD={get('WORKLOAD')}: no such file")
    return BuildConfig(driver=driver, prebuilt=prebuilt, name=name, kernel=kernel,
                       specs=specs, build_dir=build_dir,
                       outdir=os.path.join(build_dir, name), workload=workload,
                       verbose=get("V") not in ("", "0"),
                       vm_timeout=_seconds(get("VM_TIMEOUT")),
                       functions=_names(get("FUNCTIONS")),
                       naming=_naming(get("NAMING")),
                       modprobe=_names(get("MODPROBE")), make_args=make_args, dkms=package,
                       devices=devices,
                       vm_cpus=_cpus(get("VM_CPUS")),
                       suppress=_suppressions(path, get("SUPPRESS")),
                       faults=faults, pack=pack, tests=tests,
                       shard=_shard(get("SHARD")),
                       jobs=_jobs(get("JOBS")), retries=retries, kcidb_origin=kcidb_origin,
                       arguments=tuple(sorted(args.items())), launch_dir=launch_dir, top=top,
                       target=target, ssh_config=ssh_config)


def _devices(text: str) -> tuple[Device, ...]:
    if not text.strip():
        return ()
    from kedr_build.devices import catalog

    return catalog.lookup(text)


def kernel_build_dir(root: str, kernel: ProvisionedKernel) -> str:
    """Where a kernel's outputs go under the build directory ``root``: ``root`` itself for
    the default pinned kernel and for KDIR= (a changed tree rebuilds in place),
    ``root/<kernel>`` for another pinned kernel (build/debian-6.12/<name>/), so one
    driver's outputs for each pinned kernel stay side by side and KERNEL= switches
    between them without rebuilding or refusing."""
    desc = kernel.description
    if desc is None or desc.name == descriptions.DEFAULT_KERNEL:
        return root
    return os.path.join(root, desc.name)


def batch_from_arguments(args: Mapping[str, str], top: str, launch_dir: str,
                         offline: bool = False) -> list[BuildConfig]:
    """One config per driver of DRIVERS= (each as if given as MODULE= or KO= with the
    other variables), or the one config of MODULE=/KO=/DKMS=."""
    if not args.get("DRIVERS"):
        return [from_arguments(args, top, launch_dir, offline)]
    given = [v for v in ("MODULE", "KO", "DKMS") if args.get(v)]
    if given:
        raise KedrError(f"DRIVERS= and {given[0]}= exclude each other: list every driver "
                        "in DRIVERS=")
    rest = {k: v for k, v in args.items() if k != "DRIVERS"}
    configs: list[BuildConfig] = []
    for entry in _driver_entries(args["DRIVERS"], launch_dir):
        var = "KO" if is_module_file(Path(entry)) else "MODULE"
        try:
            cfg = from_arguments({**rest, var: entry}, top, launch_dir, offline)
        except KedrError as e:
            raise KedrError(f"DRIVERS: {e}") from None
        clash = next((c for c in configs if c.outdir == cfg.outdir), None)
        if clash is not None:
            raise KedrError(f"DRIVERS: {entry} and {clash.driver or clash.prebuilt} both "
                            f"write {cfg.outdir}: two drivers of one name")
        configs.append(cfg)
    return configs


def _driver_entries(text: str, launch_dir: str) -> list[str]:
    if text.startswith("@"):
        listing = Path(launch_dir, os.path.expanduser(text[1:]))
        try:
            lines = listing.read_text().splitlines()
        except OSError as e:
            raise KedrError(f"DRIVERS={text}: cannot read {listing} ({e.strerror})") from None
        # Relative entries are relative to the listing, wherever scons is run from.
        entries = [os.path.join(listing.parent, e) if e and not os.path.isabs(e) else e
                   for e in (ln.split("#", 1)[0].strip() for ln in lines)]
    else:
        entries = [e.strip() for e in text.split(",")]
    entries = [e for e in entries if e]
    if not entries:
        raise KedrError(f"DRIVERS={text}: lists no driver")
    return entries


def _pack(text: str, launch_dir: str) -> Path:
    """PACK=: read and checked now, so a malformed pack stops before anything builds."""
    from kedr_build.packs.pack import load

    return load(text, Path(launch_dir)).path


def _check_tests(tests: tuple[str, ...], pack: Path | None, spec: str) -> None:
    """TEST=: every name a test of the pack, checked before anything builds."""
    from kedr_build.packs.pack import load

    loaded = load(str(pack) if pack is not None else spec)
    unknown = [t for t in tests if t not in {k.name for k in loaded.tests}]
    if unknown:
        raise KedrError(f"TEST={','.join(unknown)}: not a test of pack {loaded.name!r} (its "
                        f"tests: {', '.join(k.name for k in loaded.tests)})")


def _jobs(text: str) -> int:
    """JOBS=N, or 0 for auto (kedr_build/packs/check.py workers() decides)."""
    if not text or text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise KedrError(f"JOBS={text}: expected a number of VMs at once, 1 or more, or auto")
    return int(text)


def _retries(text: str) -> int:
    from kedr_build.packs.retry import parse_retries

    return parse_retries(text)


def _kcidb_origin(text: str) -> str:
    from kedr_build.packs.kcidb import check_origin

    return check_origin(text)


def _shard(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    from kedr_build.packs.session import parse_shard

    return parse_shard(text)


_MAKE_UNSAFE = re.compile(r"[\s:#$%;\\\"']")


def _make_safe(what: str, p: Path) -> None:
    """kbuild (make) splits M= and its own paths at spaces and treats ':', '#', '$'
    specially: such a path cannot be built in, so it is refused up front."""
    bad = _MAKE_UNSAFE.search(str(p))
    if bad:
        where = what if what.endswith(f"={p}") else f"{what}: {p}"
        raise KedrError(f"{where}: kbuild cannot build in a path containing "
                        f"{bad.group()!r} (make splits or expands it); use a path without it")


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def _make_args(text: str) -> tuple[str, ...]:
    """MAKE_ARGS: shell words, each VAR=value (a target or an option would change what
    kbuild builds behind our back)."""
    import shlex

    try:
        words = shlex.split(text)
    except ValueError as e:
        raise KedrError(f"MAKE_ARGS={text}: {e}") from None
    for word in words:
        var, sep, _ = word.partition("=")
        if not sep or not is_c_identifier(var):
            raise KedrError(f"MAKE_ARGS={text}: {word!r} is not VAR=value")
    return tuple(words)


def _suppressions(path: Callable[[str], Path], text: str) -> Path | None:
    """The suppressions file, checked now: a bad line stops the build before the VM runs."""
    if not text:
        return None
    from kedr_build.checks import suppress
    file = path(text).resolve()
    suppress.load(file)
    return file


def _faults(text: str) -> tuple[PointScenario, ...]:
    """FAULTS: parsed now, once; the points exist once the replacement is generated."""
    if not text.strip():
        return ()
    from kedr_build.faults.scenario import parse_faults
    return parse_faults(text)


# The targets FAULTS= applies to: sweep and check set their own scenarios (one site, a
# seeded campaign) and would silently ignore it.
FAULTS_TARGETS = ("run",)


# What each TARGET= kind can do so far (issue 21): the QEMU guest everything, a machine
# over SSH or through labgrid run, sweep, check (packs of the kinds
# packs.kinds.ON_MACHINE: checkjob refuses the others) and attach.
MACHINE_TARGETS = ("run", "sweep", "check", "attach")
VM_TARGETS = ("run", "sweep", "check", "attach")


def check_targets(args: Mapping[str, str], targets: Sequence[str],
                  launch_dir: str = ".") -> None:
    """Refuse a variable given to a target that would ignore it (FAULTS= to sweep, check),
    and a real machine (TARGET=) asked for what it cannot do or may crash of without
    I_KNOW_THIS_MAY_CRASH=1, before anything is discovered or written."""
    ignored = [t for t in targets if t in ("sweep", "check")]
    if ignored and args.get("FAULTS", "").strip():
        from kedr_build.faults.scenario import FaultsError
        raise FaultsError(f"FAULTS= applies to {', '.join(FAULTS_TARGETS)} only: {ignored[0]} "
                          "fails the driver's fault sites itself (drop FAULTS=, or use run)")
    target = parse_target(args.get("TARGET", ""), launch_dir)
    if not target.real:
        return
    consent = args.get("I_KNOW_THIS_MAY_CRASH", "")
    if "sweep" in targets:
        check_consent(target, "sweep", consent)
    if "run" in targets and args.get("FAULTS", "").strip():
        check_consent(target, "FAULTS=", consent)
    if "check" in targets:
        _machine_pack(args, target, consent, launch_dir)
    wanted = [t for t in targets if t in VM_TARGETS and t not in MACHINE_TARGETS]
    if wanted:
        raise KedrError(f"TARGET={target}: the {wanted[0]} target runs in QEMU only so far "
                        f"({', '.join(MACHINE_TARGETS)} works on this target)")


def _machine_pack(args: Mapping[str, str], target: Target, consent: str,
                  launch_dir: str) -> None:
    """check on a real machine: a pack test that needs QEMU's emulated devices is
    refused, one that may crash the machine asks for I_KNOW_THIS_MAY_CRASH=1 (before
    anything is built; a pack that does not load is the config's own error later)."""
    from kedr_build.packs import kinds
    from kedr_build.packs.pack import load

    try:
        pack = load(args.get("PACK", "") or "basic", Path(launch_dir))
    except KedrError:
        return
    wanted = _names(args.get("TEST", ""))
    tests = [t for t in pack.tests if not wanted or t.name in wanted]
    for t in tests:
        if t.kind in kinds.NEEDS_DEVICES or t.devices == "required":
            raise KedrError(f"TARGET={target}: pack {pack.name} test {t.name} needs emulated "
                            "devices (DEVICES=), which exist in QEMU only: drop the test "
                            "(TEST=) or use TARGET=qemu")
    for t in tests:
        if t.kind in kinds.MAY_CRASH:
            check_consent(target, f"pack {pack.name} test {t.name} ({t.kind})", consent,
                          kinds.MAY_CRASH[t.kind])


def _ssh_config(path: Callable[[str], Path], text: str, target: Target) -> Path | None:
    if not text:
        return None
    if not isinstance(target, SshTarget):
        raise KedrError(f"SSH_CONFIG={text}: applies to TARGET=ssh:// only")
    file = path(text).resolve()
    if not file.is_file():
        raise KedrError(f"SSH_CONFIG={text}: no such file")
    return file


def _cpus(text: str) -> int | None:
    if not text:
        return None
    from kedr_build.vm.qemu import check_cpus
    try:
        value = int(text)
    except ValueError:
        raise KedrError(f"VM_CPUS={text}: not a number of CPUs") from None
    return check_cpus(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise KedrError(f"VM_TIMEOUT={text}: not a positive, finite number of seconds")
    return value


def _prebuilt(text: str, candidate: Path, kernel: ProvisionedKernel, offline: bool) -> Path:
    """KO=: a module file, or the name of a module of the kernel's own tree."""
    if candidate.is_file():
        if not is_module_file(candidate):
            raise KedrError(f"KO={text}: not a kernel module file (*.ko, *.ko.xz, *.ko.zst, "
                            "*.ko.gz)")
        return candidate.resolve()
    if "/" not in text and kernel.modules_dir is not None and not offline:
        matches = sorted(p for p in kernel.modules_dir.rglob("*.ko*")
                         if module_name(p) == text.replace("-", "_"))
        if matches:
            return matches[0]
        raise KedrError(f"KO={text}: no such file, and no module {text!r} in "
                        f"{kernel.modules_dir}")
    if "/" not in text and offline:
        return Path(f"{text}.ko")      # scons -c: only the output names matter
    raise KedrError(f"KO={text}: no such file")


def _naming(text: str) -> Naming:
    try:
        return Naming.parse(text)
    except KedrError as e:
        raise KedrError(f"NAMING={text}: {e}") from None
