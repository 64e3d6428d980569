// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_ftrace_hook: hot patching mechanism (b), for bench/bench_attach.py only.
 *
 * An ftrace_ops with FTRACE_OPS_FL_IPMODIFY on kfree and on the allocator
 * kmalloc(64) compiles to, as livepatch redirects a function: while loaded,
 * every call of them in the system enters the callback, which sends the call
 * to a pass-through replacement here only when its return address lies in the
 * target's .text ([text_start, text_start + text_size): given by the bench from
 * /sys/module/<target>/sections/.text and the .ko). Only exported GPL functions
 * are used (ftrace_set_filter by name, register_ftrace_function); kernel text is
 * written by ftrace itself, its trampolines are the kernel's own (IBT: the
 * redirect is a return to regs->ip, not an indirect branch).
 *
 *   redirected   calls sent to a replacement (the target's calls)
 */
#include <linux/ftrace.h>
#include <linux/module.h>
#include <linux/slab.h>

static unsigned long text_start, text_size, redirected;
module_param(text_start, ulong, 0400);
module_param(text_size, ulong, 0400);
module_param(redirected, ulong, 0444);

/*
 * kmalloc(constant size) is __kmalloc_cache_noprof() since the allocation
 * profiling hooks (alloc_hooks(), Linux commit 7bd230a26648 "mm/slab: enable
 * slab allocation tagging for kmalloc and friends", v6.10), kmalloc_trace()
 * before; both take (cache, flags, size).
 */
#ifdef alloc_hooks
#define ALLOC_FN __kmalloc_cache_noprof
#else
#define ALLOC_FN kmalloc_trace
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

/* Pass-through replacements, as kedr's with payloads off: their own calls of
 * the originals return here, not to the target, and are not redirected. */
static noinline void repl_kfree(const void *p)
{
	kfree(p);
}

static noinline void *repl_alloc(struct kmem_cache *s, gfp_t flags, size_t size)
{
	return ALLOC_FN(s, flags, size);
}

static __always_inline void redirect(unsigned long parent_ip, struct ftrace_regs *fregs,
				     unsigned long to)
{
	struct pt_regs *regs;

	if (parent_ip - text_start >= text_size)
		return;
	regs = ftrace_get_regs(fregs);
	if (!regs)
		return;
	redirected++;
	regs->ip = to;
}

static void notrace hook_kfree(unsigned long ip, unsigned long parent_ip,
			       struct ftrace_ops *op, struct ftrace_regs *fregs)
{
	redirect(parent_ip, fregs, (unsigned long)repl_kfree);
}

static void notrace hook_alloc(unsigned long ip, unsigned long parent_ip,
			       struct ftrace_ops *op, struct ftrace_regs *fregs)
{
	redirect(parent_ip, fregs, (unsigned long)repl_alloc);
}

static struct ftrace_ops ops[] = {
	{ .func = hook_kfree, .flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY },
	{ .func = hook_alloc, .flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY },
};
static const char *const names[] = { "kfree", STR(ALLOC_FN) };

static int __init hook_init(void)
{
	int i, ret = 0;

	if (!text_start || !text_size)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(ops); i++) {
		char buf[64];

		strscpy(buf, names[i], sizeof(buf));
		ret = ftrace_set_filter(&ops[i], buf, strlen(buf), 1);
		if (!ret)
			ret = register_ftrace_function(&ops[i]);
		if (ret) {
			pr_err("kedr_ftrace_hook: %s: error %d\n", names[i], ret);
			break;
		}
	}
	if (ret)
		while (i--)
			unregister_ftrace_function(&ops[i]);
	return ret;
}

static void __exit hook_exit(void)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(ops); i++)
		unregister_ftrace_function(&ops[i]);
}

module_init(hook_init);
module_exit(hook_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build benchmark: hot patching through ftrace IPMODIFY");
