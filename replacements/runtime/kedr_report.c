// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, leak payload: the report,
 * /sys/kernel/debug/kedr_build/<module>/leaks ("kedr-leaks 1", see README.md).
 */
#include <linux/bitmap.h>
/* --- report ---------------------------------------------------------------------------- */

static void kedr_put_comm(struct seq_file *m, const char *comm)
{
	/* The rest of the line: spaces and unprintables would break the format. */
	for (; *comm; comm++)
		seq_putc(m, *comm > ' ' && *comm < 0x7f ? *comm : '_');
}

static const char *kedr_fn_name(unsigned int index)
{
	return index < ARRAY_SIZE(kedr_functions) ? kedr_functions[index]->name : "?";
}

static void kedr_rules_show(struct seq_file *m, unsigned long *shown);	/* kedr_rules.c */

/*
 * The report prints only the stacks its lines name: a clean run's report was every
 * stack ever interned (thousands after a fuzz run or a sweep, each crossing the
 * serial port) for no line that named one. @shown: a bitmap of stack ids
 * (1..max_stacks); NULL when it could not be allocated: every stack is printed.
 */
static void kedr_show_stack(unsigned long *shown, u32 id)
{
	if (shown && id && id <= kedr_max_stacks)
		__set_bit(id, shown);
}

struct kedr_report {
	struct seq_file *m;
	unsigned long live, live_bytes;
	unsigned long *shown;
};

/*
 * A live record in the report (kedr_walk(): the shard's lock held;
 * seq_printf() only fills the seq_file's buffer).
 */
static int kedr_visit_report(struct kedr_obj *o, void *arg)
{
	struct kedr_report *r = arg;
	struct seq_file *m = r->m;

	if (o->state != KEDR_OBJ_LIVE)
		return KEDR_WALK_GO;
	/* A timer or work item is reported once judged pending at unload. */
	if ((o->kind == KEDR_KIND_TIMER || o->kind == KEDR_KIND_WORK ||
	     o->kind == KEDR_KIND_DWORK) && o->aux != 1)
		return KEDR_WALK_GO;
	r->live++;
	r->live_bytes += o->size;
	kedr_show_stack(r->shown, o->stack);
	/* A resource's key is a hash: print the value that names it. */
	seq_printf(m, "object fn=%s kind=%s ptr=0x%lx size=%lu caller=0x%lx "
		   "stack=%u pid=%d comm=", kedr_fn_name(o->fn),
		   kedr_kind_names[o->kind],
		   kedr_kind_resource(o->kind) ? o->aux : kedr_addr(o->ptr),
		   o->size, o->caller, o->stack, o->pid);
	kedr_put_comm(m, o->comm);
	seq_putc(m, '\n');
	return KEDR_WALK_GO;
}

