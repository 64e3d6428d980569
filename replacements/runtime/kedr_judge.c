// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, leak payload: what is judged when a target loads, returns
 * from init and goes (module notifier), and the payload's set-up and tear-down.
 *
 * Targets only: the notifier sees every module, and judges only the modules
 * this replacement module was made for. A module is one when it links to it:
 * at MODULE_STATE_COMING one of its undefined symbols resolved into this
 * module (simplify_symbols() wrote the address into the symbol table that
 * mod->kallsyms still names then). Every patched module of a driver of
 * several modules does; a module that was not patched never does. From then
 * on the target is known by its struct module until its MODULE_STATE_GOING.
 *
 * Locks: kedr_targets_lock guards the target list only. Nothing that waits
 * for other code runs under it or under a shard lock: a work item the target
 * left may load a module (request_module()), whose MODULE_STATE_COMING would
 * then wait for kedr_targets_lock held by cancel_work_sync() waiting for that
 * work item: a deadlock. So judgments collect under the locks (kedr_walk())
 * and act (timer_delete_sync(), cancel_work_sync(), printk) with no lock held.
 */
/* --- targets ---------------------------------------------------------------------- */

/* Does @mod link to this module? (At MODULE_STATE_COMING, see above.) */
static bool kedr_links_here(struct module *mod)
{
	const struct mod_kallsyms *ks;
	unsigned int i;
	bool here = false;

	preempt_disable();
	ks = rcu_dereference_sched(mod->kallsyms);
	for (i = 0; ks && i < ks->num_symtab && !here; i++) {
		const Elf_Sym *sym = &ks->symtab[i];

		here = sym->st_shndx == SHN_UNDEF && sym->st_value &&
		       within_module(sym->st_value, THIS_MODULE);
	}
	preempt_enable();
	return here;
}

static bool kedr_section_symbol(const Elf_Sym *sym)
{
	return ELF_ST_TYPE(sym->st_info) == STT_SECTION && sym->st_value &&
	       sym->st_shndx != SHN_UNDEF && sym->st_shndx < SHN_LORESERVE;
}

/*
 * A new target with its sections' addresses. At MODULE_STATE_COMING
 * mod->kallsyms is the module's whole ELF symtab, st_value already
 * relocated (simplify_symbols()): a section symbol's value is then its
 * section's run-time address. As many sections as it has: counted first.
 */
static struct kedr_target *kedr_target_new(struct module *mod)
{
	const struct mod_kallsyms *ks;
	struct kedr_target *t;
	unsigned int i, j, n = 0;

	preempt_disable();
	ks = rcu_dereference_sched(mod->kallsyms);
	for (i = 0; ks && i < ks->num_symtab; i++)
		n += kedr_section_symbol(&ks->symtab[i]);
	preempt_enable();
	t = kzalloc(struct_size(t, sections, n), GFP_KERNEL);
	if (!t)
		return NULL;
	t->mod = mod;
	strscpy(t->name, mod->name, sizeof(t->name));
	preempt_disable();
	ks = rcu_dereference_sched(mod->kallsyms);
	for (i = 0; ks && i < ks->num_symtab && t->nsections < n; i++) {
		const Elf_Sym *sym = &ks->symtab[i];

		if (!kedr_section_symbol(sym))
			continue;
		for (j = 0; j < t->nsections; j++)
			if (t->sections[j].shndx == sym->st_shndx)
				break;
		if (j < t->nsections)
			continue;
		t->sections[t->nsections].shndx = sym->st_shndx;
		t->sections[t->nsections].addr = sym->st_value;
		t->nsections++;
	}
	preempt_enable();
	return t;
}

