// SPDX-License-Identifier: GPL-2.0
/* Does not compile: kbuild's error must reach the user verbatim. */
#include <linux/module.h>

static int __init broken_init(void)
{
	return this_identifier_does_not_exist;
}

module_init(broken_init);
MODULE_LICENSE("GPL");
