// SPDX-License-Identifier: GPL-2.0
/* A small module importing allocator and lock functions: the patch tests' subject. */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/mutex.h>
#include <linux/uaccess.h>

static DEFINE_MUTEX(h_lock);
static void *h_buf;
int h_size = 100;
module_param(h_size, int, 0444);

noinline void *h_alloc(size_t n)
{
	return __kmalloc(n, GFP_KERNEL);
}

static int __init h_init(void)
{
	void *p = kmalloc(64, GFP_KERNEL);

	mutex_lock(&h_lock);
	h_buf = h_alloc(h_size);
	mutex_unlock(&h_lock);
	kfree(p);
	return h_buf ? 0 : -ENOMEM;
}

static void __exit h_exit(void)
{
	mutex_lock(&h_lock);
	kfree(h_buf);
	mutex_unlock(&h_lock);
}

module_init(h_init);
module_exit(h_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test subject");
