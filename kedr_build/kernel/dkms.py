"""Build a DKMS source package the way ``dkms build`` does (DKMS 3.0, Debian 12).

A DKMS package is a source directory with a ``dkms.conf``: a bash fragment that
sets ``PACKAGE_NAME``, ``PACKAGE_VERSION``, ``MAKE[0]``, ``PRE_BUILD``,
``BUILT_MODULE_NAME[i]``/``BUILT_MODULE_LOCATION[i]`` and ``BUILD_EXCLUSIVE_*``,
often with conditionals and the variables DKMS provides (``$kernelver``,
``$kernel_source_dir``, ``$dkms_tree``, ``$arch``). It is read here as DKMS reads
it: sourced by bash with those variables set (:func:`read_conf`). The build
(:func:`build`) follows DKMS's ``prepare_build``/``actual_build``: a fresh copy
of the source at ``$dkms_tree/<name>/<version>/build``, ``PRE_BUILD`` run there,
then the make command with ``make`` replaced by ``make -jN KERNELRELEASE=<release>``
(DKMS's own substitution; its default command is ``make -C $kernel_source_dir
M=<build dir>``), and every ``<location><name>.ko`` must exist afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.kernel import hosttools
from kedr_build.kernel.kbuild import INSTRUMENT_CFLAGS

CONF = "dkms.conf"

# Sourced by bash: the conf's own errors go to stderr; the result is NUL-separated
# "KEY\0VALUE\0" records on stdout. The BUILD_EXCLUSIVE checks use bash's own regex
# and sort -V, as DKMS does.
_READER = r'''
kernelver=$1 kernel_source_dir=$2 dkms_tree=$3 source_tree=$4 arch=$5
kernel_config=$kernel_source_dir/.config
cd "$6" || exit 3
. "./dkms.conf" >&2 || exit 4
out() { printf '%s\0%s\0' "$1" "$2"; }
out PACKAGE_NAME "$PACKAGE_NAME"; out PACKAGE_VERSION "$PACKAGE_VERSION"
out PRE_BUILD "$PRE_BUILD"
make_command=
[[ ${MAKE_MATCH[0]} ]] || make_command="${MAKE[0]}"
for ((i = 0; i < ${#MAKE[@]}; i++)); do
    [[ ${MAKE[$i]} && ${MAKE_MATCH[$i]} && $kernelver =~ ${MAKE_MATCH[$i]} ]] && make_command="${MAKE[$i]}"
done
out MAKE "$make_command"
n=0
for s in ${#BUILT_MODULE_NAME[@]} ${#BUILT_MODULE_LOCATION[@]} ${#DEST_MODULE_LOCATION[@]}; do
    ((s > n)) && n=$s
done
for ((i = 0; i < n; i++)); do
    name=${BUILT_MODULE_NAME[$i]}
    [[ ! $name ]] && ((${#DEST_MODULE_LOCATION[@]} == 1)) && name=$PACKAGE_NAME
    out "MODULE" "$name"
    out "LOCATION" "${BUILT_MODULE_LOCATION[$i]}"
done
why=
if [[ $BUILD_EXCLUSIVE_KERNEL && ! $kernelver =~ $BUILD_EXCLUSIVE_KERNEL ]]; then
    why="BUILD_EXCLUSIVE_KERNEL=\"$BUILD_EXCLUSIVE_KERNEL\" excludes $kernelver"
elif [[ $BUILD_EXCLUSIVE_KERNEL_MIN ]] && ! printf '%s\n%s\n' "$BUILD_EXCLUSIVE_KERNEL_MIN" "$kernelver" | sort -V -C; then
    why="BUILD_EXCLUSIVE_KERNEL_MIN=$BUILD_EXCLUSIVE_KERNEL_MIN excludes $kernelver"
elif [[ $BUILD_EXCLUSIVE_KERNEL_MAX ]] && ! printf '%s\n%s\n' "$kernelver" "$BUILD_EXCLUSIVE_KERNEL_MAX" | sort -V -C; then
    why="BUILD_EXCLUSIVE_KERNEL_MAX=$BUILD_EXCLUSIVE_KERNEL_MAX excludes $kernelver"
elif [[ $BUILD_EXCLUSIVE_ARCH && ! $arch =~ $BUILD_EXCLUSIVE_ARCH ]]; then
    why="BUILD_EXCLUSIVE_ARCH=\"$BUILD_EXCLUSIVE_ARCH\" excludes $arch"
else
    for c in $BUILD_EXCLUSIVE_CONFIG; do
        want=y; [[ $c == '!'* ]] && { want=n; c=${c#!}; }
        if grep -q "^$c=[ym]" "$kernel_config" 2>/dev/null; then have=y; else have=n; fi
        if [[ $have != "$want" ]]; then
            [[ $want == y ]] && why="BUILD_EXCLUSIVE_CONFIG: $c is not set" || why="BUILD_EXCLUSIVE_CONFIG: $c is set"
            break
        fi
    done
fi
out EXCLUDED "$why"
'''


@dataclass(frozen=True)
class DkmsModule:
    name: str          # BUILT_MODULE_NAME: the .ko's file stem (``gost-test``)
    location: str      # BUILT_MODULE_LOCATION, "" or ending in "/"

    @property
    def relpath(self) -> str:
        return f"{self.location}{self.name}.ko"


@dataclass(frozen=True)
class DkmsPackage:
    source: Path                 # the directory holding dkms.conf
    name: str
    version: str
    make: str                    # MAKE[0] (or the MAKE_MATCH one), expanded; "" = DKMS default
    pre_build: str
    modules: tuple[DkmsModule, ...]
    excluded: str                # why the package is not for this kernel; "" = it is

    @property
    def conf(self) -> Path:
        return self.source / CONF

    def build_dir(self, dkms_tree: Path) -> Path:
        return dkms_tree / self.name / self.version / "build"


def is_dkms_tree(directory: Path) -> bool:
    return (directory / CONF).is_file()


def read_conf(source: Path, release: str, kdir: Path, dkms_tree: Path,
              arch: str = "x86_64") -> DkmsPackage:
    """Source ``source/dkms.conf`` as DKMS does, for one kernel; see the module docstring."""
    conf = source / CONF
    if not conf.is_file():
        raise KedrError(f"{source}: no {CONF} (not a DKMS source directory)")
    bash = hosttools.require(["bash"])["bash"]
    proc = subprocess.run([bash, "-c", _READER, "kedr-dkms", release, str(kdir), str(dkms_tree),
                           str(source.parent), arch, str(source)],
                          capture_output=True, env={**os.environ, "PWD": str(source)})
    errors = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise KedrError(f"{conf}: bash cannot read it: {errors[-1] if errors else proc.returncode}")
    fields = proc.stdout.split(b"\0")[:-1]
    if len(fields) % 2:
        raise KedrError(f"{conf}: unreadable (an odd number of fields)")
    values: dict[str, str] = {}
    modules: list[DkmsModule] = []
    location = ""
    pairs = [(fields[i].decode(), fields[i + 1].decode(errors="replace"))
             for i in range(0, len(fields), 2)]
    for key, value in reversed(pairs):      # LOCATION precedes its MODULE when read backwards
        if key == "LOCATION":
            location = value if not value or value.endswith("/") else value + "/"
        elif key == "MODULE":
            modules.insert(0, DkmsModule(value, location))
        else:
            values[key] = value
    if not values.get("PACKAGE_NAME") or not values.get("PACKAGE_VERSION"):
        raise KedrError(f"{conf}: PACKAGE_NAME and PACKAGE_VERSION are required")
    for i, m in enumerate(modules):
        if not m.name:
            raise KedrError(f"{conf}: no BUILT_MODULE_NAME for record #{i}")
        if m.name.endswith((".o", ".ko")):
            raise KedrError(f"{conf}: BUILT_MODULE_NAME[{i}]={m.name} must not end in .o or .ko")
    if not modules:
        raise KedrError(f"{conf}: builds no module (no BUILT_MODULE_NAME)")
    return DkmsPackage(source=source, name=values["PACKAGE_NAME"],
                       version=values["PACKAGE_VERSION"], make=values.get("MAKE", ""),
                       pre_build=values.get("PRE_BUILD", ""), modules=tuple(modules),
                       excluded=values.get("EXCLUDED", ""))


def make_command(pkg: DkmsPackage, dkms_tree: Path, release: str, kdir: Path,
                 jobs: int) -> str:
    command = pkg.make or f"make -C {kdir} M={pkg.build_dir(dkms_tree)}"
    # DKMS: the_make_command="${make_command/#make/make -j$parallel_jobs KERNELRELEASE=$kernelver}"
    if command.startswith("make"):
        command = f"make -j{jobs} KERNELRELEASE={release}" + command[len("make"):]
    return command


def compiler_env(kdir: Path) -> dict[str, str]:
    """CC as DKMS exports it: the compiler named by the kernel's CONFIG_CC_VERSION_TEXT."""
    try:
        for line in (kdir / ".config").read_text().splitlines():
            if line.startswith('CONFIG_CC_VERSION_TEXT="'):
                cc = line.split('"')[1].split()[0]
                return {"CC": cc} if shutil.which(cc) else {}
    except OSError:
        pass
    return {}


