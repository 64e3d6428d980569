"""Fault simulation on the host side: scenarios, the systematic sweep, random campaigns."""
