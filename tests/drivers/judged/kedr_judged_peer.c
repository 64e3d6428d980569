// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_judged_peer: the second module of the test driver in
 * tests/drivers/judged (a driver of two modules, both patched against one
 * replacement module). A self-re-arming timer in a kmalloc'ed object, from
 * load to exit, counted in the read-only parameter "fires": kedr_judged
 * going meanwhile must leave it alone (its callback is this module's).
 */
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>
#include <linux/timer.h>

static unsigned long fires;
module_param(fires, ulong, 0444);

struct peer_ticker {
	struct timer_list timer;
};

static struct peer_ticker *peer_ticker;

static void peer_fn(struct timer_list *t)
{
	WRITE_ONCE(fires, fires + 1);
	mod_timer(t, jiffies + HZ / 50);
}

static int __init peer_init(void)
{
	peer_ticker = kzalloc(sizeof(*peer_ticker), GFP_KERNEL);
	if (!peer_ticker)
		return -ENOMEM;
	timer_setup(&peer_ticker->timer, peer_fn, 0);
	mod_timer(&peer_ticker->timer, jiffies + HZ / 50);
	return 0;
}

static void __exit peer_exit(void)
{
	del_timer_sync(&peer_ticker->timer);
	kfree(peer_ticker);
}

module_init(peer_init);
module_exit(peer_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: the second module of a driver of two");