def build_env(kdir: Path, build_dir: Path, dkms_tree: Path) -> dict[str, str]:
    """The environment of PRE_BUILD and MAKE: DKMS's (CC, PWD), with
    INSTRUMENT_CFLAGS appended to KCFLAGS, as for a driver built from source
    (kbuild.py: every call stays a call). Through the environment, not make's command
    line: MAKE[0] is the package's own command (a script, a make in a subdirectory),
    and make passes an environment variable on to every sub-make; a KCFLAGS= word in
    the package's MAKE[0] replaces it (make's command line wins), as it would replace
    a KCFLAGS the user exported for DKMS."""
    kcflags = " ".join([os.environ.get("KCFLAGS", "").strip(), *INSTRUMENT_CFLAGS]).strip()
    return {**os.environ, **compiler_env(kdir), "PWD": str(build_dir), "KCFLAGS": kcflags,
            # A build that asks git for its version must not find the repository the
            # build directory happens to sit in (DKMS builds under /var/lib/dkms).
            "GIT_CEILING_DIRECTORIES": str(dkms_tree)}


# In a private mount namespace: a tmpfs on /lib/modules holding only
# <release>/build -> the kernel tree. The host's /lib/modules is untouched.
_LIB_MODULES_VIEW = ('mount -t tmpfs kedr-build /lib/modules && mkdir -p "/lib/modules/$1" && '
                     'ln -s "$2" "/lib/modules/$1/build" && shift 2 && exec "$@"')


