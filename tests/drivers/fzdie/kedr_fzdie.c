// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fzdie: a misc device whose rare ioctl kills the guest (the `fuzz` test kind's
 * reduction of a failure that ends the guest: kedr_build/vm/shm.py, vm/reboots.py).
 * /dev/kedr_fz_die: ioctl with _IOC_NR(cmd) == 9 ("start the reply timer") arms a timer
 * and waits for it; its callback writes through the reply buffer it was never given (a
 * NULL pointer). An oops in the timer's softirq is fatal ("Fatal exception in
 * interrupt"): the kernel panics and, with panic=-1 and -no-reboot, the VM ends. The
 * other commands answer -ENOTTY.
 */
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/timer.h>

static struct timer_list fz_reply_timer;
static int *fz_reply;		/* the reply buffer: never allocated */

static void fz_reply_fn(struct timer_list *t)
{
	/* The bug: the reply is written to a buffer nobody gave the device. */
	WRITE_ONCE(*READ_ONCE(fz_reply), 1);
}

static long fz_die_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	if (_IOC_NR(cmd) != 9)
		return -ENOTTY;
	mod_timer(&fz_reply_timer, jiffies + 1);
	msleep(50);		/* the caller waits for the reply: it dies meanwhile */
	return 0;
}

static const struct file_operations fz_die_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = fz_die_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice fz_die = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_fz_die", .fops = &fz_die_fops,
};

static int __init fz_die_init(void)
{
	timer_setup(&fz_reply_timer, fz_reply_fn, 0);
	return misc_register(&fz_die);
}

static void __exit fz_die_exit(void)
{
	misc_deregister(&fz_die);
	del_timer_sync(&fz_reply_timer);
}

module_init(fz_die_init);
module_exit(fz_die_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test: a rare ioctl whose timer oopses (a panic)");
