"""TARGET=labgrid:ENV.yaml: a machine of a labgrid environment, for the steps of
targets/machine.py.

labgrid (https://labgrid.readthedocs.io) gives the lab: the environment file names
the target ``main`` and its drivers, its strategy (``ShellStrategy``: power the
machine on or cycle it, log in on the serial console) brings it to a shell, and its
command driver (``ShellDriver`` over a serial console, or ``SSHDriver``) runs
commands there. We add what a run needs beyond a command: files go in as gzip'ed
base64 lines, 8 a command, appended to a file (a serial console carries text, a line at most
1 KiB: busybox's line editor), stdout and stderr are kept apart in files on the
machine and come back base64'ed (a serial console merges them and rewrites line
ends; both ways gzip'ed), modules go without their debug info (objcopy
--strip-debug, as INSTALL_MOD_STRIP=1 installs them: the link carries a few KiB/s),
and a job on a serial console runs in the background of its shell while the
console is watched (targets/watch.py): its end, a panic, silence end the wait.

The environment is opened once per process and kept: its QEMUDriver's guest (a
QEMU that plays the machine) lives as long as the process, so a pack's runs in one
pytest worker share one boot. With a coordinator place (``labgrid:ENV.yaml:place``,
targets/places.py) the place is acquired first and the target ``main`` gets its
resources through labgrid's ``RemotePlace`` (added to it with the place's name).
"""

from __future__ import annotations

import atexit
import base64
import gzip
import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedr_build.errors import KedrError
from kedr_build.targets.machine import PROBE_TIMEOUT, Answer, JobEnd, last_line
from kedr_build.targets.spec import LabgridTarget
from kedr_build.targets.watch import end_line, watch_job

ROLE = "main"            # the target labgrid's own tools use when none is named
STATE = "shell"          # the strategy state with a shell (ShellStrategy's)
# base64 characters a command line: busybox's line editor (an interactive ash, the
# shell of many a lab machine) keeps 1024 characters of a line
# (CONFIG_FEATURE_EDITING_MAX_LEN); ShellDriver adds ~100 around the command.
CHUNK = 760
# Lines a command: the shell reads them one by one (its line editor's limit is per
# line), and fewer round trips halve the time (8: 151 KB of /bin/ls in 7.6 s, 1: 13.9 s).
LINES = 8
RESTORE_TIMEOUT = 15.0   # seconds for dmesg -n at exit
_SEPARATOR = "--"        # between two base64 files in one answer (not base64)


