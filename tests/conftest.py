"""Shared fixtures. The pinned kernel is provisioned on first use (no skipping:
a test that needs it fails if it cannot be had)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedr_build import provision
from kedr_build.kernels import ProvisionedKernel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pinned_kernel() -> ProvisionedKernel:
    return provision.ensure()
