// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_tailcall: calls to kernel functions that gcc -O2 turns into jumps
 * (sibling calls), for the tail-call VM test. Each such call is the last thing
 * its function does, so without -fno-optimize-sibling-calls the compiler emits
 * "jmp kfree" (opcode e9) instead of "call kfree" (e8) and the replacement sees
 * the return address of the driver's caller:
 *
 *   tc_alloc   returns kmalloc(): a jump to the allocator; its caller is tc_init
 *   tc_drop    kfree() as its last call, from init
 *   tc_exit    kfree() of the object as the module's last act: its caller is
 *              the kernel's delete_module
 *
 * Parameter "leak=1": exit keeps the object (one leak, allocated in tc_alloc).
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

static bool leak;
module_param(leak, bool, 0444);

static void *obj;

static noinline void *tc_alloc(size_t size)
{
	return kmalloc(size, GFP_KERNEL);
}

static noinline void tc_drop(void *p)
{
	kfree(p);
}

static int __init tc_init(void)
{
	char *name = kstrdup("kedr_tailcall", GFP_KERNEL);

	if (!name)
		return -ENOMEM;
	tc_drop(name);
	obj = tc_alloc(200);
	return obj ? 0 : -ENOMEM;
}

static void __exit tc_exit(void)
{
	if (leak)
		return;
	kfree(obj);
}

module_init(tc_init);
module_exit(tc_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: kernel calls made as tail calls");
