// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_ttest: a driver for the replacement module's VM test. Each write to
 * /sys/module/kedr_ttest/parameters/run runs one scenario that calls catalog
 * functions from process context, with a spinlock held, with interrupts off,
 * from a timer (softirq) and from an irq_work (hard IRQ). For every call it
 * logs the trace record the replacement module must produce:
 *
 *   kedr_ttest: expect <function> site=<caller> ctx=<context> key=value...
 *
 * (values formatted the way the trace event prints them).
 */
#include <linux/completion.h>
#include <linux/irq_work.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/timer.h>
#include <linux/vmalloc.h>

/*
 * Which exported function a kmalloc()/vmalloc() call compiles to depends on the
 * kernel; told apart by what the headers declare, never by version number:
 *  - alloc_hooks() (linux/alloc_tag.h, "lib: add allocation tagging support for
 *    memory allocation profiling", v6.10) wraps the allocators, whose exports
 *    become *_noprof;
 *  - kmem_buckets_alloc() ("mm/slab: Introduce kmem_buckets_create() and family",
 *    v6.11) came in the same release that renamed kmalloc_trace_noprof to
 *    __kmalloc_cache_noprof (whose flags argument is "gfpflags").
 */
#if defined(alloc_hooks) && defined(kmem_buckets_alloc)
#define KMALLOC_CONST "__kmalloc_cache_noprof"
#define KMALLOC_CONST_FLAGS "gfpflags"
#define KMALLOC_VAR "__kmalloc_noprof"
#define VMALLOC "vmalloc_noprof"
#elif defined(alloc_hooks)
#define KMALLOC_CONST "kmalloc_trace_noprof"
#define KMALLOC_CONST_FLAGS "flags"
#define KMALLOC_VAR "__kmalloc_noprof"
#define VMALLOC "vmalloc_noprof"
#else
#define KMALLOC_CONST "kmalloc_trace"
#define KMALLOC_CONST_FLAGS "flags"
#define KMALLOC_VAR "__kmalloc"
#define VMALLOC "vmalloc"
#endif

