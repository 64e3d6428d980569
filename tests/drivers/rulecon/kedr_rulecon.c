// SPDX-License-Identifier: GPL-2.0
/*
 * A console driver that breaks the rule "sleep-in-atomic" in its write(): the
 * kernel calls a console's write() with interrupts off (printk's
 * console_emit_next_record(), printk_safe_enter_irqsave()), and this one
 * allocates with GFP_KERNEL there. Every printk then reaches the rules
 * payload from inside printk, on the printing CPU: the payload must not print
 * while it holds its own lock (kedr_rules.c, kedr_violations_lock), or the
 * write() called from that printk spins on the lock its CPU holds.
 *
 * init registers the console and then breaks the rule itself, at a call site
 * of its own (a new violation: printed), from @threads kernel threads on every
 * CPU, each at @sites call sites, while the console is registered; exit
 * unregisters it.
 */
#include <linux/completion.h>
#include <linux/console.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/spinlock.h>

static unsigned long writes;

static void rulecon_write(struct console *con, const char *s, unsigned int n)
{
	/* Interrupts are off here: a GFP_KERNEL allocation breaks the rule. */
	kfree(kmalloc(16, GFP_KERNEL));
	writes++;
}

static struct console rulecon = {
	.name = "kedrrc",
	.write = rulecon_write,
	.flags = CON_ENABLED,
	.index = -1,
};

static DEFINE_SPINLOCK(rulecon_lock);

/* Each a call site of its own: each first call is a new violation, printed. */
#define RULECON_SITE(n)							\
static noinline void rulecon_site##n(void)				\
{									\
	spin_lock(&rulecon_lock);					\
	kfree(kmalloc(32 + n, GFP_KERNEL));				\
	spin_unlock(&rulecon_lock);					\
}
RULECON_SITE(0) RULECON_SITE(1) RULECON_SITE(2) RULECON_SITE(3)
RULECON_SITE(4) RULECON_SITE(5) RULECON_SITE(6) RULECON_SITE(7)

static void (*const rulecon_sites[])(void) = {
	rulecon_site0, rulecon_site1, rulecon_site2, rulecon_site3,
	rulecon_site4, rulecon_site5, rulecon_site6, rulecon_site7,
};

static int threads = 4;
module_param(threads, int, 0444);
static atomic_t running;
static DECLARE_COMPLETION(done);

static int rulecon_thread(void *arg)
{
	unsigned long k = (unsigned long)arg;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(rulecon_sites); i++)
		rulecon_sites[(i + k) % ARRAY_SIZE(rulecon_sites)]();
	if (atomic_dec_and_test(&running))
		complete(&done);
	return 0;
}

static int __init rulecon_init(void)
{
	unsigned long k;

	register_console(&rulecon);
	atomic_set(&running, threads);
	for (k = 0; k < threads; k++) {
		struct task_struct *t = kthread_run(rulecon_thread, (void *)k, "kedr_rulecon/%lu", k);

		if (IS_ERR(t) && atomic_dec_and_test(&running))
			complete(&done);
	}
	if (threads > 0)
		wait_for_completion(&done);
	pr_info("kedr_rulecon: %d threads done, %lu console writes\n", threads, writes);
	return 0;
}

static void __exit rulecon_exit(void)
{
	unregister_console(&rulecon);
}

module_init(rulecon_init);
module_exit(rulecon_exit);
MODULE_LICENSE("GPL");
