// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, control: switch the payloads on and off while the
 * replacement module is loaded. Included by the generated module, which
 * defines KEDR_MODULE_NAME and kedr_functions[] before including this file.
 *
 * debugfs (root only: the files are 0600/0400 and debugfs itself is 0700):
 *
 *   /sys/kernel/debug/kedr_build/<module>/
 *     enabled                  rw  1/0: global switch; 0 makes every
 *                                  replacement a pass-through (every
 *                                  switch takes 1 or 0, a counter only 0)
 *     status                   r   one line per function: name replacement
 *                                  trace calls unrecorded
 *     leaks                    r   the leak payload's report (kedr_leak.c)
 *     functions/<name>/trace   rw  1/0: trace calls of <name>
 *     functions/<name>/leaks   rw  1/0: track what <name> allocates or frees
 *                                  (only for functions that do)
 *     functions/<name>/rules   rw  1/0: check the API rules on calls of <name>
 *                                  (only for functions that may sleep)
 *     functions/<name>/faults  rw  1/0: let <name>'s fault points fail it
 *                                  (only for functions that can fail)
 *     faults/<point>           rw  the point's scenario and counters;
 *                                  faults/sites: sites reached (kedr_faults.c)
 *     reset                    w   1: back to the state a fresh load leaves
 *                                  (no record, violation, site, scenario or
 *                                  count; the switches as at load) without
 *                                  unloading; -EBUSY while a module links here
 *                                  (not in a module built to attach: KEDR_HOT)
 *     functions/<name>/calls   rw  calls that ran the trace payload
 *                                  (write 0 to reset)
 *     functions/<name>/unrecorded
 *                              rw  of those, calls made while the tracefs
 *                                  event was disabled (write 0 to reset)
 *
 * The module parameter "enabled" (default 1) sets the global switch at load.
 * Every switch only recomputes kedr_function.active under kedr_control_lock;
 * replacements read that word with READ_ONCE and take no lock.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>

#include "kedr_runtime.h"

#define KEDR_DEBUGFS_ROOT "kedr_build"

static bool kedr_enabled_at_load = true;
module_param_named(enabled, kedr_enabled_at_load, bool, 0444);
MODULE_PARM_DESC(enabled, "Run the payloads from the start (1) or start as a pass-through (0)");

static DEFINE_MUTEX(kedr_control_lock);
static bool kedr_global_enabled;
static struct dentry *kedr_root_dir;		/* kedr_build/ */
static bool kedr_root_dir_looked_up;		/* another module created it: we hold a ref */
static struct dentry *kedr_module_dir;		/* kedr_build/<module>/ */

/* Called with kedr_control_lock held. */
static void kedr_update_active(struct kedr_function *fn)
{
	unsigned int active = kedr_global_enabled ? fn->wanted & fn->payloads : 0;

	/*
	 * Leak tracking off for a while: frees of what was allocated meanwhile
	 * are no longer "foreign" (kedr_leak.c), and leaks may be missed.
	 */
	if ((fn->active & KEDR_PAYLOAD_LEAKS) && !(active & KEDR_PAYLOAD_LEAKS))
		WRITE_ONCE(kedr_leak_gap, true);
	WRITE_ONCE(fn->active, active);
}

static void kedr_update_all(void)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(kedr_functions); i++)
		kedr_update_active(kedr_functions[i]);
}

/*
 * Every numeric file is one DEFINE_DEBUGFS_ATTRIBUTE (a u64, "%llu\n" read, a
 * number written) created with debugfs_create_file_unsafe() (debugfs_attr_read/
 * write hold the file against removal themselves). What a file reads and writes
 * is its row of kedr_function_files[]; which function it is for, with its row,
 * is its inode->i_private (a struct kedr_control_data, one per file).
 */
struct kedr_control_file {
	const char *name;
	const struct file_operations *fops;
	unsigned int payload;	/* switch: the payload bit; the file exists only for
				 * functions that have that payload (trace: all) */
	bool unrecorded;	/* counter: the unrecorded one, not calls */
};

struct kedr_control_data {
	struct kedr_function *fn;	/* NULL: the global switch ("enabled") */
	const struct kedr_control_file *file;
};

/* A switch reads 1/0 and takes 1/0: the function's payload bit, or "enabled". */
static int kedr_switch_get(void *data, u64 *val)
{
	const struct kedr_control_data *d = data;

	*val = d->fn ? !!(READ_ONCE(d->fn->wanted) & d->file->payload)
		     : READ_ONCE(kedr_global_enabled);
	return 0;
}

