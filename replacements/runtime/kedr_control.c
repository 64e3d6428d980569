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
 *                                  replacement a pass-through
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
#include <linux/uaccess.h>

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

static ssize_t kedr_read_text(char __user *buf, size_t count, loff_t *ppos, const char *text)
{
	return simple_read_from_buffer(buf, count, ppos, text, strlen(text));
}

/* --- enabled ---------------------------------------------------------------- */

static ssize_t kedr_enabled_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	return kedr_read_text(buf, count, ppos, READ_ONCE(kedr_global_enabled) ? "1\n" : "0\n");
}

static ssize_t kedr_enabled_write(struct file *file, const char __user *buf, size_t count,
				  loff_t *ppos)
{
	bool on;
	int err = kstrtobool_from_user(buf, count, &on);

	if (err)
		return err;
	mutex_lock(&kedr_control_lock);
	WRITE_ONCE(kedr_global_enabled, on);
	kedr_update_all();
	mutex_unlock(&kedr_control_lock);
	return count;
}

static const struct file_operations kedr_enabled_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kedr_enabled_read,
	.write = kedr_enabled_write,
	.llseek = default_llseek,
};

/* --- functions/<name>/trace, functions/<name>/leaks ------------------------------------ */

static ssize_t kedr_switch_read(struct file *file, char __user *buf, size_t count,
				loff_t *ppos, unsigned int bit)
{
	struct kedr_function *fn = file->private_data;

	return kedr_read_text(buf, count, ppos, READ_ONCE(fn->wanted) & bit ? "1\n" : "0\n");
}

static ssize_t kedr_switch_write(struct file *file, const char __user *buf, size_t count,
				 unsigned int bit)
{
	struct kedr_function *fn = file->private_data;
	bool on;
	int err = kstrtobool_from_user(buf, count, &on);

	if (err)
		return err;
	mutex_lock(&kedr_control_lock);
	WRITE_ONCE(fn->wanted, on ? fn->wanted | bit : fn->wanted & ~bit);
	kedr_update_active(fn);
	mutex_unlock(&kedr_control_lock);
	return count;
}

static ssize_t kedr_trace_switch_read(struct file *file, char __user *buf, size_t count,
				      loff_t *ppos)
{
	return kedr_switch_read(file, buf, count, ppos, KEDR_PAYLOAD_TRACE);
}

static ssize_t kedr_trace_switch_write(struct file *file, const char __user *buf, size_t count,
				       loff_t *ppos)
{
	return kedr_switch_write(file, buf, count, KEDR_PAYLOAD_TRACE);
}

static const struct file_operations kedr_trace_switch_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kedr_trace_switch_read,
	.write = kedr_trace_switch_write,
	.llseek = default_llseek,
};

static ssize_t kedr_leaks_switch_read(struct file *file, char __user *buf, size_t count,
				      loff_t *ppos)
{
	return kedr_switch_read(file, buf, count, ppos, KEDR_PAYLOAD_LEAKS);
}

static ssize_t kedr_leaks_switch_write(struct file *file, const char __user *buf, size_t count,
				       loff_t *ppos)
{
	return kedr_switch_write(file, buf, count, KEDR_PAYLOAD_LEAKS);
}

static const struct file_operations kedr_leaks_switch_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kedr_leaks_switch_read,
	.write = kedr_leaks_switch_write,
	.llseek = default_llseek,
};

static ssize_t kedr_rules_switch_read(struct file *file, char __user *buf, size_t count,
				      loff_t *ppos)
{
	return kedr_switch_read(file, buf, count, ppos, KEDR_PAYLOAD_RULES);
}

static ssize_t kedr_rules_switch_write(struct file *file, const char __user *buf, size_t count,
				       loff_t *ppos)
{
	return kedr_switch_write(file, buf, count, KEDR_PAYLOAD_RULES);
}

static const struct file_operations kedr_rules_switch_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kedr_rules_switch_read,
	.write = kedr_rules_switch_write,
	.llseek = default_llseek,
};

static ssize_t kedr_faults_switch_read(struct file *file, char __user *buf, size_t count,
				       loff_t *ppos)
{
	return kedr_switch_read(file, buf, count, ppos, KEDR_PAYLOAD_FAULTS);
}

