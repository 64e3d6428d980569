// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_bench: N kmalloc/kfree pairs on demand, timed in the kernel.
 *
 *   echo 100000 > /sys/module/kedr_bench/parameters/run    # runs the loop
 *   cat /sys/module/kedr_bench/parameters/last_ns           # how long it took
 *
 * The loop runs on a write, not in init, so a kprobe filter can be set up on
 * the module's text range after it is loaded and before it is measured.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>

static unsigned long last_ns;
module_param(last_ns, ulong, 0444);

static noinline void bench_pairs(unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		void *p = kmalloc(64, GFP_KERNEL);

		kfree(p);
	}
}

static int run_set(const char *val, const struct kernel_param *kp)
{
	unsigned long n;
	u64 start;
	int ret = kstrtoul(val, 0, &n);

	if (ret)
		return ret;
	start = ktime_get_ns();
	bench_pairs(n);
	last_ns = ktime_get_ns() - start;
	return 0;
}

static const struct kernel_param_ops run_ops = {
	.set = run_set,
	.get = param_get_ulong,
};
static unsigned long run;
module_param_cb(run, &run_ops, &run, 0200);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build benchmark: timed kmalloc/kfree pairs");
