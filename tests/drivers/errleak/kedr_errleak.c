// SPDX-License-Identifier: GPL-2.0
/*
 * A driver with a leak on an error path, for the faults pack: its init makes two
 * allocations, and when the second (kstrdup) fails it returns -ENOMEM without
 * freeing the first. It passes basic (nothing fails there) and fails the faults
 * pack's sweep at the kstrdup site.
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

static void *buf;
static char *name;

static int __init errleak_init(void)
{
	buf = kzalloc(4096, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	name = kstrdup("kedr_errleak", GFP_KERNEL);
	if (!name)
		return -ENOMEM;		/* the defect: buf is not freed */
	return 0;
}

static void __exit errleak_exit(void)
{
	kfree(name);
	kfree(buf);
}

module_init(errleak_init);
module_exit(errleak_exit);
MODULE_LICENSE("GPL");
