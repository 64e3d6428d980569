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
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kedr_build.errors import KedrError
from kedr_build.packs import kinds, report
from kedr_build.packs.pack import Pack, PackTest, parse
from kedr_build.packs.results import CheckResult, ItemResult, PackReport, TestRun, verdict_of
from kedr_build.packs.session import DriverUnderTest, Session, parse_shard


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kedr-build packs")
    group.addoption("--kedr-session", metavar="FILE",
                    help="session.json: the drivers, kernel and pack to run")
    group.addoption("--kedr-shard", metavar="K/N", help="run only the K-th of N shards")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--kedr-session")
    if not path:
        return
    try:
        session = Session.read(Path(path))
        shard_text = config.getoption("--kedr-shard")
        shard = parse_shard(shard_text) if shard_text else session.shard
        pack_path = Path(session.pack)
        pack = parse(pack_path.read_text(), pack_path)
    except (KedrError, OSError) as e:
        raise pytest.UsageError(f"kedr-build: {e}") from None
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
        self.results: dict[str, ItemResult] = {}

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
            logdir = Path(self.session.report_dir, "logs", driver.name, test.name)
            logdir.mkdir(parents=True, exist_ok=True)
            try:
                run: TestRun = kinds.get(test.kind).runner()(driver, test, logdir, self.session)
            except KedrError as e:
                run = TestRun(driver.name, test.name, test.kind, reason=str(e),
                              checks=tuple(CheckResult(c, False, str(e)) for c in test.checks))
            self.runs[key] = run
        return self.runs[key]

    def reproduce(self, driver: DriverUnderTest, test: PackTest) -> str:
        return f"{driver.command} TEST={test.name}"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        meta = self.meta.get(report.nodeid)
        if meta is None:
            return
        index, driver, test, check = meta
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome if report.when == "call" else (
                "skipped" if report.skipped else "error")
            message = self.messages.get(report.nodeid) or (
                "" if report.passed else str(report.longrepr).splitlines()[-1])
            self.results[report.nodeid] = ItemResult(
                driver=driver.name, test=test.name, check=check, outcome=outcome,
                message=message, reproduce=self.reproduce(driver, test), index=index)

    def build_report(self) -> PackReport:
        items = tuple(sorted(self.results.values(), key=lambda r: r.index))
        order = {g: i for i, g in enumerate(dict.fromkeys((r.driver, r.test) for r in items))}
        runs = tuple(run for key, run in sorted(self.runs.items(),
                                                key=lambda kv: order.get(kv[0], len(order))))
        return PackReport(pack=self.pack.name, kernel=self.session.kernel,
                          verdict=verdict_of(items), items=items, runs=runs,
                          tools=report.tool_versions(), command=" ".join(sys.argv))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.meta:
            report.write(Path(self.session.report_dir), self.build_report())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.meta:
            return
        built = self.build_report()
        for line in report.summary(built, Path(self.session.report_dir)):
            bad = line.startswith(("FAILED", "  "))
            terminalreporter.write_line(line, red=bad and built.verdict != "passed",
                                        green=line.startswith("PASSED"))


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
        index = 0
        for driver in s.drivers:
            for test in self.plugin.pack.tests:
                if wanted and test.name not in wanted:
                    continue
                for check in test.checks:
                    item = CheckItem.from_parent(self, name=f"{test.name}.{check}[{driver.name}]",
                                                 plugin=self.plugin, driver=driver, test=test,
                                                 check=check)
                    self.plugin.meta[item.nodeid] = (index, driver, test, check)
                    index += 1
                    yield item


class CheckItem(pytest.Item):
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
        if result.skipped:
            pytest.skip(result.message)
        if not result.passed:
            raise CheckFailed(result.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, (CheckFailed, KedrError)):
            return (f"{self.driver.name}: {self.test.name}: {self.check}: {excinfo.value}\n"
                    f"reproduce: {self.plugin.reproduce(self.driver, self.test)}")
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.driver.name}: {self.test.name}: {self.check}"
