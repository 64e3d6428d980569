// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_hooks: a driver for the VM test of the leak payload's allocation and
 * free hooks (tests/test_hooks_vm.py). Module parameter "mode" chooses what
 * its init does; writes to parameter "step" run the steps of mode=toggle.
 *
 *   invalid   kfree(ERR_PTR(-ENOMEM)), kfree() of an address in the first
 *             page, kvfree(ERR_PTR(-EINVAL)), krealloc(ERR_PTR(-ENOMEM)):
 *             each would oops; and kfree(NULL), kfree(ZERO_SIZE_PTR),
 *             vfree(NULL), which are fine
 *   interior  kfree(p + 8) of a kmalloc'ed p, kmem_cache_free(c, o + 16) of
 *             an object of its cache; then the right frees
 *   reuse     kmalloc(n); kfree(); then kobject_get_path() (not intercepted:
 *             it allocates n bytes in the kernel) and kfree() of its result,
 *             LEAKER_ROUNDS times: the kernel may hand out the address just
 *             freed, whose free is then right
 *   toggle    step=1: kmalloc and kfree TOGGLE_N objects; step=2 (after the
 *             test switched the allocator's leak tracking off): kmalloc
 *             TOGGLE_N again (not tracked) and kfree them; both on CPU 0
 *             (the kernel may hand out step 1's addresses in step 2)
 *   realloc   krealloc() of an object while a kretprobe on kfree() (this
 *             task only) allocates, right after krealloc() freed the old
 *             object, an object of the same size: the address just freed;
 *             both objects freed afterwards
 *   pages     alloc_pages() freed by free_pages(page_address()), and
 *             __get_free_pages() freed by __free_pages(virt_to_page())
 *   trylock   conditional acquires released: spin_trylock_bh(),
 *             refcount_dec_and_lock(), atomic_dec_and_mutex_lock(),
 *             refcount_dec_and_mutex_lock()
 *   rcu       kfree_rcu() of a kmalloc'ed object (its rcu_head not first)
 *   skb       skbs handed to the kernel, which frees them: netlink_unicast()
 *             to no one, netlink_broadcast() to no listener (a kernel netlink
 *             socket of unit HOOKS_NETLINK), netlink_broadcast_filtered()
 *             likewise where the kernel exports it (6.12; Kbuild), rtnl_unicast()
 *             to no one, dev_queue_xmit() on the loopback device
 *   flood     kfree(ERR_PTR(-ENOMEM)) FLOOD_N times: the console must not
 *             get a line for each
 * Every mode frees what it allocates: a correct payload reports nothing
 * but the bad frees of invalid, flood and interior.
 */
#include <linux/atomic.h>
#include <linux/err.h>
#include <linux/gfp.h>
#include <linux/kobject.h>
#include <linux/netdevice.h>
#include <linux/netlink.h>
#include <linux/rcupdate.h>
#include <linux/rtnetlink.h>
#include <linux/skbuff.h>
#include <net/net_namespace.h>
#include <linux/kprobes.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/refcount.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/vmalloc.h>

static char *mode = "none";
module_param(mode, charp, 0444);

/* Not constants: the compiler must not see through the bad pointers. */
static long bad_errno = -ENOMEM;
module_param(bad_errno, long, 0444);
static unsigned long low_addr = 0x100;
module_param(low_addr, ulong, 0444);

#define LEAKER_ROUNDS	16
#define TOGGLE_N	16

static noinline void hooks_invalid(void)
{
	void *r;

	kfree(ERR_PTR(bad_errno));
	kfree((void *)low_addr);
	kvfree(ERR_PTR(bad_errno - 1));
	r = krealloc(ERR_PTR(bad_errno), 64, GFP_KERNEL);
	pr_info("kedr_hooks: krealloc(ERR_PTR) returned %px\n", r);
	kfree(NULL);
	kfree(ZERO_SIZE_PTR);
	vfree(NULL);
}

#define FLOOD_N 20000

static noinline void hooks_flood(void)
{
	int i;

	for (i = 0; i < FLOOD_N; i++)
		kfree(ERR_PTR(bad_errno));
}

static noinline void hooks_interior(void)
{
	struct kmem_cache *c = kmem_cache_create("kedr_hooks", 128, 0, 0, NULL);
	char *p = kmalloc(64, GFP_KERNEL);
	char *o = c ? kmem_cache_alloc(c, GFP_KERNEL) : NULL;

	if (p) {
		kfree(p + 8);
		kfree(p);
	}
	if (o) {
		kmem_cache_free(c, o + 16);
		kmem_cache_free(c, o);
	}
	kmem_cache_destroy(c);
}

static noinline void hooks_reuse(void)
{
	struct kobject *kobj = &THIS_MODULE->mkobj.kobj;
	char *path = kobject_get_path(kobj, GFP_KERNEL);
	size_t n = path ? strlen(path) + 1 : 0;
	int i, reused = 0;

	kfree(path);
	for (i = 0; n && i < LEAKER_ROUNDS; i++) {
		char *p = kmalloc(n, GFP_KERNEL);

		kfree(p);
		path = kobject_get_path(kobj, GFP_KERNEL);
		reused += path == p;
		kfree(path);
	}
	pr_info("kedr_hooks: reuse: %d of %d kernel allocations got the address just freed\n",
		reused, LEAKER_ROUNDS);
}

static void *toggle_ptrs[TOGGLE_N];

/*
 * On CPU 0, in the IPI, with a size class the shell hardly uses: SLUB hands
 * out the objects of its per-CPU freelist last freed first, so step 2 gets
 * step 1's addresses unless something keeps them from being reused.
 */
static void hooks_toggle_on_cpu(void *arg)
{
	int i, j, step = *(int *)arg, reused = 0;
	void *q[TOGGLE_N];

	for (i = 0; i < TOGGLE_N; i++) {
		q[i] = kmalloc(1500, GFP_ATOMIC);
		for (j = 0; step == 2 && j < TOGGLE_N; j++)
			reused += q[i] && q[i] == toggle_ptrs[j];
		if (step == 1)
			toggle_ptrs[i] = q[i];
	}
	for (i = 0; i < TOGGLE_N; i++)
		kfree(q[i]);
	pr_info("kedr_hooks: toggle step %d: %d addresses of step 1 reused\n", step, reused);
}

static void hooks_toggle(int step)
{
	smp_call_function_single(0, hooks_toggle_on_cpu, &step, 1);
}

static struct task_struct *realloc_task;
static void *realloc_old, *realloc_snatched;

static int hooks_kfree_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	/* Only the free of the old object, inside krealloc() called by this module. */
	if (current != READ_ONCE(realloc_task) || (void *)regs_get_kernel_argument(regs, 0) !=
	    realloc_old)
		return 1;	/* no return handler */
	return 0;
}

static int hooks_kfree_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	/* What an interrupt could do here: allocate, and get the address just freed. */
	realloc_snatched = kmalloc(32, GFP_ATOMIC);
	WRITE_ONCE(realloc_task, NULL);
	return 0;
}

