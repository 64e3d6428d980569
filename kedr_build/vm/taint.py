"""The kernel's taint flags (/proc/sys/kernel/tainted), as the checks judge them."""

from __future__ import annotations

# Taint flags a patched out-of-tree driver always sets (include/linux/panic.h,
# Documentation/admin-guide/tainted-kernels.rst): O = TAINT_OOT_MODULE (bit 12),
# E = TAINT_UNSIGNED_MODULE (bit 13). Any other flag is a finding.
ALLOWED_TAINT = (1 << 12) | (1 << 13)
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"


def taint_letters(value: int) -> str:
    return "".join(c for i, c in enumerate(TAINT_LETTERS) if value >> i & 1)