def with_lib_modules(release: str, kdir: Path, command: list[str]) -> list[str]:
    """``command`` run where ``/lib/modules/<release>/build`` is ``kdir``, as on a machine
    with the kernel's headers package installed - what a DKMS user has and what many
    packages assume (``KVER=$kernelver`` -> ``/lib/modules/$(KVER)/build``: dahdi, ddcci,
    digimend, openrazer). Only when it is missing on the host, and only as root (a
    private mount namespace: ``unshare -m``); otherwise ``command`` as it is."""
    if Path(f"/lib/modules/{release}/build").exists() or os.geteuid() != 0:
        return command
    unshare = shutil.which("unshare")
    if unshare is None:
        return command
    # The mount point itself: present on every installed Debian system (each kernel's
    # modules live there), missing only in minimal containers. An empty directory.
    Path("/lib/modules").mkdir(exist_ok=True)
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", _LIB_MODULES_VIEW,
            "sh", release, str(kdir), *command]


def build(pkg: DkmsPackage, dkms_tree: Path, release: str, kdir: Path, outdir: Path,
          jobs: int = 1, verbose: bool = False) -> list[Path]:
    """Build as ``dkms build`` does and install each module into ``outdir`` (all or none);
    returns the installed .ko paths."""
    from kedr_build.kernel.kbuild import install

    if pkg.excluded:
        raise KedrError(f"{pkg.conf}: not for kernel {release}: {pkg.excluded}")
    bash = hosttools.require(["bash", "make", "gcc"])["bash"]
    build_dir = pkg.build_dir(dkms_tree)
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(pkg.source, build_dir, symlinks=True)
    env = build_env(kdir, build_dir, dkms_tree)
    sys.stdout.flush()
    if pkg.pre_build:
        # DKMS: run="$build_dir/$pre_build"; [[ -x ${run%% *} ]] && (cd build; exec $run),
        # else only a warning.
        script = build_dir / pkg.pre_build.split()[0]
        if os.access(script, os.X_OK):
            proc = subprocess.run(with_lib_modules(
                release, kdir, [bash, "-c", f"exec {build_dir}/{pkg.pre_build}"]),
                cwd=build_dir, env=env)
            if proc.returncode != 0:
                raise KedrError(f"{pkg.conf}: PRE_BUILD failed (exit {proc.returncode}); its "
                                "messages are above")
        else:
            print(f"kedr-build: warning: {pkg.conf}: PRE_BUILD {pkg.pre_build.split()[0]} is "
                  "not an executable file of the package; skipped, as DKMS does", flush=True)
    command = make_command(pkg, dkms_tree, release, kdir, jobs)
    if verbose:
        print(command, flush=True)
    proc = subprocess.run(with_lib_modules(release, kdir, [bash, "-c", f"{{ {command}; }}"]),
                          cwd=build_dir, env=env)
    if proc.returncode != 0:
        raise KedrError(f"{pkg.conf}: MAKE failed (exit {proc.returncode}); its messages are "
                        "above")
    missing = [m.relpath for m in pkg.modules if not (build_dir / m.relpath).is_file()]
    if missing:
        raise KedrError(f"{pkg.conf}: the build did not produce {', '.join(missing)} "
                        "(BUILT_MODULE_NAME/BUILT_MODULE_LOCATION); nothing installed")
    outdir.mkdir(parents=True, exist_ok=True)
    return [install(build_dir / m.relpath, outdir / f"{m.name}.ko") for m in pkg.modules]
