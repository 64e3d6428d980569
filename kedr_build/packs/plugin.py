"""The pytest plugin that runs a pack: each check of each pack test on each driver is
one pytest item, so selection, JUnit XML, ``-x``, progress and exit status are
pytest's own.

    python -m pytest -p kedr_build.packs.plugin --kedr-session report/session.json \\
        report/basic.toml --junitxml report/junit.xml

(``scons MODULE=... check PACK=basic`` writes the session file and runs exactly
that.) The pack file is collected as a test file; items are named
``<test>.<check>[<driver>]``. A pack test runs once per driver (one VM boot for
the ``vm`` kind): its first item runs it, the others judge the same run. With
``SHARD=k/N`` (``--kedr-shard``) whole (driver, test) groups are dealt round-robin
to the shards, so no boot is repeated and the shards together are the whole
session (:mod:`kedr_build.packs.merge` joins their reports).

With pytest-xdist (``-n 2``, ``scons ... check JOBS=2``; JOBS=auto, the default, is
one VM per CPU) the groups run in parallel VMs: a scheduler of the plugin keeps every
item of one (driver, test) group on one worker (the group is one boot), starting the
long ones first, and each item's result, with its group's run, travels to the
controller on its test report, which writes the reports and the console's lines as
without xdist.

A check that could not run (its test had no workload, ...) is a pytest skip, so
JUnit says ``<skipped message="not run: ...">``, and ``not-run`` in report.json; a
blocker test not run still fails the verdict (and pytest's exit status). SIGINT,
SIGTERM and SIGHUP (SIGTERM also comes when the parent scons dies) end the session as
Ctrl-C does: QEMU is killed, every check not judged yet is reported ``interrupted``
(a JUnit skip saying so), the verdict is ``interrupted``, and pytest exits 2.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Container, Generator, Iterator, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from kedr_build import interrupt
from kedr_build.checks.suppress import describe
from kedr_build.errors import KedrError
from kedr_build.packs import kinds, report, retry
from kedr_build.packs.pack import Pack, PackTest, parse
from kedr_build.packs.results import (NOT_BUILT, CheckResult, ItemResult, PackReport, TestRun,
                                      not_run, run_from_dict, verdict_of)
from kedr_build.packs.session import DriverUnderTest, Session, parse_shard
from kedr_build.targets import places


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kedr-build packs")
    group.addoption("--kedr-session", metavar="FILE",
                    help="session.json: the drivers, kernel and pack to run")
    group.addoption("--kedr-shard", metavar="K/N", help="run only the K-th of N shards")
    group.addoption("--kedr-retries", metavar="N",
                    help="run a failed test again up to N times (default: the session's)")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--kedr-session")
    if not path:
        return
    try:
        session = Session.read(Path(path))
        shard_text = config.getoption("--kedr-shard")
        shard = parse_shard(shard_text) if shard_text else session.shard
        retries_text = config.getoption("--kedr-retries")
        if retries_text is not None:
            session = replace(session, retries=retry.parse_retries(retries_text))
        pack_path = Path(session.pack)
        pack = parse(pack_path.read_text(), pack_path)
    except (KedrError, OSError) as e:
        raise pytest.UsageError(f"kedr-build: {e}") from None
    if hasattr(config, "workerinput"):
        # An xdist worker: it goes (and its QEMU with it) when the controller goes.
        interrupt.die_with_parent(signal.SIGTERM, os.getppid())
        # Its place, of several (TARGET=labgrid:ENV:PLACES): targets/places.py.
        os.environ[places.WORKER_ENV] = str(config.workerinput["workerid"])
    interrupt.install(raise_first=True)
    config.pluginmanager.register(PackSession(config, session, pack, shard), "kedr-pack")


class CheckFailed(Exception):
    pass


class PackSession:
    def __init__(self, config: pytest.Config, session: Session, pack: Pack,
                 shard: tuple[int, int] | None) -> None:
        self.config = config
        self.session = session
        self.pack = pack
        self.shard = shard
        self.runs: dict[tuple[str, str], TestRun] = {}
        self.meta: dict[str, tuple[int, DriverUnderTest, PackTest, str]] = {}
        self.messages: dict[str, str] = {}
        self.reproducers: dict[str, str] = {}
        self.results: dict[str, ItemResult] = {}
        self.sent: set[tuple[str, str]] = set()    # groups whose run went on a report
        self.started: dict[str, Any] = {}
        self.flaky: dict[str, str] = {}             # node id -> how it was flaky
        self.start_time = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
        if file_path.resolve() == Path(self.session.pack).resolve():
            return PackFile.from_parent(parent, path=file_path, plugin=self)
        return None

    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        if self.shard is None:
            return
        k, n = self.shard
        groups: list[tuple[str, str]] = []
        for item in items:
            if isinstance(item, CheckItem) and item.group not in groups:
                groups.append(item.group)
        keep = {g for i, g in enumerate(groups) if i % n == k - 1}
        selected = [i for i in items if not isinstance(i, CheckItem) or i.group in keep]
        deselected = [i for i in items if i not in selected]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected

    def run_group(self, driver: DriverUnderTest, test: PackTest) -> TestRun:
        key = (driver.name, test.name)
        if key not in self.runs:
            self.runs[key] = retry.run_with_retries(
                lambda attempt: self.run_once(driver, test, attempt), self.session.retries)
        return self.runs[key]

    def run_once(self, driver: DriverUnderTest, test: PackTest, attempt: int) -> TestRun:
        """One run of the test (attempt 2 and on: RETRIES=, logs in retry-<k>/)."""
        logdir = Path(self.session.report_dir, "logs", driver.name, test.name)
        if attempt > 1:
            logdir = logdir / f"retry-{attempt - 1}"
        logdir.mkdir(parents=True, exist_ok=True)
        session = replace(self.session, env={**self.session.env,
                                             retry.ATTEMPT_ENV: str(attempt)})
        try:
            if driver.build_error:
                raise KedrError(f"{NOT_BUILT}{driver.build_error}")
            if test.devices == "required" and not driver.devices:
                return not_run(driver.name, test.name, test.kind, test.checks,
                               f"no device: test {test.name} needs the driver's device: "
                               "give DEVICES= (kedr_build/devices/catalog.toml)")
            run: TestRun = kinds.get(test.kind).runner()(driver, test, logdir, session)
        except KedrError as e:
            run = TestRun(driver.name, test.name, test.kind, reason=str(e),
                          checks=tuple(CheckResult(c, False, str(e)) for c in test.checks))
        return run

    def reproduce(self, driver: DriverUnderTest, test: PackTest) -> str:
        return f"{driver.command} TEST={test.name}"

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        """Put the item's result (and, once, its group's run) on its report: where the
        item ran, which under xdist is a worker, not the process writing the reports."""
        report: pytest.TestReport = yield
        meta = self.meta.get(item.nodeid)
        if meta is None or not isinstance(item, CheckItem):
            return report
        index, driver, test, check = meta
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome: str = ("not-run" if report.skipped else
                       report.outcome if report.when == "call" else "error")
            message = self.messages.get(item.nodeid) or (
                "" if report.passed else str(report.longrepr).splitlines()[-1])
            flaky = self.flaky.get(item.nodeid, "")
            if flaky and outcome == "passed":
                # RETRIES=: failed in one run and passed in another; never a plain pass.
                outcome, message = "flaky", f"flaky: {flaky}; {message}"
                item.add_report_section("call", "stdout", f"FLAKY: {flaky}\n")
            result = ItemResult(driver=driver.name, test=test.name, check=check,
                                outcome=outcome, message=message,
                                reproduce=self.reproducers.get(item.nodeid)
                                or self.reproduce(driver, test), index=index,
                                blocker=test.blocker)
            setattr(report, "kedr_item", asdict(result))
            run = self.runs.get(item.group)
            if run is not None and run.suppressed:
                # JUnit's <system-out> of the item (junit_logging=system-out; pytest writes
                # it from the teardown report, which gathers the item's sections): what the
                # run's SUPPRESS= rules hid, so a suppressed finding is never silent there.
                item.add_report_section("call", "stdout",
                                        f"SUPPRESS: {describe(run.suppressed)}\n")
            if run is not None and item.group not in self.sent:
                self.sent.add(item.group)
                setattr(report, "kedr_run", asdict(run))
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Under xdist (JOBS=, by default as many VMs as CPUs) the worker a report came
        # from (xdist's ``node``) is taken off it before pytest's terminal and JUnit see
        # it: the console then says "<test>.<check>[<driver>] PASSED", as one VM at a time
        # does (what scripts and tests read), not "[gw0] PASSED <test>..."; and JUnit
        # keys each case by its node id alone (a group's items run on one worker).
        node = report.__dict__.pop("node", None)
        if report.when == "setup":      # started (where: xdist's worker node, if any)
            self.started[report.nodeid] = node
        item = getattr(report, "kedr_item", None)
        if item is not None:
            self.results[report.nodeid] = ItemResult(**item)
        run = getattr(report, "kedr_run", None)
        if run is not None:
            self.runs[(run["driver"], run["test"])] = run_from_dict(run)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        return _group_scheduler(config, log, {t.name for t in self.pack.tests
                                              if kinds.get(t.kind).long})

    def build_report(self) -> PackReport:
        items = tuple(sorted(self.results.values(), key=lambda r: r.index))
        order = {g: i for i, g in enumerate(dict.fromkeys((r.driver, r.test) for r in items))}
        runs = tuple(run for key, run in sorted(self.runs.items(),
                                                key=lambda kv: order.get(kv[0], len(order))))
        return PackReport(pack=self.pack.name, kernel=self.session.kernel,
                          verdict=verdict_of(items), items=items, runs=runs,
                          tools=report.tool_versions(), command=" ".join(sys.argv),
                          started=self.start_time, target=self.session.target)

    def pytest_report_teststatus(self, report: pytest.TestReport,
                                 config: pytest.Config) -> Any:
        """A flaky item is FLAKY on the console (and counted as such), never PASSED."""
        item = getattr(report, "kedr_item", None)
        if item is not None and item["outcome"] == "flaky" and report.when == "call":
            return "flaky", "f", ("FLAKY", {"yellow": True})
        return None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # pytest writes junit.xml in place: it goes to junit.xml.part, renamed once
        # complete (_JunitRename), so a junit.xml is never half written.
        from _pytest.junitxml import xml_key

        xml = session.config.stash.get(xml_key, None)
        if xml is not None:
            final = xml.logfile
            xml.logfile = final + ".part"
            session.config.pluginmanager.register(_JunitRename(xml, final), "kedr-junit")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # An xdist worker's results went to the controller on its reports.
        if hasattr(session.config, "workerinput"):
            return
        signum = interrupt.received()
        if signum is not None or exitstatus == pytest.ExitCode.INTERRUPTED:
            self.report_interrupted(signum)
        if self.results:
            built = self.build_report()
            report.write(Path(self.session.report_dir), built, self.session.kcidb_origin)
            if built.verdict == "failed" and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED   # a blocker not run

    def report_interrupted(self, signum: int | None) -> None:
        """Every check not judged yet is "interrupted", in every report (JUnit: a skip
        with that message, logged as pytest logs any result)."""
        why = (f"interrupted by {interrupt.signal_name(signum)}" if signum is not None
               else "interrupted")
        judged = {(r.driver, r.test, r.check) for r in self.results.values()}
        for nodeid, (index, driver, test, check) in sorted(self.expected().items(),
                                                            key=lambda kv: kv[1][0]):
            if (driver.name, test.name, check) in judged:
                continue
            item = ItemResult(driver=driver.name, test=test.name, check=check,
                              outcome="interrupted", message=f"not run: {why}",
                              reproduce=self.reproduce(driver, test), index=index,
                              blocker=test.blocker)
            location = (Path(self.session.pack).name, None, f"{driver.name}: {test.name}: {check}")
            skipped = pytest.TestReport(nodeid, location, {}, "skipped",
                                        (str(self.session.pack), 0, f"Skipped: not run: {why}"),
                                        "setup")
            teardown = pytest.TestReport(nodeid, location, {}, "passed", None, "teardown")
            setattr(skipped, "kedr_item", asdict(item))
            self.config.hook.pytest_runtest_logreport(report=skipped)
            self.config.hook.pytest_runtest_logreport(report=teardown)

    def expected(self) -> dict[str, tuple[int, DriverUnderTest, PackTest, str]]:
        """Every item of this session (this shard), collected or not: an xdist
        controller collects nothing itself."""
        if self.meta:
            return self.meta
        out = {}
        # The pack file's part of the node ids, as the workers' reports have it.
        pack_path = Path(self.session.pack).resolve()
        seen = list(self.started) + list(self.results)
        prefix = (seen[0].partition("::")[0] if seen else
                  str(pack_path.relative_to(self.config.rootpath))
                  if pack_path.is_relative_to(self.config.rootpath) else pack_path.name)
        for index, driver, test, check in session_items(self.session, self.pack):
            out[f"{prefix}::{test.name}.{check}[{driver.name}]"] = (index, driver, test, check)
        if self.shard is not None:
            k, n = self.shard
            groups = list(dict.fromkeys((d.name, t.name) for _, d, t, _ in out.values()))
            keep = {g for i, g in enumerate(groups) if i % n == k - 1}
            out = {i: m for i, m in out.items() if (m[1].name, m[2].name) in keep}
        return out

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        built = self.build_report()
        for line in report.summary(built, Path(self.session.report_dir)):
            bad = line.startswith(("FAILED", "  "))
            terminalreporter.write_line(line, red=bad and built.verdict != "passed",
                                        green=line.startswith("PASSED"))


class _JunitRename:
    def __init__(self, xml: Any, final: str) -> None:
        self.xml = xml
        self.final = final

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        # After junitxml's own (it wrote the .part), before the terminal summary names it.
        if os.path.exists(self.xml.logfile):
            os.replace(self.xml.logfile, self.final)
        self.xml.logfile = self.final


class PackFile(pytest.File):
    def __init__(self, *, plugin: PackSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plugin = plugin

    def collect(self) -> Iterator[pytest.Item]:
        s = self.plugin.session
        wanted = set(s.tests)
        unknown = wanted - {t.name for t in self.plugin.pack.tests}
        if unknown:
            raise KedrError(f"TEST={','.join(sorted(unknown))}: not a test of pack "
                            f"{self.plugin.pack.name!r} (its tests: "
                            f"{', '.join(t.name for t in self.plugin.pack.tests)})")
        for index, driver, test, check in session_items(s, self.plugin.pack):
            item = CheckItem.from_parent(self, name=f"{test.name}.{check}[{driver.name}]",
                                         plugin=self.plugin, driver=driver, test=test,
                                         check=check)
            self.plugin.meta[item.nodeid] = (index, driver, test, check)
            yield item


def session_items(s: Session, pack: Pack) -> Iterator[tuple[int, DriverUnderTest, PackTest, str]]:
    """The session's checks in collection order: (index, driver, test, check)."""
    wanted = set(s.tests)
    index = 0
    for driver in s.drivers:
        for test in pack.tests:
            if wanted and test.name not in wanted:
                continue
            for check in test.checks:
                yield index, driver, test, check
                index += 1