static void kedr_target_coming(struct module *mod)
{
	struct kedr_target *t = kedr_target_new(mod), *old;

	mutex_lock(&kedr_targets_lock);
	if (!t) {
		kedr_dropped_targets++;		/* in the report: its judgments are missing */
	} else {
		/* Loaded again: the new load's sections replace the old ones. */
		list_for_each_entry(old, &kedr_targets, list) {
			if (!strcmp(old->name, t->name)) {
				list_del(&old->list);
				kfree(old);
				break;
			}
		}
		list_add_tail(&t->list, &kedr_targets);
	}
	mutex_unlock(&kedr_targets_lock);
}

/* Is @mod a target (loaded)? @going: it is going, from now on it is not. */
static bool kedr_target_is(struct module *mod, bool going)
{
	struct kedr_target *t;
	bool found = false;

	mutex_lock(&kedr_targets_lock);
	list_for_each_entry(t, &kedr_targets, list) {
		if (!t->gone && t->mod == mod) {
			found = true;
			t->gone = going;
			break;
		}
	}
	mutex_unlock(&kedr_targets_lock);
	return found;
}

/* Is @addr in a loaded target other than @mod? (kedr_targets_lock held.) */
static bool kedr_in_other_target(unsigned long addr, struct module *mod)
{
	struct kedr_target *t;

	list_for_each_entry(t, &kedr_targets, list)
		if (!t->gone && t->mod != mod && within_module(addr, t->mod))
			return true;
	return false;
}

/* --- timers and work items still pending when their module goes ------------------ */

#define KEDR_KINDS_TIMERS	(BIT_ULL(KEDR_KIND_TIMER) | BIT_ULL(KEDR_KIND_WORK) | \
				 BIT_ULL(KEDR_KIND_DWORK))
#define KEDR_BATCH		16	/* records collected per pass of the walk */

struct kedr_inside {
	unsigned long addr;
	bool found;
};

static int kedr_visit_inside(struct kedr_obj *o, void *arg)
{
	struct kedr_inside *in = arg;

	if (o->state == KEDR_OBJ_LIVE && kedr_kind_memory(o->kind) &&
	    in->addr >= o->ptr && in->addr < o->ptr + o->size) {
		in->found = true;
		return KEDR_WALK_STOP;
	}
	return KEDR_WALK_GO;
}

/* Is @addr inside a live object a target allocated (so its memory is valid)? */
static bool kedr_inside_live_object(unsigned long addr)
{
	struct kedr_walk w = {};
	struct kedr_inside in = { .addr = addr };

	kedr_walk(&w, kedr_visit_inside, &in);
	return in.found;
}

struct kedr_keys {
	unsigned int n;
	unsigned long key[KEDR_BATCH];
	u8 kind[KEDR_BATCH];
};

static int kedr_visit_timer(struct kedr_obj *o, void *arg)
{
	struct kedr_keys *b = arg;

	if (o->state != KEDR_OBJ_LIVE || o->aux || !(KEDR_KINDS_TIMERS & BIT_ULL(o->kind)))
		return KEDR_WALK_GO;
	b->key[b->n] = o->ptr;
	b->kind[b->n++] = o->kind;
	return b->n == KEDR_BATCH ? KEDR_WALK_STOP : KEDR_WALK_GO;
}

enum kedr_fate { KEDR_FATE_RELEASE, KEDR_FATE_LEAVE, KEDR_FATE_STOP };

/*
 * What to do with a timer or work item at @addr when @mod goes. Its memory is
 * read only where it is known valid: in a target module still loaded or
 * inside a live object a target allocated; a record in memory since freed is
 * released unread. Read, it is @mod's when its callback is in @mod (memory a
 * target freed and allocated again, read as a timer, has no such callback):
 * it is stopped. A callback in another target still loaded: left for that
 * one's unload. Anything else is not a timer of a target any more: released.
 */
static enum kedr_fate kedr_timer_fate(unsigned long addr, unsigned int kind, struct module *mod)
{
	enum kedr_fate fate = KEDR_FATE_RELEASE;
	unsigned long fn;