@dataclass
class LabgridShell:
    """The command driver of the environment's target, logged in."""

    target: LabgridTarget
    driver: Any            # labgrid's CommandProtocol driver (ShellDriver, SSHDriver)
    silent_console: str = ""   # the console's output before the last command timed out
    clock: Callable[[], float] = time.monotonic    # the job watch's (tests give their own)
    console_level: int | None = None   # the console log level to put back when done

    def __str__(self) -> str:
        return str(self.target)

    @property
    def log_name(self) -> str:
        return "labgrid.cmd"

    @property
    def slow(self) -> bool:
        return True

    def command_line(self, command: str) -> list[str]:
        return ["sh", "-c", command]

    def _shell(self, command: str, timeout: float) -> tuple[list[str], int]:
        from pexpect import TIMEOUT

        try:
            out, _, code = self.driver.run(command, timeout=timeout, decodeerrors="replace")
        except TIMEOUT:
            # What the console showed since the command (a panic's last words); a
            # driver without a console (SSHDriver) has none to show.
            console = getattr(self.driver, "console", None)
            before = getattr(getattr(console, "_expect", None), "before", b"")
            self.silent_console = (before.decode("utf-8", "replace")
                                   if isinstance(before, bytes) else "")
            raise KedrError(f"TARGET={self.target}: no answer in {timeout:.0f} s") from None
        except Exception as e:  # labgrid's and pexpect's own: the console or session broke
            raise KedrError(f"TARGET={self.target}: lost its shell: "
                            f"{type(e).__name__}: {_one_line(e)}") from None
        return list(out), int(code)

    def _put(self, data: bytes, path: str, timeout: float) -> None:
        text = base64.b64encode(gzip.compress(data, mtime=0)).decode()
        lines = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)]
        out, code = self._shell(f": > {path}", timeout)
        for i in range(0, len(lines), LINES):
            if code != 0:
                break
            body = "\n".join(lines[i:i + LINES])
            out, code = self._shell(f"printf '%s\\n' '{body}' >> {path}", timeout)
        if code != 0:
            self._shell(f"rm -f {path}", timeout)
            raise KedrError(f"TARGET={self.target}: writing {path} failed (status {code}): "
                            f"{out[-1] if out else ''}")

    def _fetch(self, spool: str, timeout: float) -> tuple[bytes, bytes]:
        lines, _ = self._shell(f"gzip -c {spool}.out | base64; echo {_SEPARATOR}; "
                               f"gzip -c {spool}.err | base64; "
                               f"rm -f {spool}.out {spool}.err", timeout)
        if _SEPARATOR not in lines:
            raise KedrError(f"TARGET={self.target}: unexpected answer reading {spool}.out: "
                            f"{' / '.join(lines[:2])}")
        i = lines.index(_SEPARATOR)
        try:
            return (gzip.decompress(base64.b64decode("".join(ln.strip() for ln in lines[:i]))),
                    gzip.decompress(base64.b64decode("".join(ln.strip()
                                                             for ln in lines[i + 1:]))))
        except (ValueError, OSError, EOFError) as e:
            raise KedrError(f"TARGET={self.target}: reading {spool}.out back failed: "
                            f"{e}") from None

    def run(self, command: str, data: bytes | None = None,
            timeout: float = PROBE_TIMEOUT) -> Answer:
        spool = f"/tmp/.kedr-labgrid-{secrets.token_hex(6)}"
        feed = "</dev/null"
        if data is not None:
            self._put(data, f"{spool}.in", timeout)
            feed = f"< {spool}.in"
            command = f"base64 -d | gzip -dc | {{ {command}\n}}"
        _, code = self._shell(f"sh -c {shlex.quote(command)} {feed} >{spool}.out "
                              f"2>{spool}.err", timeout)
        out, err = self._fetch(spool, timeout)
        if data is not None:
            self._shell(f"rm -f {spool}.in", timeout)
        return Answer(code, out, err)

    def check(self, command: str, what: str, data: bytes | None = None) -> str:
        proc = self.run(command, data)
        if proc.returncode != 0:
            raise KedrError(f"TARGET={self.target}: {what} failed (status {proc.returncode}): "
                            f"{last_line(proc.stderr) or last_line(proc.stdout)}")
        return proc.stdout.decode("utf-8", "replace")

    def run_job(self, command: str, out: Path, err: Path, timeout: float,
                workdir: str) -> JobEnd:
        """With a console (ShellDriver): the job in the background of its shell, the
        console watched (targets/watch.py: its end, a crash report, silence); without
        one (SSHDriver: its session ends with the machine), the job as one command."""
        spool = f"{workdir}/.job"
        end = JobEnd()
        job = f"sh -c {shlex.quote(command)} </dev/null >{spool}.out 2>{spool}.err"
        console = getattr(self.driver, "console", None)
        try:
            if console is not None:
                token = secrets.token_hex(6)
                self._shell(f"({job}; {end_line(token)}) &", PROBE_TIMEOUT)
                end = watch_job(console, token, timeout, clock=self.clock)
            else:
                self._shell(job, timeout)
            stdout, stderr = self._fetch(spool, PROBE_TIMEOUT) if end.ended else (b"", b"")
        except KedrError as e:
            # The job's output stays on the machine: its console no longer answers.
            stdout, stderr = b"", b""
            end = (JobEnd(timed_out=True, console=self.silent_console)
                   if ": no answer in " in str(e) else JobEnd(lost=str(e)))
        out.write_bytes(stdout)
        err.write_bytes(stderr)
        return end


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else ""


_OPEN: dict[LabgridTarget, Any] = {}      # the labgrid target of each environment, per process
_SHELLS: dict[LabgridTarget, LabgridShell] = {}


def _environment(target: LabgridTarget) -> Any:
    """The environment file read by labgrid, with a target ``main``; one line naming
    the file and the cause when it is not one."""
    try:
        from labgrid import Environment
    except ImportError as e:
        raise KedrError(f"TARGET={target}: labgrid is not installed ({e}): ./kedr-env "
                        "installs it") from None
    where = f"TARGET={target}: {target.environment}"
    try:
        env = Environment(config_file=str(target.environment))
        targets = env.config.get_targets()
    except Exception as e:  # labgrid's config errors, YAML's, an unreadable file
        raise KedrError(f"{where}: not a labgrid environment: {_one_line(e)}") from None
    if not isinstance(targets, dict) or ROLE not in targets:
        names = ", ".join(sorted(targets)) if isinstance(targets, dict) else ""
        raise KedrError(f"{where}: no target {ROLE!r} in it"
                        + (f" (it has {names})" if names else ""))
    return env


def check_environment(target: LabgridTarget) -> None:
    """A bad environment file is one line before anything is built, and so are an
    unreachable coordinator, a place it does not have and one someone holds; no
    machine is touched (a place's drivers are made once it is acquired)."""
    if target.place is None:
        labgrid_target(target)
    else:
        _environment(target)
        from kedr_build.targets.places import query

        query(target)


