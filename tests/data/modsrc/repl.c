// SPDX-License-Identifier: GPL-2.0
/* A replacement module: exports the same-length renames of the functions hello calls. */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/mutex.h>

void Kfree(const void *p) { kfree(p); }
EXPORT_SYMBOL(Kfree);
void *__Kmalloc(size_t n, gfp_t f) { return __kmalloc(n, f); }
EXPORT_SYMBOL(__Kmalloc);
void *Kmalloc_trace(struct kmem_cache *s, gfp_t f, size_t n) { return kmalloc_trace(s, f, n); }
EXPORT_SYMBOL(Kmalloc_trace);
void Mutex_lock(struct mutex *m) { mutex_lock(m); }
EXPORT_SYMBOL(Mutex_lock);
void Mutex_unlock(struct mutex *m) { mutex_unlock(m); }
EXPORT_SYMBOL(Mutex_unlock);
void kedr_kfree(const void *p) { kfree(p); }
EXPORT_SYMBOL_GPL(kedr_kfree);
MODULE_LICENSE("GPL");
