// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_reach_run: tests/drivers/reach's uses of kstrdup() and kfree(), made at run
 * time (not in init code), for bench/attach_calls.py: the calls cold patching and
 * hot patching (a) each see of every kind of use. Writing N to the "run" parameter
 * makes, N times:
 *
 *   r_drop(r_dup())      kstrdup: a direct call; kfree: a tail-call jmp in a
 *                        function only the module calls
 *   release_cb(r_dup())  kfree: a tail-call jmp in a function whose address is taken
 *   releaser(r_dup())    kfree called through its address, taken in data: the
 *                        module's own indirect call, no call site of kfree
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
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

static int run_set(const char *val, const struct kernel_param *kp)
{
	int n, i, err = kstrtoint(val, 0, &n);

	if (err)
		return err;
	for (i = 0; i < n; i++) {
		r_drop(r_dup("drop"));
		release_cb(r_dup("release"));
		releaser(r_dup("pointer"));
	}
	return 0;
}

static const struct kernel_param_ops run_ops = { .set = run_set };
module_param_cb(run, &run_ops, NULL, 0200);
MODULE_PARM_DESC(run, "write N: N times each use of kstrdup and kfree");

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build bench driver: a call, tail calls and a taken address of imports, at run time");
