"""Certification-style test packs: a pack (TOML) lists tests; a pytest plugin runs
each test of each driver as pytest items; reports (JUnit, JSON, HTML) say why."""