def _with_place(role: dict[str, Any], place: str) -> None:
    """The target's resources are the place's: a ``RemotePlace`` named ``place``
    (replacing any the file has), in the dict or the list form labgrid reads."""
    resources = role.get("resources")
    if isinstance(resources, list):
        role["resources"] = [r for r in resources
                             if not (isinstance(r, dict) and "RemotePlace" in r)]
        role["resources"].append({"RemotePlace": {"name": place}})
    else:
        role["resources"] = {**(resources if isinstance(resources, dict) else {}),
                             "RemotePlace": {"name": place}}


def labgrid_target(target: LabgridTarget) -> Any:
    """The environment's target ``main`` with its drivers made (nothing activated); with
    a place, the place acquired first (targets/places.py). One line naming the file
    and the cause when it is not one."""
    if target in _OPEN:
        return _OPEN[target]
    env = _environment(target)
    where = f"TARGET={target}: {target.environment}"
    if target.place is not None:
        from kedr_build.targets import places

        one = places.place_of_worker(target)
        places.acquire(one)
        # labgrid's RemotePlace opens a client session of its own unless one is there,
        # and the coordinator refuses a second one from this process (the same gRPC
        # peer: AssertionError): it gets ours, which acquired the place.
        from labgrid.resource.remote import RemotePlaceManager

        manager = RemotePlaceManager.get()
        if manager.session is None:
            manager.session = places.coordinator(one).session
            manager.loop = manager.session.loop
        _with_place(env.config.get_targets()[ROLE], str(one.place))
        where = f"TARGET={one}: {target.environment}"
    try:
        made = env.get_target(ROLE)
    except Exception as e:  # a driver or resource labgrid refuses, or one it does not know
        raise KedrError(f"{where}: target {ROLE!r}: {_one_line(e)}") from None
    from labgrid.protocol import CommandProtocol

    try:
        made.get_driver(CommandProtocol, activate=False)
    except Exception as e:
        raise KedrError(f"{where}: target {ROLE!r} has no command driver (ShellDriver "
                        f"or SSHDriver): {_one_line(e)}") from None
    # Before labgrid's own exit handlers (atexit runs the last registered first): they
    # kill a QEMUDriver's QEMU and then fail to quit it, printing a traceback. After
    # the place's release (registered when it was acquired): the console is closed
    # before the place is given back.
    atexit.register(_cleanup, made)
    _OPEN[target] = made
    return made


def _cleanup(made: Any) -> None:
    """Put the console log level back, deactivate the target's drivers (a QEMUDriver
    quits its QEMU)."""
    for target in [t for t, m in _OPEN.items() if m is made]:
        try:
            restore_console(target)
        except KedrError:      # at exit, nothing is left to tell
            pass
    try:
        made.cleanup()
    except Exception:  # at exit, nothing is left to tell
        pass


def _strategy(made: Any) -> Any:
    """The labgrid target's strategy (e.g. ShellStrategy), or None."""
    from labgrid.exceptions import NoStrategyFoundError

    try:
        return made.get_strategy()
    except NoStrategyFoundError:
        return None


def open_shell(target: LabgridTarget) -> LabgridShell:
    """A shell on the machine: its strategy (if it has one) brought to state ``shell``
    (ShellStrategy powers it on and logs in), else its command driver activated."""
    if target in _SHELLS:
        return _SHELLS[target]
    made = labgrid_target(target)
    from labgrid.protocol import CommandProtocol

    try:
        strategy = _strategy(made)
        if strategy is not None:
            strategy.transition(STATE)
        driver = made.get_driver(CommandProtocol)
    except Exception as e:  # the machine did not come up, or its console did not log in
        raise KedrError(f"TARGET={target}: cannot get a shell on it through labgrid: "
                        f"{type(e).__name__}: {_one_line(e)}") from None
    return _logged_in(target, driver)


# The console log level a kernel boots with (init/main.c: "quiet" sets
# CONSOLE_LOGLEVEL_QUIET, "debug" CONSOLE_LOGLEVEL_DEBUG, "loglevel=" its own; the
# last one given wins), else printk's fourth field, CONSOLE_LOGLEVEL_DEFAULT.
_LEVEL = {"quiet": 4, "debug": 10}


def boot_console_level(printk: str, cmdline: str) -> int | None:
    """The level the kernel booted with, from /proc/sys/kernel/printk and /proc/cmdline."""
    fields = printk.split()
    level = int(fields[3]) if len(fields) == 4 and fields[3].isdigit() else None
    for word in cmdline.split():
        if word in _LEVEL:
            level = _LEVEL[word]
        elif word.startswith("loglevel=") and word[len("loglevel="):].isdigit():
            level = int(word[len("loglevel="):])
    return level


