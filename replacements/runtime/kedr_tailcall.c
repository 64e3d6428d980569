// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime: where a tail call into a replacement came from.
 *
 * gcc -O2 compiles a call that ends a function as a jump (sibling-call
 * optimisation: "jmp kfree", not "call kfree"), so the replacement's
 * _RET_IP_ is the return address of the jumping function's caller: outside
 * the target (the kernel's delete_module for an exit ending in kfree()).
 * kedr-build builds drivers from source with -fno-optimize-sibling-calls, so
 * this table is empty for them; for a module patched as shipped (KO=) the
 * generator read the jumps from its relocations (kedr_build/intercept/tailcalls.py):
 * per intercepted function, the driver's functions that jump to it, and which
 * of them a call from outside the driver came from, when that is known.
 *
 * A jump's address is the run-time address of its section (the section
 * symbol's st_value in the target's kallsyms at MODULE_STATE_COMING, as
 * kedr_judge.c reads it) plus its offset; it is set while the target is
 * loaded and cleared at MODULE_STATE_GOING (after its exit ran: kernel/module
 * delete_module() calls mod->exit() before the GOING notifier).
 */

/* The jump of @site whose function starts at @callee (0: none). */
static unsigned long kedr_tail_callee_site(const struct kedr_tail_site *site, unsigned long callee)
{
	unsigned int j;

	for (j = 0; j < site->njumps; j++) {
		const struct kedr_tail_jump *jump = &site->jumps[j];
		unsigned long base = READ_ONCE(jump->base);

		if (base && callee == base + jump->start)
			return base + jump->site;
	}
	return 0;
}

/*
 * The caller to report for a call of a function the driver jumps to. @ip in a
 * module that imports the function: an ordinary call, unless the instruction
 * before @ip is a direct call (e8 rel32) of a jumping function, whose jump it
 * then was. @ip elsewhere: the jump of the one jumping entry point, if there
 * is one. Any context, NMI included: no lock, faulting reads of the text; a
 * module's memory is freed only after an RCU-sched grace period (free_module()).
 */
static __maybe_unused unsigned long kedr_tail_caller(const struct kedr_tail_site *site,
						   unsigned long ip)
{
	bool inside = false;
	unsigned long where;
	unsigned int i;
	u8 op;
	s32 rel;

	rcu_read_lock_sched_notrace();
	for (i = 0; kedr_tail_targets[i].name && !inside; i++) {
		struct module *mod = READ_ONCE(kedr_tail_targets[i].mod);

		inside = (site->importers & (1UL << i)) && mod && within_module(ip, mod);
	}
	rcu_read_unlock_sched_notrace();
	if (inside) {
		if (get_kernel_nofault(op, (u8 *)(ip - 5)) || op != 0xe8 ||
		    get_kernel_nofault(rel, (s32 *)(ip - 4)))
			return ip;
		where = kedr_tail_callee_site(site, ip + (long)rel);
		return where ? where : ip;
	}
	if (site->outside >= 0) {
		const struct kedr_tail_jump *jump = &site->jumps[site->outside];
		unsigned long base = READ_ONCE(jump->base);

		if (base)
			return base + jump->site;
	}
	return ip;
}

/* The run-time address of section @shndx of @mod (0: no section symbol for it). */
static unsigned long kedr_tail_section(struct module *mod, unsigned int shndx)
{
	const struct mod_kallsyms *ks;
	unsigned long addr = 0;
	unsigned int i;

	preempt_disable();
	ks = rcu_dereference_sched(mod->kallsyms);
	for (i = 0; ks && i < ks->num_symtab; i++) {
		const Elf_Sym *sym = &ks->symtab[i];

		if (ELF_ST_TYPE(sym->st_info) == STT_SECTION && sym->st_shndx == shndx &&
		    sym->st_value) {
			addr = sym->st_value;
			break;
		}
	}
	preempt_enable();
	return addr;
}

static int kedr_tail_event(struct notifier_block *nb, unsigned long state, void *data)
{
	struct module *mod = data;
	unsigned int i, j, t;

	if (state != MODULE_STATE_COMING && state != MODULE_STATE_GOING)
		return NOTIFY_DONE;
	/* Only the driver's own modules: every other module is none of our business. */
	for (t = 0; kedr_tail_targets[t].name; t++)
		if (!strcmp(kedr_tail_targets[t].name, mod->name))
			break;
	if (!kedr_tail_targets[t].name)
		return NOTIFY_DONE;
	for (i = 0; kedr_tail_sites[i]; i++) {
		for (j = 0; j < kedr_tail_sites[i]->njumps; j++) {
			struct kedr_tail_jump *jump = &kedr_tail_sites[i]->jumps[j];

			if (jump->target == t)
				WRITE_ONCE(jump->base, state == MODULE_STATE_COMING ?
					   kedr_tail_section(mod, jump->shndx) : 0);
		}
	}
	WRITE_ONCE(kedr_tail_targets[t].mod, state == MODULE_STATE_COMING ? mod : NULL);
	return NOTIFY_DONE;
}

static struct notifier_block kedr_tail_nb = {
	.notifier_call = kedr_tail_event,
};

static bool kedr_tail_registered;

static int kedr_tail_init(void)
{
	int err;

	if (!kedr_tail_sites[0])
		return 0;
	err = register_module_notifier(&kedr_tail_nb);
	kedr_tail_registered = !err;
	return err;
}

static void kedr_tail_exit(void)
{
	if (kedr_tail_registered)
		unregister_module_notifier(&kedr_tail_nb);
}