	mutex_lock(&kedr_targets_lock);
	if (within_module(addr, mod) || kedr_in_other_target(addr, mod) ||
	    kedr_inside_live_object(addr)) {
		if (kind == KEDR_KIND_TIMER)
			fn = (unsigned long)READ_ONCE(((struct timer_list *)addr)->function);
		else if (kind == KEDR_KIND_DWORK)
			fn = (unsigned long)READ_ONCE(((struct delayed_work *)addr)->work.func);
		else
			fn = (unsigned long)READ_ONCE(((struct work_struct *)addr)->func);
		if (within_module(fn, mod))
			fate = KEDR_FATE_STOP;
		else if (kedr_in_other_target(fn, mod))
			fate = KEDR_FATE_LEAVE;
	}
	mutex_unlock(&kedr_targets_lock);
	return fate;
}

/*
 * Stop @timer for good; was it pending? timer_delete_sync() waits for a
 * callback running on another CPU, and deletes the timer that callback armed
 * again (kernel/time/timer.c, __try_to_del_timer_sync(): a running timer is
 * not deleted, it is waited for): 1 then. timer_shutdown_sync() (v6.2,
 * f571faf6e443 "timers: Provide timer_shutdown[_sync]()", backported to
 * Debian's 6.1) then keeps anything else from arming it; detected in the
 * kernel's timer.h by Kbuild (KEDR_HAVE_TIMER_SHUTDOWN). Without it,
 * del_timer_sync() alone (a callback that re-arms its own timer is stopped
 * as well; a timer armed from elsewhere after that is the driver's bug).
 */
static bool kedr_timer_stop(struct timer_list *timer)
{
#ifdef KEDR_HAVE_TIMER_SHUTDOWN
	bool pending = timer_delete_sync(timer);

	timer_shutdown_sync(timer);
	return pending;
#else
	return del_timer_sync(timer);
#endif
}

/*
 * MODULE_STATE_GOING (after the module's exit function, before its memory is
 * freed): every timer and work item @mod armed or queued and did not delete
 * or cancel is judged (kedr_timer_fate()), and stopped: it would run freed
 * code. One still pending is reported. A work item is cancelled waiting for
 * it if it runs (cancel_delayed_work_sync() for a delayed one:
 * cancel_work_sync() must not be given a delayed work item whose timer is
 * armed, kernel/workqueue.c). All of it with no lock held (see the top).
 */
static void kedr_timers_going(struct module *mod)
{
	struct kedr_walk w = {};
	struct kedr_keys b;
	bool more;
	unsigned int i;

	do {
		b.n = 0;
		more = kedr_walk(&w, kedr_visit_timer, &b);
		for (i = 0; i < b.n; i++) {
			unsigned long addr = kedr_addr(b.key[i]);
			enum kedr_fate fate = kedr_timer_fate(addr, b.kind[i], mod);
			bool pending;

			if (fate == KEDR_FATE_LEAVE)
				continue;
			if (fate == KEDR_FATE_RELEASE) {
				kedr_obj_judge(b.key[i], KEDR_KINDS_TIMERS, false);
				continue;
			}
			if (b.kind[i] == KEDR_KIND_TIMER)
				pending = kedr_timer_stop((struct timer_list *)addr);
			else if (b.kind[i] == KEDR_KIND_DWORK)
				pending = cancel_delayed_work_sync((struct delayed_work *)addr);
			else
				pending = cancel_work_sync((struct work_struct *)addr);
			kedr_obj_judge(b.key[i], KEDR_KINDS_TIMERS, pending);
			if (pending)
				pr_err("%s: %s %px of %s still pending at unload: %s\n",
				       KEDR_MODULE_NAME, b.kind[i] == KEDR_KIND_TIMER ? "timer" : "work",
				       (void *)addr, mod->name,
				       b.kind[i] == KEDR_KIND_TIMER ? "deleted" : "cancelled");
		}
	} while (more);
}

/* --- locks held when init returns ----------------------------------------------------- */

static void kedr_rule_violation_at(unsigned int fn, unsigned int rule, unsigned long ip,
				   u32 stack, pid_t pid, const char *comm);

