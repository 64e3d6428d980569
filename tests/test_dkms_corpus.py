"""Drop-in on real driver trees: every DKMS package of Debian 12, built by Debian's
own ``dkms build`` and by ``scons DKMS=<source>``, must give the same .ko files -
or fail alike. Debian's outcomes come from the record in tests/data/dkms-oracle.json
(tests/dkms_corpus.py); a SAMPLE of them is rebuilt with dkms each run and must equal
the record. Each package's outcome is recorded in build/test-results/dkms/ for
the README's table (``python bench/dkms_table.py``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import dkms_corpus
from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

RESULTS = REPO / "build" / "test-results" / "dkms"

pytestmark = pytest.mark.dkms


@pytest.fixture(scope="session")
def corpus() -> dict[str, dkms_corpus.Package]:
    return dkms_corpus.provision()


@pytest.mark.parametrize("deb", dkms_corpus.packages())
def test_dkms_package_builds_as_dkms_does(deb: str, corpus: dict[str, dkms_corpus.Package],
                                          pinned_kernel: ProvisionedKernel,
                                          tmp_path: Path, dkms_builds: Path) -> None:
    pkg = corpus[deb]
    oracle = dkms_corpus.dkms_outcome(pkg, pinned_kernel, tmp_path / "dkms")
    build = dkms_builds / deb      # test_dkms_vm.py runs it from there
    start = time.monotonic()
    proc = run_scons([f"DKMS={pkg.source}", f"BUILD_DIR={build}"], check=False)
    seconds = time.monotonic() - start
    out = build / pkg.source.name
    ours = sorted(p.name for p in out.glob("*.ko"))
    renamed = 0
    for manifest in (out / "patched").glob("*.ko.json"):
        renamed += len(json.loads(manifest.read_text())["renames"])
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines()
              if ln.startswith("kedr-build:") and "warning" not in ln]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{deb}.json").write_text(json.dumps({
        "package": deb, "source": pkg.source.name, "kernel": pinned_kernel.release,
        "dkms": {"ok": oracle.ok, "modules": list(oracle.modules),
                 "seconds": round(oracle.seconds, 1)},
        "kedr": {"ok": proc.returncode == 0, "modules": ours, "renamed": renamed,
                 "seconds": round(seconds, 1), "error": errors[-1] if errors else ""},
    }, indent=2) + "\n")
    if oracle.ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
        assert ours == list(oracle.modules)
        assert sorted(p.name for p in (out / "patched").glob("*.ko")) == ours
    else:
        assert proc.returncode != 0, f"dkms failed but kedr-build built:\n{oracle.log}"
        assert errors and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr
        assert not ours, "a failed build must not leave modules that look like results"


@pytest.mark.parametrize("deb", dkms_corpus.SAMPLE)
def test_recorded_dkms_outcome_is_what_dkms_does(deb: str,
                                                 corpus: dict[str, dkms_corpus.Package],
                                                 pinned_kernel: ProvisionedKernel,
                                                 tmp_path: Path) -> None:
    """The oracle the test above compares against is data recorded from Debian's dkms:
    rebuilt live here for a sample (one package dkms builds, one it refuses), it must
    give what the record says (same success, same .ko files)."""
    pkg = corpus[deb]
    key = dkms_corpus.oracle_key(pkg, pinned_kernel, dkms_corpus.dkms_version())
    record = dkms_corpus.recorded()
    assert key in record, (f"{dkms_corpus.ORACLE}: no record for {key} (a newer .deb, "
                           "kernel or dkms): ./kedr-env python tests/dkms_corpus.py record")
    live = dkms_corpus.dkms_build(pkg, pinned_kernel, tmp_path)
    assert (live.ok, live.modules) == (record[key].ok, record[key].modules), live.log[-3000:]