class CheckItem(pytest.Item):
    # No fixtures; said, because other plugins read it of every item (labgrid's
    # pytest_runtest_setup does: without it each item was an AttributeError).
    fixturenames: tuple[str, ...] = ()

    def __init__(self, *, plugin: PackSession, driver: DriverUnderTest, test: PackTest,
                 check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plugin = plugin
        self.driver = driver
        self.test = test
        self.check = check

    @property
    def group(self) -> tuple[str, str]:
        return (self.driver.name, self.test.name)

    def runtest(self) -> None:
        run = self.plugin.run_group(self.driver, self.test)
        result = run.check(self.check)
        self.plugin.messages[self.nodeid] = result.message
        if result.flaky:
            self.plugin.flaky[self.nodeid] = result.flaky
        if result.reproduce:
            self.plugin.reproducers[self.nodeid] = result.reproduce
        if result.skipped:
            pytest.skip(result.message)
        if not result.passed:
            raise CheckFailed(result.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, (CheckFailed, KedrError)):
            command = (self.plugin.reproducers.get(self.nodeid)
                       or self.plugin.reproduce(self.driver, self.test))
            return (f"{self.driver.name}: {self.test.name}: {self.check}: {excinfo.value}\n"
                    f"reproduce: {command}")
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.driver.name}: {self.test.name}: {self.check}"


