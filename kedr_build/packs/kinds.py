"""The registry of test kinds a pack's ``[[test]]`` may name.

A kind declares its parameters (checked when the pack is read, before anything
is built) and the checks it can judge, and names the function that runs it:
``run(driver, test, logdir, env) -> TestRun`` (:mod:`kedr_build.packs.results`),
imported only when a test of that kind runs. One run (one VM boot) judges every
check of its test.

Built in: ``vm`` (load/unload cycles, the workload or N copies of it at once,
leak/rule/kernel checks; :mod:`kedr_build.packs.vmkind`) and ``faults`` (the
systematic fault sweep, then a seeded random campaign; :mod:`kedr_build.packs.faultkind`):
its ``TestRun`` fills ``sweep`` with one row per site, which the reports show.
``fuzz`` and ``reload`` (driver fundamentals: :mod:`kedr_build.packs.fundkind`).
``device`` (a hardware driver with its device attached: probe, rebind, hot-unplug,
suspend; :mod:`kedr_build.packs.devkind`).
``attach`` (hot patching: the plain driver attached to while it runs;
:mod:`kedr_build.packs.attachkind`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kedr_build.errors import KedrError


@dataclass(frozen=True)
class Param:
    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] = ()
    minimum: int | None = None
    maximum: int | None = None  # every count has a bound: 100000 copies is a typo, not a test
    pattern: str = ""           # a str value must match it (re.fullmatch)
    shape: str = ""             # what the pattern means, for the error

    def check(self, value: Any) -> str:
        """Why the value does not fit ("" when it does)."""
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{value!r} is not an integer"
        if self.type is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return f"{value!r} is not a list of strings"
            if self.maximum is not None and len(value) > self.maximum:
                return f"{len(value)} entries: at most {self.maximum}"
            bad = [v for v in value if self.pattern and not re.fullmatch(self.pattern, v)]
            return f"{bad[0]!r} is not {self.shape or 'of the form ' + self.pattern}" if bad \
                else ""
        if not isinstance(value, self.type):
            return f"{value!r} is not a {self.type.__name__}"
        if self.choices and value not in self.choices:
            return f"{value!r} is not one of {', '.join(map(repr, self.choices))}"
        if self.minimum is not None and isinstance(value, int) and value < self.minimum:
            return f"{value!r} is below the minimum {self.minimum}"
        if self.maximum is not None and isinstance(value, int) and value > self.maximum:
            return f"{value!r} is above the maximum {self.maximum}"
        if self.pattern and isinstance(value, str) and not re.fullmatch(self.pattern, value):
            return f"{value!r} is not {self.shape or 'of the form ' + self.pattern}"
        return ""


@dataclass(frozen=True)
class Kind:
    name: str
    checks: tuple[str, ...]
    run: str | Callable[..., Any]          # "module:function", or the function itself
    params: Mapping[str, Param] = field(default_factory=dict)
    help: str = ""
    # Its run is long, many trials in one test (a sweep: one per fault site; a fuzz
    # time budget): started before the other groups when they run in parallel (JOBS=).
    long: bool = False

    def runner(self) -> Callable[..., Any]:
        if callable(self.run):
            return self.run
        module, _, func = self.run.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), func)
        return fn


VM = Kind(
    name="vm",
    checks=("loads", "workload", "kernel", "leaks", "rules"),
    run="kedr_build.packs.vmkind:run",
    params={
        "cycles": Param(int, 1, "times the drivers are loaded and unloaded in one boot",
                        minimum=1, maximum=1000),
        "workload": Param(str, "none", "run the driver's WORKLOAD after the last load",
                          choices=("none", "required")),
        "timeout": Param(int, 0, "seconds before the VM counts as hung (0: VM_TIMEOUT)",
                         minimum=0, maximum=86400),
        # Each copy is a process in a guest of a few CPUs and 10s of MB.
        "copies": Param(int, 1, "copies of the workload run at once (a stress)", minimum=1,
                        maximum=64),
    },
    help="boot the kernel, load/unload the patched drivers, run the workload, judge")

FAULTS = Kind(
    name="faults",
    checks=("sweep", "campaign"),
    run="kedr_build.packs.faultkind:run",
    params={
        "runs": Param(int, 10, "random campaign runs after the sweep (0: none)", minimum=0,
                      maximum=10000),
        # kedr_faults.c takes at most 18 digits after the point (scenario.MAX_PROB_DIGITS).
        "probability": Param(str, "0.1", "each call of a fault point fails with it",
                             pattern=r"0(\.[0-9]{1,18})?|1(\.0{1,18})?",
                             shape="a probability written as a decimal, 0 to 1, at most 18 "
                                   "digits after the point (\"0.1\")"),
        # The kernel's seed is a u64 and run i uses seed + i.
        "seed": Param(int, 1, "the campaign's first seed (run i uses seed + i)", minimum=0,
                      maximum=2**64 - 1 - 10000),
        "timeout": Param(int, 0, "seconds before a site or run counts as hung "
                         "(0: VM_TIMEOUT, at most 60)", minimum=0, maximum=86400),
    },
    help="fail each fault site of the driver once (init, workload, exit), then a seeded "
         "random campaign; judge what each left behind",
    long=True)

# The ioctls kfuzz -S tries on each device node before fuzzing (replacements/guest/kfuzz.c
# takes at most 2^20); the commands answered are listed with the interfaces and favoured.
SWEEP_PARAM = Param(int, 114688, "ioctls tried on each device node before fuzzing, to find the "
                    "commands it answers (0: no sweep)", minimum=0, maximum=1 << 20)

FUZZ = Kind(
    name="fuzz",
    checks=("fuzz", "loads", "kernel", "leaks", "rules"),
    run="kedr_build.packs.fundkind:run_fuzz",
    params={
        "count": Param(int, 20000, "operations of all threads together (the budget)",
                       minimum=1, maximum=10**8),
        "seconds": Param(int, 0, "time budget in seconds (0: none; the first budget reached "
                         "ends the run)", minimum=0, maximum=3600),
        "threads": Param(int, 2, "fuzzing threads at once", minimum=1, maximum=16),
        "seed": Param(int, 1, "the fuzzer's seed (FUZZ_SEED= replaces it)", minimum=0,
                      maximum=2**64 - 1),
        "workload": Param(str, "no", "also run the driver's WORKLOAD after the fuzzer",
                          choices=("no", "yes")),
        "sweep": SWEEP_PARAM,
        "reduce": Param(int, 200, "attempts at reducing a failure's recorded operations to "
                        "the shortest sequence that still fails (0: not reduced)", minimum=0,
                        maximum=10000),
        "reduce_seconds": Param(int, 600, "seconds the reduction of a hang or a taint may "
                                "take, its fresh boots included", minimum=1, maximum=86400),
        "race_replays": Param(int, 5, "a failure the operations replayed in one thread do "
                              "not show (a race): fresh loads each candidate is replayed "
                              "in concurrently, its threads at once (0: not reduced)",
                              minimum=0, maximum=50),
        "race_seconds": Param(int, 600, "seconds the reduction of a race may search, its "
                              "fresh boots included (its verification comes after)",
                              minimum=1, maximum=86400),
        "hang": Param(int, 30, "seconds with no fuzz operation (or sweep ioctl) started "
                      "that make a hang (0: only the VM timeout)", minimum=0, maximum=3600),
        "timeout": Param(int, 0, "seconds before the VM counts as hung (0: VM_TIMEOUT)",
                         minimum=0, maximum=86400),
    },
    help="find the driver's interfaces from the kernel, then fuzz its device nodes and "
         "network interfaces from a seed; judge what the fuzzing left behind",
    long=True)

RELOAD = Kind(
    name="reload",
    checks=("loads", "workload", "growth", "kernel", "leaks", "rules"),
    run="kedr_build.packs.fundkind:run_reload",
    params={
        "cycles": Param(int, 5, "load -> workload -> unload cycles in one boot", minimum=2,
                        maximum=1000),
        "workload": Param(str, "required", "the workload in each cycle",
                          choices=("required",)),
        # insmod's arguments: no shell metacharacter can reach the guest script.
        "module_params": Param(list, [], "module parameters for each cycle, cycled through "
                               "(cycle i uses entry (i-1) mod N), given to each driver under "
                               "test: [\"\", \"debug=1 size=4096\"]", maximum=100,
                               pattern=r"([A-Za-z_][A-Za-z0-9_.]*=[A-Za-z0-9_.,:/+-]*"
                                       r"( [A-Za-z_][A-Za-z0-9_.]*=[A-Za-z0-9_.,:/+-]*)*)?",
                               shape="NAME=VALUE pairs separated by single spaces (values "
                                     "of letters, digits and _.,:/+-)"),
        "timeout": Param(int, 0, "seconds before the VM counts as hung (0: VM_TIMEOUT)",
                         minimum=0, maximum=86400),
    },
    help="load, run the workload and unload the driver N times in one boot; what is still "
         "allocated after each unload must not grow")

CHAOS = Kind(
    name="chaos",
    checks=("chaos", "loads", "kernel", "leaks", "rules"),
    run="kedr_build.packs.fundkind:run_chaos",
    params={
        "seconds": Param(int, 10, "how long the fuzzer, the workload and the reloads race",
                         minimum=1, maximum=3600),
        "threads": Param(int, 2, "fuzzing threads at once", minimum=1, maximum=16),
        "seed": Param(int, 1, "the fuzzer's seed (FUZZ_SEED= replaces it)", minimum=0,
                      maximum=2**64 - 1),
        "sweep": SWEEP_PARAM,
        "timeout": Param(int, 0, "seconds before the VM counts as hung (0: VM_TIMEOUT)",
                         minimum=0, maximum=86400),
    },
    help="fuzz the driver's character devices while its workload runs over and over and it "
         "is unloaded and loaded again (with DEVICES=: its devices hot-unplugged and "
         "plugged in again and the guest suspended and resumed too); an unload refused "
         "while in use is clean, an oops is not",
    long=True)

DEVICE = Kind(
    name="device",
    checks=("device", "loads", "kernel", "leaks", "rules"),
    run="kedr_build.packs.devkind:run",
    params={
        "step": Param(str, "probe", "what is done to the device between the load and the "
                      "unload", choices=("probe", "rebind", "hotplug", "suspend")),
        "cycles": Param(int, 3, "unbind/bind or unplug/re-plug cycles (rebind, hotplug)",
                        minimum=1, maximum=100),
        "timeout": Param(int, 0, "seconds before the VM counts as hung (0: VM_TIMEOUT)",
                         minimum=0, maximum=86400),
    },
    help="with the driver's device attached (DEVICES=): probe -> workload -> remove; "
         "unbind/bind through sysfs; hot-unplug/re-plug with the workload running; "
         "suspend/resume; judge what each left behind")

ATTACH = Kind(
    name="attach",
    checks=("attach", "workload", "kernel", "leaks", "rules"),
    run="kedr_build.packs.attachkind:run",
    params={
        "workload": Param(str, "required", "the workload, before, during and after the "
                          "attached window", choices=("required",)),
        "timeout": Param(int, 0, "seconds before the VM counts as hung (0: VM_TIMEOUT)",
                         minimum=0, maximum=86400),
    },
    help="hot patching: load the plain driver, run the workload, attach, run it again "
         "(the attached window, judged), detach, run it a third time, unload")

_REGISTRY: dict[str, Kind] = {VM.name: VM, FAULTS.name: FAULTS, FUZZ.name: FUZZ,
                              RELOAD.name: RELOAD, CHAOS.name: CHAOS, DEVICE.name: DEVICE,
                              ATTACH.name: ATTACH}


# What a real machine (TARGET=ssh://, labgrid:) runs as the QEMU guest does (checkjob.py):
# its own kernel, the same guest scripts over a shell (targets/machine.py, trials.py).
ON_MACHINE = ("vm", "attach", "faults", "fuzz", "reload", "chaos")
# Of them, those that can crash it by design, so ask for I_KNOW_THIS_MAY_CRASH=1
# (targets/spec.py): why, for the one line that asks. reload does not: it loads and
# unloads the driver with its workload in between, as a user does with insmod.
MAY_CRASH = {
    "faults": "fails the driver's kernel calls on purpose",
    "fuzz": "fuzzes the driver's device nodes and network interfaces (random operations "
            "and ioctls, the bugs that oops are what it looks for)",
    "chaos": "fuzzes the driver's device nodes while unloading and loading it again (the "
             "races that oops are what it looks for)",
}
# Of the kinds QEMU runs, those that need its emulated devices (DEVICES=: QEMU's, hot
# plugged and suspended through QMP): never on a real machine.
NEEDS_DEVICES = ("device",)


def register(kind: Kind) -> None:
    """Add (or replace) a kind: the fault sweep, or a test's own cheap kind."""
    _REGISTRY[kind.name] = kind


def get(name: str) -> Kind:
    kind = _REGISTRY.get(name)
    if kind is None:
        raise KedrError(f"unknown test kind {name!r} (known: {', '.join(names())})")
    return kind


def names() -> list[str]:
    return sorted(_REGISTRY)
