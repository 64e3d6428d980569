// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_cycleleak: leaks one object per load/unload cycle (the `reload` test
 * kind's VM test). Each open allocates a session that release frees, and exit
 * frees the state init allocated; but init also duplicates a name for its
 * device that nothing frees: after N cycles, N names are still allocated.
 * The name is the `label` parameter (strlen + 1 bytes leaked per load), so a
 * reload test's module_params show in the sizes of what each cycle leaves.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

struct state {
	char *label;
	int opens;
};

static struct state *state;
static char *label = "kedr_cycleleak session";
module_param(label, charp, 0444);

static int cl_open(struct inode *inode, struct file *f)
{
	f->private_data = kzalloc(32, GFP_KERNEL);
	if (!f->private_data)
		return -ENOMEM;
	state->opens++;
	return 0;
}

static int cl_release(struct inode *inode, struct file *f)
{
	kfree(f->private_data);
	return 0;
}

static ssize_t cl_write(struct file *f, const char __user *from, size_t n, loff_t *pos)
{
	return n;
}

static const struct file_operations cl_fops = {
	.owner = THIS_MODULE,
	.open = cl_open,
	.release = cl_release,
	.write = cl_write,
};

static struct miscdevice cl_dev = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_cycleleak", .fops = &cl_fops,
};

static int __init cl_init(void)
{
	int ret;

	state = kzalloc(sizeof(*state), GFP_KERNEL);
	if (!state)
		return -ENOMEM;
	/* The bug: the label is never freed (exit frees the state only). */
	state->label = kstrdup(label, GFP_KERNEL);
	ret = misc_register(&cl_dev);
	if (ret)
		kfree(state);
	return ret;
}

static void __exit cl_exit(void)
{
	misc_deregister(&cl_dev);
	kfree(state);
}

module_init(cl_init);
module_exit(cl_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test: one leak per load/unload cycle");
