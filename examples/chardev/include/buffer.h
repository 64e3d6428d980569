/* A bounded byte buffer guarded by a mutex. */
#ifndef KEDR_CHARDEV_BUFFER_H
#define KEDR_CHARDEV_BUFFER_H

#include <linux/mutex.h>
#include <linux/types.h>

struct chardev_buffer {
	struct mutex lock;
	char *data;
	size_t len;
	size_t cap;
};

int chardev_buffer_init(struct chardev_buffer *b, size_t cap);
void chardev_buffer_free(struct chardev_buffer *b);
ssize_t chardev_buffer_read(struct chardev_buffer *b, char __user *to, size_t n, loff_t *pos);
ssize_t chardev_buffer_write(struct chardev_buffer *b, const char __user *from, size_t n);

#endif
