"""kedr-build: cold-patch the imports of out-of-tree Linux kernel modules.

Pipeline, one module per step: kbuild (build) -> inspect (.ko imports) -> plan
(rename) -> generate (replacement module) -> patch (.ko) -> loadscript -> vm (run)
-> report.
"""
