// SPDX-License-Identifier: GPL-2.0
/*
 * A driver for the fault payload's tests. Its init makes three allocations;
 * "mode" picks how its error paths behave when one fails:
 *   correct  - every failure unwinds what was done and init returns -ENOMEM
 *   leaky    - a failed kstrdup() returns without freeing the 8 KiB buffer
 *   deref    - the kstrdup() result is written without a check (oops on failure)
 *   hang     - a failed kstrdup() makes init wait for ever
 *   idle     - init allocates nothing (no fault site reached)
 *   stuck    - init waits for ever, failure or not
 * Writing "COUNT SIZE" to /sys/module/kedr_faulty/parameters/trigger makes
 * COUNT allocations of SIZE bytes from one call site, in the writer's process,
 * frees them, and fails with -ENOMEM when any failed; parameters/pattern then
 * reads one character per allocation: "." succeeded, "F" failed.
 */
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

static char *mode = "correct";
module_param(mode, charp, 0444);

static void *small, *big;
static char *name;
static char pattern[257];

/* Not a tail call: the allocation's return address stays in this function. */
static noinline void *faulty_alloc(size_t size)
{
	void *p = kmalloc(size, GFP_KERNEL);

	if (p)
		memset(p, 0, size);
	return p;
}

static int trigger_set(const char *val, const struct kernel_param *kp)
{
	unsigned int count, size, i;
	bool failed = false;

	if (sscanf(val, "%u %u", &count, &size) != 2 || count >= sizeof(pattern))
		return -EINVAL;
	for (i = 0; i < count; i++) {
		void *p = faulty_alloc(size);

		pattern[i] = p ? '.' : 'F';
		failed |= !p;
		kfree(p);
	}
	pattern[count] = '\0';
	return failed ? -ENOMEM : 0;
}

static const struct kernel_param_ops trigger_ops = { .set = trigger_set };
module_param_cb(trigger, &trigger_ops, NULL, 0200);
module_param_string(pattern, pattern, sizeof(pattern), 0444);

static int __init faulty_init(void)
{
	if (!strcmp(mode, "idle"))
		return 0;
	while (!strcmp(mode, "stuck"))
		msleep(1000);
	small = kmalloc(64, GFP_KERNEL);
	if (!small)
		return -ENOMEM;
	big = kzalloc(8192, GFP_KERNEL);
	if (!big)
		goto free_small;
	name = kstrdup("kedr_faulty", GFP_KERNEL);
	if (!strcmp(mode, "deref"))
		name[0] = 'K';
	if (!name) {
		if (!strcmp(mode, "leaky"))
			return -ENOMEM;		/* forgets big and small */
		while (!strcmp(mode, "hang"))
			msleep(1000);		/* waits for memory that never comes */
		goto free_big;
	}
	return 0;

free_big:
	kfree(big);
free_small:
	kfree(small);
	return -ENOMEM;
}

static void __exit faulty_exit(void)
{
	kfree(name);
	kfree(big);
	kfree(small);
}

module_init(faulty_init);
module_exit(faulty_exit);
MODULE_LICENSE("GPL");
