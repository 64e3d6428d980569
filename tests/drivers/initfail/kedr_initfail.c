// SPDX-License-Identifier: GPL-2.0
/* Refuses to load, and says why. */
#include <linux/module.h>

static int __init initfail_init(void)
{
	pr_err("kedr_initfail: no such device here\n");
	return -ENODEV;
}

module_init(initfail_init);
MODULE_LICENSE("GPL");
