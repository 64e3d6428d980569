// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_reach: one use of each kind an interception mechanism must reach, for
 * tests/test_reach.py (kedr_build/ko/reach.py). Built as shipped (gcc -O2 makes
 * the last calls jumps):
 *
 *   r_dup      kstrdup()  a direct call (its result is used after it)
 *   r_drop     kfree()    a tail-call jmp in a function only the module calls
 *   r_release  kfree()    a tail-call jmp in a function whose address is taken
 *   releaser   = kfree    the address of kfree, taken in data
 *   r_init     kstrdup()  a direct call in init code
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

static noinline char *r_dup(const char *s)
{
	char *p = kstrdup(s, GFP_KERNEL);

	if (p)
		p[0] = 'K';
	return p;
}

static noinline void r_drop(void *p)
{
	kfree(p);
}

static int released;

static noinline void r_release(void *p)
{
	WRITE_ONCE(released, released + 1);	/* not r_drop's code: not folded into it */
	kfree(p);
}

/* Both called through pointers a debugger could change: the compiler keeps them. */
static void (*volatile releaser)(const void *) = kfree;
static void (*volatile release_cb)(void *) = r_release;

static int __init r_init(void)
{
	char *a = kstrdup("kedr_reach", GFP_KERNEL);

	if (!a)
		return -ENOMEM;
	r_drop(a);
	a = r_dup("reach");
	release_cb(a);
	releaser(r_dup("reach"));
	return 0;
}

static void __exit r_exit(void)
{
}

module_init(r_init);
module_exit(r_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver: a call, tail calls and a taken address of imports");
