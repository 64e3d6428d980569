"""The host's fault scenario parser (kedr_build/faults/scenario.py), the fault points
(kedr_build/intercept/faultpoints.py) and the generated hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.faults.errors import FaultsError, NoFaultPoint
from kedr_build.faults.scenario import (MAX_POINTS, Scenario, parse_faults, parse_scenario,
                                        render, resolve)
from kedr_build.intercept import catalog, generate
from kedr_build.intercept.faultpoints import (POINTS_FILE, FaultPoint, fault_capable,
                                              fault_points, load_points)

POINTS = {p.name: p for p in (FaultPoint("kmalloc", ("__kmalloc", "kmalloc_trace"), True, True),
                              FaultPoint("mutex_lock_interruptible",
                                         ("mutex_lock_interruptible",), False, False))}


@pytest.mark.parametrize("text, expected", [
    ("", "never"),
    ("never", "never"),
    ("always", "always"),
    ("nth=3", "nth=3"),
    ("  every=0x10  ", "every=16"),
    ("after=0", "after=0"),
    ("prob=0.25 seed=7", "always prob=0.25 seed=7"),
    ("pid=123 init", "always pid=123 init"),
    ("caller=probe+0x1a nth=1", "nth=1 caller=probe+0x1a"),
    ("caller=probe.constprop.0+0x10-0x40", "always caller=probe.constprop.0+0x10-0x40"),
    ("size>4096 size<8193 gfp=atomic gfp&0x400", "always size>4096 size<8193 gfp=atomic gfp&0x400"),
])
def test_good_scenarios_round_trip(text: str, expected: str) -> None:
    sc = parse_scenario(text)
    assert sc.text() == expected
    assert parse_scenario(sc.text()) == sc


def test_fields() -> None:
    sc = parse_scenario("every=2 pid=5 size>10 prob=1")
    assert sc == Scenario(rule="every", n=2, pid=5, size_above=10, prob="1")
    assert sc.uses_size and not sc.uses_gfp


@pytest.mark.parametrize("text, column, cause", [
    ("nth=0", 1, "out of range"),
    ("nth=x", 1, "not a whole number"),
    ("always nth=2", 8, "a second count rule"),
    ("prob=1.5", 1, "decimal from 0 to 1"),
    ("prob=-0.1", 1, "decimal from 0 to 1"),
    ("prob=.5", 1, "decimal from 0 to 1"),
    ("seed=3", 1, "seed= without prob="),
    ("pid=0", 1, "out of range"),
    ("pid=99999999", 1, "no process can have that pid"),
    ("nth=1 bogus", 7, "unknown term 'bogus'"),
    ("caller=+0x3", 1, "expected caller=FUNCTION"),
    ("caller=f+0x40-0x10", 1, "the offset range is empty"),
    ("gfp=kernel", 1, "atomic or blocking"),
    ("size>=4", 1, "unknown term"),
])
def test_bad_scenarios_name_the_column_and_cause(text: str, column: int, cause: str) -> None:
    with pytest.raises(KedrError) as e:
        parse_scenario(text)
    msg = str(e.value)
    assert f"at column {column}: " in msg and cause in msg and "\n" not in msg


def test_faults_variable() -> None:
    got = parse_faults("kmalloc: nth=2; mutex_lock_interruptible: pid=1 ;", POINTS)
    assert [(p.point, p.scenario.text()) for p in got] == \
        [("kmalloc", "nth=2"), ("mutex_lock_interruptible", "always pid=1")]


@pytest.mark.parametrize("text, column, cause", [
    ("kmallok: nth=2", 1, "unknown fault point 'kmallok'; this driver's: kmalloc, "
                          "mutex_lock_interruptible"),
    ("kmalloc: nth=2; kfree: always", 17, "unknown fault point 'kfree'"),
    ("kmalloc nth=2", 1, "expected 'point: scenario'"),
    ("kmalloc: nth=2; kmalloc: always", 17, "set twice"),
    ("kmalloc: nth=2 prob=7", 16, "decimal from 0 to 1"),
    ("mutex_lock_interruptible: size>3", 1, "no size argument"),
    ("mutex_lock_interruptible: gfp=atomic", 1, "takes no gfp flags"),
])
def test_bad_faults_variable(text: str, column: int, cause: str) -> None:
    with pytest.raises(KedrError) as e:
        parse_faults(text, POINTS)
    msg = str(e.value)
    assert msg.startswith("FAULTS=") and f"at column {column}: " in msg and cause in msg, msg


def test_no_points_says_so() -> None:
    with pytest.raises(KedrError, match="none: the driver calls no function that can fail"):
        parse_faults("kmalloc: always", {})


def test_points_of_the_catalog() -> None:
    entries = catalog.load().entries
    by_name = {e.name: e for e in entries}
    points = {p.name: p for p in fault_points(entries)}
    kmalloc = points["kmalloc"]
    # one point for every exported name the kmalloc API compiles to, 6.1 and 6.12
    assert {"kmalloc_trace", "__kmalloc", "__kmalloc_node", "kmalloc_large",
            "__kmalloc_noprof", "__kmalloc_cache_noprof", "__kmalloc_node_noprof",
            "__kmalloc_node_track_caller"} <= set(kmalloc.functions)
    assert kmalloc.has_size and kmalloc.has_gfp
    assert "kmem_cache_alloc_node" in points["kmem_cache_alloc"].functions
    assert "__kmalloc" in points and points["__kmalloc"].functions == ("__kmalloc",)
    # releases are never failed; functions without a failure value cannot be
    assert not fault_capable(by_name["kfree"]) and not fault_capable(by_name["timer_delete"])
    # A cancel or flush of a work item only releases: failing it skipped the cancel,
    # and the work left queued oopsed e1000e's next load (debian-6.12 sweep).
    assert not any(fault_capable(by_name[n]) for n in (
        "cancel_work_sync", "cancel_work", "flush_work", "cancel_delayed_work_sync",
        "cancel_delayed_work", "flush_delayed_work"))
    assert fault_capable(by_name["alloc_workqueue"]) and fault_capable(by_name["krealloc"])
    assert "mutex_lock" not in points and "kfree" not in points
    assert "mutex_lock_interruptible" in points
    assert not points["kstrdup"].has_size    # its size is known only after the call


def test_generated_module_fails_only_what_can_fail(tmp_path: Path) -> None:
    """The hook before the call, its fault value, and the points the module and the
    host (fault_points.json) agree on; a variadic function decides before va_start."""
    symvers = tmp_path / "Module.symvers"
    symvers.write_text("".join(f"0x{i:08x}\t{name}\tvmlinux\tEXPORT_SYMBOL\t\n" for i, name in
                               enumerate(["kfree", "kmalloc_trace", "__kmalloc", "kasprintf",
                                          "mutex_lock_interruptible"], 1)))
    pairs = [("kfree", "Kfree"), ("kmalloc_trace", "Kmalloc_trace"), ("__kmalloc", "K_kmalloc"),
             ("kasprintf", "Kasprintf"), ("mutex_lock_interruptible", "Kmutex_lock_interruptible")]
    module = generate.generate(pairs, catalog.load(), symvers, tmp_path / "out", "kedr_repl_t")
    c = module.source.read_text()
    points = load_points(tmp_path / "out" / POINTS_FILE)
    assert list(points) == ["kasprintf", "kmalloc", "mutex_lock_interruptible", "kmalloc_trace",
                            "__kmalloc"]
    assert points["kmalloc"].family and not points["__kmalloc"].family
    assert points["kmalloc"].functions == ("kmalloc_trace", "__kmalloc")
    for name in points:
        assert f'\t"{name}",\n' in c
    assert "kedr_fault(&kedr_fn_kfree" not in c
    assert ("kedr_fault(&kedr_fn_kmalloc_trace, true, (size_t)(size), true, "
            "(__force unsigned long)flags, kedr_ip)") in c
    assert "kedr_fault(&kedr_fn_mutex_lock_interruptible, false, 0, false, 0, kedr_ip)" in c
    assert c.count("kedr_ret = -EINTR;\n\t\tgoto kedr_faulted;") == 1
    variadic = c[c.index("/* kedr-entry: kasprintf"):]
    assert variadic.index("kedr_fault(&kedr_fn_kasprintf") < variadic.index("va_start(")
    assert "{ -1, -1 },\t/* kfree */" in c and "{ 3, 1 },\t/* kmalloc_trace */" in c


# --- what the kernel would refuse, refused on the host with one line -------------------

@pytest.mark.parametrize("text, column, cause", [
    ("pid=1 pid=2", 7, "pid= given twice"),
    ("init nth=2 init", 12, "init given twice"),
    ("size>1 size>2", 8, "size> given twice"),
    ("prob=0.5 seed=1 prob=0.25", 17, "prob= given twice"),
    ("prob=0.1234567890123456789", 1, "at most 18 digits after the point"),
    ("prob=1.0000001", 1, "decimal from 0 to 1"),
    ("prob=18446744073709551617", 1, "decimal from 0 to 1"),
    ("prob=1e-30", 1, "decimal from 0 to 1"),
    ("prob=01", 1, "decimal from 0 to 1"),
    ("prob=1.", 1, "decimal from 0 to 1"),
    ("nth=010", 1, "not a whole number"),       # the kernel would read octal 8
    ("caller=f+010", 1, "expected caller=FUNCTION"),
    ("caller=" + "f" * 185, 1, "longer than 191 characters"),
    # 181 characters as written, 194 as the kernel reads it ("always ", decimal sizes)
    ("caller=" + "f" * 120 + " size>0x" + "f" * 16 + " size<0x" + "f" * 16 + " init gfp&0x1",
     1, "as the kernel reads it"),
])
def test_what_the_kernel_refuses_is_refused_here(text: str, column: int, cause: str) -> None:
    with pytest.raises(FaultsError) as e:
        parse_scenario(text)
    msg = str(e.value)
    assert f"at column {column}: " in msg and cause in msg and "\n" not in msg, msg


@pytest.mark.parametrize("prob", ["0", "1", "1.0", "1.000000000000000000", "0.9999999999",
                                  "0.000000000000000001", "0.123456789012345678"])
def test_probability_edges_are_kept_as_written(prob: str) -> None:
    assert parse_scenario(f"prob={prob}").text() == f"always prob={prob}"


def test_a_huge_value_is_quoted_by_an_excerpt() -> None:
    for text in ("kmalloc: " + "a" * 100_000, "k" * 100_000 + ": always",
                 "kmalloc: always;" * 10_000, "kmalloc: nth=1 " + "x" * 100_000):
        with pytest.raises(FaultsError) as e:
            parse_faults(text)
        msg = str(e.value)
        assert len(msg) < 300 and "\n" not in msg and "characters)" in msg, msg[:400]


def test_many_points_are_refused_with_the_bound() -> None:
    text = "; ".join(f"p{i}: always" for i in range(MAX_POINTS + 1))
    with pytest.raises(FaultsError, match=f"more than {MAX_POINTS} fault points"):
        parse_faults(text)


def test_resolve_renders_the_kernel_text_once() -> None:
    scenarios = parse_faults("kmalloc: every=0x10 size>4096; mutex_lock_interruptible: init")
    assert resolve(scenarios, POINTS) == {"kmalloc": "every=16 size>4096",
                                          "mutex_lock_interruptible": "always init"}
    assert render(scenarios) == "kmalloc: every=16 size>4096; mutex_lock_interruptible: always init"
    assert parse_faults(render(scenarios)) == scenarios
    with pytest.raises(FaultsError, match=r"^FAULTS: kstrdup: unknown fault point 'kstrdup'"):
        resolve(parse_faults("kstrdup: always"), POINTS)
    with pytest.raises(FaultsError, match="no size argument"):
        resolve(parse_faults("mutex_lock_interruptible: size<3"), POINTS)


def test_every_faults_error_is_typed() -> None:
    """Callers (the SCons tool, the packs) tell FAULTS errors by type, not by text."""
    for bad in ("kmalloc", "kmalloc: nth=0", "kmalloc: always; kmalloc: never"):
        with pytest.raises(FaultsError):
            parse_faults(bad)
    assert issubclass(FaultsError, KedrError) and issubclass(NoFaultPoint, KedrError)
