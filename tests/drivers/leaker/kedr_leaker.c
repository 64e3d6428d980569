// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_leaker: a driver for the leak payload's VM test. Module parameter
 * "mode" chooses what its init does:
 *
 *   leak   allocate from every tracked family, free some, and keep
 *          LEAKER_LEAKS objects (the table below) until the module is gone
 *   clean  the same allocations, every one freed (at init or at exit)
 *   bad    one double free, four frees with the wrong function (kmalloc'd to
 *          vfree, vmalloc'd to kfree, a cache object to another cache,
 *          free_pages with the wrong order) and one kfree of a pointer that
 *          no allocator returned; none of them may reach the kernel
 *   atomic functions that may sleep called in atomic context: GFP_KERNEL
 *          under a spinlock (three times, one call site), mutex_lock under a
 *          spinlock, GFP_KERNEL with bottom halves off; and GFP_ATOMIC under
 *          a spinlock, which is fine. Everything is freed.
 *   locks  a mutex still held when the module is gone, a mutex_unlock() of a
 *          mutex not held, and a mutex at the start of a kmalloc'ed structure
 *          locked, unlocked and freed (same address as the object: clean)
 *   timer  a timer in a kmalloc'ed object (leaked) armed for 1000 s, still
 *          pending when the module goes; a static timer armed and deleted;
 *          one that fired before unload. Only the first is reported.
 *
 * Each allocation is made from a function of its own (noinline), so the test
 * can check the call site named in the report: init code (__init, whose text
 * is freed after init) included.
 */
#include <linux/bottom_half.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/delay.h>
#include <linux/string.h>
#include <linux/timer.h>
#include <linux/vmalloc.h>

static char *mode = "leak";
module_param(mode, charp, 0444);

/* Not a constant: kmalloc(var_size) compiles to __kmalloc. */
static unsigned int var_size = 200;
module_param(var_size, uint, 0444);

/* Not a constant either: gcc would unroll the loop into three call sites. */
static unsigned int same_stack = 3;
module_param(same_stack, uint, 0444);

static struct kmem_cache *leaker_cache, *leaker_other_cache;
static void *kept[16];
static unsigned int nkept;

static void keep(void *p)
{
	if (p && nkept < ARRAY_SIZE(kept))
		kept[nkept++] = p;
}

/*
 * Leaks, by function: the VM test expects exactly these (function, size).
 * Each function keeps what it allocated itself: a "return kmalloc(...)" would
 * compile to a tail call, and the call site would be the caller's.
 */
static noinline void leak_kmalloc_trace(void)
{
	keep(kmalloc(100, GFP_KERNEL));			/* kmalloc_trace, 100 */
}

static noinline void leak_kmalloc_var(void)
{
	keep(kmalloc(var_size, GFP_KERNEL));			/* __kmalloc, 200 */
}

static noinline void leak_cache_obj(void)
{
	keep(kmem_cache_alloc(leaker_cache, GFP_KERNEL));	/* kmem_cache_alloc, 72 */
}

static noinline void leak_vmalloc(void)
{
	keep(vmalloc(3 * PAGE_SIZE));				/* vmalloc, 12288 */
}

static noinline void leak_pages(void)
{
	keep((void *)__get_free_pages(GFP_KERNEL, 1));			/* __get_free_pages, 8192 */
}

static noinline void leak_string(void)
{
	keep(kstrdup("kedr leaker", GFP_KERNEL));		/* kstrdup, 12 */
}

static noinline void leak_realloc(void)
{
	void *p = kmalloc(10, GFP_KERNEL);			/* kmalloc_trace, freed by: */

	keep(krealloc(p, 300, GFP_KERNEL));			/* krealloc, 300 */
}

static noinline void leak_kvmalloc(void)
{
	keep(kvmalloc(5000, GFP_KERNEL));			/* kvmalloc_node, 5000 */
}

static noinline void leak_same_stack(void)
{
	keep(kzalloc(32, GFP_KERNEL));				/* kmalloc_trace, 32 (x3) */
}

