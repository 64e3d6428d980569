// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fztaint: a misc device whose rare ioctl taints the kernel with no WARN or BUG
 * (the `fuzz` test kind's taint reduction, across boots). /dev/kedr_fz_taint: ioctl
 * with _IOC_NR(cmd) == 11 ("reset") takes a firmware-bug workaround path that marks the
 * kernel TAINT_FIRMWARE_WORKAROUND (I), as drivers do when they work around broken
 * firmware, and logs one plain line; the other commands answer -ENOTTY.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/panic.h>

static long fz_taint_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	if (_IOC_NR(cmd) != 11)
		return -ENOTTY;
	/* The bug: a reset the firmware cannot take, worked around instead of refused. */
	pr_info("kedr_fz_taint: reset: working around the firmware\n");
	add_taint(TAINT_FIRMWARE_WORKAROUND, LOCKDEP_STILL_OK);
	return 0;
}

static const struct file_operations fz_taint_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = fz_taint_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice fz_taint = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_fz_taint", .fops = &fz_taint_fops,
};

module_misc_device(fz_taint);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test: a rare ioctl that taints the kernel");
