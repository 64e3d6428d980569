"""Guest-script planning and the interpretation of recorded VM output."""

import dataclasses
from pathlib import Path

import pytest

from kedr_build.vm.console import find_problems
from kedr_build.errors import KedrError
from kedr_build.vm.runner import driver_log, interpret, plan_run
from kedr_build.vm.qemu import (CRASH_GRACE_FACTOR, CRASH_GRACE_MIN, Verdict, VmResult,
                                JOB_START, crash_grace, parse_status,
                                result_from_logs)

DATA = Path(__file__).parent / "data" / "console"


def recorded(console: str, output: str, status: int | None) -> VmResult:
    return VmResult(status=status, output=output, console=console,
                    problems=tuple(find_problems(console)), timed_out=False, elapsed=1.0,
                    command=(), workdir=Path("/nonexistent"))


def test_refused_module_reports_the_kernels_reason() -> None:
    console = (DATA / "initfail.log").read_text()
    output = (DATA / "initfail-output.log").read_text()
    report = interpret(recorded(console, output, 1))
    assert report.verdict is Verdict.FAILED
    assert report.steps[0].action == "insmod" and not report.steps[0].ok
    assert report.reason.startswith("insmod kedr_initfail failed")
    assert report.reason.endswith(": no such device here")


def test_a_failed_step_quotes_its_own_words_not_a_later_steps() -> None:
    # The guest's order: rmmod prints why before its step line; the replacement
    # module is unloaded after the driver (fzref: its error was quoted as the driver's).
    output = ("KEDR-STEP insmod kedr_repl_fzref 0\nKEDR-STEP insmod kedr_fzref 0\n"
              "rmmod: can't unload module 'kedr_fzref': Resource temporarily unavailable\n"
              "KEDR-STEP rmmod kedr_fzref 1\n"
              "rmmod: can't unload module 'kedr_repl_fzref': Resource temporarily unavailable\n"
              "KEDR-STEP rmmod kedr_repl_fzref 1\n")
    report = interpret(recorded("", output, 3))
    assert report.verdict is Verdict.FAILED
    assert report.reason == ("rmmod kedr_fzref failed (status 1): rmmod: can't unload "
                             "module 'kedr_fzref': Resource temporarily unavailable")
    silent = output.replace("rmmod: can't unload module 'kedr_fzref': Resource "
                            "temporarily unavailable\n", "")
    assert interpret(recorded("", silent, 3)).reason == "rmmod kedr_fzref failed (status 1)"


def test_driver_log_is_between_the_markers() -> None:
    log = driver_log((DATA / "chardev-ok.log").read_text())
    assert log[-2:] == ["kedr_chardev: ready, buffer of 4096 bytes", "kedr_chardev: unloaded"]
    assert not any("Linux version" in line for line in log)


def test_oops_is_a_kernel_problem_even_with_status_zero() -> None:
    console = (DATA / "oops-null-deref.log").read_text()
    report = interpret(recorded(console, "KEDR-STEP insmod kedr_oops 0\n", 0))
    assert report.verdict is Verdict.KERNEL_PROBLEM
    assert "NULL pointer dereference" in report.reason


def test_panic_without_status_is_a_kernel_problem_and_lost() -> None:
    report = interpret(recorded((DATA / "panic.log").read_text(), "", None))
    assert report.verdict is Verdict.KERNEL_PROBLEM and report.lost
    assert report.reason == ("kernel reported: Kernel panic - not syncing: kedr_panic: deliberate panic "
                             "(VM ended without a status)")


def test_an_oops_then_a_hang_is_a_kernel_problem_not_lost() -> None:
    """Whatever follows an oops (the 6.12 oops test once hung after it under load)."""
    console = (DATA / "oops-null-deref.log").read_text()
    hung = dataclasses.replace(recorded(console, "KEDR-STEP insmod kedr_oops 137\n", None),
                               timed_out=True, elapsed=120.0)
    report = interpret(hung)
    assert report.verdict is Verdict.KERNEL_PROBLEM and report.lost
    assert report.reason.startswith("kernel reported: BUG: kernel NULL pointer dereference")
    assert report.reason.endswith("(VM hung: no status after 120 s)")
    cut = dataclasses.replace(hung, timed_out=False, cut_after_crash=True, elapsed=41.0)
    assert cut.reason().endswith("(then no status: the VM was stopped 41 s in)")


