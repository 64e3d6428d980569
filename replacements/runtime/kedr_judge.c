// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, leak payload: what is judged when a target loads, returns
 * from init and goes (module notifier), and the payload's set-up and tear-down.
 */
/* --- targets: section addresses while they load ------------------------------------- */

static void kedr_record_sections(struct kedr_target *t, struct module *mod)
{
	const struct mod_kallsyms *ks;
	unsigned int i, j;

	/*
	 * At MODULE_STATE_COMING mod->kallsyms is the module's whole ELF
	 * symtab, st_value already relocated (simplify_symbols()): a section
	 * symbol's value is then its section's run-time address.
	 */
	preempt_disable();
	ks = rcu_dereference_sched(mod->kallsyms);
	for (i = 0; ks && i < ks->num_symtab && t->nsections < KEDR_SECTIONS; i++) {
		const Elf_Sym *sym = &ks->symtab[i];

		if (ELF_ST_TYPE(sym->st_info) != STT_SECTION || !sym->st_value ||
		    sym->st_shndx == SHN_UNDEF || sym->st_shndx >= SHN_LORESERVE)
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
}

/* --- timers still pending when their module goes ------------------------------------ */

#define KEDR_TIMERS_JUDGED	64

/* Is @addr inside a live object the target allocated (so its memory is valid)? */
static bool kedr_inside_live_object(unsigned long addr)
{
	unsigned int s, b;
	bool inside = false;
	unsigned long flags;

	for (s = 0; s < KEDR_OBJ_SHARDS && !inside; s++) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[s];

		spin_lock_irqsave(&sh->lock, flags);
		for (b = 0; b < KEDR_OBJ_BUCKETS && !inside; b++) {
			u32 id;

			for (id = sh->heads[b]; id; id = kedr_obj_at(id)->next) {
				const struct kedr_obj *o = kedr_obj_at(id);

				if (o->state == KEDR_OBJ_LIVE && kedr_kind_memory(o->kind) &&
				    addr >= o->ptr && addr < o->ptr + o->size) {
					inside = true;
					break;
				}
			}
		}
		spin_unlock_irqrestore(&sh->lock, flags);
	}
	return inside;
}

/* Set the fate of a timer record: pending (reported) or gone (released). */
static void kedr_timer_judged(unsigned long key, bool pending)
{
	unsigned int bucket;
	struct kedr_obj_shard *sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];
	struct kedr_obj *o;
	unsigned long flags;

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	if (o && o->state == KEDR_OBJ_LIVE &&
	    (o->kind == KEDR_KIND_TIMER || o->kind == KEDR_KIND_WORK || o->kind == KEDR_KIND_DWORK)) {
		if (pending) {
			o->aux = 1;
		} else {
			kedr_quarantine_add(sh, o, o->caller, o->stack);
			kedr_count(frees);
		}
	}
	spin_unlock_irqrestore(&sh->lock, flags);
}

/*
 * MODULE_STATE_GOING (after the module's exit function, before its memory is
 * freed): every timer the target armed and did not delete is judged. It is
 * read only where its memory is known valid: in the module itself or inside
 * a live object the target allocated (a timer in memory the target freed
 * cannot be read safely, and is dropped unjudged). A pending one is reported
 * and deleted (timer_delete(), timer.h): it would fire into freed code.
 */
