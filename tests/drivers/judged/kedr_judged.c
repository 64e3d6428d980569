// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_judged: a driver for the tests of the judgments the leak payload makes
 * when modules come and go (tests/test_judge_vm.py). Module parameter "mode":
 *
 *   rearm   clean: a self-re-arming timer in a kmalloc'ed object (every
 *           HZ/50 jiffies, counted in the read-only parameter "fires"),
 *           deleted at exit; writing 1 to the parameter "hold" starts a
 *           thread that holds a mutex until the module goes (hold_at_init=1:
 *           started by init, which returns once the thread holds it: not a
 *           lock init holds at return). Unrelated modules
 *           loading and unloading meanwhile must not touch it: the timer keeps
 *           firing, nothing is reported.
 *   reuse   a timer in a kmalloc'ed object is armed and deleted unseen, the
 *           object is freed, and a new object (kept until the module is gone:
 *           the one leak) takes the same address, with bytes that read as a
 *           pending timer whose callback is not this module's: the old timer
 *           record must not be judged through it.
 *   modload a work item that queues itself again and loads a module (brd)
 *           while kedr cancels it at unload: no lock of kedr may be held
 *           while it waits (the module's load calls kedr's notifier).
 *   left    a self-re-arming timer never deleted: its callback runs on CPU 1
 *           (add_timer_on) for 100 ms at a time, and the exit returns while
 *           it runs, so that when the module goes the timer is not pending
 *           but re-armed a moment later. The judgment at unload must stop it
 *           for good (it would fire into the freed module) and report it.
 */
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/timer.h>
#include <linux/workqueue.h>

static char *mode = "rearm";
module_param(mode, charp, 0444);

static unsigned long fires;
module_param(fires, ulong, 0444);

/* --- rearm ------------------------------------------------------------------------- */

struct judged_ticker {
	struct timer_list timer;	/* in a kmalloc'ed object: memory kedr reads at unload */
	unsigned long period;
};

static struct judged_ticker *judged_ticker;

static void judged_rearm_fn(struct timer_list *t)
{
	struct judged_ticker *k = from_timer(k, t, timer);

	WRITE_ONCE(fires, fires + 1);
	mod_timer(t, jiffies + k->period);
}

static noinline int rearm_timer(void)
{
	judged_ticker = kzalloc(sizeof(*judged_ticker), GFP_KERNEL);
	if (!judged_ticker)
		return -ENOMEM;
	judged_ticker->period = HZ / 50;
	timer_setup(&judged_ticker->timer, judged_rearm_fn, 0);
	mod_timer(&judged_ticker->timer, jiffies + HZ / 50);
	return 0;
}

static DEFINE_MUTEX(judged_mutex);
static DECLARE_COMPLETION(judged_held);
static DECLARE_COMPLETION(judged_release);
static struct task_struct *judged_holder;

static int judged_hold_fn(void *unused)
{
	mutex_lock(&judged_mutex);
	complete(&judged_held);
	wait_for_completion(&judged_release);
	mutex_unlock(&judged_mutex);
	while (!kthread_should_stop())
		schedule_timeout_interruptible(HZ / 10);
	return 0;
}

static int judged_hold_set(const char *val, const struct kernel_param *kp)
{
	struct task_struct *t;

	if (judged_holder || strcmp(mode, "rearm"))
		return -EBUSY;
	t = kthread_run(judged_hold_fn, NULL, "kedr_judged_hold");
	if (IS_ERR(t))
		return PTR_ERR(t);
	judged_holder = t;
	wait_for_completion(&judged_held);
	return 0;
}

static const struct kernel_param_ops judged_hold_ops = {
	.set = judged_hold_set,
};
module_param_cb(hold, &judged_hold_ops, NULL, 0200);

static bool hold_at_init;
module_param(hold_at_init, bool, 0444);

/* --- reuse ------------------------------------------------------------------------- */

struct judged_obj {
	struct timer_list timer;
	void *spare;
	char pad[64];
};

static struct judged_obj *judged_kept;
static struct kmem_cache *judged_cache;

static void judged_never_fn(struct timer_list *t)
{
}

/*
 * All on one CPU with preemption off, so that SLUB's per-CPU free list hands
 * the freed object straight back. A cache object, not kmalloc'ed memory: the
 * payload holds a kfree()d kmalloc object in its quarantine (kedr_objects.c),
 * so that address cannot come back while the record is there; a
 * kmem_cache_free() is passed on at once. The cache is kept with the object. The timer is armed (mod_timer: recorded)
 * and deleted through a call kedr does not intercept, try_to_del_timer_sync()
 * (the record stays, as it does when a timer fires): not pending when its
 * object is freed, as it must be.
 */
