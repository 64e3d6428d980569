"""The .ko file: ELF reading, compression and signatures, imports, Module.symvers,
the rename plan, patching and verification. Knows the file format, nothing else."""
