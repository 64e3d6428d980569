// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, fault payload (KEDR_PAYLOAD_FAULTS): decide before a
 * call whether it fails. A failed call returns the catalog's "fault" value and
 * never reaches the kernel (no side effect); it is counted, traced (the trace
 * event shows the fault value returned) and logged with its caller.
 *
 * Included by the generated module, which defines before it:
 *   kedr_fault_point_names[]  the fault points, NULL-terminated: one per
 *                             family ("kmalloc": every exported name the
 *                             kmalloc API compiles to) and one per catalog
 *                             function ("__kmalloc") that is not a family name
 *   kedr_fault_points_of[]    per function: { own point, family point }, -1 none
 *
 * A call is judged against its function's point and its family's point (one
 * when they are the same); it fails when either scenario says so. A point
 * starts with the scenario "never". The scenario format (one line, terms
 * separated by spaces; replacements/runtime/README.md, "Fault payload", and the
 * host's parser kedr_build/faults/scenario.py):
 *
 *   never | always | nth=N | every=N | after=N    which matching calls fail
 *   prob=P [seed=S]      each matching call fails with probability P (0..1, at
 *                        most 18 digits after the point, kept exactly as 64-bit
 *                        fixed point), from a PRNG seeded with S (default:
 *                        random, shown)
 *   pid=N                calls made by process N or its descendants, in task
 *                        context (an interrupt that lands on that process is not
 *                        the process's call)
 *   init                 calls made while a module's init runs (by its loader),
 *                        in task context
 *   caller=F | caller=F+0xO | caller=F+0xA-0xB
 *                        calls from function F of the target, at offset O, or
 *                        at an offset in [A, B)
 *   size>N | size<N      calls whose size argument is above / below N
 *   gfp=atomic | gfp=blocking | gfp&MASK
 *                        calls whose gfp flags cannot / can block, or have any
 *                        bit of MASK
 *
 * Counts are of matching calls (those passing every filter), since the
 * scenario was written. Two kinds of call are never failed, whatever the
 * scenario, and only counted ("skipped nofail=N nmi=N"): a call whose gfp flags
 * have __GFP_NOFAIL (its caller relies on it succeeding: failing it makes the
 * kernel, not the driver, misbehave) and a call made in NMI context (which must
 * take no lock: the point's lock may be held by the code the NMI interrupted).
 * A site recorder (faults/sites) lists the distinct (function, caller) pairs
 * reached, for the systematic sweep.
 *
 * A function whose catalog entry says `fails_on = "signal"` (an interruptible or
 * killable wait) is not even judged when no signal can reach its caller
 * (kedr_signal_possible(), called by the generated replacement): such a call cannot
 * fail, so it is neither failed nor recorded as a site.
 */
#include <linux/atomic.h>
#include <linux/ctype.h>
#include <linux/debugfs.h>
#include <linux/gfp.h>
#include <linux/hardirq.h>
#include <linux/kallsyms.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/pid.h>
#include <linux/prandom.h>
#include <linux/random.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#define KEDR_NFAULT_POINTS	(ARRAY_SIZE(kedr_fault_point_names) - 1)
#define KEDR_SCENARIO_LEN	192
#define KEDR_CALLER_LEN		128
#define KEDR_FAULT_SITES	512

/*
 * Can a signal interrupt the caller's wait? Any task's but a kernel thread's that
 * allowed none. kthreadd ignores every signal (ignore_signals(), kernel/kthread.c)
 * and each kernel thread, workqueue workers included, copies its handlers; a signal
 * sent to a task whose handler is SIG_IGN is dropped (kernel/signal.c,
 * sig_task_ignored(); a kernel thread's freezing wakes it without one), so its
 * interruptible wait returns early only once it called allow_signal() (the handler
 * is then SIG_KTHREAD) — usb-storage's control thread never does
 * (drivers/usb/storage/usb.c, usb_stor_control_thread(), Linux 6.1 and 6.12).
 */
static bool __maybe_unused kedr_signal_possible(void)
{
	struct k_sigaction *action;
	int i;

	if (!(current->flags & PF_KTHREAD))
		return true;
	action = current->sighand->action;
	for (i = 0; i < _NSIG; i++)
		if (READ_ONCE(action[i].sa.sa_handler) != SIG_IGN)
			return true;
	return false;
}
#define KEDR_FAULT_LOGGED	32	/* per point and scenario; later ones are counted only */
#define KEDR_PROB_DIGITS	18	/* 10^18 < 2^64: the fraction's digits fit a u64 */

enum kedr_fault_rule { KEDR_FAULT_NEVER, KEDR_FAULT_ALWAYS, KEDR_FAULT_NTH, KEDR_FAULT_EVERY,
		       KEDR_FAULT_AFTER };
enum kedr_fault_gfp { KEDR_GFP_ANY, KEDR_GFP_ATOMIC, KEDR_GFP_BLOCKING };

struct kedr_scenario {
	enum kedr_fault_rule rule;
	u64 n;
	bool has_prob;
	bool prob_certain;		/* P = 1: every matching call */
	u64 prob_threshold;		/* P < 1: fail when a 64-bit random value is below */
	u64 prob_frac;			/* P's digits after the point, as written ... */
	unsigned int prob_digits;	/* ... and how many (for the show) */
	u64 seed;
	pid_t pid;			/* 0: any process */
	bool init_only;
	char caller[KEDR_CALLER_LEN];	/* "": any caller */
	unsigned long off_lo, off_hi;	/* offsets in the caller, [lo, hi); hi 0: any */
	bool has_size_above, has_size_below;
	u64 size_above, size_below;
	enum kedr_fault_gfp gfp;
	unsigned long gfp_mask;		/* 0: any */
};

struct kedr_fault_point {
	spinlock_t lock;
	bool armed;			/* scenario is not "never": read without the lock */
	bool needs_caller;		/* the scenario names a caller */
	struct kedr_scenario sc;
	struct rnd_state rnd;
	u64 calls, matched, injected;
	atomic64_t nofail, nmi;		/* calls never failed (see above), counted lock-free */
	unsigned int logged;		/* injections logged since the scenario was written */
};

struct kedr_fault_site {
	unsigned int fn;
	unsigned long addr;
	char caller[KEDR_CALLER_LEN];	/* "function+0xoff", relative to the target */
	u64 calls;
};

static struct kedr_fault_point kedr_fault_points[ARRAY_SIZE(kedr_fault_point_names)];
static DEFINE_SPINLOCK(kedr_fault_sites_lock);
static struct kedr_fault_site kedr_fault_sites[KEDR_FAULT_SITES];
static unsigned int kedr_fault_nsites;
static bool kedr_fault_recording;
static u64 kedr_fault_sites_dropped;
/* The task running a target's init (MODULE_STATE_COMING until LIVE or GOING). */
static struct task_struct *kedr_fault_init_task;

/*
 * The caller as "function+0xoff" from sprint_symbol() ("f+0x1a/0x80 [mod]"),
 * relative to the function, so a site survives a reload at another address.
 */
static noinline void kedr_fault_caller(unsigned long addr, char *out, size_t len)
{
	char sym[KSYM_SYMBOL_LEN];
	char *end;

	sprint_symbol(sym, addr);
	end = strchr(sym, '/');
	if (end)
		*end = '\0';
	strscpy(out, sym, len);
}

static bool kedr_fault_pid_matches(pid_t pid)
{
	struct task_struct *t;
	bool found = false;

	rcu_read_lock();
	for (t = current; t && t->pid > 1; t = rcu_dereference(t->real_parent)) {
		if (t->tgid == pid || t->pid == pid) {
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

static bool kedr_fault_caller_matches(const struct kedr_scenario *sc, const char *caller)
{
	size_t n = strlen(sc->caller);
	unsigned long off;

	if (strncmp(caller, sc->caller, n) || (caller[n] != '+' && caller[n] != '\0'))
		return false;
	if (!sc->off_hi)
		return true;
	if (caller[n] != '+' || kstrtoul(caller + n + 1, 0, &off))
		return false;
	return off >= sc->off_lo && off < sc->off_hi;
}

/* Called with pt->lock held: does this call match the filters, and does it fail? */
static bool kedr_fault_judge(struct kedr_fault_point *pt, const char *caller, bool has_size,
			     size_t size, bool has_gfp, unsigned long gfp)
{
	const struct kedr_scenario *sc = &pt->sc;
	bool fail;

	/* An interrupt runs on whatever task it lands on: it is no call of that task's. */
	if ((sc->pid || sc->init_only) && !in_task())
		return false;
	if (sc->pid && !kedr_fault_pid_matches(sc->pid))
		return false;
	if (sc->init_only && current != READ_ONCE(kedr_fault_init_task))
		return false;
	if (sc->caller[0] && !kedr_fault_caller_matches(sc, caller))
		return false;
	if ((sc->has_size_above || sc->has_size_below) && !has_size)
		return false;
	if (sc->has_size_above && !(size > sc->size_above))
		return false;
	if (sc->has_size_below && !(size < sc->size_below))
		return false;
	if ((sc->gfp != KEDR_GFP_ANY || sc->gfp_mask) && !has_gfp)
		return false;
	if (sc->gfp == KEDR_GFP_ATOMIC && (gfp & (__force unsigned long)__GFP_DIRECT_RECLAIM))
		return false;
	if (sc->gfp == KEDR_GFP_BLOCKING && !(gfp & (__force unsigned long)__GFP_DIRECT_RECLAIM))
		return false;
	if (sc->gfp_mask && !(gfp & sc->gfp_mask))
		return false;
	pt->matched++;
	switch (sc->rule) {
	case KEDR_FAULT_ALWAYS:
		fail = true;
		break;
	case KEDR_FAULT_NTH:
		fail = pt->matched == sc->n;
		break;
	case KEDR_FAULT_EVERY:
		fail = pt->matched % sc->n == 0;
		break;
	case KEDR_FAULT_AFTER:
		fail = pt->matched > sc->n;
		break;
	default:
		fail = false;
	}
	if (fail && sc->has_prob && !sc->prob_certain) {
		u64 r = (u64)prandom_u32_state(&pt->rnd) << 32 | prandom_u32_state(&pt->rnd);

		fail = r < sc->prob_threshold;
	}
	if (fail)
		pt->injected++;
	return fail;
}

static void kedr_fault_record_site(unsigned int fn, unsigned long addr)
{
	char caller[KEDR_CALLER_LEN];
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(&kedr_fault_sites_lock, flags);
	for (i = 0; i < kedr_fault_nsites; i++) {
		if (kedr_fault_sites[i].fn == fn && kedr_fault_sites[i].addr == addr) {
			kedr_fault_sites[i].calls++;
			spin_unlock_irqrestore(&kedr_fault_sites_lock, flags);
			return;
		}
	}
	spin_unlock_irqrestore(&kedr_fault_sites_lock, flags);
	kedr_fault_caller(addr, caller, sizeof(caller));
	spin_lock_irqsave(&kedr_fault_sites_lock, flags);
	for (i = 0; i < kedr_fault_nsites; i++)
		if (kedr_fault_sites[i].fn == fn && kedr_fault_sites[i].addr == addr)
			break;
	if (i < kedr_fault_nsites) {
		kedr_fault_sites[i].calls++;
	} else if (kedr_fault_nsites < KEDR_FAULT_SITES) {
		struct kedr_fault_site *s = &kedr_fault_sites[kedr_fault_nsites++];

		s->fn = fn;
		s->addr = addr;
		s->calls = 1;
		strscpy(s->caller, caller, sizeof(s->caller));
	} else {
		kedr_fault_sites_dropped++;
	}
	spin_unlock_irqrestore(&kedr_fault_sites_lock, flags);
}

/*
 * Does this call of @fn fail? @has_size/@size: the call's size argument (the
 * catalog's "size"), @has_gfp/@gfp: its gfp flags; @caller: _RET_IP_.
 */
static noinline bool __maybe_unused kedr_fault(const struct kedr_function *fn, bool has_size,
						size_t size, bool has_gfp, unsigned long gfp,
						unsigned long caller)
{
	char where[KEDR_CALLER_LEN];
	bool fail = false, named = false, log = false;
	const int *points = kedr_fault_points_of[fn->index];
	/* No lock in NMI: the lock may be held by what the NMI interrupted. */
	bool nmi = in_nmi();
	/* __GFP_NOFAIL (include/linux/gfp_types.h): "will never return with failure" */
	bool nofail = has_gfp && (gfp & (__force unsigned long)__GFP_NOFAIL);
	unsigned int k;

	if (unlikely(READ_ONCE(kedr_fault_recording)) && !nmi && !nofail)
		kedr_fault_record_site(fn->index, caller);
	for (k = 0; k < 2; k++) {
		struct kedr_fault_point *pt;
		unsigned long flags;

		if (points[k] < 0 || (k == 1 && points[1] == points[0]))
			continue;
		pt = &kedr_fault_points[points[k]];
		if (!READ_ONCE(pt->armed))
			continue;
		if (nmi || nofail) {
			atomic64_inc(nmi ? &pt->nmi : &pt->nofail);
			continue;
		}
		if (READ_ONCE(pt->needs_caller) && !named) {
			kedr_fault_caller(caller, where, sizeof(where));
			named = true;
		}
		spin_lock_irqsave(&pt->lock, flags);
		pt->calls++;
		if (kedr_fault_judge(pt, named ? where : "", has_size, size, has_gfp, gfp)) {
			fail = true;
			log |= pt->logged++ < KEDR_FAULT_LOGGED;
		}
		spin_unlock_irqrestore(&pt->lock, flags);
	}
	if (log)
		pr_info("%s: fault injected: %s at %pS pid %d\n", KEDR_MODULE_NAME,
			fn->name, (void *)caller, task_pid_nr(current));
	return fail;
}

/* --- the scenario parser (the host's kedr_build/faults/scenario.py checks first) --------- */

static int kedr_parse_u64(const char *s, u64 *out)
{
	return kstrtoull(s, 0, out);
}

/*
 * "0.25", "1", "1.0", "0": one digit 0 or 1, then at most KEDR_PROB_DIGITS
 * digits after the point (more would not fit the u64 fraction: refused, never
 * cut). P < 1 becomes a 64-bit threshold, floor(P * 2^63) * 2 (within 2^-63);
 * P = 1 is "certain" (2^64 does not fit a u64).
 */
static int kedr_parse_prob(const char *s, struct kedr_scenario *sc)
{
	u64 frac = 0, scale = 1;
	unsigned int digits = 0;
	const char *p = s;

	if (*p != '0' && *p != '1')
		return -EINVAL;
	p++;
	if (*p == '.') {
		p++;
		if (!isdigit(*p))
			return -EINVAL;
		for (; isdigit(*p); p++) {
			if (++digits > KEDR_PROB_DIGITS)
				return -EINVAL;
			frac = frac * 10 + (*p - '0');
			scale *= 10;
		}
	}
	if (*p || (s[0] == '1' && frac))
		return -EINVAL;
	sc->prob_certain = s[0] == '1';
	sc->prob_frac = frac;
	sc->prob_digits = digits;
	sc->prob_threshold = sc->prob_certain ? 0 : mul_u64_u64_div_u64(frac, 1ULL << 63, scale) << 1;
	return 0;
}

static int kedr_parse_caller(char *v, struct kedr_scenario *sc)
{
	char *plus = strchr(v, '+'), *dash;
	unsigned long lo, hi;

	if (plus) {
		*plus++ = '\0';
		dash = strchr(plus, '-');
		if (dash)
			*dash++ = '\0';
		if (kstrtoul(plus, 0, &lo))
			return -EINVAL;
		hi = lo + 1;
		if (dash && (kstrtoul(dash, 0, &hi) || hi <= lo))
			return -EINVAL;
		sc->off_lo = lo;
		sc->off_hi = hi;
	}
	if (!*v || strlen(v) >= sizeof(sc->caller))
		return -EINVAL;
	strscpy(sc->caller, v, sizeof(sc->caller));
	return 0;
}

/* The terms other than the count rules: each at most once (not last-wins). */
static const char *const kedr_scenario_terms[] = {
	"init", "prob=", "seed=", "pid=", "caller=", "size>", "size<", "gfp=", "gfp&",
};

static int kedr_parse_scenario(char *text, struct kedr_scenario *sc)
{
	bool has_rule = false, has_seed = false;
	unsigned long seen = 0;
	char *word;
	size_t t;

	memset(sc, 0, sizeof(*sc));
	sc->rule = KEDR_FAULT_ALWAYS;		/* filters alone: every matching call */
	while ((word = strsep(&text, " \t\n")) != NULL) {
		char *v = strchr(word, '=');
		enum kedr_fault_rule rule = KEDR_FAULT_NEVER;
		bool is_rule = true;
		int err = 0;

		if (!*word)
			continue;
		if (!strcmp(word, "never"))
			rule = KEDR_FAULT_NEVER;
		else if (!strcmp(word, "always"))
			rule = KEDR_FAULT_ALWAYS;
		else if (!strncmp(word, "nth=", 4))
			rule = KEDR_FAULT_NTH;
		else if (!strncmp(word, "every=", 6))
			rule = KEDR_FAULT_EVERY;
		else if (!strncmp(word, "after=", 6))
			rule = KEDR_FAULT_AFTER;
		else
			is_rule = false;
		if (is_rule) {
			if (has_rule)
				return -EINVAL;
			has_rule = true;
			sc->rule = rule;
			if (v && (kedr_parse_u64(v + 1, &sc->n) ||
				  (rule != KEDR_FAULT_AFTER && sc->n == 0)))
				return -EINVAL;
			continue;
		}
		for (t = 0; t < ARRAY_SIZE(kedr_scenario_terms); t++)
			if (!strncmp(word, kedr_scenario_terms[t], strlen(kedr_scenario_terms[t])))
				break;
		if (t < ARRAY_SIZE(kedr_scenario_terms)) {
			if (seen & BIT(t))
				return -EINVAL;
			seen |= BIT(t);
		}
		if (!strcmp(word, "init")) {
			sc->init_only = true;
		} else if (!strncmp(word, "prob=", 5)) {
			sc->has_prob = true;
			err = kedr_parse_prob(word + 5, sc);
		} else if (!strncmp(word, "seed=", 5)) {
			has_seed = true;
			err = kedr_parse_u64(word + 5, &sc->seed);
		} else if (!strncmp(word, "pid=", 4)) {
			int pid;

			err = kstrtoint(word + 4, 0, &pid);
			if (!err && pid <= 0)
				err = -EINVAL;
			sc->pid = pid;
		} else if (!strncmp(word, "caller=", 7)) {
			err = kedr_parse_caller(word + 7, sc);
		} else if (!strncmp(word, "size>", 5)) {
			sc->has_size_above = true;
			err = kedr_parse_u64(word + 5, &sc->size_above);
		} else if (!strncmp(word, "size<", 5)) {
			sc->has_size_below = true;
			err = kedr_parse_u64(word + 5, &sc->size_below);
		} else if (!strcmp(word, "gfp=atomic")) {
			sc->gfp = KEDR_GFP_ATOMIC;
		} else if (!strcmp(word, "gfp=blocking")) {
			sc->gfp = KEDR_GFP_BLOCKING;
		} else if (!strncmp(word, "gfp&", 4)) {
			err = kstrtoul(word + 4, 0, &sc->gfp_mask);
			if (!err && !sc->gfp_mask)
				err = -EINVAL;
		} else {
			err = -EINVAL;
		}
		if (err)
			return -EINVAL;
	}
	if (has_seed && !sc->has_prob)
		return -EINVAL;
	if (sc->has_prob && !has_seed)
		sc->seed = get_random_u32();
	return 0;
}

/* Write the scenario back in the same format (with the seed actually used). */
static void kedr_show_scenario(struct seq_file *m, const struct kedr_scenario *sc)
{
	static const char *const rules[] = { "never", "always", "nth", "every", "after" };

	seq_puts(m, rules[sc->rule]);
	if (sc->rule >= KEDR_FAULT_NTH)
		seq_printf(m, "=%llu", sc->n);
	if (sc->has_prob) {
		/* At least six digits after the point, as before; more when written. */
		unsigned int digits = max(sc->prob_digits, 6U), i;
		u64 frac = sc->prob_frac;

		for (i = sc->prob_digits; i < digits; i++)
			frac *= 10;
		seq_printf(m, " prob=%d.%0*llu seed=%llu", sc->prob_certain, digits, frac,
			   sc->seed);
	}
	if (sc->pid)
		seq_printf(m, " pid=%d", sc->pid);
	if (sc->init_only)
		seq_puts(m, " init");
	if (sc->caller[0]) {
		seq_printf(m, " caller=%s", sc->caller);
		if (sc->off_hi == sc->off_lo + 1)
			seq_printf(m, "+0x%lx", sc->off_lo);
		else if (sc->off_hi)
			seq_printf(m, "+0x%lx-0x%lx", sc->off_lo, sc->off_hi);
	}
	if (sc->has_size_above)
		seq_printf(m, " size>%llu", sc->size_above);
	if (sc->has_size_below)
		seq_printf(m, " size<%llu", sc->size_below);
	if (sc->gfp == KEDR_GFP_ATOMIC)
		seq_puts(m, " gfp=atomic");
	else if (sc->gfp == KEDR_GFP_BLOCKING)
		seq_puts(m, " gfp=blocking");
	if (sc->gfp_mask)
		seq_printf(m, " gfp&0x%lx", sc->gfp_mask);
	seq_putc(m, '\n');
}

/*
 * prandom_seed_state() gives the four taus113 words one value, and the first
 * outputs of such a state are strongly correlated (lib/random32.c warms its
 * own states up with 10 rounds, prandom_warmup(), which is static): mix the
 * seed and warm up the same way.
 */
static void kedr_fault_seed(struct rnd_state *rnd, u64 seed)
{
	int i;

	prandom_seed_state(rnd, seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
	for (i = 0; i < 10; i++)
		prandom_u32_state(rnd);
}

/* --- debugfs: faults/<point>, faults/sites ------------------------------------------- */

static int kedr_fault_point_show(struct seq_file *m, void *unused)
{
	struct kedr_fault_point *pt = m->private;
	struct kedr_scenario sc;
	u64 calls, matched, injected;
	unsigned long flags;

	spin_lock_irqsave(&pt->lock, flags);
	sc = pt->sc;
	calls = pt->calls;
	matched = pt->matched;
	injected = pt->injected;
	spin_unlock_irqrestore(&pt->lock, flags);
	kedr_show_scenario(m, &sc);
	seq_printf(m, "skipped nofail=%lld nmi=%lld\n", (long long)atomic64_read(&pt->nofail),
		   (long long)atomic64_read(&pt->nmi));
	seq_printf(m, "calls=%llu matched=%llu injected=%llu\n", calls, matched, injected);
	return 0;
}

static int kedr_fault_point_open(struct inode *inode, struct file *file)
{
	return single_open(file, kedr_fault_point_show, inode->i_private);
}

static ssize_t kedr_fault_point_write(struct file *file, const char __user *buf, size_t count,
				      loff_t *ppos)
{
	struct kedr_fault_point *pt = ((struct seq_file *)file->private_data)->private;
	struct kedr_scenario *sc;
	unsigned long flags;
	char *text;
	int err;

	if (count >= KEDR_SCENARIO_LEN)
		return -EINVAL;
	text = memdup_user_nul(buf, count);
	if (IS_ERR(text))
		return PTR_ERR(text);
	sc = kmalloc(sizeof(*sc), GFP_KERNEL);
	err = sc ? kedr_parse_scenario(text, sc) : -ENOMEM;
	kfree(text);
	if (!err && sc->pid) {
		/* A pid that names no process: the scenario could never match. */
		rcu_read_lock();
		if (!find_vpid(sc->pid))
			err = -ESRCH;
		rcu_read_unlock();
	}
	if (!err) {
		spin_lock_irqsave(&pt->lock, flags);
		pt->sc = *sc;
		kedr_fault_seed(&pt->rnd, sc->seed);
		pt->calls = pt->matched = pt->injected = 0;
		atomic64_set(&pt->nofail, 0);
		atomic64_set(&pt->nmi, 0);
		pt->logged = 0;
		WRITE_ONCE(pt->needs_caller, sc->caller[0] != '\0');
		WRITE_ONCE(pt->armed, sc->rule != KEDR_FAULT_NEVER);
		spin_unlock_irqrestore(&pt->lock, flags);
	}
	kfree(sc);
	return err ? err : count;
}

static const struct file_operations kedr_fault_point_fops = {
	.owner = THIS_MODULE,
	.open = kedr_fault_point_open,
	.read = seq_read,
	.write = kedr_fault_point_write,
	.llseek = seq_lseek,
	.release = single_release,
};

static int kedr_fault_sites_show(struct seq_file *m, void *unused)
{
	unsigned long flags;
	unsigned int i, n;

	spin_lock_irqsave(&kedr_fault_sites_lock, flags);
	n = kedr_fault_nsites;
	spin_unlock_irqrestore(&kedr_fault_sites_lock, flags);
	seq_printf(m, "# recording=%d dropped=%llu\n", READ_ONCE(kedr_fault_recording),
		   READ_ONCE(kedr_fault_sites_dropped));
	/* Entries below n are written once, before n grows past them. */
	for (i = 0; i < n; i++) {
		const struct kedr_fault_site *s = &kedr_fault_sites[i];
		const int *points = kedr_fault_points_of[s->fn];

		seq_printf(m, "site %s %s %s calls=%llu\n", kedr_functions[s->fn]->name,
			   points[1] >= 0 ? kedr_fault_point_names[points[1]] : "-",
			   s->caller, READ_ONCE(s->calls));
	}
	return 0;
}

static int kedr_fault_sites_open(struct inode *inode, struct file *file)
{
	return single_open(file, kedr_fault_sites_show, NULL);
}

/* "1": forget the sites seen and record from now; "0": stop recording. */
static ssize_t kedr_fault_sites_write(struct file *file, const char __user *buf, size_t count,
				      loff_t *ppos)
{
	unsigned long flags;
	bool on;
	int err = kstrtobool_from_user(buf, count, &on);

	if (err)
		return err;
	spin_lock_irqsave(&kedr_fault_sites_lock, flags);
	if (on) {
		kedr_fault_nsites = 0;
		kedr_fault_sites_dropped = 0;
	}
	WRITE_ONCE(kedr_fault_recording, on);
	spin_unlock_irqrestore(&kedr_fault_sites_lock, flags);
	return count;
}

static const struct file_operations kedr_fault_sites_fops = {
	.owner = THIS_MODULE,
	.open = kedr_fault_sites_open,
	.read = seq_read,
	.write = kedr_fault_sites_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/* --- the task running a module's init ------------------------------------------------ */

/*
 * A target's only (kedr_links_here(), kedr_judge.c): another module loading in
 * the middle of a target's init (its request_module() runs modprobe, another
 * task, whose COMING and LIVE come before the init goes on) neither takes the
 * init over nor ends it. Ended by the same module's LIVE or GOING.
 */
static struct module *kedr_fault_init_mod;

static int kedr_fault_module_event(struct notifier_block *nb, unsigned long state, void *data)
{
	struct module *mod = data;

	/* load_module() calls the COMING notifiers and do_init_module() in the loader's task. */
	if (state == MODULE_STATE_COMING) {
		if (mod != THIS_MODULE && kedr_links_here(mod)) {
			WRITE_ONCE(kedr_fault_init_mod, mod);
			WRITE_ONCE(kedr_fault_init_task, current);
		}
	} else if (READ_ONCE(kedr_fault_init_mod) == mod) {
		WRITE_ONCE(kedr_fault_init_task, NULL);
		WRITE_ONCE(kedr_fault_init_mod, NULL);
	}
	return NOTIFY_DONE;
}

static struct notifier_block kedr_fault_module_nb = {
	.notifier_call = kedr_fault_module_event,
};

static void kedr_faults_init(struct dentry *module_dir)
{
	struct dentry *dir;
	size_t i;

	for (i = 0; i < KEDR_NFAULT_POINTS; i++)
		spin_lock_init(&kedr_fault_points[i].lock);
	register_module_notifier(&kedr_fault_module_nb);
	if (!KEDR_NFAULT_POINTS)
		return;
	dir = debugfs_create_dir("faults", module_dir);
	debugfs_create_file("sites", 0600, dir, NULL, &kedr_fault_sites_fops);
	for (i = 0; i < KEDR_NFAULT_POINTS; i++)
		debugfs_create_file(kedr_fault_point_names[i], 0600, dir, &kedr_fault_points[i],
				    &kedr_fault_point_fops);
}

/*
 * A fresh load's state (kedr_control.c's "reset"): every point "never" with
 * its counters at 0, no site recorded, not recording.
 */
static void __maybe_unused kedr_faults_reset(void)
{
	unsigned long flags;
	size_t i;

	for (i = 0; i < KEDR_NFAULT_POINTS; i++) {
		struct kedr_fault_point *pt = &kedr_fault_points[i];

		spin_lock_irqsave(&pt->lock, flags);
		WRITE_ONCE(pt->armed, false);
		WRITE_ONCE(pt->needs_caller, false);
		memset(&pt->sc, 0, sizeof(pt->sc));	/* rule KEDR_FAULT_NEVER, as loaded */
		memset(&pt->rnd, 0, sizeof(pt->rnd));
		pt->calls = pt->matched = pt->injected = 0;
		atomic64_set(&pt->nofail, 0);
		atomic64_set(&pt->nmi, 0);
		pt->logged = 0;
		spin_unlock_irqrestore(&pt->lock, flags);
	}
	spin_lock_irqsave(&kedr_fault_sites_lock, flags);
	memset(kedr_fault_sites, 0, sizeof(kedr_fault_sites));
	kedr_fault_nsites = 0;
	kedr_fault_sites_dropped = 0;
	WRITE_ONCE(kedr_fault_recording, false);
	spin_unlock_irqrestore(&kedr_fault_sites_lock, flags);
}

static void kedr_faults_exit(void)
{
	unregister_module_notifier(&kedr_fault_module_nb);
}
