// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, hot patching: attach the replacements to a module that
 * is already loaded (and was not patched), detach, re-attach. Compiled into a
 * replacement module generated for attaching (KEDR_HOT); a cold-patched
 * driver never links to such a module.
 *
 * Mechanism: one kprobe per call site of an intercepted import in the
 * target. The sites come from the target's .ko relocations (the host's
 * kedr_build/intercept/attach.py); the guest adds where each section was
 * loaded (/sys/module/<name>/sections/). Nothing here decodes or writes kernel
 * text: before registering, each site is read (copy_from_kernel_nofault) and
 * must be "e8/e9 rel32" whose destination is the original function; kprobes
 * then puts its int3 there. The pre-handler emulates the instruction the
 * way the kernel's own int3 handlers do (asm/text-patching.h:
 * int3_emulate_call() pushes the return address, site + 5, into the gap the
 * int3 entry leaves below pt_regs; int3_emulate_jmp() for a tail call) into
 * the replacement, and returns 1: no single-step, the original function runs
 * from inside the replacement. A post_handler keeps the kprobe from being
 * optimised into a jump (kernel/kprobes.c optimize_kprobe(): "kprobes with
 * 'post_handler' can not be optimized"): an optimised probe ignores a changed
 * regs->ip. A site that is already probed reads "cc" (or an optimised
 * probe's "e9" to elsewhere) and is refused: another kprobe user is in the way.
 *
 *   <debugfs>/kedr_build/<module>/attach   rw, root only
 *     write, one line a command (several per write; the staged sites are kept
 *     until "attach" or "reset"):
 *       target <name> <address of its struct module>
 *             (/sys/module/<name>/sections/.gnu.linkonce.this_module)
 *       site <section address> <offset> call|jmp <function>
 *       section <index> <address>   where a section with tail calls was loaded
 *       attach      check every site, register every kprobe, or none
 *       detach      unregister them, wait for the calls in flight (at most
 *                   detach_timeout_ms, interruptibly; then "detaching": again)
 *       reset       forget the staged target and sites
 *     read: "state attached|detaching|detached target=<name> sites=<n>
 *     attaches=<n> inflight=<n>",
 *     then "error <why>" for the last refused command.
 *
 * Tail calls: the replacement entered from a jmp site sees the return address
 * of the jumping function's caller; the tail-call table (kedr_tailcall.c, from
 * the .ko's relocations) reports it at the jump, once "section" lines gave the
 * addresses its jumps' sections were loaded at (a cold-patched module's are
 * read at MODULE_STATE_COMING instead, long past for a module attached to).
 *
 * Honest late start: what the target allocated before "attach" is unknown,
 * so attach opens a leak gap (kedr_leak_gap: its frees are untracked, an
 * unlock of a lock taken before is not "not held"). The leak report starts
 * with an "attached" line (kedr_hot_report()).
 *
 * The window opens once every site is armed and closes before any is disarmed
 * (kedr_hot_gate): a call pair (lock/unlock, alloc/free) is split only by the
 * window's two edges, never by the order the sites are armed in.
 *
 * Lifetime: while attached the replacement module holds a reference to
 * itself (rmmod: "in use") and to the target (rmmod of the target: "in use";
 * detach first). Every entry through a kprobe counts one call in flight
 * (kedr_hot_inflight), incremented in the pre-handler (interrupts off, so
 * unregister_kprobes()'s grace period covers it) and decremented when the
 * replacement returns (KEDR_HOT_SCOPE, a cleanup variable in each one);
 * detach waits for zero before it drops the self reference.
 */
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <asm/text-patching.h>

#define KEDR_HOT_MAX_SITES	4096
#define KEDR_HOT_ERR_LEN	160

struct kedr_hot_site {
	struct kprobe kp;
	unsigned long entry;	/* the replacement */
	unsigned long orig;	/* the original function */
	unsigned int fn;	/* index in kedr_functions[] */
	bool jmp;		/* a tail call: jump, push nothing */
};

static DEFINE_MUTEX(kedr_hot_lock);
static atomic_t kedr_hot_inflight = ATOMIC_INIT(0);
static DECLARE_WAIT_QUEUE_HEAD(kedr_hot_wq);

/* Guarded by kedr_hot_lock. */
static struct kedr_hot_site *kedr_hot_sites;
static struct kprobe **kedr_hot_probes;
static unsigned int kedr_hot_nsites, kedr_hot_cap;
static char kedr_hot_name[MODULE_NAME_LEN];
static unsigned long kedr_hot_mod_addr;
static struct module *kedr_hot_target;	/* referenced while attached */
static bool kedr_hot_attached;
static bool kedr_hot_disarmed;		/* attached, sites disarmed: detach waits on */
/*
 * The gate: kprobes are armed one site at a time (register_kprobes() arms each in
 * turn, unregister_kprobes() disarms each in turn), so the window opens after
 * every site is armed and closes before any is disarmed. Closed, a hit runs the
 * original instruction (pre-handler 0: kprobes single-steps or emulates it).
 */
static bool kedr_hot_gate;
static unsigned int kedr_hot_attaches;
static u64 kedr_hot_since_ns, kedr_hot_until_ns;
static char kedr_hot_err[KEDR_HOT_ERR_LEN];
#define KEDR_HOT_MAX_SECTIONS	64
static struct { unsigned int shndx; unsigned long addr; } kedr_hot_sections[KEDR_HOT_MAX_SECTIONS];
static unsigned int kedr_hot_nsections;

/* The tail-call table's jumps of the target (its only module: index 0). */
static void kedr_hot_tail_bases(struct module *mod)
{
	unsigned int i, j, k;

	for (i = 0; kedr_tail_sites[i]; i++) {
		for (j = 0; j < kedr_tail_sites[i]->njumps; j++) {
			struct kedr_tail_jump *jump = &kedr_tail_sites[i]->jumps[j];
			unsigned long base = 0;

			for (k = 0; mod && k < kedr_hot_nsections; k++)
				if (kedr_hot_sections[k].shndx == jump->shndx)
					base = kedr_hot_sections[k].addr;
			if (jump->target == 0)
				WRITE_ONCE(jump->base, base);
		}
	}
	if (kedr_tail_targets[0].name)
		WRITE_ONCE(kedr_tail_targets[0].mod, mod);
}

static void kedr_hot_leave(int *unused)
{
	if (atomic_dec_and_test(&kedr_hot_inflight))
		wake_up(&kedr_hot_wq);
}

static int kedr_hot_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct kedr_hot_site *s = container_of(p, struct kedr_hot_site, kp);

	if (!READ_ONCE(kedr_hot_gate))
		return 0;
	atomic_inc(&kedr_hot_inflight);
	/* regs->ip is past the int3 here (kprobe_int3_handler()), as the emulators expect. */
	if (s->jmp)
		int3_emulate_jmp(regs, s->entry);
	else
		int3_emulate_call(regs, s->entry);
	return 1;	/* regs->ip changed: no single-step */
}

static void kedr_hot_post(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
	/* Never runs (the pre-handler returns 1); its presence keeps the probe an int3. */
}

static int kedr_hot_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(kedr_hot_err, sizeof(kedr_hot_err), fmt, ap);
	va_end(ap);
	return err;
}

