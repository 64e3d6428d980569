// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fzlock: a misc device whose rare ioctl locks up the whole kernel (the `fuzz`
 * test kind's reduction of a lockup nothing in the guest can report: the host stops
 * the VM, and reads the record from the ivshmem's memory: kedr_build/vm/shm.py).
 * /dev/kedr_fz_lock: ioctl with _IOC_NR(cmd) == 5 ("wait for the device to go idle,
 * with interrupts off") spins forever with interrupts off on every CPU (the others
 * through an IPI: their handlers run with interrupts off too). The other commands
 * answer -ENOTTY.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/smp.h>

static bool fz_idle;		/* set by the device: never */

static void fz_wait_idle(void *unused)
{
	while (!READ_ONCE(fz_idle))
		cpu_relax();
}

static long fz_lock_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	unsigned long flags;

	if (_IOC_NR(cmd) != 5)
		return -ENOTTY;
	/* The bug: a busy wait with interrupts off, for a state that never comes. */
	smp_call_function(fz_wait_idle, NULL, 0);
	local_irq_save(flags);
	fz_wait_idle(NULL);
	local_irq_restore(flags);
	return 0;
}

static const struct file_operations fz_lock_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = fz_lock_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice fz_lock = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_fz_lock", .fops = &fz_lock_fops,
};

module_misc_device(fz_lock);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test: a rare ioctl that locks up every CPU");
