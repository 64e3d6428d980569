// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_fzbench: a misc device whose every file operation calls the kernel
 * functions kedr-build intercepts (bench/bench_fuzz.py): open allocates a
 * context, release frees it; read, write, ioctl, poll and llseek each take a
 * mutex and allocate and free a buffer. What a fuzzer's syscall costs with every
 * payload on (trace, leaks, rules, fault points) is then the payloads' cost, not
 * the cost of a syscall that reaches no intercepted call. No bug.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/slab.h>

static DEFINE_MUTEX(fb_lock);
static unsigned long fb_ops;

static noinline int fb_work(size_t n)
{
	void *p;

	mutex_lock(&fb_lock);
	p = kmalloc(n ? min_t(size_t, n, 4096) : 16, GFP_KERNEL);
	fb_ops++;
	mutex_unlock(&fb_lock);
	if (!p)
		return -ENOMEM;
	kfree(p);
	return 0;
}

static int fb_open(struct inode *inode, struct file *f)
{
	f->private_data = kzalloc(64, GFP_KERNEL);
	return f->private_data ? 0 : -ENOMEM;
}

static int fb_release(struct inode *inode, struct file *f)
{
	kfree(f->private_data);
	return 0;
}

static ssize_t fb_read(struct file *f, char __user *to, size_t n, loff_t *pos)
{
	return fb_work(n) ?: 0;
}

static ssize_t fb_write(struct file *f, const char __user *from, size_t n, loff_t *pos)
{
	return fb_work(n) ?: (ssize_t)n;
}

static long fb_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return fb_work(_IOC_SIZE(cmd)) ?: -ENOTTY;
}

static __poll_t fb_poll(struct file *f, struct poll_table_struct *wait)
{
	return fb_work(16) ? EPOLLERR : EPOLLIN | EPOLLOUT;
}

static loff_t fb_llseek(struct file *f, loff_t off, int whence)
{
	return fb_work(16) ?: noop_llseek(f, off, whence);
}

static const struct file_operations fb_fops = {
	.owner = THIS_MODULE,
	.open = fb_open,
	.release = fb_release,
	.read = fb_read,
	.write = fb_write,
	.unlocked_ioctl = fb_ioctl,
	.poll = fb_poll,
	.llseek = fb_llseek,
};

static struct miscdevice fb_dev = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_fzbench", .fops = &fb_fops,
};

module_misc_device(fb_dev);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build bench: every file operation calls intercepted functions");
