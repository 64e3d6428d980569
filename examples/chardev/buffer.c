// SPDX-License-Identifier: GPL-2.0
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/minmax.h>
#include "buffer.h"

int chardev_buffer_init(struct chardev_buffer *b, size_t cap)
{
	mutex_init(&b->lock);
	b->data = kzalloc(cap, GFP_KERNEL);
	if (!b->data)
		return -ENOMEM;
	b->len = 0;
	b->cap = cap;
	return 0;
}

void chardev_buffer_free(struct chardev_buffer *b)
{
	kfree(b->data);
	b->data = NULL;
}

ssize_t chardev_buffer_read(struct chardev_buffer *b, char __user *to, size_t n, loff_t *pos)
{
	ssize_t ret;

	mutex_lock(&b->lock);
	if (*pos >= b->len) {
		ret = 0;
	} else {
		n = min_t(size_t, n, b->len - *pos);
		if (copy_to_user(to, b->data + *pos, n)) {
			ret = -EFAULT;
		} else {
			*pos += n;
			ret = n;
		}
	}
	mutex_unlock(&b->lock);
	return ret;
}

ssize_t chardev_buffer_write(struct chardev_buffer *b, const char __user *from, size_t n)
{
	ssize_t ret;
	char *tmp;

	n = min_t(size_t, n, b->cap);
	/* Copy into a scratch buffer first so a faulting copy leaves the data intact. */
	tmp = kmalloc(n, GFP_KERNEL);
	if (!tmp)
		return -ENOMEM;
	if (copy_from_user(tmp, from, n)) {
		kfree(tmp);
		return -EFAULT;
	}
	mutex_lock(&b->lock);
	memcpy(b->data, tmp, n);
	b->len = n;
	ret = n;
	mutex_unlock(&b->lock);
	kfree(tmp);
	return ret;
}
