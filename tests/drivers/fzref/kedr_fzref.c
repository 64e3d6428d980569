// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fzref: a misc device (/dev/kedr_fz_ref) whose rare ioctl takes a reference
 * to the module and never drops it (the `fuzz` test kind's VM test of a failed
 * unload): _IOC_NR(cmd) == 5 ("pin the firmware", whatever the type, direction
 * and size) calls __module_get(THIS_MODULE), so after it rmmod fails (-EWOULDBLOCK:
 * the module is in use) for the rest of the boot. Every other command is -ENOTTY.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>

static noinline long fz_ref_pin(void)
{
	/* The bug: nothing ever calls module_put() for this. */
	__module_get(THIS_MODULE);
	return 0;
}

static long fz_ref_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return _IOC_NR(cmd) == 5 ? fz_ref_pin() : -ENOTTY;
}

static const struct file_operations fz_ref_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = fz_ref_ioctl,
};

static struct miscdevice fz_ref = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kedr_fz_ref",
	.fops = &fz_ref_fops,
};

module_misc_device(fz_ref);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: a rare ioctl that leaks a reference to the module");
