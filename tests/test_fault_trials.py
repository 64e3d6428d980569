"""Judging fault trials from a boot's saved logs (kedr_build/faults/trials.py).

tests/data/faults/deref-sweep-*.log: the first boot of a real sweep of
tests/drivers/faulty mode=deref (debian-6.1): discovery, two sites failed
cleanly, the third oopsed (insmod killed, kernel tainted) and the guest stopped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from kedr_build.faults.trials import (CALLER_SLOT, Outcome, Site, Trial, console_of_trial,
                                      records_from_logs, site_scenario, site_trial,
                                      sites_from_logs)
from kedr_build.resources import template_env
from kedr_build.vm import packed

DATA = Path(__file__).resolve().parent / "data" / "faults"
OUTPUT = (DATA / "deref-sweep-output.log").read_text().replace("\r\n", "\n")
CONSOLE = (DATA / "deref-sweep-console.log").read_text()
MARKS = {"sites_begin": "B", "sites_end": "E", "progress": "P", "discovery": "D",
         "packed_begin": packed.BEGIN, "packed_end": packed.END}


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
    """The guest's discovery (guest-faults.sh.j2's awk, run here) writes the trial line
    the host would write for the same site: one scenario text, from site_scenario()."""
    sites = [Site("init", "kstrdup", "kstrdup", "faulty_init+0x82"),
             Site("workload", "__kmalloc", "kmalloc", "faulty_alloc+0x13")]
    script = template_env().get_template("guest-faults.sh.j2").render(
        repl="r", target="t", module_args="", workload=False, trials=[], start=1,
        discover=True, needed=[], site_scenario=site_scenario(CALLER_SLOT),
        caller_slot=CALLER_SLOT, taint_mask=1, heartbeat=1, root="/kedr", scratch="/tmp",
        stop=None,
        marks=MARKS)
    awk = next(ln for ln in script.splitlines() if ln.startswith("awk -v s="))
    found = "".join(f"{s.phase} {s.function} {s.point} {s.caller}\n" for s in sites)
    out = subprocess.run(["sh", "-c", awk.replace(" $S/found > $S/trials", "")],
                         input=found, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [site_trial(s).line(i) for i, s in enumerate(sites, 1)]
    assert out.splitlines()[0] == "1|kstrdup faulty_init+0x82|kstrdup:nth=1 caller=faulty_init+0x82"
    assert Trial("seed=4", (("kmalloc", "prob=0.5 seed=4"), ("kstrdup", "prob=0.5 seed=4"))
                 ).line(1) == "1|seed=4|kmalloc:prob=0.5 seed=4|kstrdup:prob=0.5 seed=4"


def test_a_boot_tainted_before_its_first_trial_is_not_the_trials_doing() -> None:
    """A soft lockup while the boot crawled on a loaded host (taint L, 16384, before the
    target was ever loaded) once made the next trial a "crash" (e1000 on debian-6.12,
    vzalloc_noprof at e1000_setup_all_tx_resources+0x86: a clean unwind). The trial is
    judged by the bits it added; a WARN of its own still makes it a crash."""
    out = ("KEDR-LEAKS 1\nKEDR-LEAKS-END 1\n"
           "KEDR-TRIAL 1 init=0 workload=1 unload=0 repl_unload=0 injected=1 "
           "taint=20480 boot_taint=20480\n"
           "KEDR-LEAKS 2\nKEDR-LEAKS-END 2\n"
           "KEDR-TRIAL 2 init=0 workload=1 unload=0 repl_unload=0 injected=1 "
           "taint=20992 boot_taint=20480\n")
    assert [r.outcome for r in records_from_logs(out, "", 2, "e1000")] == [
        Outcome.CLEAN, Outcome.CRASH]


def test_the_guest_stops_only_on_taint_added_since_it_began(tmp_path: Path) -> None:
    """guest-faults.sh.j2's hurt(), run here on a stand-in for /proc/sys/kernel/tainted:
    the boot's own taint (L) does not stop the trials, a WARN (W) added later does."""
    script = template_env().get_template("guest-faults.sh.j2").render(
        repl="r", target="t", module_args="", root="/kedr", scratch="/tmp", stop=None,
        workload=False, trials=[], start=1, discover=False, needed=[], site_scenario=site_scenario(CALLER_SLOT),
        caller_slot=CALLER_SLOT, taint_mask=32 | 128 | 512 | 16384, heartbeat=1,
        marks=MARKS)
    tainted = tmp_path / "tainted"
    lines = [ln.replace("/proc/sys/kernel/tainted", str(tainted))
             for ln in script.splitlines() if ln.startswith(("taint0=", "hurt()"))]
    assert len(lines) == 2, lines
    tainted.write_text("16384\n")                  # L at boot, before any trial
    test = "\n".join(lines) + f"\nhurt && echo hurt1\necho 16896 > {tainted}\nhurt && echo hurt2\n"
    out = subprocess.run(["sh", "-c", test], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["hurt2"]


def test_a_trials_leak_report_crosses_the_serial_port_packed(tmp_path: Path) -> None:
    """guest-faults.sh.j2's leak dump, run here on a stand-in for the debugfs report
    (trial 3 of the deref sweep: two leaks): the guest writes it gzipped in base64, a
    fraction of its size, and the host judges the unpacked output as it judged the
    plain one (leaks, bytes, the trial's outcome)."""
    script = template_env().get_template("guest-faults.sh.j2").render(
        repl="r", target="t", module_args="", root="/kedr", scratch="/tmp", stop=None,
        workload=False, trials=[], start=1, discover=False, needed=[],
        site_scenario=site_scenario(CALLER_SLOT), caller_slot=CALLER_SLOT, taint_mask=1,
        heartbeat=1, marks=MARKS)
    lines = script.splitlines()
    begin = lines.index(next(ln for ln in lines if ln.startswith("if echo | gzip")))
    define = lines[begin:lines.index("fi", begin) + 1]
    dump = [ln.strip() for ln in lines if '"KEDR-LEAKS $k"' in ln]
    assert len(dump) == 1, dump
    report = OUTPUT[OUTPUT.index("KEDR-LEAKS 3\n") + 13:OUTPUT.index("KEDR-LEAKS-END 3")]
    stacks = "".join(f"stack id={1000 + i} frames=1\nframe 0x{0xc0234000 + i:x} "
                     f"0x{0xc0234000 + i:x}\n" for i in range(600))   # e1000's size: 30 KB
    report = report.replace("\nend\n", f"\n{stacks}end\n")
    (tmp_path / "leaks").write_text(report)
    trial = ("KEDR-TRIAL 3 init=137 workload=- unload=- repl_unload=0 injected=1 "
             "taint=0 boot_taint=0")
    run = "\n".join([f"D={tmp_path}", "k=3", *define, *dump, f"echo '{trial}'"])
    out = subprocess.run(["sh", "-c", run], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith(f"KEDR-LEAKS 3\n{packed.BEGIN}\n") and len(out) < len(report) / 3, \
        out[:200]
    plain = f"KEDR-LEAKS 3\n{report}KEDR-LEAKS-END 3\n{trial}\n"
    assert packed.unpack(out) == plain
    (record,) = records_from_logs(packed.unpack(out), "", 3, "kedr_faulty")[-1:]
    assert (record.index, record.leaks, record.leaked_bytes) == (3, 2, 8256)
    assert record.outcome is Outcome.CRASH            # insmod killed, as before
