// SPDX-License-Identifier: GPL-2.0
/* Built only with HELLO_EXTRA=1, which the package's MAKE[0] passes. */
#include <linux/module.h>
MODULE_LICENSE("GPL");
