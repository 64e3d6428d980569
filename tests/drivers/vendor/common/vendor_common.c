// SPDX-License-Identifier: GPL-2.0
/* The vendor's shared module: a sibling directory exports what drv/ uses. */
#include <linux/module.h>
#include "vendor.h"

int vendor_add(int a, int b)
{
	return a + b;
}
EXPORT_SYMBOL_GPL(vendor_add);

MODULE_LICENSE("GPL");