static struct kretprobe hooks_kfree_probe = {
	.kp.symbol_name = "kfree",
	.entry_handler = hooks_kfree_entry,
	.handler = hooks_kfree_return,
	.maxactive = 4,
};

static noinline int hooks_realloc(void)
{
	void *old, *new;
	int err = register_kretprobe(&hooks_kfree_probe);

	if (err) {
		pr_err("kedr_hooks: register_kretprobe(kfree): %d\n", err);
		return err;
	}
	/*
	 * One CPU throughout: the old object comes from this CPU's slab, so
	 * krealloc's kfree() puts it back on this CPU's freelist, and the
	 * kretprobe's kmalloc() gets it.
	 */
	preempt_disable();
	old = kmalloc(32, GFP_ATOMIC);
	realloc_old = old;
	WRITE_ONCE(realloc_task, current);
	new = old ? krealloc(old, 4096, GFP_ATOMIC) : NULL;
	WRITE_ONCE(realloc_task, NULL);
	preempt_enable();
	unregister_kretprobe(&hooks_kfree_probe);
	pr_info("kedr_hooks: realloc: old %px new %px allocated meanwhile %px (%s)\n", old, new,
		realloc_snatched, realloc_snatched == old ? "the old address" : "another address");
	kfree(new);
	kfree(realloc_snatched);
	return 0;
}

static noinline void hooks_pages(void)
{
	struct page *page = alloc_pages(GFP_KERNEL, 1);
	unsigned long addr = __get_free_pages(GFP_KERNEL, 0);

	if (page)
		free_pages((unsigned long)page_address(page), 1);
	if (addr)
		__free_pages(virt_to_page((void *)addr), 0);
}

static DEFINE_SPINLOCK(hooks_lock);
static DEFINE_MUTEX(hooks_mutex);

