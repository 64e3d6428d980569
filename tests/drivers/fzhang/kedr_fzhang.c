// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fzhang: a misc device whose rare ioctl hangs (the `fuzz` test kind's hang
 * reduction, across boots). /dev/kedr_fz_hang: ioctl with _IOC_NR(cmd) == 7 ("wait
 * for the device's reply") waits for a completion only an interrupt that never comes
 * would signal, with no timeout. The wait is interruptible, so the caller can still be
 * killed and the driver unloaded; the other commands answer -ENOTTY.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/wait.h>

static DECLARE_WAIT_QUEUE_HEAD(fz_reply_wait);
static bool fz_replied;		/* set by the reply interrupt: there is none */

static long fz_hang_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	if (_IOC_NR(cmd) != 7)
		return -ENOTTY;
	/* The bug: no timeout on a reply that may never come. */
	return wait_event_interruptible(fz_reply_wait, READ_ONCE(fz_replied));
}

static const struct file_operations fz_hang_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = fz_hang_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice fz_hang = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_fz_hang", .fops = &fz_hang_fops,
};

module_misc_device(fz_hang);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test: a rare ioctl that hangs");