static ssize_t kedr_faults_switch_write(struct file *file, const char __user *buf, size_t count,
					loff_t *ppos)
{
	return kedr_switch_write(file, buf, count, KEDR_PAYLOAD_FAULTS);
}

static const struct file_operations kedr_faults_switch_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kedr_faults_switch_read,
	.write = kedr_faults_switch_write,
	.llseek = default_llseek,
};

/* --- counters: functions/<name>/calls, unrecorded ------------------------------- */

static ssize_t kedr_counter_read(struct file *file, char __user *buf, size_t count,
				 loff_t *ppos, bool unrecorded)
{
	struct kedr_function *fn = file->private_data;
	char text[24];

	snprintf(text, sizeof(text), "%llu\n",
		 (unsigned long long)kedr_trace_counter(fn, unrecorded));
	return kedr_read_text(buf, count, ppos, text);
}

static ssize_t kedr_counter_write(struct file *file, const char __user *buf, size_t count,
				  bool unrecorded)
{
	struct kedr_function *fn = file->private_data;
	long long value;
	int err = kstrtoll_from_user(buf, count, 0, &value);

	if (err)
		return err;
	if (value != 0)
		return -EINVAL;		/* a counter can only be reset */
	kedr_trace_counter_reset(fn, unrecorded);
	return count;
}

static ssize_t kedr_calls_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	return kedr_counter_read(file, buf, count, ppos, false);
}

static ssize_t kedr_calls_write(struct file *file, const char __user *buf, size_t count,
				loff_t *ppos)
{
	return kedr_counter_write(file, buf, count, false);
}

static ssize_t kedr_unrecorded_read(struct file *file, char __user *buf, size_t count,
				    loff_t *ppos)
{
	return kedr_counter_read(file, buf, count, ppos, true);
}

static ssize_t kedr_unrecorded_write(struct file *file, const char __user *buf, size_t count,
				     loff_t *ppos)
{
	return kedr_counter_write(file, buf, count, true);
}

static const struct file_operations kedr_calls_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kedr_calls_read,
	.write = kedr_calls_write,
	.llseek = default_llseek,
};

static const struct file_operations kedr_unrecorded_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kedr_unrecorded_read,
	.write = kedr_unrecorded_write,
	.llseek = default_llseek,
};

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
	size_t i;

	/* Started as a pass-through: what is allocated before tracking starts is unknown. */
	kedr_leak_gap = !kedr_enabled_at_load;
	mutex_lock(&kedr_control_lock);
	kedr_global_enabled = kedr_enabled_at_load;
	kedr_update_all();
	mutex_unlock(&kedr_control_lock);

	kedr_root_dir = kedr_get_root_dir();
	kedr_module_dir = debugfs_create_dir(KEDR_MODULE_NAME, kedr_root_dir);
	debugfs_create_file("enabled", 0600, kedr_module_dir, NULL, &kedr_enabled_fops);
	debugfs_create_file("status", 0400, kedr_module_dir, NULL, &kedr_status_fops);
	debugfs_create_file("leaks", 0400, kedr_module_dir, NULL, &kedr_leaks_fops);
	functions = debugfs_create_dir("functions", kedr_module_dir);
	for (i = 0; i < ARRAY_SIZE(kedr_functions); i++) {
		struct kedr_function *fn = kedr_functions[i];
		struct dentry *dir = debugfs_create_dir(fn->name, functions);

		debugfs_create_file("trace", 0600, dir, fn, &kedr_trace_switch_fops);
		debugfs_create_file("calls", 0600, dir, fn, &kedr_calls_fops);
		debugfs_create_file("unrecorded", 0600, dir, fn, &kedr_unrecorded_fops);
		if (fn->payloads & KEDR_PAYLOAD_LEAKS)
			debugfs_create_file("leaks", 0600, dir, fn, &kedr_leaks_switch_fops);
		if (fn->payloads & KEDR_PAYLOAD_RULES)
			debugfs_create_file("rules", 0600, dir, fn, &kedr_rules_switch_fops);
		if (fn->payloads & KEDR_PAYLOAD_FAULTS)
			debugfs_create_file("faults", 0600, dir, fn, &kedr_faults_switch_fops);
	}
	kedr_faults_init(kedr_module_dir);
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