def no_read_delay(driver: Any) -> None:
    """Read the console without pexpect's pause after each read. pexpect sleeps
    ``delayafterread`` (0.1 ms; far longer on a loaded host, where a sleep gives the
    core away) after every read, and labgrid's console reads what has arrived, a
    byte or a few as the machine echoes a command: a file put in as 130 KB of
    base64 cost ~177,000 sleeps, 66 s of a 72 s copy. ``None`` is pexpect's own
    switch for no pause; a read still blocks until data comes (pyserial's select
    with the expect's timeout), so nothing spins. A driver without a console
    (SSHDriver) has nothing to change."""
    expect = getattr(getattr(driver, "console", None), "_expect", None)
    if expect is not None and hasattr(expect, "delayafterread"):
        expect.delayafterread = None


def _logged_in(target: LabgridTarget, driver: Any) -> LabgridShell:
    """The shell; labgrid's ShellDriver sets the console log level to 1 when it logs in
    (``dmesg -n 1``: kernel messages would garble its commands' output), so the level
    the kernel booted with is put back when we are done (:func:`restore_console`)."""
    where = target
    if target.place is not None:
        from kedr_build.targets.places import place_of_worker

        where = place_of_worker(target)     # the place it runs on, for every message
    shell = LabgridShell(where, driver)
    no_read_delay(driver)
    if type(driver).__name__ == "ShellDriver":
        lines, code = shell._shell("cat /proc/sys/kernel/printk /proc/cmdline", PROBE_TIMEOUT)
        if code == 0 and len(lines) >= 2 and lines[0].split()[:1] == ["1"]:
            shell.console_level = boot_console_level(lines[0], lines[1])
    _SHELLS[target] = shell
    return shell


def restore_console(target: LabgridTarget) -> None:
    """Put back the console log level labgrid's ShellDriver changed at login."""
    shell = _SHELLS.get(target)
    if shell is not None and shell.console_level is not None:
        # Briefly: at exit, a machine that stopped answering must not hold us up.
        shell._shell(f"dmesg -n {shell.console_level}", RESTORE_TIMEOUT)
        shell.console_level = None


def power_of(target: LabgridTarget) -> str:
    """How labgrid can restart the machine, for messages ("" when it cannot): the
    environment's strategy with its power driver (ShellStrategy: QEMUDriver, a PDU's
    NetworkPowerDriver, ExternalPowerDriver's commands), else a power driver alone."""
    made = labgrid_target(target)
    from labgrid.exceptions import NoDriverFoundError
    from labgrid.protocol import PowerProtocol

    try:
        power = made.get_driver(PowerProtocol, activate=False)
    except NoDriverFoundError:
        return ""
    strategy = _strategy(made)
    with_ = f"{type(strategy).__name__} with " if strategy is not None else ""
    return f"labgrid's {with_}{type(power).__name__}"


def power_cycle(target: LabgridTarget) -> LabgridShell:
    """Restart the machine through labgrid and log in again: its strategy powers it off
    and back to state ``shell`` (ShellStrategy: power off, power cycle, wait for the
    login prompt), or its power driver cycles it and the command driver logs in anew."""
    made = labgrid_target(target)
    from labgrid.protocol import CommandProtocol, PowerProtocol

    _SHELLS.pop(target, None)
    _forget_console(made)
    try:
        strategy = _strategy(made)
        if strategy is not None:
            strategy.transition("off")
            strategy.transition(STATE)
        else:
            made.deactivate(made.get_driver(CommandProtocol, activate=False))
            made.get_driver(PowerProtocol).cycle()
        driver = made.get_driver(CommandProtocol)
    except Exception as e:  # the power driver failed, or the machine did not come back
        raise KedrError(f"TARGET={target}: power cycle through labgrid failed: "
                        f"{type(e).__name__}: {_one_line(e)}") from None
    return _logged_in(target, driver)


# Anything at all: what the console has read and nobody matched.
_ANYTHING = re.compile(rb"[\s\S]+")


def _forget_console(made: Any) -> None:
    """Consume what the console read from the machine before its power cycle and
    nobody matched (the prompt after the job watch's last probe; a panicked kernel's
    own reboot): logging in on the fresh boot, labgrid's ShellDriver would take an old
    prompt for the new one and type its setup into the login prompt (its strategy then
    broken for good: "ShellStrategy is in broken state"). What arrives later stays in
    the old connection, which the power cycle closes."""
    from labgrid.protocol import ConsoleProtocol
    from pexpect import TIMEOUT

    try:
        made.get_driver(ConsoleProtocol, activate=False).expect(_ANYTHING, timeout=0.1)
    except TIMEOUT:        # nothing was left
        pass
    except Exception:      # no console (SSHDriver), or one already closed: nothing kept
        pass