def test_a_kernel_that_panics_before_the_job_is_lost_not_a_kernel_problem(
        tmp_path: Path) -> None:
    """6.12 at load 10 on 2 cores, before no_timer_check: the boot's timer test failed
    and the kernel panicked; the job never ran, so no driver is blamed."""
    console = (DATA / "ioapic-boot-panic.log").read_text()
    assert not any(JOB_START in ln for ln in console.splitlines())
    (tmp_path / "console.log").write_text(console)
    result = result_from_logs(tmp_path)
    assert not result.job_started and result.lost
    assert result.verdict is Verdict.LOST
    assert result.reason().startswith("VM did not boot: Kernel panic - not syncing: IO-APIC + "
                                      "timer doesn't work!")
    # The same panic once the job has started is the job's kernel problem.
    (tmp_path / "console.log").write_text((DATA / "panic.log").read_text())
    assert result_from_logs(tmp_path).verdict is Verdict.KERNEL_PROBLEM


def test_no_status_and_no_kernel_report_is_lost() -> None:
    report = interpret(recorded((DATA / "chardev-ok.log").read_text(), "", None))
    assert report.verdict is Verdict.LOST and report.lost
    assert report.reason == "VM ended without a status"


def test_the_grace_after_a_crash_grows_with_the_time_it_took() -> None:
    assert crash_grace(2.0) == CRASH_GRACE_MIN
    assert crash_grace(40.0) == 40.0 * CRASH_GRACE_FACTOR > CRASH_GRACE_MIN


def test_status_channel_parsing() -> None:
    assert parse_status("KEDR-STATUS 0\n") == 0
    assert parse_status("noise\nKEDR-STATUS 3\n") == 3
    assert parse_status("KEDR-STATUS x") is None
    assert parse_status("") is None


def test_plan_orders_by_depends_and_finds_intree(built_multi: Path) -> None:
    kos = [built_multi / n for n in ("multi_consumer.ko", "multi_crc.ko", "multi_provider.ko")]
    plan = plan_run(kos)
    names = [m.path.name for m in plan.modules]
    assert names.index("multi_provider.ko") < names.index("multi_consumer.ko")
    assert plan.intree == ("crc7",)
    assert "modprobe crc7" in plan.script


def test_plan_rejects_a_non_module(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.ko"
    bogus.write_text("not elf")
    with pytest.raises(KedrError, match="bogus.ko"):
        plan_run([bogus])


def test_parse_command_rejudges_a_saved_run(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from kedr_build.cli import main

    run = tmp_path / "initfail" / "run"
    run.mkdir(parents=True)
    (run / "console.log").write_text((DATA / "initfail.log").read_text())
    (run / "output.log").write_text((DATA / "initfail-output.log").read_text())
    (run / "status.log").write_text("KEDR-STATUS 1\n")
    assert main(["parse", str(run)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("kedr-build: initfail: FAILED: insmod kedr_initfail failed")
    assert main(["parse", str(tmp_path)]) == 1
    assert "not a run directory (no console.log)" in capsys.readouterr().err


@pytest.mark.parametrize("dies_twice", [False, True])
def test_a_kernel_dying_before_the_job_is_booted_once_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies_twice: bool) -> None:
    """The job never ran, so that boot is no result: run_guest boots once more (the
    QEMU boots are stood in for by the recorded IO-APIC boot panic), and only once."""
    from kedr_build.vm import qemu

    boots: list[str] = []

    def boot(kernel: object, job: object, workdir: Path, *rest: object) -> VmResult:
        boots.append((workdir / "console.log").read_text()
                     if (workdir / "console.log").exists() else "")
        (workdir / "console.log").write_text((DATA / "ioapic-boot-panic.log").read_text())
        died = result_from_logs(workdir)
        if len(boots) == 1 or dies_twice:
            return died
        return dataclasses.replace(died, problems=(), job_started=True, status=0)

    monkeypatch.setattr(qemu, "_boot", boot)
    result = qemu.run_guest(None, None, tmp_path)  # type: ignore[arg-type]
    assert len(boots) == 2 and boots[1] == ""          # the first console moved aside
    assert (tmp_path / "console-first-boot.log").read_text().endswith(
        (DATA / "ioapic-boot-panic.log").read_text()[-200:])
    assert (tmp_path / qemu.BOOT_RETRY_LOG).read_text().startswith(
        "the kernel died before the job started (Kernel panic - not syncing: IO-APIC")
    assert result.ok is not dies_twice
    if dies_twice:
        assert result.reason().startswith("VM did not boot: ")