static int kedr_switch_set(void *data, u64 val)
{
	const struct kedr_control_data *d = data;
	struct kedr_function *fn = d->fn;

	if (val > 1)
		return -EINVAL;
	mutex_lock(&kedr_control_lock);
	if (fn) {
		WRITE_ONCE(fn->wanted, val ? fn->wanted | d->file->payload
				       : fn->wanted & ~d->file->payload);
		kedr_update_active(fn);
	} else {
		WRITE_ONCE(kedr_global_enabled, val);
		kedr_update_all();
	}
	mutex_unlock(&kedr_control_lock);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(kedr_switch_fops, kedr_switch_get, kedr_switch_set, "%llu\n");

/* A counter reads its count; writing 0 resets it, any other value is refused. */
static int kedr_counter_get(void *data, u64 *val)
{
	const struct kedr_control_data *d = data;

	*val = kedr_trace_counter(d->fn, d->file->unrecorded);
	return 0;
}

static int kedr_counter_set(void *data, u64 val)
{
	const struct kedr_control_data *d = data;

	if (val != 0)
		return -EINVAL;
	kedr_trace_counter_reset(d->fn, d->file->unrecorded);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(kedr_counter_fops, kedr_counter_get, kedr_counter_set, "%llu\n");

/* functions/<name>/<file> */
static const struct kedr_control_file kedr_function_files[] = {
	{ "trace", &kedr_switch_fops, KEDR_PAYLOAD_TRACE },
	{ "calls", &kedr_counter_fops, 0, false },
	{ "unrecorded", &kedr_counter_fops, 0, true },
	{ "leaks", &kedr_switch_fops, KEDR_PAYLOAD_LEAKS },
	{ "rules", &kedr_switch_fops, KEDR_PAYLOAD_RULES },
	{ "faults", &kedr_switch_fops, KEDR_PAYLOAD_FAULTS },
};

static const struct kedr_control_file kedr_enabled_file = { "enabled", &kedr_switch_fops };
static struct kedr_control_data kedr_enabled_data = { NULL, &kedr_enabled_file };
static struct kedr_control_data
	kedr_control_data[ARRAY_SIZE(kedr_functions)][ARRAY_SIZE(kedr_function_files)];

static bool kedr_has_file(const struct kedr_function *fn, const struct kedr_control_file *f)
{
	/* Every function traces and counts; the other payloads only where the catalog says. */
	return f->fops == &kedr_counter_fops || f->payload == KEDR_PAYLOAD_TRACE ||
	       (fn->payloads & f->payload);
}

/* --- reset ---------------------------------------------------------------------- */

#ifndef KEDR_HOT
/*
 * Modules that link here: each holds a module_use on our source_list from
 * resolve_symbol()'s ref_module() until free_module()'s module_unload_free()
 * (kernel/module/main.c, 6.1 and 6.12), after its GOING notifiers ran.
 */
static bool kedr_linked_here(void)
{
#ifdef CONFIG_MODULE_UNLOAD
	return !list_empty(&THIS_MODULE->source_list);
#else
	return true;		/* no module ever goes: never reset */
#endif
}

/*
 * What an unload and a load would do, the module staying loaded: the fault
 * sweep's trials, one after another in a boot (guest-faults.sh.j2), each judged
 * on its own report. Only when no module links here (kedr_linked_here()):
 * replacements are called from the targets' code only, so nothing runs in them
 * meanwhile, the GOING judgments (kedr_judge.c) are over, and a target coming
 * now waits in its COMING notifier (kedr_target_coming()) for kedr_targets_lock,
 * held throughout. A module built to attach (KEDR_HOT) has no such link to its
 * target: it has no reset.
 */
static int kedr_reset_set(void *data, u64 val)
{
	size_t i;

	if (val != 1)
		return -EINVAL;
	mutex_lock(&kedr_targets_lock);
	if (kedr_linked_here()) {
		mutex_unlock(&kedr_targets_lock);
		return -EBUSY;
	}
	kedr_leak_reset();		/* kedr_judge.c */
	kedr_rules_reset();		/* kedr_rules.c */
	kedr_faults_reset();		/* kedr_faults.c */
	mutex_lock(&kedr_control_lock);
	kedr_global_enabled = kedr_enabled_at_load;
	for (i = 0; i < ARRAY_SIZE(kedr_functions); i++) {
		struct kedr_function *fn = kedr_functions[i];

		WRITE_ONCE(fn->wanted, fn->payloads & KEDR_PAYLOADS_DEFAULT);
		kedr_trace_counter_reset(fn, false);
		kedr_trace_counter_reset(fn, true);
	}
	kedr_update_all();
	/* As kedr_control_init(): started as a pass-through, a gap from the start. */
	WRITE_ONCE(kedr_leak_gap, !kedr_enabled_at_load);
	mutex_unlock(&kedr_control_lock);
	mutex_unlock(&kedr_targets_lock);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(kedr_reset_fops, NULL, kedr_reset_set, "%llu\n");
#endif

/* --- status --------------------------------------------------------------------- */

static int kedr_status_show(struct seq_file *m, void *unused)
{
	size_t i;

	seq_printf(m, "# enabled=%d\n", READ_ONCE(kedr_global_enabled));
	seq_puts(m, "# function replacement trace calls unrecorded\n");
	for (i = 0; i < ARRAY_SIZE(kedr_functions); i++) {
		struct kedr_function *fn = kedr_functions[i];

		seq_printf(m, "%s %s %d %lld %lld\n", fn->name, fn->replacement,
			   !!(READ_ONCE(fn->wanted) & KEDR_PAYLOAD_TRACE),
			   (long long)kedr_trace_counter(fn, false),
			   (long long)kedr_trace_counter(fn, true));
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kedr_status);

/* --- set-up and tear-down ------------------------------------------------------- */

static struct dentry *kedr_get_root_dir(void)
{
	struct dentry *root = debugfs_lookup(KEDR_DEBUGFS_ROOT, NULL);

	if (root) {
		kedr_root_dir_looked_up = true;
		return root;
	}
	return debugfs_create_dir(KEDR_DEBUGFS_ROOT, NULL);
}

/*
 * debugfs failures are not fatal (debugfs_create_* accept an error pointer as
 * parent and do nothing): without debugfs the module still runs, with the
 * switches as set at load.
 */
static void kedr_control_init(void)
{
	struct dentry *functions;
	size_t i, k;

	/* Started as a pass-through: what is allocated before tracking starts is unknown. */
	kedr_leak_gap = !kedr_enabled_at_load;
	mutex_lock(&kedr_control_lock);
	kedr_global_enabled = kedr_enabled_at_load;
	kedr_update_all();
	mutex_unlock(&kedr_control_lock);

	kedr_root_dir = kedr_get_root_dir();
	kedr_module_dir = debugfs_create_dir(KEDR_MODULE_NAME, kedr_root_dir);
	debugfs_create_file_unsafe(kedr_enabled_file.name, 0600, kedr_module_dir,
				   &kedr_enabled_data, kedr_enabled_file.fops);
	debugfs_create_file("status", 0400, kedr_module_dir, NULL, &kedr_status_fops);
	debugfs_create_file("leaks", 0400, kedr_module_dir, NULL, &kedr_leaks_fops);
#ifndef KEDR_HOT
	debugfs_create_file_unsafe("reset", 0200, kedr_module_dir, NULL, &kedr_reset_fops);
#endif
	functions = debugfs_create_dir("functions", kedr_module_dir);
	for (i = 0; i < ARRAY_SIZE(kedr_functions); i++) {
		struct kedr_function *fn = kedr_functions[i];
		struct dentry *dir = debugfs_create_dir(fn->name, functions);

		for (k = 0; k < ARRAY_SIZE(kedr_function_files); k++) {
			const struct kedr_control_file *f = &kedr_function_files[k];
			struct kedr_control_data *d = &kedr_control_data[i][k];

			if (!kedr_has_file(fn, f))
				continue;
			d->fn = fn;
			d->file = f;
			debugfs_create_file_unsafe(f->name, 0600, dir, d, f->fops);
		}
	}
	kedr_faults_init(kedr_module_dir);
#ifdef KEDR_HOT
	kedr_hot_init(kedr_module_dir);		/* kedr_attach.c */
#endif
}

static void kedr_control_exit(void)
{
	debugfs_remove(kedr_module_dir);
	kedr_faults_exit();
	/* The last replacement module out removes kedr_build/. */
	if (!IS_ERR_OR_NULL(kedr_root_dir) && simple_empty(kedr_root_dir))
		debugfs_remove(kedr_root_dir);
	if (kedr_root_dir_looked_up)
		dput(kedr_root_dir);
}