static void kedr_timers_going(struct module *mod)
{
	unsigned long keys[KEDR_TIMERS_JUDGED], flags;
	u8 kinds[KEDR_TIMERS_JUDGED];
	unsigned int s, b, n = 0, i;

	for (s = 0; s < KEDR_OBJ_SHARDS && n < ARRAY_SIZE(keys); s++) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[s];

		spin_lock_irqsave(&sh->lock, flags);
		for (b = 0; b < KEDR_OBJ_BUCKETS && n < ARRAY_SIZE(keys); b++) {
			u32 id;

			for (id = sh->heads[b]; id && n < ARRAY_SIZE(keys);
			     id = kedr_obj_at(id)->next) {
				const struct kedr_obj *o = kedr_obj_at(id);

				if (o->state == KEDR_OBJ_LIVE && o->aux == 0 &&
				    (o->kind == KEDR_KIND_TIMER || o->kind == KEDR_KIND_WORK ||
				     o->kind == KEDR_KIND_DWORK))
					keys[n] = o->ptr, kinds[n++] = o->kind;
			}
		}
		spin_unlock_irqrestore(&sh->lock, flags);
	}
	for (i = 0; i < n; i++) {
		unsigned long addr = kedr_addr(keys[i]);
		bool valid = within_module(addr, mod) || kedr_inside_live_object(addr);
		bool pending;

		if (kinds[i] == KEDR_KIND_TIMER) {
			struct timer_list *timer = (struct timer_list *)addr;

			pending = valid && timer_pending(timer);
			kedr_timer_judged(keys[i], pending);
			if (pending) {
				pr_err("%s: timer %px of %s still pending at unload: deleted\n",
				       KEDR_MODULE_NAME, timer, mod->name);
				timer_delete(timer);
			}
			continue;
		}
		/*
		 * A work item (work_pending(): queued, or a delayed one whose timer
		 * is armed) would run freed code: cancel it, waiting for it if it is
		 * running. cancel_work_sync() must not be given a delayed work item
		 * whose timer is armed (kernel/workqueue.c, try_to_grab_pending()).
		 */
		pending = valid && work_pending((struct work_struct *)addr);
		kedr_timer_judged(keys[i], pending);
		if (pending) {
			pr_err("%s: work %px of %s still pending at unload: cancelled\n",
			       KEDR_MODULE_NAME, (void *)addr, mod->name);
			if (kinds[i] == KEDR_KIND_DWORK)
				cancel_delayed_work_sync((struct delayed_work *)addr);
			else
				cancel_work_sync((struct work_struct *)addr);
		}
	}
}

/*
 * MODULE_STATE_LIVE: the target's init returned to the kernel. A mutex or a
 * spinlock it took there and still holds is the rule "lock-held-at-return"
 * (reported with the stack of the lock; the lock stays as it is).
 */
static void kedr_rule_violation_at(unsigned int fn, unsigned int rule, unsigned long ip,
				   u32 stack, pid_t pid, const char *comm);

static void kedr_locks_at_return(void)
{
	struct kedr_obj held[8];
	unsigned long flags;
	unsigned int s, b, n = 0, i;

	for (s = 0; s < KEDR_OBJ_SHARDS && n < ARRAY_SIZE(held); s++) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[s];

		spin_lock_irqsave(&sh->lock, flags);
		for (b = 0; b < KEDR_OBJ_BUCKETS && n < ARRAY_SIZE(held); b++) {
			u32 id;

			for (id = sh->heads[b]; id && n < ARRAY_SIZE(held);
			     id = kedr_obj_at(id)->next) {
				const struct kedr_obj *o = kedr_obj_at(id);

				if (o->state == KEDR_OBJ_LIVE && (o->kind == KEDR_KIND_MUTEX ||
								 o->kind == KEDR_KIND_SPINLOCK))
					held[n++] = *o;
			}
		}
		spin_unlock_irqrestore(&sh->lock, flags);
	}
	for (i = 0; i < n; i++)
		kedr_rule_violation_at(held[i].fn, KEDR_RULE_LOCK_HELD_AT_RETURN, held[i].caller,
				       held[i].stack, held[i].pid, held[i].comm);
}

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

/* Release a live resource record the kernel released on the target's behalf. */
static void kedr_res_released_by_kernel(unsigned long key)
{
	unsigned int bucket;
	struct kedr_obj_shard *sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];
	struct kedr_obj *o;
	unsigned long flags;

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	if (o && o->state == KEDR_OBJ_LIVE) {
		kedr_quarantine_add(sh, o, o->caller, o->stack);
		kedr_count(frees);
	}
	spin_unlock_irqrestore(&sh->lock, flags);
}

/*
 * MODULE_STATE_GOING: network devices the kernel unregistered (and freed)
 * for the target. rtnl_link_unregister() unregisters every device of the
 * driver's link type itself (net/core/rtnetlink.c), and a device with
 * needs_free_netdev is freed by the kernel after unregistering
 * (netdev_run_todo()): neither call is the target's, so neither is seen.
 * A registration whose device is in no namespace any more is released; so
 * is the allocation of a device the kernel frees, once not registered.
 */
#define KEDR_NETDEVS_JUDGED	64