/* The replacement entry of kedr_functions[i] (kedr_hot_entries[], generated). */
static int kedr_hot_function(const char *name)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(kedr_functions); i++)
		if (!strcmp(kedr_functions[i]->name, name))
			return i;
	return -1;
}

static int kedr_hot_stage_site(unsigned long base, unsigned long off, const char *kind,
			       const char *fn)
{
	struct kedr_hot_site *s;
	int i = kedr_hot_function(fn);

	if (i < 0)
		return kedr_hot_fail(-EINVAL, "site: %s is not a function this module replaces",
				     fn);
	if (strcmp(kind, "call") && strcmp(kind, "jmp"))
		return kedr_hot_fail(-EINVAL, "site: kind %s: want call or jmp", kind);
	if (kedr_hot_nsites == KEDR_HOT_MAX_SITES)
		return kedr_hot_fail(-E2BIG, "more than %d sites", KEDR_HOT_MAX_SITES);
	if (kedr_hot_nsites == kedr_hot_cap) {
		unsigned int cap = kedr_hot_cap ? 2 * kedr_hot_cap : 64;
		struct kedr_hot_site *n = krealloc_array(kedr_hot_sites, cap, sizeof(*n),
							 GFP_KERNEL | __GFP_ZERO);

		if (!n)
			return kedr_hot_fail(-ENOMEM, "out of memory for %u sites", cap);
		memset(n + kedr_hot_cap, 0, (cap - kedr_hot_cap) * sizeof(*n));
		kedr_hot_sites = n;
		kedr_hot_cap = cap;
	}
	s = &kedr_hot_sites[kedr_hot_nsites++];
	memset(s, 0, sizeof(*s));
	s->kp.addr = (kprobe_opcode_t *)(base + off);
	s->kp.pre_handler = kedr_hot_pre;
	s->kp.post_handler = kedr_hot_post;
	s->entry = kedr_hot_entries[i];
	s->orig = kedr_hot_originals[i];
	s->fn = i;
	s->jmp = !strcmp(kind, "jmp");
	return 0;
}

