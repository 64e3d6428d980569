// SPDX-License-Identifier: GPL-2.0
/* Built only with VENDOR_EXTRA=1 on make's command line (MAKE_ARGS=). */
#include <linux/module.h>
MODULE_LICENSE("GPL");
