"""The call-trace summary that ``scons … run`` prints, on recorded traces: exact counts,
order, first calls, lost events and unparsed lines (tests/data/trace/chardev.txt is the
trace of the README's main job, saved from a real run)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO
from kedr_build.vm.trace import parse_trace, summary

CHARDEV = (REPO / "tests" / "data" / "trace" / "chardev.txt").read_text()
COUNTS = ["14 intercepted calls",
          "         3  mutex_lock",
          "         3  mutex_unlock",
          "         2  __kmalloc",
          "         2  kfree",
          "         1  _copy_from_user",
          "         1  _copy_to_user",
          "         1  misc_deregister",
          "         1  misc_register"]


def test_chardev_summary_exact() -> None:
    trace = parse_trace(CHARDEV)
    assert (len(trace.events), trace.unparsed, trace.overruns) == (14, 0, 0)
    lines = summary(trace)
    assert lines[:9] == COUNTS
    assert lines[9] == "first 10 calls:"
    assert len(lines) == 10 + 10
    assert lines[10] == ("      2.112784 insmod-97 [1] __kmalloc: call_site=chardev_buffer_init"
                         "+0x2d[kedr_chardev] size=4096 flags=GFP_KERNEL|__GFP_ZERO "
                         "ret=0xffff88801f267000")
    assert lines[17].startswith("      2.137417 cat-99 [0] mutex_lock: call_site="
                                "chardev_buffer_read+0x20[kedr_chardev]")
    # Every call, in order, when "first" covers them all.
    everything = summary(trace, first=100)
    assert everything[9] == "first 14 calls:" and len(everything) == 10 + 14
    assert [ln.split()[3] for ln in everything[10:]] == [
        "__kmalloc:", "misc_register:", "__kmalloc:", "_copy_from_user:", "mutex_lock:",
        "mutex_unlock:", "kfree:", "mutex_lock:", "_copy_to_user:", "mutex_unlock:",
        "mutex_lock:", "mutex_unlock:", "misc_deregister:", "kfree:"]


def test_lost_and_unparsed_are_reported() -> None:
    broken = CHARDEV + "   garbage-line without a timestamp: call_kfree\n"
    stats = "entries: 3\noverrun: 5\ncommit overrun: 0\nentries: 0\noverrun: 2\n"
    lines = summary(parse_trace(broken, stats))
    assert lines[0] == "14 intercepted calls, 7 LOST (ring buffer overrun), 1 unparsed lines"
    assert lines[1:9] == COUNTS[1:]


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
