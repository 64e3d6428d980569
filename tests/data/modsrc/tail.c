// SPDX-License-Identifier: GPL-2.0
/* Defines a symbol named "kmalloc" so that GNU ld can point it into the string
 * "__kmalloc" (tail merging): renaming __kmalloc -> __Kmalloc in place would
 * rename this symbol too. Does not include slab.h, where kmalloc is inline. */
#include <linux/types.h>
#include <linux/compiler.h>

int kmalloc __used = 1;
int tail_get(void) { return kmalloc; }
