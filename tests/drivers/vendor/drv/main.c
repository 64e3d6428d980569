// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/slab.h>
#include "vendor.h"

static void *buf;

static int __init vdrv_init(void)
{
	buf = kmalloc(vendor_add(VENDOR_MAGIC, VENDOR_M_INCLUDE), GFP_KERNEL);
	return buf ? 0 : -ENOMEM;
}

static void __exit vdrv_exit(void)
{
	kfree(buf);
}

module_init(vdrv_init);
module_exit(vdrv_exit);
MODULE_LICENSE("GPL");