struct kedr_held {
	struct module *mod;
	pid_t pid;			/* the task that ran init */
	unsigned int n;
	struct kedr_obj lock[KEDR_BATCH / 2];
};

static int kedr_visit_held(struct kedr_obj *o, void *arg)
{
	struct kedr_held *h = arg;

	if (o->state != KEDR_OBJ_LIVE ||
	    (o->kind != KEDR_KIND_MUTEX && o->kind != KEDR_KIND_SPINLOCK) ||
	    !within_module(o->caller, h->mod) || o->pid != h->pid)
		return KEDR_WALK_GO;
	h->lock[h->n++] = *o;
	return h->n == ARRAY_SIZE(h->lock) ? KEDR_WALK_STOP : KEDR_WALK_GO;
}

/*
 * MODULE_STATE_LIVE: @mod's init returned to the kernel. A mutex or a
 * spinlock it took (the call is in @mod: its .init.text is still there) and
 * still holds is the rule "lock-held-at-return" (reported with the stack of
 * the lock; the lock stays as it is). do_init_module() calls the LIVE
 * notifiers in the task that ran init (kernel/module/main.c, 6.1 and 6.12), so
 * only locks that task took count: a thread or work item of @mod holding a
 * lock of its own at that instant (nvme's reset work on probe) is not init's.
 */
static void kedr_locks_at_return(struct module *mod)
{
	struct kedr_walk w = {};
	struct kedr_held h = { .mod = mod, .pid = task_pid_nr(current) };
	bool more;
	unsigned int i;

	do {
		h.n = 0;
		more = kedr_walk(&w, kedr_visit_held, &h);
		for (i = 0; i < h.n; i++)
			kedr_rule_violation_at(h.lock[i].fn, KEDR_RULE_LOCK_HELD_AT_RETURN,
					       h.lock[i].caller, h.lock[i].stack, h.lock[i].pid,
					       h.lock[i].comm);
	} while (more);
}

/* --- network devices the kernel released ---------------------------------------------- */

/* Is @dev a registered network device of any namespace? (Only compared, never read.) */
static bool kedr_netdev_registered(unsigned long dev)
{
	struct net_device *d;
	struct net *net;
	bool found = false;

	rcu_read_lock();
	for_each_net_rcu(net) {
		for_each_netdev_rcu(net, d) {
			if ((unsigned long)d == dev) {
				found = true;
				break;
			}
		}
		if (found)
			break;
	}
	rcu_read_unlock();
	return found;
}

struct kedr_netdevs {
	unsigned int kind;		/* the records collected */
	struct kedr_keys b;		/* their device pointers (aux) */
};

static int kedr_visit_netdev(struct kedr_obj *o, void *arg)
{
	struct kedr_netdevs *nd = arg;

	if (o->state != KEDR_OBJ_LIVE || o->kind != nd->kind ||
	    (o->kind == KEDR_KIND_NETDEV && o->free_stack != KEDR_NETDEV_KERNEL_FREES))
		return KEDR_WALK_GO;
	nd->b.key[nd->b.n++] = o->aux;
	return nd->b.n == KEDR_BATCH ? KEDR_WALK_STOP : KEDR_WALK_GO;
}

/*
 * MODULE_STATE_GOING: network devices the kernel unregistered (and freed)
 * for the target. rtnl_link_unregister() unregisters every device of the
 * driver's link type itself (net/core/rtnetlink.c), and a device with
 * needs_free_netdev is freed by the kernel after unregistering
 * (netdev_run_todo()): neither call is the target's, so neither is seen.
 * A registration whose device is in no namespace any more is released; then
 * the allocation of a device the kernel frees, once its registration is not
 * live (not or no longer registered).
 */