static noinline int __init leak_from_init(void)
{
	unsigned int i;
	void *p;

	/* Called from the module's init: this code is gone when the report is read. */
	keep(kmalloc(64, GFP_KERNEL));				/* kmalloc_trace, 64 */
	leak_kmalloc_trace();
	leak_kmalloc_var();
	leak_cache_obj();
	leak_vmalloc();
	leak_pages();
	leak_string();
	leak_realloc();
	leak_kvmalloc();
	for (i = 0; i < same_stack; i++)
		leak_same_stack();

	/* Allocated and freed right away: never reported. */
	kfree(kmalloc(128, GFP_KERNEL));
	vfree(vmalloc(PAGE_SIZE));
	free_pages(__get_free_pages(GFP_KERNEL, 2), 2);
	__free_pages(alloc_pages(GFP_KERNEL, 0), 0);
	p = kmem_cache_alloc(leaker_cache, GFP_KERNEL);
	kmem_cache_free(leaker_cache, p);
	kfree(kstrdup("gone", GFP_KERNEL));
	kvfree(kvmalloc(100, GFP_KERNEL));
	return 0;
}

/* The same objects, and their frees: the report must be empty. */
static noinline void clean_exit(void)
{
	kfree(kept[0]);
	kfree(kept[1]);
	kfree(kept[2]);
	kmem_cache_free(leaker_cache, kept[3]);
	vfree(kept[4]);
	free_pages((unsigned long)kept[5], 1);
	kfree(kept[6]);
	kfree(kept[7]);
	kvfree(kept[8]);
	kfree(kept[9]);
	kfree(kept[10]);
	kfree(kept[11]);
}

static void *leaker_static[4];

static noinline void bad_double(void)
{
	void *p = kmalloc(40, GFP_KERNEL);

	kfree(p);
	kfree(p);					/* double free */
	barrier();		/* no tail call: keep this function the call site */
}

static noinline void bad_vfree_of_kmalloc(void)
{
	vfree(kmalloc(50, GFP_KERNEL));			/* mismatch */
	barrier();		/* no tail call: keep this function the call site */
}

static noinline void bad_kfree_of_vmalloc(void)
{
	kfree(vmalloc(PAGE_SIZE));			/* mismatch */
	barrier();		/* no tail call: keep this function the call site */
}

static noinline void bad_wrong_cache(void)
{
	kmem_cache_free(leaker_other_cache,
			kmem_cache_alloc(leaker_cache, GFP_KERNEL));	/* mismatch */
	barrier();		/* no tail call: keep this function the call site */
}

static noinline void bad_wrong_order(void)
{
	free_pages(__get_free_pages(GFP_KERNEL, 2), 1);	/* mismatch */
	barrier();		/* no tail call: keep this function the call site */
}

static noinline void bad_foreign(void)
{
	kfree(&leaker_static[1]);			/* foreign: module .bss */
	barrier();		/* no tail call: keep this function the call site */
}

/*
 * A constructor keeps SLUB from merging the two caches with each other (or
 * with kmalloc-96): merged, kmem_cache_create() would return one cache twice
 * and a free to "the other" cache would be a free to the same one.
 */
static void leaker_ctor(void *obj)
{
}

static DEFINE_SPINLOCK(leaker_lock);
static DEFINE_MUTEX(leaker_mutex);

static noinline void atomic_gfp_kernel(void)
{
	void *p;

	spin_lock(&leaker_lock);
	p = kmalloc(var_size, GFP_KERNEL);		/* __kmalloc: may sleep */
	spin_unlock(&leaker_lock);
	kfree(p);
}

static noinline void atomic_gfp_atomic(void)
{
	void *p;

	spin_lock(&leaker_lock);
	p = kmalloc(var_size, GFP_ATOMIC);		/* fine */
	spin_unlock(&leaker_lock);
	kfree(p);
}

static noinline void atomic_mutex(void)
{
	/* Uncontended: mutex_lock() takes the fast path and does not sleep here. */
	spin_lock(&leaker_lock);
	mutex_lock(&leaker_mutex);			/* may sleep */
	mutex_unlock(&leaker_mutex);
	spin_unlock(&leaker_lock);
}