def group_of(nodeid: str) -> str:
    """The (driver, test) group of an item's node id ``<pack>::<test>.<check>[<driver>]``:
    ``<pack>::<test>[<driver>]`` (check names have no dot; test names may)."""
    name, bracket, driver = nodeid.partition("[")
    return f"{name.rpartition('.')[0] or name}{bracket}{driver}"


def start_order(groups: Sequence[str], long_tests: Container[str]) -> list[str]:
    """The order the (driver, test) groups ``<pack>::<test>[<driver>]``, given in the
    pack's order, start in under xdist: those of a long kind (a sweep, a fuzz budget)
    first, then the pack's order. Longest first leaves the short ones to fill the other
    workers around it; xdist's own order (the groups with the most checks first) started
    e1000's sweep, its longest group and one check, last: one worker ran reload, hotplug
    and the sweep (50 s) while the other's three groups took 34 s (JOBS=2, device pack)."""
    return sorted(groups, key=lambda g: g.partition("::")[2].partition("[")[0]
                  not in long_tests)


def _group_scheduler(config: pytest.Config, log: Any, long_tests: Container[str]) -> Any:
    """xdist's scope scheduler with the pack's groups as scopes: a group's items (one
    boot) run on one worker, in order, and node ids stay as without xdist (unlike
    ``--dist loadgroup``, which appends the group to them, and so to JUnit's names).
    The groups start in :func:`start_order`."""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class PackGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # The next group in start_order(): xdist pops the queue's first.
            waiting = [g for g in dict.fromkeys(group_of(n) for n in self.collection)
                       if g in self.workqueue]
            self.workqueue.move_to_end(start_order(waiting, long_tests)[0], last=False)
            super()._assign_work_unit(node)

    return PackGroupScheduling(config, log)