static void kedr_netdevs_going(void)
{
	unsigned long regs[KEDR_NETDEVS_JUDGED], devs[KEDR_NETDEVS_JUDGED], flags;
	unsigned int s, b, nregs = 0, ndevs = 0, i, j;

	for (s = 0; s < KEDR_OBJ_SHARDS; s++) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[s];

		spin_lock_irqsave(&sh->lock, flags);
		for (b = 0; b < KEDR_OBJ_BUCKETS; b++) {
			u32 id;

			for (id = sh->heads[b]; id; id = kedr_obj_at(id)->next) {
				const struct kedr_obj *o = kedr_obj_at(id);

				if (o->state != KEDR_OBJ_LIVE)
					continue;
				if (o->kind == KEDR_KIND_NETDEV_REGISTERED && nregs < ARRAY_SIZE(regs))
					regs[nregs++] = o->aux;
				else if (o->kind == KEDR_KIND_NETDEV &&
					 o->free_stack == KEDR_NETDEV_KERNEL_FREES &&
					 ndevs < ARRAY_SIZE(devs))
					devs[ndevs++] = o->aux;
			}
		}
		spin_unlock_irqrestore(&sh->lock, flags);
	}
	for (i = 0; i < nregs; i++) {
		if (kedr_netdev_registered(regs[i]))
			continue;
		kedr_res_released_by_kernel(kedr_res_key(KEDR_KIND_NETDEV_REGISTERED, regs[i], 0));
		regs[i] = 0;
	}
	for (i = 0; i < ndevs; i++) {
		for (j = 0; j < nregs && regs[j] != devs[i]; j++)
			;
		if (j == nregs)		/* not (or no longer) registered: the kernel freed it */
			kedr_res_released_by_kernel(kedr_res_key(KEDR_KIND_NETDEV, devs[i], 0));
	}
}

static int kedr_module_event(struct notifier_block *nb, unsigned long state, void *data)
{
	struct module *mod = data;
	struct kedr_target *t;
	unsigned int i;

	if (mod == THIS_MODULE)
		return NOTIFY_DONE;
	mutex_lock(&kedr_targets_lock);
	if (state == MODULE_STATE_COMING && kedr_ntargets < KEDR_TARGETS) {
		t = kzalloc(sizeof(*t), GFP_KERNEL);
		if (t) {
			strscpy(t->name, mod->name, sizeof(t->name));
			kedr_record_sections(t, mod);
			kedr_targets[kedr_ntargets++] = t;
		}
	} else if (state == MODULE_STATE_LIVE && kedr_leak_ready) {
		kedr_locks_at_return();
	} else if (state == MODULE_STATE_GOING) {
		for (i = 0; i < kedr_ntargets; i++)
			if (!strcmp(kedr_targets[i]->name, mod->name))
				kedr_targets[i]->gone = true;
		kedr_timers_going(mod);
		kedr_netdevs_going();
	}
	mutex_unlock(&kedr_targets_lock);
	return NOTIFY_DONE;
}

static struct notifier_block kedr_module_nb = {
	.notifier_call = kedr_module_event,
};


/* --- set-up and tear-down ---------------------------------------------------------------- */

static int kedr_leak_init(void)
{
	unsigned int s, per, i;

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
	/* Each shard owns a slice of the pools: no global free list, no global lock. */
	per = kedr_max_objects / KEDR_OBJ_SHARDS;
	for (s = 0; s < KEDR_OBJ_SHARDS; s++) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[s];

		spin_lock_init(&sh->lock);
		for (i = 0; i < per; i++) {
			u32 id = s * per + i + 1;

			kedr_obj_at(id)->next = sh->free_list;
			sh->free_list = id;
		}
	}
	per = kedr_max_stacks / KEDR_STACK_SHARDS;
	for (s = 0; s < KEDR_STACK_SHARDS; s++) {
		spin_lock_init(&kedr_stack_shards[s].lock);
		kedr_stack_shards[s].first = s * per;
		kedr_stack_shards[s].count = per;
	}
	kedr_leak_ready = true;
	return register_module_notifier(&kedr_module_nb);
}

static void kedr_leak_exit(void)
{
	unsigned int i;

	unregister_module_notifier(&kedr_module_nb);
	for (i = 0; i < kedr_ntargets; i++)
		kfree(kedr_targets[i]);
	vfree(kedr_objs);
	vfree(kedr_stacks);
	vfree(kedr_obj_shards);
	vfree(kedr_stack_shards);
}
