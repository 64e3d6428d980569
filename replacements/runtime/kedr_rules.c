// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, rules payload (KEDR_PAYLOAD_RULES): kernel API rules
 * checked on each call, Driver Verifier style. Included by the generated
 * module after kedr_leak.c (it shares its stack table and per-CPU counters'
 * style).
 *
 * Rule "sleep-in-atomic": a function that may sleep (catalog key "sleeps":
 * always, or when its gfp argument allows blocking, gfpflags_allow_blocking()
 * in include/linux/gfp.h) called with preemption disabled (a spinlock held,
 * preempt_disable(), bottom halves off), with interrupts disabled, or in
 * interrupt context. The stock Debian kernel has no CONFIG_DEBUG_ATOMIC_SLEEP,
 * so nothing else would say it; it does have CONFIG_PREEMPT_COUNT (selected by
 * PREEMPT_DYNAMIC), so preempt_count() sees every spinlock. (rcu_read_lock()
 * under PREEMPT_RCU does not touch preempt_count(): not seen.)
 *
 * Rule "unlock-not-held" (reported from kedr_leak.c, which tracks mutexes as
 * resources of kind "mutex"): mutex_unlock() of a mutex the target does not
 * hold. A mutex still held when the target is gone is a live "mutex" in the
 * report, like a leak.
 *
 * Rule "lock-held-at-return" (kedr_judge.c, when the target's init has
 * returned to the kernel: MODULE_STATE_LIVE): a mutex or spinlock the target
 * took and still holds; function, call site and stack are the lock's. (For a
 * spinlock the kernel's do_one_initcall() also warns "returned with
 * preemption imbalance", without saying which lock.)
 *
 * A violation is kept once per (rule, function, call site), with the stack and
 * context of its first occurrence and a count. The call itself runs as the
 * driver asked: reporting must not change what the driver does.
 */
#include <linux/gfp.h>
#include <linux/hardirq.h>
#include <linux/irqflags.h>
#include <linux/preempt.h>

static const char *const kedr_rule_names[] = { "sleep-in-atomic", "unlock-not-held",
						"lock-held-at-return" };

#define KEDR_VIOLATIONS	64

struct kedr_violation {
	unsigned int rule;
	u16 fn;
	unsigned long caller;
	u32 stack;
	unsigned int preempt;		/* preempt_count() at the first occurrence */
	bool irqs_off;
	pid_t pid;
	char comm[TASK_COMM_LEN];
	u64 count;
};

static DEFINE_SPINLOCK(kedr_violations_lock);
static struct kedr_violation kedr_violations[KEDR_VIOLATIONS];
static unsigned int kedr_nviolations;
static DEFINE_PER_CPU(u64, kedr_violations_dropped);	/* new call sites beyond the table */

/* May a function that might sleep be called here? */
static __always_inline bool kedr_atomic_context(void)
{
	return preempt_count() || irqs_disabled();
}

static const char *kedr_context_name(unsigned int preempt, bool irqs_off)
{
	if (preempt & NMI_MASK)
		return "nmi";
	if (preempt & HARDIRQ_MASK)
		return "hardirq";
	if (preempt & SOFTIRQ_OFFSET)
		return "softirq";
	if (irqs_off)
		return "irqs-off";
	if (preempt & SOFTIRQ_MASK)
		return "bh-off";
	if (!preempt)
		return "task";
	return "preempt-off";
}

static noinline void kedr_rule_violation(const struct kedr_function *fn, unsigned int rule,
					 unsigned long ip)
{
	unsigned int preempt = preempt_count();
	bool irqs_off = irqs_disabled(), added = false;
	struct kedr_violation *v;
	unsigned long flags;
	unsigned int i;
	u32 stack;

	if (in_nmi())
		return;		/* no lock may be taken; an NMI handler calling these is rare */
	spin_lock_irqsave(&kedr_violations_lock, flags);
	for (i = 0; i < kedr_nviolations; i++) {
		v = &kedr_violations[i];
		if (v->rule == rule && v->fn == fn->index && v->caller == ip) {
			v->count++;
			spin_unlock_irqrestore(&kedr_violations_lock, flags);
			return;
		}
	}
	spin_unlock_irqrestore(&kedr_violations_lock, flags);

	/* First time at this call site: unwind outside the lock, then add it. */
	stack = kedr_current_stack(ip);
	spin_lock_irqsave(&kedr_violations_lock, flags);
	for (i = 0; i < kedr_nviolations; i++) {
		v = &kedr_violations[i];
		if (v->rule == rule && v->fn == fn->index && v->caller == ip) {
			v->count++;	/* another CPU added it meanwhile */
			goto out;
		}
	}
	if (kedr_nviolations == KEDR_VIOLATIONS) {
		this_cpu_inc(kedr_violations_dropped);
		goto out;
	}
	v = &kedr_violations[kedr_nviolations++];
	v->rule = rule;
	v->fn = fn->index;
	v->caller = ip;
	v->stack = stack;
	v->preempt = preempt;
	v->irqs_off = irqs_off;
	v->count = 1;
	kedr_fill_task(&v->pid, v->comm, sizeof(v->comm));
	added = true;
out:
	spin_unlock_irqrestore(&kedr_violations_lock, flags);
	/* printk with no lock held: see kedr_rule_violation_at(). */
	if (added)
		pr_err("%s: rule %s: %s() called from %pS (%s)\n", KEDR_MODULE_NAME,
		       kedr_rule_names[rule], fn->name, (void *)ip,
		       kedr_context_name(preempt, irqs_off));
}

