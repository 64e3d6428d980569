// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_stress: concurrency stress for the leak payload. Its init starts
 * "threads" kthreads (each doing "ops" kmalloc/kfree and kmem_cache pairs,
 * with up to 16 objects outstanding) and a timer that allocates and frees
 * in softirq context until the threads are done, waits for them, frees
 * everything, and logs what it did:
 *
 *   kedr_stress: done allocs=N frees=N timer=T arms=A cpus=C ns=<threads' wall time>
 *
 * The VM test compares that with the payload's totals, which must be exact.
 */
#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/timer.h>

static unsigned int threads = 4;
module_param(threads, uint, 0444);
static unsigned int ops = 25000;
module_param(ops, uint, 0444);

static struct kmem_cache *stress_cache;
static atomic64_t stress_allocs = ATOMIC64_INIT(0);
static atomic64_t stress_frees = ATOMIC64_INIT(0);
static atomic_t stress_running;
static atomic_t stress_cpus_seen;	/* bit per CPU a thread ran on */
static DECLARE_COMPLETION(stress_done);
static struct timer_list stress_timer;
static atomic_t stress_timer_runs;
static atomic_t stress_timer_arms;	/* mod_timer() calls: tracked as resources too */
static bool stress_timer_stop;

static void stress_ctor(void *obj)
{
}

static void *stress_alloc(unsigned int i, bool atomic)
{
	gfp_t gfp = atomic ? GFP_ATOMIC : GFP_KERNEL;
	void *p = (i & 3) == 3 ? kmem_cache_alloc(stress_cache, gfp)
			       : kmalloc(8 + (get_random_u32() % 512), gfp);

	if (p)
		atomic64_inc(&stress_allocs);
	return p;
}

static void stress_free(unsigned int i, void *p)
{
	if (!p)
		return;
	if ((i & 3) == 3)
		kmem_cache_free(stress_cache, p);
	else
		kfree(p);
	atomic64_inc(&stress_frees);
}

static int stress_thread(void *unused)
{
	void *slot[16] = {};
	unsigned int i;

	for (i = 0; i < ops; i++) {
		unsigned int s = i % ARRAY_SIZE(slot);

		/* slot s was filled at i - 16, which had the same (i & 3). */
		stress_free(i, slot[s]);
		slot[s] = stress_alloc(i, false);
		atomic_or(1 << (raw_smp_processor_id() & 31), &stress_cpus_seen);
		if (!(i % 1024))
			cond_resched();
	}
	for (i = 0; i < ARRAY_SIZE(slot); i++)
		stress_free(ops + i - ARRAY_SIZE(slot), slot[(ops + i) % ARRAY_SIZE(slot)]);
	if (atomic_dec_and_test(&stress_running))
		complete(&stress_done);
	return 0;
}

static void stress_timer_fn(struct timer_list *t)
{
	unsigned int i;

	/* softirq context: GFP_ATOMIC pairs. */
	for (i = 0; i < 8; i++)
		stress_free(i, stress_alloc(i, true));
	atomic_inc(&stress_timer_runs);
	if (!READ_ONCE(stress_timer_stop)) {
		atomic_inc(&stress_timer_arms);
		mod_timer(&stress_timer, jiffies + 1);
	}
}

static int __init stress_init(void)
{
	unsigned int i;
	u64 start = ktime_get_ns();

	stress_cache = kmem_cache_create("kedr_stress", 96, 0, 0, stress_ctor);
	if (!stress_cache)
		return -ENOMEM;
	atomic_set(&stress_running, threads);
	timer_setup(&stress_timer, stress_timer_fn, 0);
	atomic_inc(&stress_timer_arms);
	mod_timer(&stress_timer, jiffies + 1);
	for (i = 0; i < threads; i++) {
		struct task_struct *t = kthread_run(stress_thread, NULL, "kedr_stress/%u", i);

		if (IS_ERR(t) && atomic_dec_and_test(&stress_running))
			complete(&stress_done);
	}
	wait_for_completion(&stress_done);
	start = ktime_get_ns() - start;
	WRITE_ONCE(stress_timer_stop, true);
	del_timer_sync(&stress_timer);
	pr_info("kedr_stress: done allocs=%lld frees=%lld timer=%d arms=%d cpus=%d ns=%llu\n",
		(long long)atomic64_read(&stress_allocs), (long long)atomic64_read(&stress_frees),
		atomic_read(&stress_timer_runs), atomic_read(&stress_timer_arms),
		hweight32(atomic_read(&stress_cpus_seen)), (unsigned long long)start);
	return 0;
}

static void __exit stress_exit(void)
{
	kmem_cache_destroy(stress_cache);
}

module_init(stress_init);
module_exit(stress_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: concurrent allocations and frees");
