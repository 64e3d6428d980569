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
 *   netdev a net_device allocated and never registered nor freed, an skb
 *          allocated and kept; another net_device registered, unregistered
 *          and freed, a third one the kernel frees after unregistering it
 *          (needs_free_netdev), skbs freed and consumed (not reported)
 *   irq    a handler left registered on a virtual interrupt (an irq
 *          descriptor of the dummy chip: it never fires), and a second
 *          handler on the same shared line freed (told apart by dev_id)
 *   chrdev a char-device region, a misc device, a class and a debugfs
 *          directory left behind (the misc device and its name in kmalloc'ed
 *          memory, so that the kernel's list of them stays readable)
 *   spinlock  a spinlock still held when init returns (the kernel WARNs:
 *          "returned with preemption imbalance"; exit re-initialises it), and
 *          a spin_unlock() of a spinlock not held
 *   work   a delayed work item still pending at unload, a workqueue never
 *          destroyed; a work item flushed (not reported)
 *   frags  pages put in an skb's frags as a page-based receive path does:
 *          two (skb_add_rx_frag(), the inline skb_fill_page_desc()) handed to
 *          the stack with netif_rx(), one in an skb freed with kfree_skb(); the
 *          kernel frees them with their skbs (not reported). One more the
 *          driver took a second reference to (get_page()) and never put: leaked.
 * clean also acquires and releases each resource above.
 *
 * Each allocation is made from a function of its own (noinline), so the test
 * can check the call site named in the report: init code (__init, whose text
 * is freed after init) included.
 */
#include <linux/bottom_half.h>
#include <linux/cdev.h>
#include <linux/debugfs.h>
#include <linux/device.h>
#include <linux/etherdevice.h>
#include <linux/fs.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/miscdevice.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/workqueue.h>
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

/* class_create() lost its owner argument in v6.4 ("driver core: class: remove module * from class_create()"). */
#ifdef class_create
#define leaker_class_create(name) class_create(THIS_MODULE, name)
#else
#define leaker_class_create(name) class_create(name)
#endif

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

/* --- resources ---------------------------------------------------------------- */

static struct net_device *leaker_netdev;
static struct sk_buff *leaker_skb;

static netdev_tx_t leaker_xmit(struct sk_buff *skb, struct net_device *dev)
{
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

static const struct net_device_ops leaker_netdev_ops = {
	.ndo_start_xmit = leaker_xmit,
};

static noinline void res_netdev_leaked(void)
{
	leaker_netdev = alloc_netdev(0, "kedrleak%d", NET_NAME_ENUM, ether_setup);
	barrier();			/* no tail call: keep this function the call site */
}

static noinline void res_skb_leaked(void)
{
	leaker_skb = alloc_skb(100, GFP_KERNEL);
	barrier();
}

static noinline void res_netdev_clean(void)
{
	struct net_device *dev = alloc_netdev(0, "kedrok%d", NET_NAME_ENUM, ether_setup);
	struct sk_buff *skb;

	if (!dev)
		return;
	dev->netdev_ops = &leaker_netdev_ops;
	if (!register_netdev(dev))
		unregister_netdev(dev);
	free_netdev(dev);
	skb = alloc_skb(64, GFP_KERNEL);
	kfree_skb(skb);
	skb = netdev_alloc_skb(NULL, 64);
	consume_skb(skb);

	/* Freed by the kernel once unregistered (needs_free_netdev): no free_netdev(). */
	dev = alloc_netdev(0, "kedrok%d", NET_NAME_ENUM, ether_setup);
	if (!dev)
		return;
	dev->netdev_ops = &leaker_netdev_ops;
	dev->needs_free_netdev = true;
	if (register_netdev(dev))
		free_netdev(dev);
	else
		unregister_netdev(dev);
}

static struct page *leaker_kept_page;

static noinline void res_frag_kept(struct sk_buff *skb)
{
	leaker_kept_page = alloc_page(GFP_KERNEL);
	barrier();
	if (!leaker_kept_page)
		return;
	get_page(leaker_kept_page);		/* the driver's own reference: never put */
	skb_add_rx_frag(skb, skb_shinfo(skb)->nr_frags, leaker_kept_page, 0, 64, PAGE_SIZE);
}

static noinline void res_frags(void)
{
	struct net_device *dev = alloc_netdev(0, "kedrfr%d", NET_NAME_ENUM, ether_setup);
	struct sk_buff *skb;
	struct page *a, *b;

	if (!dev)
		return;
	dev->netdev_ops = &leaker_netdev_ops;
	if (register_netdev(dev)) {
		free_netdev(dev);
		return;
	}
	skb = netdev_alloc_skb(dev, ETH_HLEN);
	a = alloc_page(GFP_KERNEL);
	b = alloc_page(GFP_KERNEL);
	if (skb && a && b) {
		skb_put_zero(skb, ETH_HLEN);
		skb_add_rx_frag(skb, 0, a, 0, 100, PAGE_SIZE);
		skb_fill_page_desc(skb, 1, b, 0, 100);
		skb->len += 100;
		skb->data_len += 100;
		skb->truesize += PAGE_SIZE;
		skb->protocol = eth_type_trans(skb, dev);
		netif_rx(skb);		/* the stack drops it: no handler */
	} else {
		if (a)
			__free_page(a);
		if (b)
			__free_page(b);
		kfree_skb(skb);
	}
	skb = alloc_skb(64, GFP_KERNEL);
	a = alloc_page(GFP_KERNEL);
	if (skb && a) {
		skb_add_rx_frag(skb, 0, a, 0, 100, PAGE_SIZE);
		res_frag_kept(skb);
	} else if (a) {
		__free_page(a);
	}
	kfree_skb(skb);
	unregister_netdev(dev);
	free_netdev(dev);
}

static int leaker_irq = -1;
static int leaker_irq_token, leaker_irq_token2;

static irqreturn_t leaker_irq_handler(int irq, void *dev_id)
{
	return IRQ_NONE;
}

/*
 * A virtual interrupt: nothing raises it. Owner NULL: request_irq() takes a
 * reference on the descriptor's owner (kernel/irq/manage.c, __setup_irq()),
 * which would keep this module from unloading.
 */
static int leaker_virq(void)
{
	if (leaker_irq < 0) {
		leaker_irq = __irq_alloc_descs(-1, 0, 1, NUMA_NO_NODE, NULL, NULL);
		if (leaker_irq >= 0)
			irq_set_chip_and_handler(leaker_irq, &dummy_irq_chip, handle_simple_irq);
	}
	return leaker_irq;
}

static noinline void res_irq_leaked(void)
{
	if (leaker_virq() < 0)
		return;
	if (request_irq(leaker_irq, leaker_irq_handler, IRQF_SHARED, "kedr_leaker",
			&leaker_irq_token))
		pr_err("kedr_leaker: request_irq failed\n");
	barrier();
}

static noinline void res_irq_clean(void)
{
	if (leaker_virq() < 0)
		return;
	if (!request_irq(leaker_irq, leaker_irq_handler, IRQF_SHARED, "kedr_leaker",
			 &leaker_irq_token2))
		free_irq(leaker_irq, &leaker_irq_token2);
}

static const struct file_operations leaker_fops = {
	.owner = THIS_MODULE,
};

static noinline void res_chrdev_region_leaked(void)
{
	dev_t dev;

	if (alloc_chrdev_region(&dev, 0, 1, "kedr_leaker"))
		pr_err("kedr_leaker: alloc_chrdev_region failed\n");
	barrier();
}

static noinline void res_misc_leaked(void)
{
	struct miscdevice *misc = kzalloc(sizeof(*misc), GFP_KERNEL);

	if (!misc)
		return;
	misc->minor = MISC_DYNAMIC_MINOR;
	misc->name = kstrdup("kedr_leaker_misc", GFP_KERNEL);
	misc->fops = &leaker_fops;
	if (misc_register(misc))
		pr_err("kedr_leaker: misc_register failed\n");
	barrier();
}

static noinline void res_class_leaked(void)
{
	struct class *cls = leaker_class_create("kedr_leaker_class");

	if (IS_ERR(cls))
		pr_err("kedr_leaker: class_create failed\n");
	barrier();
}

static noinline void res_debugfs_leaked(void)
{
	debugfs_create_dir("kedr_leaker", NULL);
	barrier();
}

static struct cdev leaker_cdev;
static struct miscdevice leaker_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kedr_leaker_ok",
	.fops = &leaker_fops,
};

static noinline void res_chrdev_clean(void)
{
	struct class *cls;
	struct dentry *d;
	dev_t dev;
	int major;

	if (!alloc_chrdev_region(&dev, 0, 1, "kedr_leaker_ok")) {
		cdev_init(&leaker_cdev, &leaker_fops);
		if (!cdev_add(&leaker_cdev, dev, 1))
			cdev_del(&leaker_cdev);
		cls = leaker_class_create("kedr_leaker_ok");
		if (!IS_ERR(cls)) {
			device_create(cls, NULL, dev, NULL, "kedr_leaker_ok%d", 0);
			device_destroy(cls, dev);
			class_destroy(cls);
		}
		unregister_chrdev_region(dev, 1);
	}
	major = register_chrdev(0, "kedr_leaker_ok2", &leaker_fops);
	if (major > 0)
		unregister_chrdev(major, "kedr_leaker_ok2");
	if (!misc_register(&leaker_misc))
		misc_deregister(&leaker_misc);
	d = debugfs_create_dir("kedr_leaker_ok", NULL);
	debugfs_create_file("inside", 0444, d, NULL, &leaker_fops);	/* not top-level */
	debugfs_remove(d);
	d = debugfs_create_file("kedr_leaker_ok_file", 0444, NULL, NULL, &leaker_fops);
	debugfs_remove(d);
}

static DEFINE_SPINLOCK(leaker_spin_held);
static DEFINE_SPINLOCK(leaker_spin_free);

static noinline void spin_held_at_return(void)
{
	spin_lock(&leaker_spin_held);			/* still held when init returns */
	barrier();
}

static noinline void spin_unlock_not_held(void)
{
	/* Keep the preemption count balanced: spin_unlock() lowers it. */
	preempt_disable();
	spin_unlock(&leaker_spin_free);
	barrier();
}

static struct delayed_work leaker_dwork, leaker_dwork_ok;
static struct work_struct leaker_work;
static struct workqueue_struct *leaker_wq;

static void leaker_work_fn(struct work_struct *work)
{
}

static noinline void work_pending_at_unload(void)
{
	INIT_DELAYED_WORK(&leaker_dwork, leaker_work_fn);
	schedule_delayed_work(&leaker_dwork, 1000 * HZ);	/* never cancelled */
	barrier();
}

static noinline void workqueue_leaked(void)
{
	leaker_wq = alloc_workqueue("kedr_leaker%d", 0, 0, 1);
	barrier();
}

static noinline void work_clean(void)
{
	struct workqueue_struct *wq = alloc_workqueue("kedr_leaker_ok", WQ_UNBOUND, 1);

	INIT_WORK(&leaker_work, leaker_work_fn);
	if (wq) {
		queue_work(wq, &leaker_work);
		flush_work(&leaker_work);
		destroy_workqueue(wq);
	}
	schedule_work(&leaker_work);
	cancel_work_sync(&leaker_work);
	INIT_DELAYED_WORK(&leaker_dwork_ok, leaker_work_fn);
	schedule_delayed_work(&leaker_dwork_ok, 1000 * HZ);
	cancel_delayed_work_sync(&leaker_dwork_ok);
}

static void resources_clean(void)
{
	res_netdev_clean();
	res_irq_clean();
	res_chrdev_clean();
	work_clean();
	spin_lock(&leaker_spin_free);
	spin_unlock(&leaker_spin_free);
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
	if (!strcmp(mode, "netdev")) {
		res_netdev_leaked();
		res_skb_leaked();
		res_netdev_clean();
		return 0;
	}
	if (!strcmp(mode, "frags")) {
		res_frags();
		return 0;
	}
	if (!strcmp(mode, "irq")) {
		res_irq_leaked();
		res_irq_clean();
		return 0;
	}
	if (!strcmp(mode, "chrdev")) {
		res_chrdev_region_leaked();
		res_misc_leaked();
		res_class_leaked();
		res_debugfs_leaked();
		res_chrdev_clean();
		return 0;
	}
	if (!strcmp(mode, "spinlock")) {
		spin_unlock_not_held();
		spin_held_at_return();
		return 0;
	}
	if (!strcmp(mode, "work")) {
		work_pending_at_unload();
		workqueue_leaked();
		work_clean();
		return 0;
	}
	if (!strcmp(mode, "clean"))
		resources_clean();
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
	if (!strcmp(mode, "spinlock"))
		spin_lock_init(&leaker_spin_held);	/* held since init: not unlocked, reset */
	if (strcmp(mode, "leak") && strcmp(mode, "bad"))
		kmem_cache_destroy(leaker_cache);
	kmem_cache_destroy(leaker_other_cache);
}

module_init(leaker_init);
module_exit(leaker_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: leaks and bad frees on purpose");
