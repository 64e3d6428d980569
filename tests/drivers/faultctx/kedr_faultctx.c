// SPDX-License-Identifier: GPL-2.0
/*
 * A driver for the fault payload's context tests: calls that a fault must never
 * fail, and calls in interrupt context that a pid or init filter must not match.
 * Writing "COUNT MODE" to /sys/module/kedr_faultctx/parameters/trigger makes COUNT
 * calls, frees what they took, and parameters/pattern then reads one character per
 * call: "." succeeded, "F" failed. MODE:
 *   task    kmalloc(32, GFP_KERNEL) in the writer's process
 *   nofail  kmalloc(32, GFP_KERNEL | __GFP_NOFAIL) in the writer's process
 *   irq     kmalloc(32, GFP_ATOMIC) in hard interrupt context (an irq_work raised
 *           on the writer's CPU, so the interrupt lands on the writer's process)
 *   nmi     spin_trylock() in an NMI handler (an NMI sent to another CPU)
 *   wait    wait_for_completion_interruptible() of a completed completion in the
 *           writer's process (only a pending signal can fail it)
 *   kwait   the same in a kernel thread, which ignores every signal: never failed
 * The init makes one "task" and one "irq" call; parameters/pattern reads their
 * outcome after the load (init succeeds either way). With modprobe=NAME the init
 * first loads the module NAME (request_module(): modprobe, in another task) and
 * waits for it: another module's load in the middle of this one's init.
 */
#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/irq_work.h>
#include <linux/kmod.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <asm/apic.h>
#include <asm/irq_vectors.h>
#include <asm/nmi.h>

static char pattern[257];
static unsigned int irq_calls;
static char *irq_out;
static DEFINE_SPINLOCK(ctx_lock);
static atomic_t nmi_wanted = ATOMIC_INIT(0);	/* calls still to make in the NMI */
static atomic_t nmi_done = ATOMIC_INIT(0);

/* Not a tail call: the allocation's return address stays in this function. */
static noinline void *ctx_alloc(gfp_t gfp)
{
	void *p = kmalloc(32, gfp);

	if (p)
		memset(p, 0, 32);
	return p;
}

/* 0, or -ERESTARTSYS when the wait is failed: the completion is already done. */
static noinline int ctx_wait(void)
{
	DECLARE_COMPLETION_ONSTACK(done);

	complete(&done);
	return wait_for_completion_interruptible(&done);
}

static unsigned int kwait_calls;
static DECLARE_COMPLETION(kwait_done);

static int ctx_kthread(void *data)
{
	char *out = data;
	unsigned int i;

	for (i = 0; i < kwait_calls; i++)
		out[i] = ctx_wait() ? 'F' : '.';
	complete(&kwait_done);
	while (!kthread_should_stop()) {
		set_current_state(TASK_UNINTERRUPTIBLE);
		if (!kthread_should_stop())
			schedule();
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

static int in_kthread_calls(char *out, unsigned int count)
{
	struct task_struct *t;

	kwait_calls = count;
	reinit_completion(&kwait_done);
	t = kthread_run(ctx_kthread, out, "kedr_faultctx");
	if (IS_ERR(t))
		return PTR_ERR(t);
	wait_for_completion(&kwait_done);
	return kthread_stop(t);
}

static void ctx_irq_work(struct irq_work *work)
{
	unsigned int i;

	for (i = 0; i < irq_calls; i++) {
		void *p = ctx_alloc(GFP_ATOMIC);

		irq_out[i] = p ? '.' : 'F';
		kfree(p);
	}
}

static struct irq_work ctx_work;

static void in_irq_calls(char *out, unsigned int count)
{
	irq_calls = count;
	irq_out = out;
	irq_work_queue(&ctx_work);
	irq_work_sync(&ctx_work);
}

static int ctx_nmi(unsigned int type, struct pt_regs *regs)
{
	int n = atomic_xchg(&nmi_wanted, 0);
	int i;

	if (!n)
		return NMI_DONE;
	for (i = 0; i < n; i++) {
		bool got = spin_trylock(&ctx_lock);

		pattern[i] = got ? '.' : 'F';
		if (got)
			spin_unlock(&ctx_lock);
	}
	atomic_set(&nmi_done, 1);
	return NMI_HANDLED;
}

static int in_nmi_calls(unsigned int count)
{
	int cpu, tries;

	cpu = cpumask_any_but(cpu_online_mask, get_cpu());
	put_cpu();
	if (cpu >= nr_cpu_ids)
		return -ENODEV;		/* one CPU: no other to send the NMI to */
	atomic_set(&nmi_done, 0);
	atomic_set(&nmi_wanted, count);
	apic->send_IPI_mask(cpumask_of(cpu), NMI_VECTOR);
	for (tries = 0; tries < 1000 && !atomic_read(&nmi_done); tries++)
		msleep(10);
	if (!atomic_read(&nmi_done)) {
		atomic_set(&nmi_wanted, 0);
		return -ETIMEDOUT;
	}
	return 0;
}

static int trigger_set(const char *val, const struct kernel_param *kp)
{
	unsigned int count, i;
	char mode[8];
	int err = 0;

	if (sscanf(val, "%u %7s", &count, mode) != 2 || count >= sizeof(pattern))
		return -EINVAL;
	memset(pattern, 0, sizeof(pattern));
	if (!strcmp(mode, "irq")) {
		in_irq_calls(pattern, count);
	} else if (!strcmp(mode, "nmi")) {
		err = in_nmi_calls(count);
	} else if (!strcmp(mode, "wait")) {
		for (i = 0; i < count; i++)
			pattern[i] = ctx_wait() ? 'F' : '.';
	} else if (!strcmp(mode, "kwait")) {
		err = in_kthread_calls(pattern, count);
	} else if (!strcmp(mode, "task") || !strcmp(mode, "nofail")) {
		gfp_t gfp = GFP_KERNEL | (mode[0] == 'n' ? __GFP_NOFAIL : 0);

		for (i = 0; i < count; i++) {
			void *p = ctx_alloc(gfp);

			pattern[i] = p ? '.' : 'F';
			kfree(p);
		}
	} else {
		err = -EINVAL;
	}
	return err;
}

static const struct kernel_param_ops trigger_ops = { .set = trigger_set };
module_param_cb(trigger, &trigger_ops, NULL, 0200);
module_param_string(pattern, pattern, sizeof(pattern), 0444);
static char *modprobe;
module_param(modprobe, charp, 0444);

static int __init faultctx_init(void)
{
	void *p;
	int err;

	init_irq_work(&ctx_work, ctx_irq_work);
	err = register_nmi_handler(NMI_LOCAL, ctx_nmi, 0, "kedr_faultctx");
	if (err)
		return err;
	if (modprobe && request_module("%s", modprobe))
		pr_warn("kedr_faultctx: request_module(%s) failed\n", modprobe);
	p = ctx_alloc(GFP_KERNEL);
	pattern[0] = p ? '.' : 'F';
	kfree(p);
	in_irq_calls(pattern + 1, 1);
	return 0;
}

static void __exit faultctx_exit(void)
{
	unregister_nmi_handler(NMI_LOCAL, "kedr_faultctx");
	irq_work_sync(&ctx_work);
}

module_init(faultctx_init);
module_exit(faultctx_exit);
MODULE_LICENSE("GPL");