static noinline int reuse_freed_timer_memory(void)
{
	struct judged_obj *o, *n = NULL, *other[16];
	unsigned int i, nother = 0;

	judged_cache = kmem_cache_create("kedr_judged_reuse", sizeof(*o), 0, 0, NULL);
	if (!judged_cache)
		return -ENOMEM;
	preempt_disable();
	o = kmem_cache_alloc(judged_cache, GFP_ATOMIC);
	if (!o) {
		preempt_enable();
		return -ENOMEM;
	}
	memset(o, 0, sizeof(*o));
	timer_setup(&o->timer, judged_never_fn, 0);
	mod_timer(&o->timer, jiffies + 1000 * HZ);
	try_to_del_timer_sync(&o->timer);
	kmem_cache_free(judged_cache, o);
	for (i = 0; i < ARRAY_SIZE(other); i++) {
		n = kmem_cache_alloc(judged_cache, GFP_ATOMIC);
		if (!n || n == o)
			break;
		other[nother++] = n;
		n = NULL;
	}
	preempt_enable();
	while (nother)
		kmem_cache_free(judged_cache, other[--nother]);
	if (!n) {
		pr_err("kedr_judged: reuse: the freed address did not come back\n");
		return -EAGAIN;
	}
	/* What the old timer's record would read: pending (pprev set), callback NULL. */
	memset(n, 0, sizeof(*n));
	n->timer.entry.pprev = (struct hlist_node **)&n->spare;
	judged_kept = n;
	pr_info("kedr_judged: reuse: object %px at the freed timer's address\n", n);
	return 0;
}

/* --- left -------------------------------------------------------------------------- */

static struct timer_list judged_timer;
static int judged_in_fn;

static void judged_left_fn(struct timer_list *t)
{
	WRITE_ONCE(judged_in_fn, 1);
	WRITE_ONCE(fires, fires + 1);
	mdelay(100);
	WRITE_ONCE(judged_in_fn, 0);
	/* Not intercepted: the record stays the one of mod_timer(). A third of CPU 1. */
	judged_timer.expires = jiffies + HZ / 5;
	add_timer_on(t, 1);
}

/* --- modload ----------------------------------------------------------------------- */

static struct work_struct judged_work;
static int judged_work_state;		/* 1: running, 2: done */

/*
 * Queued again by itself as it starts (pending while it runs), then loads a
 * module: kedr's cancel_work_sync() at unload waits for it, and the module's
 * load calls the module notifier meanwhile. A lock held by the waiter and
 * taken by the notifier is a deadlock.
 */
static void judged_modload_fn(struct work_struct *w)
{
	if (READ_ONCE(judged_work_state))
		return;
	schedule_work(w);
	WRITE_ONCE(judged_work_state, 1);
	msleep(1000);
	request_module("brd");
	WRITE_ONCE(judged_work_state, 2);
}

static noinline void left_timer(void)
{
	timer_setup(&judged_timer, judged_left_fn, 0);
	mod_timer(&judged_timer, jiffies + 1);
	barrier();			/* no tail call: keep this function the call site */
}

/* ----------------------------------------------------------------------------------- */

static int __init judged_init(void)
{
	if (!strcmp(mode, "rearm")) {
		int err = rearm_timer();

		if (!err && hold_at_init) {
			err = judged_hold_set("1", NULL);
			if (err) {
				del_timer_sync(&judged_ticker->timer);
				kfree(judged_ticker);
			}
		}
		return err;
	}
	if (!strcmp(mode, "modload")) {
		INIT_WORK(&judged_work, judged_modload_fn);
		schedule_work(&judged_work);
		return 0;
	}
	if (!strcmp(mode, "reuse"))
		return reuse_freed_timer_memory();
	if (!strcmp(mode, "left")) {
		left_timer();
		return 0;
	}
	return -EINVAL;
}

static void __exit judged_exit(void)
{
	unsigned long until = jiffies + 10 * HZ;

	if (!strcmp(mode, "rearm")) {
		del_timer_sync(&judged_ticker->timer);
		kfree(judged_ticker);
		if (judged_holder) {
			complete(&judged_release);
			kthread_stop(judged_holder);
		}
	}
	/* left: return while the callback runs on the other CPU (if it does). */
	if (!strcmp(mode, "left"))
		while (!READ_ONCE(judged_in_fn) && time_before(jiffies, until))
			cpu_relax();
	/* modload: return while the work item runs, queued again. */
	if (!strcmp(mode, "modload"))
		while (READ_ONCE(judged_work_state) != 1 && time_before(jiffies, until))
			msleep(1);
}

module_init(judged_init);
module_exit(judged_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: timers and locks judged while modules come and go");
