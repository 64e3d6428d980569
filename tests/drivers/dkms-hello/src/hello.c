// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/slab.h>
#include "version.h"

static char *greeting;

static int __init hello_init(void)
{
	greeting = kasprintf(GFP_KERNEL, "dkms-hello %s", HELLO_VERSION);
	return greeting ? 0 : -ENOMEM;
}

static void __exit hello_exit(void)
{
	kfree(greeting);
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