#define expect(fn, ctx, fmt, ...) \
	pr_info("kedr_ttest: expect " fn " site=%s ctx=" ctx " " fmt "\n", __func__, ##__VA_ARGS__)

static DEFINE_MUTEX(ttest_mutex);
static DEFINE_SPINLOCK(ttest_lock);
static struct timer_list ttest_timer;
static struct irq_work ttest_irq_work;
static DECLARE_COMPLETION(ttest_done);

/* Not a constant: kmalloc(var_size) compiles to KMALLOC_VAR. */
static unsigned int var_size = 100;
module_param(var_size, uint, 0644);

static noinline void ttest_atomic_alloc(const char *ctx, size_t size)
{
	void *p = kmalloc(size, GFP_ATOMIC);

	/* size is not a compile-time constant here: this is KMALLOC_VAR. */
	pr_info("kedr_ttest: expect " KMALLOC_VAR " site=ttest_atomic_alloc ctx=%s size=%zu flags=GFP_ATOMIC ret=0x%lx\n",
		ctx, size, (unsigned long)p);
	kfree(p);
	pr_info("kedr_ttest: expect kfree site=ttest_atomic_alloc ctx=%s objp=0x%lx\n",
		ctx, (unsigned long)p);
}

static void ttest_timer_fn(struct timer_list *t)
{
	ttest_atomic_alloc("softirq", 48);
	complete(&ttest_done);
}

static void ttest_irq_work_fn(struct irq_work *w)
{
	ttest_atomic_alloc("hardirq", 24);
	complete(&ttest_done);
}

static noinline void ttest_process(void)
{
	void *p;
	char *s;
	unsigned long flags;

	p = kmalloc(64, GFP_KERNEL);
	expect(KMALLOC_CONST, "process", KMALLOC_CONST_FLAGS "=GFP_KERNEL size=64 ret=0x%lx",
	       (unsigned long)p);
	kfree(p);
	expect("kfree", "process", "objp=0x%lx", (unsigned long)p);

	s = kstrdup("kedr", GFP_KERNEL);
	expect("kstrdup", "process", "s=\"kedr\" gfp=GFP_KERNEL ret=0x%lx", (unsigned long)s);
	kfree(s);
	expect("kfree", "process", "objp=0x%lx", (unsigned long)s);

	p = kmalloc(var_size, GFP_KERNEL);
	expect(KMALLOC_VAR, "process", "size=%u flags=GFP_KERNEL ret=0x%lx", var_size,
	       (unsigned long)p);
	kfree(p);
	expect("kfree", "process", "objp=0x%lx", (unsigned long)p);

	s = kasprintf(GFP_KERNEL, "n=%d", 7);
	expect("kasprintf", "process", "gfp=GFP_KERNEL fmt=\"n=%%d\" ret=0x%lx", (unsigned long)s);
	kfree(s);
	expect("kfree", "process", "objp=0x%lx", (unsigned long)s);

	p = vmalloc(8192);
	expect(VMALLOC, "process", "size=8192 ret=0x%lx", (unsigned long)p);
	vfree(p);
	expect("vfree", "process", "addr=0x%lx", (unsigned long)p);

	mutex_lock(&ttest_mutex);
	expect("mutex_lock", "process", "lock=0x%lx", (unsigned long)&ttest_mutex);
	mutex_unlock(&ttest_mutex);
	expect("mutex_unlock", "process", "lock=0x%lx", (unsigned long)&ttest_mutex);

	/* Spinlock held: the replacements must not sleep. */
	spin_lock(&ttest_lock);
	expect("_raw_spin_lock", "process", "lock=0x%lx", (unsigned long)&ttest_lock);
	ttest_atomic_alloc("process", 32);
	spin_unlock(&ttest_lock);
	expect("_raw_spin_unlock", "process", "lock=0x%lx", (unsigned long)&ttest_lock);

	/* Interrupts off. */
	spin_lock_irqsave(&ttest_lock, flags);
	expect("_raw_spin_lock_irqsave", "process", "lock=0x%lx ret=0x%lx",
	       (unsigned long)&ttest_lock, flags);
	ttest_atomic_alloc("process", 16);
	spin_unlock_irqrestore(&ttest_lock, flags);
	expect("_raw_spin_unlock_irqrestore", "process", "lock=0x%lx flags=0x%lx",
	       (unsigned long)&ttest_lock, flags);
}

static int ttest_run(const char *val, const struct kernel_param *kp)
{
	int err = param_set_uint(val, kp);

	if (err)
		return err;
	pr_info("kedr_ttest: run %u start\n", *(unsigned int *)kp->arg);
	ttest_process();

	reinit_completion(&ttest_done);
	mod_timer(&ttest_timer, jiffies + 1);
	wait_for_completion(&ttest_done);

	reinit_completion(&ttest_done);
	irq_work_queue(&ttest_irq_work);
	wait_for_completion(&ttest_done);
	irq_work_sync(&ttest_irq_work);
	pr_info("kedr_ttest: run %u end\n", *(unsigned int *)kp->arg);
	return 0;
}

static const struct kernel_param_ops ttest_run_ops = {
	.set = ttest_run,
	.get = param_get_uint,
};
static unsigned int run;
module_param_cb(run, &ttest_run_ops, &run, 0644);

static int __init ttest_init(void)
{
	timer_setup(&ttest_timer, ttest_timer_fn, 0);
	init_irq_work(&ttest_irq_work, ttest_irq_work_fn);
	return 0;
}

static void __exit ttest_exit(void)
{
	del_timer_sync(&ttest_timer);
	irq_work_sync(&ttest_irq_work);
}

module_init(ttest_init);
module_exit(ttest_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build trace test driver");