static int kedr_leaks_show(struct seq_file *m, void *unused)
{
	struct kedr_leak_counters sum = {};
	/* GFP_KERNEL: seq_file's show runs in process context, no lock held yet. */
	unsigned long *shown = bitmap_zalloc(kedr_max_stacks + 1, GFP_KERNEL);
	struct kedr_report r = { .m = m, .shown = shown };
	struct kedr_walk w = {};
	struct kedr_target *t;
	unsigned long flags;
	unsigned int s, i, b, cpu, dropped_targets;

	seq_printf(m, "kedr-leaks %d\n", KEDR_LEAK_FORMAT);
	seq_printf(m, "module %s\n", KEDR_MODULE_NAME);
#ifdef KEDR_HOT
	kedr_hot_report(m);	/* kedr_attach.c: the window this report covers */
#endif
	seq_printf(m, "config stack_depth=%u free_stacks=%d max_objects=%u max_stacks=%u\n",
		   kedr_stack_depth, kedr_free_stacks, kedr_max_objects, kedr_max_stacks);
	mutex_lock(&kedr_targets_lock);
	list_for_each_entry(t, &kedr_targets, list) {
		seq_printf(m, "target name=%s state=%s\n", t->name, t->gone ? "unloaded" : "loaded");
		for (s = 0; s < t->nsections; s++)
			seq_printf(m, "section target=%s shndx=%u addr=0x%lx\n", t->name,
				   t->sections[s].shndx, t->sections[s].addr);
	}
	dropped_targets = kedr_dropped_targets;
	mutex_unlock(&kedr_targets_lock);

	if (kedr_leak_ready)
		kedr_walk(&w, kedr_visit_report, &r);

	spin_lock_irqsave(&kedr_bad_lock, flags);
	for (i = 0; i < kedr_nbad; i++) {
		const struct kedr_bad_free *bf = &kedr_bad[i];

		seq_printf(m, "badfree what=%s fn=%s ptr=0x%lx caller=0x%lx stack=%u passed=%d "
			   "pid=%d", kedr_bad_names[bf->what], kedr_fn_name(bf->fn), bf->ptr,
			   bf->caller, bf->stack, bf->passed, bf->pid);
		kedr_show_stack(shown, bf->stack);
		if (bf->known) {
			const struct kedr_obj *o = &bf->obj;

			kedr_show_stack(shown, o->stack);

			seq_printf(m, " alloc_fn=%s alloc_kind=%s alloc_size=%lu alloc_stack=%u",
				   kedr_fn_name(o->fn), kedr_kind_names[o->kind], o->size, o->stack);
			if (o->state == KEDR_OBJ_FREED) {
				seq_printf(m, " free_caller=0x%lx free_stack=%u", o->caller,
					   o->free_stack);
				kedr_show_stack(shown, o->free_stack);
			} else
				seq_printf(m, " alloc_caller=0x%lx", o->caller);
		}
		seq_puts(m, " comm=");
		kedr_put_comm(m, bf->comm);
		seq_putc(m, '\n');
	}
	spin_unlock_irqrestore(&kedr_bad_lock, flags);
	kedr_rules_show(m, shown);

	for_each_possible_cpu(cpu) {
		const struct kedr_leak_counters *c = per_cpu_ptr(&kedr_leak_counters, cpu);

		sum.allocs += c->allocs;
		sum.frees += c->frees;
		sum.bad_frees += c->bad_frees;
		sum.dropped_objects += c->dropped_objects;
		sum.dropped_stacks += c->dropped_stacks;
		sum.untracked_frees += c->untracked_frees;
		sum.nmi_skipped += c->nmi_skipped;
		sum.unwinds += c->unwinds;
		sum.full_unwinds += c->full_unwinds;
	}
	seq_printf(m, "totals allocs=%llu frees=%llu live=%lu live_bytes=%lu bad_frees=%llu "
		   "dropped_objects=%llu dropped_stacks=%llu untracked_frees=%llu nmi_skipped=%llu "
		   "gap=%d dropped_targets=%u unwinds=%llu full_unwinds=%llu\n", sum.allocs, sum.frees, r.live,
		   r.live_bytes, sum.bad_frees, sum.dropped_objects, sum.dropped_stacks,
		   sum.untracked_frees, sum.nmi_skipped, READ_ONCE(kedr_leak_gap), dropped_targets,
		   sum.unwinds, sum.full_unwinds);

	/* Stacks are written once and never change: no lock needed to print them. */
	for (s = 0; kedr_leak_ready && s < KEDR_STACK_SHARDS; s++) {
		struct kedr_stack_shard *sh = &kedr_stack_shards[s];
		u32 used = smp_load_acquire(&sh->used);	/* pairs with kedr_stack_intern() */
		for (i = 0; i < used; i++) {
			u32 id = sh->first + 1 + i;
			const struct kedr_stack *st = kedr_stack_at(id);

			if (shown && !test_bit(id, shown))
				continue;
			seq_printf(m, "stack id=%u frames=%u\n", id, st->nr);
			for (b = 0; b < st->nr; b++)
				seq_printf(m, "frame 0x%lx %pS\n", st->frames[b],
					   (void *)st->frames[b]);
		}
	}
	seq_puts(m, "end\n");
	bitmap_free(shown);
	return 0;
}

static int kedr_leaks_open(struct inode *inode, struct file *file)
{
	/* Start big: a report is read once and seq_file would otherwise regrow it. */
	return single_open_size(file, kedr_leaks_show, NULL, 1 << 16);
}

static const struct file_operations kedr_leaks_fops = {
	.owner = THIS_MODULE,
	.open = kedr_leaks_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
};
