"""Judging fault trials from a boot's saved logs (kedr_build/faults/trials.py).

tests/data/faults/deref-sweep-*.log: the first boot of a real sweep of
tests/drivers/faulty mode=deref (debian-6.1): discovery, two sites failed
cleanly, the third oopsed (insmod killed, kernel tainted) and the guest stopped.
"""

from __future__ import annotations

from pathlib import Path

from kedr_build.faults.trials import (Outcome, Site, Trial, console_of_trial, records_from_logs,
                                      site_trial, sites_from_logs)

DATA = Path(__file__).resolve().parent / "data" / "faults"
OUTPUT = (DATA / "deref-sweep-output.log").read_text().replace("\r\n", "\n")
CONSOLE = (DATA / "deref-sweep-console.log").read_text()


def test_sites_of_a_discovery_boot() -> None:
    sites = sites_from_logs(OUTPUT)
    assert [(s.phase, s.function, s.point) for s in sites] == [
        ("init", "kmalloc_trace", "kmalloc"), ("init", "kmalloc_trace", "kmalloc"),
        ("init", "kstrdup", "kstrdup"), ("workload", "__kmalloc", "kmalloc")]
    assert sites[3].caller == "faulty_alloc+0x13"


def test_records_of_a_boot_that_oopsed() -> None:
    records = records_from_logs(OUTPUT, CONSOLE, total=4, target="kedr_faulty")
    assert [r.outcome for r in records] == [Outcome.CLEAN, Outcome.CLEAN, Outcome.CRASH]
    assert [r.init_status for r in records] == [12, 12, 137]
    crash = records[2]
    assert crash.verdict.startswith("insmod killed, 2 leaks (8256 bytes), 0 bad frees, crash: ")
    assert crash.findings[-1] == ("BUG: kernel NULL pointer dereference, address: "
                                  "0000000000000000")
    assert records[0].verdict == "init failed (error 12)"


def test_problems_are_those_of_their_trial() -> None:
    assert "NULL pointer dereference" in console_of_trial(CONSOLE, 3)
    assert "NULL pointer dereference" not in console_of_trial(CONSOLE, 2)
    assert records_from_logs(OUTPUT, CONSOLE, total=2, target="kedr_faulty")[-1].index == 2


def test_truncated_output_gives_what_was_reported() -> None:
    cut = OUTPUT[: OUTPUT.index("KEDR-TRIAL 2")]
    assert [r.index for r in records_from_logs(cut, "", 4, "kedr_faulty")] == [1]


def test_trial_lines_match_what_the_guest_makes_of_its_sites() -> None:
    site = Site("init", "kstrdup", "kstrdup", "faulty_init+0x82")
    # guest-faults.sh.j2's awk: NR "|" fn " " caller "|" fn ":caller=" caller " nth=1"
    assert site_trial(site).line(3) == \
        "3|kstrdup faulty_init+0x82|kstrdup:caller=faulty_init+0x82 nth=1"
    assert Trial("seed=4", (("kmalloc", "prob=0.5 seed=4"), ("kstrdup", "prob=0.5 seed=4"))
                 ).line(1) == "1|seed=4|kmalloc:prob=0.5 seed=4|kstrdup:prob=0.5 seed=4"
