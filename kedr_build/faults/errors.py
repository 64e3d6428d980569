"""The fault package's typed errors: callers tell them apart by type, not by text."""

from __future__ import annotations

from kedr_build.errors import KedrError


class FaultsError(KedrError):
    """A FAULTS= value or a scenario the kernel would refuse: bad input, one line."""


class NoFaultPoint(KedrError):
    """The driver has no fault point (it imports no function that can fail): nothing to
    sweep, nothing to fail at random."""
