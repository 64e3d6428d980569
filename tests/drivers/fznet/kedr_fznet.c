// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fznet: a network interface (kedrfz0) with a bug only its interface reaches
 * (the `fuzz` test kind's VM test): no device node, nothing in /dev. It goes up and
 * down, takes frames (counted and dropped) and answers its private ioctls:
 *
 *   SIOCDEVPRIVATE + 11  ("snapshot the counters") allocates a 40-byte snapshot,
 *                        copies it to ifr_data and forgets it: one leak per call,
 *                        on any argument (a bad pointer included)
 *   SIOCDEVPRIVATE + 0   copies the counters to ifr_data (clean)
 *
 * ndo_siocdevprivate() exists on both pinned kernels (added in Linux v5.15 by
 * "net: split out SIOCDEVPRIVATE handling from dev_ioctl").
 */
#include <linux/etherdevice.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/slab.h>
#include <linux/sockios.h>
#include <linux/uaccess.h>

struct fznet_counters {
	u64 frames, bytes, opens, stops, ioctls;
};

static struct net_device *fznet;
static struct fznet_counters counters;

static int fznet_open(struct net_device *dev)
{
	counters.opens++;
	netif_start_queue(dev);
	return 0;
}

static int fznet_stop(struct net_device *dev)
{
	counters.stops++;
	netif_stop_queue(dev);
	return 0;
}

static netdev_tx_t fznet_xmit(struct sk_buff *skb, struct net_device *dev)
{
	counters.frames++;
	counters.bytes += skb->len;
	dev_kfree_skb(skb);
	return NETDEV_TX_OK;
}

static noinline int fznet_snapshot(void __user *data)
{
	struct fznet_counters *snap = kmalloc(sizeof(*snap), GFP_KERNEL);

	if (!snap)
		return -ENOMEM;
	*snap = counters;
	/* The bug: the snapshot is never freed. */
	return copy_to_user(data, snap, sizeof(*snap)) ? -EFAULT : 0;
}

static int fznet_private(struct net_device *dev, struct ifreq *ifr, void __user *data,
			 int cmd)
{
	counters.ioctls++;
	switch (cmd) {
	case SIOCDEVPRIVATE:
		return copy_to_user(data, &counters, sizeof(counters)) ? -EFAULT : 0;
	case SIOCDEVPRIVATE + 11:
		return fznet_snapshot(data);
	default:
		return -EOPNOTSUPP;
	}
}

static const struct net_device_ops fznet_ops = {
	.ndo_open = fznet_open,
	.ndo_stop = fznet_stop,
	.ndo_start_xmit = fznet_xmit,
	.ndo_siocdevprivate = fznet_private,
};

static void fznet_setup(struct net_device *dev)
{
	ether_setup(dev);
	dev->netdev_ops = &fznet_ops;
	eth_hw_addr_random(dev);
}

static int __init fznet_init(void)
{
	int ret;

	fznet = alloc_netdev(0, "kedrfz%d", NET_NAME_ENUM, fznet_setup);
	if (!fznet)
		return -ENOMEM;
	ret = register_netdev(fznet);
	if (ret)
		free_netdev(fznet);
	return ret;
}

static void __exit fznet_exit(void)
{
	unregister_netdev(fznet);
	free_netdev(fznet);
}

module_init(fznet_init);
module_exit(fznet_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: a network interface with a leak only its private ioctl reaches");
