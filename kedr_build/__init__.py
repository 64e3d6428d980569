"""kedr-build: cold-patch the imports of out-of-tree Linux kernel modules.

The pipeline, one folder per stage: ``kernel/`` (what we build against; kbuild
builds the driver) -> ``ko/`` (read its imports, plan the renames, patch and
verify the .ko) -> ``intercept/`` (catalog, generated replacement module, load
scripts) -> ``vm/`` (run it in QEMU, parse the console and trace, report).
Imports only go down the layers errors < atomic, resources < ko < kernel <
intercept < vm < config < cli (tests/test_layout.py checks it): ``ko/`` knows
only the file format, so it sits below ``kernel/``, which names modules with it.
"""
