// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_attachee: a driver for the hot-patching VM test, loaded unpatched; the
 * replacement module attaches to it while it runs. It counts its own calls of
 * the functions kedr-build intercepts, so the test can compare them with what
 * the replacement module saw in the attached window.
 *
 *   echo keep  > /sys/kernel/debug/kedr_attachee/cmd   kmalloc an object, keep it
 *   echo drop  > .../cmd                                kfree the oldest kept object
 *   echo churn > .../cmd                                kmalloc and kfree one
 *   echo tail  > .../cmd                                the same, kfree as a tail call
 *                                                       (a jmp: tail_free() ends in it)
 *   echo hold  > .../cmd                                take the mutex and return holding it
 *   echo release > .../cmd                              unlock the mutex "hold" took (a lock
 *                                                       taken before attach, unlocked after)
 *   echo nap   > .../cmd                                msleep_interruptible(60 s), outside
 *                                                       the mutex: a call that stays in flight
 *                                                       until the writer gets a signal
 *   cat .../counts         "alloc=N free=N lock=N unlock=N kept=N"
 *
 * Each command runs under a mutex (mutex_lock/mutex_unlock, counted too).
 * Objects still kept at unload are freed by the exit function.
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

struct kept {
	struct list_head list;
	char data[120];
};

static DEFINE_MUTEX(lock);
static LIST_HEAD(objects);
static unsigned long n_alloc, n_free, n_lock, n_unlock, n_kept;
static struct dentry *dir;
/* A size the compiler cannot see: __kmalloc, not a constant-size variant. */
static size_t obj_size = sizeof(struct kept);
module_param(obj_size, ulong, 0444);

static noinline void locked(void)
{
	mutex_lock(&lock);
	n_lock++;
}

static noinline void unlocked(void)
{
	n_unlock++;
	mutex_unlock(&lock);
}

static noinline struct kept *alloc_one(void)
{
	n_alloc++;
	return kmalloc(obj_size, GFP_KERNEL);
}

static noinline void free_one(struct kept *k)
{
	n_free++;
	kfree(k);
}

/*
 * kedr-build builds with -fno-optimize-sibling-calls; this one function is a tail
 * call anyway (a jmp to kfree), as a module built elsewhere has them.
 */
static noinline __attribute__((optimize("optimize-sibling-calls"))) void tail_free(struct kept *k)
{
	n_free++;
	kfree(k);
}

static ssize_t cmd_write(struct file *f, const char __user *ubuf, size_t len, loff_t *pos)
{
	char buf[16] = {};
	struct kept *k;

	if (copy_from_user(buf, ubuf, min(len, sizeof(buf) - 1)))
		return -EFAULT;
	strim(buf);
	if (!strcmp(buf, "nap")) {
		msleep_interruptible(60000);
		return len;
	}
	/* The same call sites as every command's lock and unlock: no new site. */
	if (!strcmp(buf, "hold")) {
		locked();
		return len;
	}
	if (!strcmp(buf, "release")) {
		unlocked();
		return len;
	}
	locked();
	if (!strcmp(buf, "keep")) {
		k = alloc_one();
		if (k) {
			list_add_tail(&k->list, &objects);
			n_kept++;
		}
	} else if (!strcmp(buf, "drop")) {
		k = list_first_entry_or_null(&objects, struct kept, list);
		if (k) {
			list_del(&k->list);
			n_kept--;
			free_one(k);
		}
	} else if (!strcmp(buf, "tail")) {
		k = alloc_one();
		if (k)
			tail_free(k);
	} else if (!strcmp(buf, "churn")) {
		k = alloc_one();
		if (k)
			free_one(k);
	} else {
		unlocked();
		return -EINVAL;
	}
	unlocked();
	return len;
}

static ssize_t counts_read(struct file *f, char __user *ubuf, size_t len, loff_t *pos)
{
	char buf[128];
	int n;

	n = scnprintf(buf, sizeof(buf), "alloc=%lu free=%lu lock=%lu unlock=%lu kept=%lu\n",
		      n_alloc, n_free, n_lock, n_unlock, n_kept);
	return simple_read_from_buffer(ubuf, len, pos, buf, n);
}

static const struct file_operations cmd_fops = { .owner = THIS_MODULE, .write = cmd_write };
static const struct file_operations counts_fops = { .owner = THIS_MODULE, .read = counts_read };

static int __init attachee_init(void)
{
	dir = debugfs_create_dir("kedr_attachee", NULL);
	debugfs_create_file("cmd", 0200, dir, NULL, &cmd_fops);
	debugfs_create_file("counts", 0400, dir, NULL, &counts_fops);
	return 0;
}

static void __exit attachee_exit(void)
{
	struct kept *k, *tmp;

	debugfs_remove(dir);
	list_for_each_entry_safe(k, tmp, &objects, list)
		kfree(k);
}

module_init(attachee_init);
module_exit(attachee_exit);
MODULE_LICENSE("GPL");