static void kedr_netdevs_going(void)
{
	static const unsigned int kinds[] = { KEDR_KIND_NETDEV_REGISTERED, KEDR_KIND_NETDEV };
	struct kedr_netdevs nd;
	struct kedr_walk w;
	unsigned int k, i;
	bool more;

	for (k = 0; k < ARRAY_SIZE(kinds); k++) {
		nd.kind = kinds[k];
		w = (struct kedr_walk){};
		do {
			nd.b.n = 0;
			more = kedr_walk(&w, kedr_visit_netdev, &nd);
			for (i = 0; i < nd.b.n; i++) {
				unsigned long dev = nd.b.key[i];
				unsigned long reg = kedr_res_key(KEDR_KIND_NETDEV_REGISTERED, dev, 0);

				if (nd.kind == KEDR_KIND_NETDEV_REGISTERED ?
				    kedr_netdev_registered(dev) : kedr_obj_live(reg))
					continue;
				kedr_obj_judge(kedr_res_key(nd.kind, dev, 0), BIT_ULL(nd.kind), false);
			}
		} while (more);
	}
}

/* --- the notifier ---------------------------------------------------------------------- */

static int kedr_module_event(struct notifier_block *nb, unsigned long state, void *data)
{
	struct module *mod = data;

	if (mod == THIS_MODULE || !kedr_leak_ready)
		return NOTIFY_DONE;
	if (state == MODULE_STATE_COMING) {
		if (kedr_links_here(mod))
			kedr_target_coming(mod);
	} else if (state == MODULE_STATE_LIVE) {
		if (kedr_target_is(mod, false))
			kedr_locks_at_return(mod);
	} else if (state == MODULE_STATE_GOING) {
		if (kedr_target_is(mod, true)) {
			kedr_timers_going(mod);
			kedr_netdevs_going();
		}
	}
	return NOTIFY_DONE;
}

static struct notifier_block kedr_module_nb = {
	.notifier_call = kedr_module_event,
};


/* --- set-up and tear-down ---------------------------------------------------------------- */

/*
 * Each shard owns a slice of the pools: no global free list, no global lock.
 * A shard's slice as a fresh load has it (zeroed, every record free); its lock
 * held, or not yet in use.
 */
static void kedr_obj_shard_fill(unsigned int s)
{
	struct kedr_obj_shard *sh = &kedr_obj_shards[s];
	unsigned int per = kedr_max_objects / KEDR_OBJ_SHARDS, i;

	memset(kedr_obj_at(s * per + 1), 0, per * sizeof(struct kedr_obj));
	sh->free_list = 0;
	sh->q_head = sh->q_tail = 0;
	sh->q_len = 0;
	memset(sh->heads, 0, sizeof(sh->heads));
	for (i = 0; i < per; i++) {
		u32 id = s * per + i + 1;

		kedr_obj_at(id)->next = sh->free_list;
		sh->free_list = id;
	}
}

/* A stack shard as a fresh load has it: the stacks it kept, zeroed, none kept. */
static void kedr_stack_shard_fill(unsigned int s)
{
	struct kedr_stack_shard *sh = &kedr_stack_shards[s];
	unsigned int per = kedr_max_stacks / KEDR_STACK_SHARDS, used = sh->used;

	/* The report reads used, then the stacks below it. */
	smp_store_release(&sh->used, 0);
	memset(sh->heads, 0, sizeof(sh->heads));
	memset(kedr_stack_at(s * per + 1), 0, (size_t)used * kedr_stack_size);
	sh->first = s * per;
	sh->count = per;
}