static noinline void bh_off_gfp_kernel(void)
{
	void *p;

	local_bh_disable();
	p = kmalloc(128, GFP_KERNEL);			/* kmalloc_trace: may sleep */
	local_bh_enable();
	kfree(p);
}

static DEFINE_MUTEX(leaker_held_mutex);
static DEFINE_MUTEX(leaker_free_mutex);

struct leaker_locked {
	struct mutex lock;		/* first member: its address is the object's */
	int value;
};

static noinline void locks_held_at_unload(void)
{
	mutex_lock(&leaker_held_mutex);
	barrier();			/* no tail call: keep this function the call site */
}

static noinline void locks_unlock_not_held(void)
{
	/* Harmless without CONFIG_DEBUG_MUTEXES: the owner word is 0 already. */
	mutex_unlock(&leaker_free_mutex);
	barrier();			/* no tail call: keep this function the call site */
}

static noinline void locks_in_object(void)
{
	struct leaker_locked *o = kzalloc(sizeof(*o), GFP_KERNEL);

	if (!o)
		return;
	mutex_init(&o->lock);
	mutex_lock(&o->lock);
	o->value = 1;
	mutex_unlock(&o->lock);
	kfree(o);
}

struct leaker_timed {
	struct timer_list timer;	/* first member: its address is the object's */
	int fired;
};

static struct timer_list leaker_deleted_timer, leaker_fired_timer;
static atomic_t leaker_fired = ATOMIC_INIT(0);

static void leaker_timer_fn(struct timer_list *t)
{
	atomic_inc(&leaker_fired);
}

static noinline void timer_pending_at_unload(void)
{
	struct leaker_timed *o = kzalloc(sizeof(*o), GFP_KERNEL);

	if (!o)
		return;
	keep(o);
	timer_setup(&o->timer, leaker_timer_fn, 0);
	mod_timer(&o->timer, jiffies + 1000 * HZ);	/* never deleted */
	barrier();			/* no tail call: keep this function the call site */
}

static noinline void timers_done_right(void)
{
	timer_setup(&leaker_deleted_timer, leaker_timer_fn, 0);
	mod_timer(&leaker_deleted_timer, jiffies + 1000 * HZ);
	del_timer_sync(&leaker_deleted_timer);
	timer_setup(&leaker_fired_timer, leaker_timer_fn, 0);
	mod_timer(&leaker_fired_timer, jiffies + 1);
	while (!atomic_read(&leaker_fired))
		msleep(10);
}

static int __init leaker_init(void)
{
	unsigned int i;

	leaker_cache = kmem_cache_create("kedr_leaker", 72, 0, 0, leaker_ctor);
	leaker_other_cache = kmem_cache_create("kedr_leaker_other", 72, 0, 0, leaker_ctor);
	if (!leaker_cache || !leaker_other_cache)
		return -ENOMEM;
	if (!strcmp(mode, "bad")) {
		bad_double();
		bad_vfree_of_kmalloc();
		bad_kfree_of_vmalloc();
		bad_wrong_cache();
		bad_wrong_order();
		bad_foreign();
		pr_info("kedr_leaker: bad frees done\n");
		return 0;
	}
	if (!strcmp(mode, "timer")) {
		timer_pending_at_unload();
		timers_done_right();
		return 0;
	}
	if (!strcmp(mode, "locks")) {
		locks_in_object();
		locks_held_at_unload();
		locks_unlock_not_held();
		return 0;
	}
	if (!strcmp(mode, "atomic")) {
		for (i = 0; i < same_stack; i++)
			atomic_gfp_kernel();
		atomic_gfp_atomic();
		atomic_mutex();
		bh_off_gfp_kernel();
		return 0;
	}
	return leak_from_init();
}

static void __exit leaker_exit(void)
{
	/*
	 * leak and bad leave leaker_cache behind: it holds a leaked (or a
	 * refused) object, and destroying a cache with objects in it WARNs.
	 */
	if (!strcmp(mode, "clean"))
		clean_exit();
	if (strcmp(mode, "leak") && strcmp(mode, "bad"))
		kmem_cache_destroy(leaker_cache);
	kmem_cache_destroy(leaker_other_cache);
}

module_init(leaker_init);
module_exit(leaker_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: leaks and bad frees on purpose");
