"""tools/support_table.py: the README's kernel x feature table comes from a JUnit
XML of a test run (here a real pytest run of a tiny parametrised test file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import support_table  # noqa: E402


def test_table_from_a_real_junit_run(tmp_path: Path) -> None:
    # A run in which the trace tests pass on 6.1 and one fails on 6.12.
    (tmp_path / "test_trace_vm.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('kernel', ['debian-6.1', 'debian-6.12'])\n"
        "def test_a(kernel):\n    pass\n"
        "@pytest.mark.parametrize('kernel', ['debian-6.1', 'debian-6.12'])\n"
        "def test_b(kernel):\n    assert kernel == 'debian-6.1'\n")
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={junit}", str(tmp_path / "test_trace_vm.py")],
                   cwd=tmp_path, capture_output=True)
    results = support_table.read_junit(junit)
    assert sorted((r.test, r.params, r.passed) for r in results) == [
        ("test_trace_vm.py::test_a", "debian-6.1", True),
        ("test_trace_vm.py::test_a", "debian-6.12", True),
        ("test_trace_vm.py::test_b", "debian-6.1", True),
        ("test_trace_vm.py::test_b", "debian-6.12", False)]
    text = support_table.table(results, ["debian-6.1", "debian-6.12"])
    row = next(ln for ln in text.splitlines() if ln.startswith("| call tracing"))
    assert row.endswith("| yes (2/2) | **FAILS** (1/2) |")
    assert "| provisioning: image, modules, headers agree; modprobe deps | not run | not run |" \
        in text
    # --write puts the table between the markers, all or nothing; no markers: one line.
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{support_table.BEGIN}\nold\n{support_table.END}\nb\n")
    assert support_table.main([str(junit), "--write", str(readme)]) == 0
    written = readme.read_text()
    assert written.startswith(f"a\n{support_table.BEGIN}\n| feature |"), written
    assert written.endswith(f" |\n{support_table.END}\nb\n") and "old" not in written
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="^support_table: .*README.md: no support-table markers"):
        support_table.main([str(junit), "--write", str(readme)])
    assert readme.read_text() == "no markers\n"


def test_kernel_words_do_not_match_inside_longer_names() -> None:
    r = support_table.Result("test_vm.py::test_x", "debian-6.12-warn-WARNING: CPU", True)
    assert support_table.kernels_of(r, ["debian-6.1", "debian-6.12"]) == ["debian-6.12"]
    both = support_table.Result("test_intercept_vm.py::test_y", "debian-6.1-debian-6.12", True)
    assert support_table.kernels_of(both, ["debian-6.1", "debian-6.12"]) == \
        ["debian-6.1", "debian-6.12"]


def test_readme_has_the_markers_and_a_generated_table() -> None:
    text = (REPO / "README.md").read_text()
    body = text.split(support_table.BEGIN, 1)[1].split(support_table.END, 1)[0]
    assert body.strip().startswith("| feature | debian-6.1 | debian-6.12 |")
