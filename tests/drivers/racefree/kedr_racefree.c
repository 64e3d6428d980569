// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_racefree: a misc device whose release() races with an ioctl on another
 * file (the fuzz test kind's race with two threads). Single-threaded use is
 * correct; its workload.sh passes.
 *
 * Each open allocates a context (and a buffer in it) and makes it the device's
 * "current" one; any ioctl swaps the current context's buffer for a new one.
 * The bug: the ioctl takes the current context without a reference or a lock,
 * and sleeps before the swap; release() of that context's file meanwhile frees
 * the context and its buffer, so the ioctl writes into the freed context and
 * frees the buffer a second time (a double free: kedr-build's bad free; without
 * it, slab corruption and a later oops).
 */
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>

struct rf_ctx {
	u64 pad[6];		/* the buffer pointer away from SLUB's free pointer (mid-object) */
	char *buf;
	u64 calls;
};

static struct rf_ctx *current_ctx;

static int rf_open(struct inode *inode, struct file *f)
{
	struct rf_ctx *c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (!c)
		return -ENOMEM;
	c->buf = kmalloc(32, GFP_KERNEL);
	if (!c->buf) {
		kfree(c);
		return -ENOMEM;
	}
	f->private_data = c;
	WRITE_ONCE(current_ctx, c);
	return 0;
}

static int rf_release(struct inode *inode, struct file *f)
{
	struct rf_ctx *c = f->private_data;

	cmpxchg(&current_ctx, c, NULL);
	kfree(c->buf);
	kfree(c);
	return 0;
}

static long rf_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct rf_ctx *c = READ_ONCE(current_ctx);	/* the bug: no reference, no lock */
	char *old, *fresh;

	if (!c)
		return -ENODEV;
	old = c->buf;
	fresh = kmalloc(32, GFP_KERNEL);
	if (!fresh)
		return -ENOMEM;
	usleep_range(200, 400);		/* "talk to the hardware": the window */
	c->buf = fresh;
	c->calls++;
	kfree(old);
	return 0;
}

static const struct file_operations rf_fops = {
	.owner = THIS_MODULE,
	.open = rf_open,
	.release = rf_release,
	.unlocked_ioctl = rf_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice rf_dev = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_racefree", .fops = &rf_fops,
};

module_misc_device(rf_dev);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test: release() racing with an ioctl");
