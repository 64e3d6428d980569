"""TARGET= units (issue 21): the QEMU guest's files stay as they were, a real machine's
part is kept where there is one, and the consent and release checks refuse in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.packs.session import DriverUnderTest, Session
from kedr_build.targets.spec import (LabgridTarget, QemuTarget, SshTarget, check_consent,
                                     parse_target)
from kedr_build.vm.qemu import Verdict
from kedr_build.vm.runner import RunReport


def _report(**kw: object) -> RunReport:
    return RunReport(verdict=Verdict.PASSED, reason="", steps=(), driver_log=(),
                     workload_output="", problems=(), elapsed=1.0, logs=Path("/x"),
                     **kw)  # type: ignore[arg-type]


def test_the_vm_result_json_has_no_target_part() -> None:
    # TARGET=qemu's result.json has the keys it had before real machines (byte for byte).
    assert not {"target", "taint_before", "left_as_found"} & set(json.loads(_report().to_json()))
    real = json.loads(_report(target="ssh://root@lab", taint_before=0,
                              left_as_found="left behind: module kedr_x").to_json())
    assert (real["target"], real["taint_before"], real["left_as_found"]) == (
        "ssh://root@lab", 0, "left behind: module kedr_x")


def test_session_keeps_the_target_and_the_vm_session_is_unchanged(tmp_path: Path) -> None:
    driver = DriverUnderTest(name="d", modules=("a.ko",), replacement="r", command="c")
    vm = Session(pack="p", kernel="debian-6.1", drivers=(driver,), report_dir="r")
    assert not {"target", "ssh_config"} & set(json.loads(vm.to_json()))
    real = Session(pack="p", kernel="debian-6.1", drivers=(driver,), report_dir="r",
                   target="ssh://root@lab:2222", ssh_config="/c")
    (tmp_path / "s.json").write_text(real.to_json())
    assert Session.read(tmp_path / "s.json") == real
    (tmp_path / "v.json").write_text(vm.to_json())
    assert Session.read(tmp_path / "v.json") == vm


@pytest.mark.parametrize("text, target", [
    ("", QemuTarget()), ("qemu", QemuTarget()),
    ("ssh://lab", SshTarget("lab")),
    ("ssh://me@10.0.0.7:2222", SshTarget("10.0.0.7", "me", 2222)),
    ("ssh://root@[fe80::1]:22", SshTarget("fe80::1")),
])
def test_parse_target(text: str, target: object) -> None:
    assert parse_target(text) == target
    assert not parse_target("qemu").real and parse_target("ssh://lab").real


def test_consent_is_asked_on_a_real_machine_only() -> None:
    check_consent(QemuTarget(), "sweep", "")
    check_consent(SshTarget("lab"), "sweep", "1")
    with pytest.raises(KedrError, match=r"^TARGET=ssh://root@lab: sweep fails the driver's "
                                        r"kernel calls on purpose .* I_KNOW_THIS_MAY_CRASH=1"):
        check_consent(SshTarget("lab"), "sweep", "yes")


@pytest.mark.parametrize("places, worker, chosen", [
    ("lab-a", "", "lab-a"), ("lab-a,lab-b", "gw1", "lab-b"), ("lab-a,lab-b", "", "lab-a"),
    ("lab-a,lab-b", "gw0", "lab-a"),
])
def test_each_worker_takes_its_place(places: str, worker: str, chosen: str,
                                     tmp_path: Path) -> None:
    from kedr_build.targets.places import place_of_worker

    env = tmp_path / "lab.yaml"
    env.write_text("targets: {}\n")
    target = parse_target(f"labgrid:{env}:{places}")
    assert isinstance(target, LabgridTarget) and target == LabgridTarget(env, places)
    assert place_of_worker(target, worker) == LabgridTarget(env, chosen)


def test_an_enclosing_xdist_worker_is_not_the_sessions(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``scons run``/``check`` started from a test in someone's xdist worker gw1 inherits
    PYTEST_XDIST_WORKER=gw1: with one place it must still take that place (CI's -n 2
    run of test_target_labgrid_places_vm failed: "worker gw1 has no place of its
    own"). Only the pack session's own worker (its plugin's KEDR_PACK_WORKER) counts."""
    from kedr_build.packs.check import _XDIST_ENV
    from kedr_build.targets.places import WORKER_ENV, place_of_worker

    (tmp_path / "lab.yaml").write_text("targets: {}\n")
    target = parse_target(f"labgrid:{tmp_path / 'lab.yaml'}:lab-a")
    assert isinstance(target, LabgridTarget)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.delenv(WORKER_ENV, raising=False)
    assert place_of_worker(target) == LabgridTarget(tmp_path / "lab.yaml", "lab-a")
    monkeypatch.setenv(WORKER_ENV, "gw1")
    two = parse_target(f"labgrid:{tmp_path / 'lab.yaml'}:lab-a,lab-b")
    assert isinstance(two, LabgridTarget)
    assert place_of_worker(two) == LabgridTarget(tmp_path / "lab.yaml", "lab-b")
    # A session's pytest inherits neither.
    assert {"PYTEST_XDIST_WORKER", WORKER_ENV} <= set(_XDIST_ENV)


def test_a_worker_beyond_the_places_is_one_line(tmp_path: Path) -> None:
    from kedr_build.targets.places import place_of_worker

    (tmp_path / "lab.yaml").write_text("targets: {}\n")
    target = parse_target(f"labgrid:{tmp_path / 'lab.yaml'}:lab-a,lab-b")
    assert isinstance(target, LabgridTarget)
    with pytest.raises(KedrError, match=r": worker gw2 has no place of its own "
                                        r"\(2 places: lab-a, lab-b\)$"):
        place_of_worker(target, "gw2")


@pytest.mark.parametrize("bad", ["lab a", "lab-a,", ",lab-a", "lab:a", "lab/a"])
def test_bad_place_names(bad: str, tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text("targets: {}\n")
    with pytest.raises(KedrError, match=r"is not a labgrid place name \(or a comma list"):
        parse_target(f"labgrid:{tmp_path / 'lab.yaml'}:{bad}")


@pytest.mark.parametrize("resources, expected", [
    (None, {"RemotePlace": {"name": "lab-b"}}),
    ({"RemotePlace": {"name": "x"}, "NetworkService": {"address": "a"}},
     {"RemotePlace": {"name": "lab-b"}, "NetworkService": {"address": "a"}}),
    ([{"RemotePlace": {"name": "x"}}, {"NetworkService": {"address": "a"}}],
     [{"NetworkService": {"address": "a"}}, {"RemotePlace": {"name": "lab-b"}}]),
])
def test_the_target_gets_the_place(resources: object, expected: object) -> None:
    from kedr_build.targets.labgrid import _with_place

    role: dict[str, object] = {"drivers": {}} if resources is None else {
        "drivers": {}, "resources": resources}
    _with_place(role, "lab-b")
    assert role["resources"] == expected