static int kedr_leak_init(void)
{
	unsigned int s;

	if (kedr_stack_depth < 1 || kedr_stack_depth > KEDR_MAX_DEPTH) {
		pr_err("%s: stack_depth=%u is out of range (1-%d)\n", KEDR_MODULE_NAME,
		       kedr_stack_depth, KEDR_MAX_DEPTH);
		return -EINVAL;
	}
	if (kedr_max_objects < 1024 || kedr_max_objects > (4U << 20)) {
		pr_err("%s: max_objects=%u is out of range (1024-4194304)\n", KEDR_MODULE_NAME,
		       kedr_max_objects);
		return -EINVAL;
	}
	if (kedr_max_stacks < 256 || kedr_max_stacks > (1U << 20)) {
		pr_err("%s: max_stacks=%u is out of range (256-1048576)\n", KEDR_MODULE_NAME,
		       kedr_max_stacks);
		return -EINVAL;
	}
	kedr_stack_size = ALIGN(sizeof(struct kedr_stack) +
				kedr_stack_depth * sizeof(unsigned long), sizeof(unsigned long));
	kedr_objs = vzalloc(array_size(kedr_max_objects + 1, sizeof(*kedr_objs)));
	kedr_stacks = vzalloc(array_size(kedr_max_stacks + 1, kedr_stack_size));
	kedr_obj_shards = vzalloc(array_size(KEDR_OBJ_SHARDS, sizeof(*kedr_obj_shards)));
	kedr_stack_shards = vzalloc(array_size(KEDR_STACK_SHARDS, sizeof(*kedr_stack_shards)));
	if (!kedr_objs || !kedr_stacks || !kedr_obj_shards || !kedr_stack_shards) {
		vfree(kedr_objs);
		vfree(kedr_stacks);
		vfree(kedr_obj_shards);
		vfree(kedr_stack_shards);
		return -ENOMEM;
	}
	for (s = 0; s < KEDR_OBJ_SHARDS; s++) {
		spin_lock_init(&kedr_obj_shards[s].lock);
		kedr_obj_shard_fill(s);
	}
	for (s = 0; s < KEDR_STACK_SHARDS; s++) {
		spin_lock_init(&kedr_stack_shards[s].lock);
		kedr_stack_shard_fill(s);
	}
	kedr_leak_ready = true;
	return register_module_notifier(&kedr_module_nb);
}

/*
 * Back to a fresh load's state, the module staying loaded (kedr_control.c's
 * "reset", which holds kedr_targets_lock and has seen that no module links
 * here): what the quarantine holds goes to the kernel, as at unload, then
 * every record, stack, bad free, counter and target is forgotten.
 */
static void __maybe_unused kedr_leak_reset(void)
{
	struct kedr_target *t, *n;
	unsigned long flags;
	unsigned int s, cpu;

	lockdep_assert_held(&kedr_targets_lock);
	kedr_quarantine_release_all();
	for (s = 0; s < KEDR_OBJ_SHARDS; s++) {
		spin_lock_irqsave(&kedr_obj_shards[s].lock, flags);
		kedr_obj_shard_fill(s);
		spin_unlock_irqrestore(&kedr_obj_shards[s].lock, flags);
	}
	for (s = 0; s < KEDR_STACK_SHARDS; s++) {
		spin_lock_irqsave(&kedr_stack_shards[s].lock, flags);
		kedr_stack_shard_fill(s);
		spin_unlock_irqrestore(&kedr_stack_shards[s].lock, flags);
	}
	spin_lock_irqsave(&kedr_bad_lock, flags);
	memset(kedr_bad, 0, sizeof(kedr_bad));
	kedr_nbad = 0;
	kedr_bad_unkept = false;
	spin_unlock_irqrestore(&kedr_bad_lock, flags);
	for_each_possible_cpu(cpu)
		memset(per_cpu_ptr(&kedr_leak_counters, cpu), 0, sizeof(struct kedr_leak_counters));
	list_for_each_entry_safe(t, n, &kedr_targets, list) {
		list_del(&t->list);
		kfree(t);
	}
	kedr_dropped_targets = 0;
}

static void kedr_leak_exit(void)
{
	struct kedr_target *t, *n;

	unregister_module_notifier(&kedr_module_nb);
	list_for_each_entry_safe(t, n, &kedr_targets, list)
		kfree(t);
	vfree(kedr_objs);
	vfree(kedr_stacks);
	vfree(kedr_obj_shards);
	vfree(kedr_stack_shards);
}