/*
 * The loaded module whose struct module is at @addr, referenced; NULL if none
 * is. Only pointers are compared while walking the module list (from this
 * module's own entry, under RCU-sched as the kernel's own readers of the list
 * are): @addr is dereferenced only once it is known to be a module's.
 */
static struct module *kedr_hot_find(unsigned long addr, const char *name)
{
	struct list_head *pos;
	struct module *found = NULL;

	preempt_disable();
	for (pos = THIS_MODULE->list.next; pos != &THIS_MODULE->list; pos = READ_ONCE(pos->next)) {
		if (pos == &((struct module *)addr)->list) {
			found = (struct module *)addr;
			break;
		}
	}
	if (found && (strcmp(found->name, name) || !try_module_get(found)))
		found = NULL;
	preempt_enable();
	return found;
}

static int kedr_hot_check_site(const struct kedr_hot_site *s, struct module *mod)
{
	unsigned long addr = (unsigned long)s->kp.addr;
	u8 insn[5];
	s32 rel;

	if (!within_module(addr, mod))
		return kedr_hot_fail(-EINVAL, "site 0x%lx: not in %s", addr, mod->name);
	if (copy_from_kernel_nofault(insn, (void *)addr, sizeof(insn)))
		return kedr_hot_fail(-EFAULT, "site %pS: cannot be read", (void *)addr);
	memcpy(&rel, insn + 1, sizeof(rel));
	if (insn[0] == 0xcc)
		return kedr_hot_fail(-EBUSY, "site %pS: already probed (int3): another kprobe "
				     "user is in the way", (void *)addr);
	if (insn[0] != (s->jmp ? 0xe9 : 0xe8) || addr + 5 + (long)rel != s->orig)
		return kedr_hot_fail(-EINVAL, "site %pS: not a %s of %s (%*phN): the .ko does not "
				     "match the loaded module", (void *)addr,
				     s->jmp ? "jmp" : "call", kedr_functions[s->fn]->name,
				     (int)sizeof(insn), insn);
	return 0;
}

