"""Verdicts computed from what the payloads report (leaks, bad frees)."""
