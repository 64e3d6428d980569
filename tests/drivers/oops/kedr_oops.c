// SPDX-License-Identifier: GPL-2.0
/* Dereferences NULL in init: the kernel oopses, insmod is killed. */
#include <linux/module.h>

static int *volatile nowhere;

static int __init oops_init(void)
{
	pr_info("kedr_oops: about to dereference NULL\n");
	return *nowhere;
}

module_init(oops_init);
MODULE_LICENSE("GPL");