static int kedr_hot_attach(void)
{
	struct module *mod;
	unsigned int i;
	int err;

	if (kedr_hot_attached)
		return kedr_hot_fail(-EBUSY, "already attached to %s", kedr_hot_name);
	if (!kedr_hot_name[0])
		return kedr_hot_fail(-EINVAL, "attach: no target given");
	if (!kedr_hot_nsites)
		return kedr_hot_fail(-EINVAL, "attach: no site given for %s", kedr_hot_name);
	mod = kedr_hot_find(kedr_hot_mod_addr, kedr_hot_name);
	if (!mod)
		return kedr_hot_fail(-ENOENT, "module %s is not loaded (or not at 0x%lx)",
				     kedr_hot_name, kedr_hot_mod_addr);
	for (i = 0; i < kedr_hot_nsites; i++) {
		err = kedr_hot_check_site(&kedr_hot_sites[i], mod);
		if (err)
			goto put;
	}
	kfree(kedr_hot_probes);
	kedr_hot_probes = kcalloc(kedr_hot_nsites, sizeof(*kedr_hot_probes), GFP_KERNEL);
	if (!kedr_hot_probes) {
		err = kedr_hot_fail(-ENOMEM, "out of memory");
		goto put;
	}
	for (i = 0; i < kedr_hot_nsites; i++) {
		struct kprobe *kp = &kedr_hot_sites[i].kp;
		kprobe_opcode_t *addr = kp->addr;

		/* A kprobe is registered once: clean what an earlier registration left. */
		memset(kp, 0, sizeof(*kp));
		kp->addr = addr;
		kp->pre_handler = kedr_hot_pre;
		kp->post_handler = kedr_hot_post;
		kedr_hot_probes[i] = kp;
	}
	/* Calls of the target run the payloads from now on: what it had before is unknown. */
	WRITE_ONCE(kedr_leak_gap, true);
	__module_get(THIS_MODULE);
	err = register_kprobes(kedr_hot_probes, kedr_hot_nsites);
	if (err) {
		module_put(THIS_MODULE);
		err = kedr_hot_fail(err, "register_kprobes on %u sites of %s failed (%d)",
				    kedr_hot_nsites, kedr_hot_name, err);
		goto put;
	}
	kedr_hot_tail_bases(mod);
	WRITE_ONCE(kedr_hot_gate, true);
	kedr_hot_target = mod;
	kedr_hot_attached = true;
	kedr_hot_attaches++;
	kedr_hot_since_ns = ktime_get_ns();
	kedr_hot_until_ns = 0;
	kedr_hot_err[0] = '\0';
	pr_info("%s: attached to %s: %u sites\n", KEDR_MODULE_NAME, mod->name, kedr_hot_nsites);
	return 0;
put:
	module_put(mod);
	return err;
}

/*
 * Detach: disarm every site (the window closes), then wait for the calls in
 * flight, at most detach_timeout_ms and interruptibly. A call can be blocked
 * for long inside a replacement (a sleep, a lock another task holds): the
 * module cannot go while one is, since it returns through the replacement.
 * Then detach fails with one line and the state is "detaching" (disarmed, both
 * references kept); "detach" again waits on.
 */
static unsigned int kedr_hot_detach_timeout_ms = 10000;
module_param_named(detach_timeout_ms, kedr_hot_detach_timeout_ms, uint, 0644);
MODULE_PARM_DESC(detach_timeout_ms, "how long detach waits for calls in flight (ms)");

static int kedr_hot_detach(void)
{
	unsigned int ms = READ_ONCE(kedr_hot_detach_timeout_ms);
	long left;

	if (!kedr_hot_attached)
		return kedr_hot_fail(-EINVAL, "detach: not attached");
	if (!kedr_hot_disarmed) {
		WRITE_ONCE(kedr_hot_gate, false);
		/* Waits a grace period: no pre-handler runs or will run after it returns. */
		unregister_kprobes(kedr_hot_probes, kedr_hot_nsites);
		kedr_hot_disarmed = true;
		kedr_hot_until_ns = ktime_get_ns();
	}
	/* The calls that entered before: they return through KEDR_HOT_SCOPE. */
	left = wait_event_interruptible_timeout(kedr_hot_wq,
						atomic_read(&kedr_hot_inflight) == 0,
						msecs_to_jiffies(ms));
	if (left <= 0)
		return kedr_hot_fail(left < 0 ? -EINTR : -EBUSY,
				     "detach: %d calls still in flight in the replacements of %s "
				     "after %s%u ms (blocked in one?); the sites are disarmed: "
				     "detach again to wait on",
				     atomic_read(&kedr_hot_inflight), kedr_hot_name,
				     left < 0 ? "a signal, at most " : "", ms);
	kedr_hot_tail_bases(NULL);
	module_put(kedr_hot_target);
	kedr_hot_target = NULL;
	kedr_hot_attached = false;
	kedr_hot_disarmed = false;
	kedr_hot_err[0] = '\0';
	pr_info("%s: detached from %s\n", KEDR_MODULE_NAME, kedr_hot_name);
	module_put(THIS_MODULE);
	return 0;
}

static const char *kedr_hot_state(void)
{
	if (!kedr_hot_attached)
		return "detached";
	return kedr_hot_disarmed ? "detaching" : "attached";
}

