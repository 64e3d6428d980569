// SPDX-License-Identifier: GPL-2.0
/* Loads fine but WARNs: a run must still fail. */
#include <linux/module.h>

static int __init warn_init(void)
{
	WARN(1, "kedr_warn: deliberate warning\n");
	return 0;
}

static void __exit warn_exit(void)
{
}

module_init(warn_init);
module_exit(warn_exit);
MODULE_LICENSE("GPL");
