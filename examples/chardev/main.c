// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_chardev: /dev/kedr_chardev keeps the last thing written to it and
 * gives it back on read. Exercises kmalloc/kzalloc/kfree, a mutex and the
 * user-copy functions - the calls kedr-build intercepts.
 */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include "buffer.h"

#ifndef CHARDEV_BUF_SIZE
#error "ccflags-y from Kbuild did not reach the compiler"
#endif

static struct chardev_buffer buffer;

static ssize_t chardev_read(struct file *f, char __user *to, size_t n, loff_t *pos)
{
	return chardev_buffer_read(&buffer, to, n, pos);
}

static ssize_t chardev_write(struct file *f, const char __user *from, size_t n, loff_t *pos)
{
	return chardev_buffer_write(&buffer, from, n);
}

static const struct file_operations chardev_fops = {
	.owner = THIS_MODULE,
	.read = chardev_read,
	.write = chardev_write,
	.llseek = default_llseek,
};

static struct miscdevice chardev_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kedr_chardev",
	.fops = &chardev_fops,
};

static int __init chardev_init(void)
{
	int ret = chardev_buffer_init(&buffer, CHARDEV_BUF_SIZE);

	if (ret)
		return ret;
	ret = misc_register(&chardev_dev);
	if (ret) {
		chardev_buffer_free(&buffer);
		return ret;
	}
	pr_info("kedr_chardev: ready, buffer of %d bytes\n", CHARDEV_BUF_SIZE);
	return 0;
}

static void __exit chardev_exit(void)
{
	misc_deregister(&chardev_dev);
	chardev_buffer_free(&buffer);
	pr_info("kedr_chardev: unloaded\n");
}

module_init(chardev_init);
module_exit(chardev_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build example: a character device with a buffer");
