// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/slab.h>

/* Allocates a tagged object for other modules. */
void *multi_provider_get(size_t size)
{
	return kzalloc(size, GFP_KERNEL);
}
EXPORT_SYMBOL_GPL(multi_provider_get);

static int __init provider_init(void)
{
	pr_info("multi_provider: loaded\n");
	return 0;
}

static void __exit provider_exit(void)
{
	pr_info("multi_provider: unloaded\n");
}

module_init(provider_init);
module_exit(provider_exit);
MODULE_LICENSE("GPL");
