"""Emulated hardware for the VM: the device catalog (catalog.toml), how a run attaches
devices (attach.py) and what bound to them in the guest (binding.py)."""