/*
 * A violation found after the fact (a lock still held when init returned):
 * call site, stack and task are those of the call that broke the rule.
 *
 * No printk under kedr_violations_lock: printk() may call a console
 * driver's write() (console_unlock(), or directly when the console is
 * taken over), and a console driver may be the target: its call of a
 * checked function there (a spinlock, a GFP_KERNEL allocation) comes back
 * here and would spin on the lock this CPU holds. The message is printed
 * once the lock is dropped; the kernel has no lockdep here (Debian builds
 * without CONFIG_PROVE_LOCKING) to say so.
 */
static void kedr_rule_violation_at(unsigned int fn, unsigned int rule, unsigned long ip,
				   u32 stack, pid_t pid, const char *comm)
{
	struct kedr_violation *v;
	unsigned long flags;
	unsigned int i;
	bool added = false;

	spin_lock_irqsave(&kedr_violations_lock, flags);
	for (i = 0; i < kedr_nviolations; i++) {
		v = &kedr_violations[i];
		if (v->rule == rule && v->fn == fn && v->caller == ip) {
			v->count++;
			goto out;
		}
	}
	if (kedr_nviolations == KEDR_VIOLATIONS) {
		this_cpu_inc(kedr_violations_dropped);
		goto out;
	}
	v = &kedr_violations[kedr_nviolations++];
	*v = (struct kedr_violation){ .rule = rule, .fn = fn, .caller = ip, .stack = stack,
				      .pid = pid, .count = 1 };
	strscpy(v->comm, comm, min(sizeof(v->comm), sizeof(((struct kedr_obj *)0)->comm)));
	added = true;
out:
	spin_unlock_irqrestore(&kedr_violations_lock, flags);
	if (added)
		pr_err("%s: rule %s: %s() at %pS\n", KEDR_MODULE_NAME, kedr_rule_names[rule],
		       kedr_fn_name(fn), (void *)ip);
}

/* Report lines (in the leaks file: one report for every check). */
static void kedr_rules_show(struct seq_file *m, unsigned long *shown)
{
	unsigned long flags, dropped = 0;
	unsigned int i, cpu;

	spin_lock_irqsave(&kedr_violations_lock, flags);
	for (i = 0; i < kedr_nviolations; i++) {
		const struct kedr_violation *v = &kedr_violations[i];

		seq_printf(m, "violation rule=%s fn=%s caller=0x%lx stack=%u count=%llu context=%s "
			   "preempt_count=0x%x irqs_off=%d pid=%d comm=", kedr_rule_names[v->rule],
			   kedr_fn_name(v->fn), v->caller, v->stack, v->count,
			   kedr_context_name(v->preempt, v->irqs_off), v->preempt, v->irqs_off,
			   v->pid);
		kedr_put_comm(m, v->comm);
		seq_putc(m, '\n');
		kedr_show_stack(shown, v->stack);
	}
	spin_unlock_irqrestore(&kedr_violations_lock, flags);
	for_each_possible_cpu(cpu)
		dropped += *per_cpu_ptr(&kedr_violations_dropped, cpu);
	seq_printf(m, "rules dropped_violations=%lu\n", dropped);
}

/* A fresh load's state (kedr_control.c's "reset"): no violation seen. */
static void __maybe_unused kedr_rules_reset(void)
{
	unsigned long flags;
	unsigned int cpu;

	spin_lock_irqsave(&kedr_violations_lock, flags);
	memset(kedr_violations, 0, sizeof(kedr_violations));
	kedr_nviolations = 0;
	spin_unlock_irqrestore(&kedr_violations_lock, flags);
	for_each_possible_cpu(cpu)
		*per_cpu_ptr(&kedr_violations_dropped, cpu) = 0;
}
