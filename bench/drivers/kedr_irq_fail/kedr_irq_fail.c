// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_irq_fail: make ONE request_threaded_irq() of the stock, unpatched kernel fail,
 * to check a failure kedr-build's fault sweep reported on a patched driver without
 * kedr-build in the way (bench/device_corpus.py's notes). A kprobe on the function's
 * entry picks the call by the name it asks for (name=, e.g. "eth0-tx-0", the 5th
 * argument) and nulls its handler and thread_fn, so the real function returns -EINVAL
 * before it allocates or requests anything (kernel/irq/manage.c: "if (!handler) { if
 * (!thread_fn) return -EINVAL;"): a genuine failure, the caller's own error path.
 */
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/string.h>

static char *name = IRQ_FAIL_NAME;
module_param(name, charp, 0444);
MODULE_PARM_DESC(name, "the devname of the request_threaded_irq() call to fail, once");

static atomic_t failed = ATOMIC_INIT(0);

/* x86-64: irq, handler, thread_fn, irqflags, devname in rdi, rsi, rdx, rcx, r8. */
static int before(struct kprobe *p, struct pt_regs *regs)
{
	const char *devname = (const char *)regs->r8;

	if (!devname || strcmp(devname, name) || atomic_xchg(&failed, 1))
		return 0;
	pr_info("kedr_irq_fail: request_threaded_irq(%lu, ..., \"%s\") from %pS will fail (-EINVAL)\n",
		regs->di, devname, (void *)*(unsigned long *)regs->sp);
	regs->si = 0;
	regs->dx = 0;
	return 0;
}

static struct kprobe probe = {
	.symbol_name = "request_threaded_irq",
	.pre_handler = before,
};

static int __init irq_fail_init(void)
{
	return register_kprobe(&probe);
}

static void __exit irq_fail_exit(void)
{
	unregister_kprobe(&probe);
}

module_init(irq_fail_init);
module_exit(irq_fail_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("fail one request_threaded_irq() by name, with a kprobe");
