"""The call-trace summary that ``scons … run`` prints, on recorded traces: exact counts,
order, first calls, lost events and unparsed lines (tests/data/trace/chardev.txt is the
trace of the README's main job, saved from a real run)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO
from kedr_build.vm.trace import parse_trace, summary

CHARDEV = (REPO / "tests" / "data" / "trace" / "chardev.txt").read_text()
COUNTS = ["12 intercepted calls",
          "         3  mutex_lock",
          "         3  mutex_unlock",
          "         2  __kmalloc",
          "         2  kfree",
          "         1  _copy_from_user",
          "         1  _copy_to_user"]


def test_chardev_summary_exact() -> None:
    trace = parse_trace(CHARDEV)
    assert (len(trace.events), trace.unparsed, trace.overruns) == (12, 0, 0)
    lines = summary(trace)
    assert lines[:7] == COUNTS
    assert lines[7] == "first 10 calls:"
    assert len(lines) == 8 + 10
    assert lines[8] == ("      2.307415 insmod-91 [0] __kmalloc: call_site=chardev_buffer_init"
                        "+0x2d[kedr_chardev] size=4096 flags=GFP_KERNEL|__GFP_ZERO "
                        "ret=0xff3e183d1ffce000")
    assert lines[17].startswith("      2.330141 cat-93 [0] mutex_lock: call_site="
                                "chardev_buffer_read+0x20[kedr_chardev]")
    # Every call, in order, when "first" covers them all.
    everything = summary(trace, first=100)
    assert everything[7] == "first 12 calls:" and len(everything) == 8 + 12
    assert [ln.split()[3] for ln in everything[8:]] == [
        "__kmalloc:", "__kmalloc:", "_copy_from_user:", "mutex_lock:", "mutex_unlock:",
        "kfree:", "mutex_lock:", "_copy_to_user:", "mutex_unlock:", "mutex_lock:",
        "mutex_unlock:", "kfree:"]


def test_lost_and_unparsed_are_reported() -> None:
    broken = CHARDEV + "   garbage-line without a timestamp: call_kfree\n"
    stats = "entries: 3\noverrun: 5\ncommit overrun: 0\nentries: 0\noverrun: 2\n"
    lines = summary(parse_trace(broken, stats))
    assert lines[0] == "12 intercepted calls, 7 LOST (ring buffer overrun), 1 unparsed lines"
    assert lines[1:7] == COUNTS[1:]


def test_other_events_are_not_counted_and_ties_sort_by_name() -> None:
    text = "\n".join([
        "  a-1 [000] ..... 1.000001: call_vfree: call_site=x+0x1[m] addr=0x1",
        "  a-1 [000] ..... 1.000002: sched_switch: prev_comm=a",
        "  a-1 [000] ..... 1.000003: call_kfree: call_site=x+0x2[m] objp=0x2",
        "  a-1 [000] ..... 1.000004: call_vfree: call_site=x+0x3[m] addr=0x3",
        "  a-1 [000] ..... 1.000005: call_kfree: call_site=x+0x4[m] objp=0x4",
        "  a-1 [000] ..... 1.000006: call_bar: call_site=x+0x5[m]"])
    lines = summary(parse_trace(text), first=2)
    assert lines == ["5 intercepted calls",
                     "         2  kfree",
                     "         2  vfree",
                     "         1  bar",
                     "first 2 calls:",
                     "      1.000001 a-1 [0] vfree: call_site=x+0x1[m] addr=0x1",
                     "      1.000003 a-1 [0] kfree: call_site=x+0x2[m] objp=0x2"]
    assert summary(parse_trace("")) == ["0 intercepted calls"]


def test_readme_example_is_the_recorded_summary() -> None:
    """The README shows this summary; it must be what the code prints for that trace."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("--- call trace"):readme.index("first 10 calls:")]
    shown = [re.sub(r"^    ", "", ln) for ln in block.splitlines()[1:] if ln.strip()]
    assert shown == COUNTS
