// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fuzzbugs: two misc devices with bugs only a hostile caller reaches (the
 * `fuzz` test kind's VM test). Reads and writes work; its workload.sh passes.
 *
 *   /dev/kedr_fz_copy  ioctl with _IOC_NR(cmd) == 3 ("set config", whatever the
 *                      type and direction) copies _IOC_SIZE(cmd) bytes from the
 *                      user into a 64-byte kmalloc'ed buffer: a size above 64 is a
 *                      heap overflow (hardened usercopy stops it with a BUG)
 *   /dev/kedr_fz_rare  ioctl with _IOC_NR(cmd) == 9 allocates a 48-byte object and
 *                      forgets it: one leak per call of that rare command;
 *                      _IOC_NR(cmd) == 6 unlocks a mutex it never took (the rule
 *                      unlock-not-held; harmless to the kernel without
 *                      CONFIG_DEBUG_MUTEXES: nobody else takes that mutex)
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

static char last[32];
static DEFINE_MUTEX(fz_rare_lock);

static ssize_t fz_read(struct file *f, char __user *to, size_t n, loff_t *pos)
{
	return simple_read_from_buffer(to, n, pos, last, sizeof(last));
}

static ssize_t fz_write(struct file *f, const char __user *from, size_t n, loff_t *pos)
{
	size_t k = min(n, sizeof(last));

	if (copy_from_user(last, from, k))
		return -EFAULT;
	return n;
}

static noinline long fz_copy_config(unsigned int cmd, unsigned long arg)
{
	char *config = kmalloc(64, GFP_KERNEL);
	long ret = 0;

	if (!config)
		return -ENOMEM;
	/* The bug: the size comes from the command, the buffer is 64 bytes. */
	if (copy_from_user(config, (void __user *)arg, _IOC_SIZE(cmd)))
		ret = -EFAULT;
	kfree(config);
	return ret;
}

static long fz_copy_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return _IOC_NR(cmd) == 3 ? fz_copy_config(cmd, arg) : -ENOTTY;
}

static noinline long fz_rare_alloc(void)
{
	void *obj = kmalloc(48, GFP_KERNEL);

	/* The bug: a rare command's object is never freed nor kept. */
	return obj ? 0 : -ENOMEM;
}

static noinline long fz_rare_unlock(void)
{
	/* The bug: a rare command's cleanup path unlocks what it never locked. */
	mutex_unlock(&fz_rare_lock);
	return 0;
}

static long fz_rare_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	switch (_IOC_NR(cmd)) {
	case 9:
		return fz_rare_alloc();
	case 6:
		return fz_rare_unlock();
	}
	return -ENOTTY;
}

static const struct file_operations fz_copy_fops = {
	.owner = THIS_MODULE,
	.read = fz_read,
	.write = fz_write,
	.unlocked_ioctl = fz_copy_ioctl,
	.llseek = default_llseek,
};

static const struct file_operations fz_rare_fops = {
	.owner = THIS_MODULE,
	.read = fz_read,
	.write = fz_write,
	.unlocked_ioctl = fz_rare_ioctl,
	.llseek = default_llseek,
};

static struct miscdevice fz_copy = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_fz_copy", .fops = &fz_copy_fops,
};

static struct miscdevice fz_rare = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_fz_rare", .fops = &fz_rare_fops,
};

static int __init fz_init(void)
{
	int ret = misc_register(&fz_copy);

	if (ret)
		return ret;
	ret = misc_register(&fz_rare);
	if (ret)
		misc_deregister(&fz_copy);
	return ret;
}

static void __exit fz_exit(void)
{
	misc_deregister(&fz_rare);
	misc_deregister(&fz_copy);
}

module_init(fz_init);
module_exit(fz_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test: ioctl bugs only a fuzzer finds");
