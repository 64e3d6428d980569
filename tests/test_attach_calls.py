"""bench/attach_calls.py on a recorded guest run (debian-6.1, tests/data/attach/): the
calls cold patching and hot patching (a) each saw, read per phase and per site, and
every difference explained from the .ko's relocations or reported as unexplained.
The .ko files are real: the pinned kernel's loop, and bench/drivers/kedr_reach_run
built as shipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel

sys.path.insert(0, str(REPO / "bench"))
import attach_calls  # noqa: E402

LOG = Path(__file__).resolve().parent / "data" / "attach" / "calls-debian-6.1.log"
RELEASE = "6.1.0-56-amd64"


def _target(module: str) -> attach_calls.Target:
    return next(t for t in attach_calls.TARGETS if t.module == module)


def _calls(module: str, ko: Path, output: str) -> attach_calls.ModuleCalls:
    uses = attach_calls.uses_of(ko)
    r = attach_calls.ModuleCalls(target=_target(module), uses=uses,
                                 site_kinds=attach_calls.site_kinds(ko, set(uses)))
    attach_calls.parse(output, r)
    return r


@pytest.fixture(scope="module")
def loop_ko(pinned_kernel: ProvisionedKernel) -> Path:
    assert pinned_kernel.release == RELEASE and pinned_kernel.modules_dir is not None
    return next(pinned_kernel.modules_dir.glob("kernel/**/loop.ko*"))


@pytest.fixture(scope="module")
def reach_ko(pinned_kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("reach_run") / "kedr_reach_run"
    shutil.copytree(REPO / "bench" / "drivers" / "kedr_reach_run", src)
    subprocess.run(["make", "-C", str(pinned_kernel.kdir), f"M={src}", "modules"], check=True,
                   capture_output=True)
    return src / "kedr_reach_run.ko"


def test_loop_cold_and_hot_saw_the_same_window_tail_jumps_included(loop_ko: Path) -> None:
    r = _calls("loop", loop_ko, LOG.read_text())
    c = r.cold
    # The whole run is the sum of its phases; init's calls are cold's only.
    assert sum((c[p] for p in attach_calls.COLD_PHASES), Counter()) == c["whole"]
    assert c["load"]["kmalloc_trace"] == 8 and c["load"]["misc_register"] == 1
    assert c["unload"]["timer_delete_sync"] == 8 and c["unload"]["misc_deregister"] == 1
    assert c["run1"]["alloc_workqueue"] == 1 and not c["run2"]["alloc_workqueue"]
    assert +c["run2"] == +r.hot and sum(r.hot.values()) == 48
    assert r.by_site == {"cold": Counter(call=44, jmp=4), "hot": Counter(call=44, jmp=4)}
    assert set(r.workload_rc.values()) == {"0"} and len(r.workload_rc) == 6
    assert "| 7 of 7 |" in attach_calls.table({"debian-6.1": (RELEASE, [r])})

    # A count the classification cannot explain is flagged, never passed off.
    r.hot["mutex_lock"] += 1
    assert attach_calls.why(r, "mutex_lock") == ("UNEXPLAINED", False)
    text = attach_calls.table({"debian-6.1": (RELEASE, [r])})
    assert "| `mutex_lock` | 5 | 6 | 9 call, 1 exit call | UNEXPLAINED |" in text


def test_a_taken_address_is_the_difference_and_explained(reach_ko: Path) -> None:
    r = _calls("kedr_reach_run", reach_ko, LOG.read_text())
    assert r.uses["kfree"] == Counter({"jmp": 2, "address": 1})
    assert (r.cold["run2"]["kfree"], r.hot["kfree"]) == (9, 6)
    assert r.cold["run2"]["kstrdup"] == r.hot["kstrdup"] == 9
    # r_drop's jump at the jump; r_release's (called through a pointer) at that
    # pointer call, and kfree through its address (cold only): elsewhere.
    assert r.by_site["cold"] == Counter(call=9, jmp=3, unknown=6)
    assert r.by_site["hot"] == Counter(call=9, jmp=3, unknown=3)
    reason, explained = attach_calls.why(r, "kfree")
    assert explained and reason.startswith("not a site hot (a) can probe: 1 address taken")
    # Without the taken address nothing would explain it.
    del r.uses["kfree"]["address"]
    assert attach_calls.why(r, "kfree") == ("UNEXPLAINED", False)


def test_a_truncated_run_and_the_readme_markers_are_one_line(loop_ko: Path,
                                                              tmp_path: Path) -> None:
    cut = LOG.read_text().split("== loop:hot:window\n")[0]
    with pytest.raises(KedrError, match=r"^loop: no counters of the attached window"):
        _calls("loop", loop_ko, cut)
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{attach_calls.BEGIN}\nold\n{attach_calls.END}\nb\n")
    attach_calls.write_readme(readme, "new\n")
    assert readme.read_text() == f"a\n{attach_calls.BEGIN}\nnew\n{attach_calls.END}\nb\n"
    readme.write_text("no markers\n")
    with pytest.raises(KedrError, match="no attach-calls markers"):
        attach_calls.write_readme(readme, "new\n")
    assert readme.read_text() == "no markers\n"


def test_the_readme_table_is_generated_for_both_kernels() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split(attach_calls.BEGIN, 1)[1].split(attach_calls.END, 1)[0]
    assert "Generated by `bench/attach_calls.py`" in section and "UNEXPLAINED" not in section
    for release in (RELEASE, "6.12.117+deb12-amd64"):
        for t in attach_calls.TARGETS:
            assert f"| {release} | {t.label} |" in section, (release, t.label)