static noinline void hooks_trylock(void)
{
	refcount_t ref = REFCOUNT_INIT(1), ref2 = REFCOUNT_INIT(1);
	atomic_t count = ATOMIC_INIT(1);

	if (spin_trylock_bh(&hooks_lock))
		spin_unlock_bh(&hooks_lock);
	if (refcount_dec_and_lock(&ref, &hooks_lock))
		spin_unlock(&hooks_lock);
	if (atomic_dec_and_mutex_lock(&count, &hooks_mutex))
		mutex_unlock(&hooks_mutex);
	if (refcount_dec_and_mutex_lock(&ref2, &hooks_mutex))
		mutex_unlock(&hooks_mutex);
}

struct hooks_rcu_obj {
	long a, b;
	struct rcu_head rcu;
};

static noinline void hooks_rcu(void)
{
	struct hooks_rcu_obj *o = kmalloc(sizeof(*o), GFP_KERNEL);

	if (o)
		kfree_rcu(o, rcu);
}

/* A netlink unit no kernel subsystem uses (include/uapi/linux/netlink.h: up to 22). */
#define HOOKS_NETLINK	30

#ifdef HOOKS_HAVE_NETLINK_BROADCAST_FILTERED
/* A filter that skips every listener (there is none anyway). */
static int hooks_no_listener(struct sock *dsk, struct sk_buff *skb, void *data)
{
	return 1;
}
#endif

static noinline int hooks_skb(void)
{
	struct netlink_kernel_cfg cfg = {};
	struct sock *nl = netlink_kernel_create(&init_net, HOOKS_NETLINK, &cfg);
	struct net_device *lo;
	struct sk_buff *skb;

	if (!nl) {
		pr_err("kedr_hooks: netlink_kernel_create(%d) failed\n", HOOKS_NETLINK);
		return -EBUSY;
	}
	skb = alloc_skb(64, GFP_KERNEL);
	if (skb)
		pr_info("kedr_hooks: netlink_unicast: %d\n",
			netlink_unicast(nl, skb, 0x7ffffff0, MSG_DONTWAIT));
	skb = alloc_skb(64, GFP_KERNEL);
	if (skb)
		pr_info("kedr_hooks: netlink_broadcast: %d\n",
			netlink_broadcast(nl, skb, 0, 1, GFP_KERNEL));
	skb = alloc_skb(64, GFP_KERNEL);
	if (skb)
		pr_info("kedr_hooks: rtnl_unicast: %d\n", rtnl_unicast(skb, &init_net, 0x7ffffff0));
	lo = dev_get_by_name(&init_net, "lo");
	skb = lo ? alloc_skb(64, GFP_KERNEL) : NULL;
	if (skb) {
		skb_put_zero(skb, 64);
		skb->dev = lo;
		pr_info("kedr_hooks: dev_queue_xmit: %d\n", dev_queue_xmit(skb));
	}
	if (lo)
		dev_put(lo);
#ifdef HOOKS_HAVE_NETLINK_BROADCAST_FILTERED
	/* The last skb: no allocation after it may take its address (the payload
	 * would then take it for freed, filtered or not). */
	skb = alloc_skb(64, GFP_KERNEL);
	if (skb)
		pr_info("kedr_hooks: netlink_broadcast_filtered: %d\n",
			netlink_broadcast_filtered(nl, skb, 0, 1, GFP_KERNEL, hooks_no_listener,
						   NULL));
#endif
	netlink_kernel_release(nl);
	return 0;
}

static int step_set(const char *val, const struct kernel_param *kp)
{
	int step, err = kstrtoint(val, 0, &step);

	if (err)
		return err;
	if (step != 1 && step != 2)
		return -EINVAL;
	hooks_toggle(step);
	return 0;
}

static const struct kernel_param_ops step_ops = { .set = step_set };
module_param_cb(step, &step_ops, NULL, 0200);

static int __init hooks_init(void)
{
	if (!strcmp(mode, "invalid"))
		hooks_invalid();
	else if (!strcmp(mode, "flood"))
		hooks_flood();
	else if (!strcmp(mode, "interior"))
		hooks_interior();
	else if (!strcmp(mode, "reuse"))
		hooks_reuse();
	else if (!strcmp(mode, "realloc"))
		return hooks_realloc();
	else if (!strcmp(mode, "pages"))
		hooks_pages();
	else if (!strcmp(mode, "trylock"))
		hooks_trylock();
	else if (!strcmp(mode, "rcu"))
		hooks_rcu();
	else if (!strcmp(mode, "skb"))
		return hooks_skb();
	else if (strcmp(mode, "none") && strcmp(mode, "toggle"))
		return -EINVAL;
	return 0;
}

static void __exit hooks_exit(void)
{
}

module_init(hooks_init);
module_exit(hooks_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: allocation and free hooks");