static int kedr_hot_command(char *line)
{
	char name[MODULE_NAME_LEN], kind[8], fn[KSYM_NAME_LEN];
	unsigned long a, b;
	unsigned int n;

	if (!strcmp(line, "attach"))
		return kedr_hot_attach();
	if (!strcmp(line, "detach"))
		return kedr_hot_detach();
	if (kedr_hot_attached)
		return kedr_hot_fail(-EBUSY, "%s: attached to %s: detach first", line,
				     kedr_hot_name);
	if (!strcmp(line, "reset")) {
		kedr_hot_nsites = 0;
		kedr_hot_nsections = 0;
		kedr_hot_name[0] = '\0';
		return 0;
	}
	if (sscanf(line, "section %u %lx", &n, &a) == 2) {
		if (kedr_hot_nsections == KEDR_HOT_MAX_SECTIONS)
			return kedr_hot_fail(-E2BIG, "more than %d sections", KEDR_HOT_MAX_SECTIONS);
		kedr_hot_sections[kedr_hot_nsections].shndx = n;
		kedr_hot_sections[kedr_hot_nsections++].addr = a;
		return 0;
	}
	if (sscanf(line, "target %55s %lx", name, &a) == 2) {
		strscpy(kedr_hot_name, name, sizeof(kedr_hot_name));
		kedr_hot_mod_addr = a;
		kedr_hot_nsites = 0;
		kedr_hot_nsections = 0;
		return 0;
	}
	if (sscanf(line, "site %lx %lx %7s %127s", &a, &b, kind, fn) == 4)
		return kedr_hot_stage_site(a, b, kind, fn);
	return kedr_hot_fail(-EINVAL, "unknown command: %.60s", line);
}

static ssize_t kedr_hot_write(struct file *file, const char __user *ubuf, size_t len,
			      loff_t *ppos)
{
	char *buf, *line, *next;
	int err = 0;

	if (len > PAGE_SIZE * 16)
		return -E2BIG;
	buf = memdup_user_nul(ubuf, len);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	mutex_lock(&kedr_hot_lock);
	for (line = buf; line && !err; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		line = strim(line);
		if (*line)
			err = kedr_hot_command(line);
	}
	mutex_unlock(&kedr_hot_lock);
	kfree(buf);
	return err ? err : len;
}

static int kedr_hot_show(struct seq_file *m, void *unused)
{
	mutex_lock(&kedr_hot_lock);
	seq_printf(m, "state %s target=%s sites=%u attaches=%u inflight=%d\n",
		   kedr_hot_state(),
		   kedr_hot_name[0] ? kedr_hot_name : "-", kedr_hot_nsites, kedr_hot_attaches,
		   atomic_read(&kedr_hot_inflight));
	if (kedr_hot_err[0])
		seq_printf(m, "error %s\n", kedr_hot_err);
	mutex_unlock(&kedr_hot_lock);
	return 0;
}

static int kedr_hot_file_open(struct inode *inode, struct file *file)
{
	return single_open(file, kedr_hot_show, NULL);
}

static const struct file_operations kedr_hot_fops = {
	.owner = THIS_MODULE,
	.open = kedr_hot_file_open,
	.read = seq_read,
	.write = kedr_hot_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/* The leak report's first line in a hot module: which window it covers. */
static void kedr_hot_report(struct seq_file *m)
{
	u64 now = ktime_get_ns();

	mutex_lock(&kedr_hot_lock);
	seq_printf(m, "attached target=%s state=%s attaches=%u since_ns=%llu until_ns=%llu "
		   "now_ns=%llu\n", kedr_hot_name[0] ? kedr_hot_name : "-",
		   kedr_hot_state(), kedr_hot_attaches, kedr_hot_since_ns,
		   kedr_hot_attached && !kedr_hot_disarmed ? now : kedr_hot_until_ns, now);
	mutex_unlock(&kedr_hot_lock);
}

static void kedr_hot_init(struct dentry *dir)
{
	debugfs_create_file("attach", 0600, dir, NULL, &kedr_hot_fops);
}

static void kedr_hot_exit(void)
{
	/* Attached, the module holds itself: rmmod cannot get here then. */
	kfree(kedr_hot_probes);
	kfree(kedr_hot_sites);
}
