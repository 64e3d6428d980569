// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/slab.h>

void *multi_provider_get(size_t size);

static void *obj;

static int __init consumer_init(void)
{
	obj = multi_provider_get(64);
	if (!obj)
		return -ENOMEM;
	pr_info("multi_consumer: got an object from multi_provider\n");
	return 0;
}

static void __exit consumer_exit(void)
{
	kfree(obj);
	pr_info("multi_consumer: unloaded\n");
}

module_init(consumer_init);
module_exit(consumer_exit);
MODULE_LICENSE("GPL");
