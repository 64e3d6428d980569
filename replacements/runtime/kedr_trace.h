/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kedr-build runtime, trace payload: bookkeeping around the per-function trace
 * events (the events themselves are generated into <module>_trace.h).
 *
 * Nothing is dropped silently by this code. A call that runs the trace payload
 * is counted in functions/<name>/calls; when its tracefs event is disabled
 * (events/<module>/call_<name>/enable is 0) the call is also counted in
 * functions/<name>/unrecorded. Events lost by the ring buffer itself (overrun,
 * full buffer in non-overwrite mode) are the kernel's to count:
 * /sys/kernel/tracing/per_cpu/cpuN/stats ("overrun", "dropped events").
 * Disabling an event between the check and the write can lose that one event
 * without counting it; toggling is rare and the window is a few instructions.
 *
 * The counters are per CPU (this_cpu_inc: one instruction on x86, IRQ- and
 * NMI-safe), summed when read: no cache line bounces between CPUs on the call
 * path. Resetting one (writing 0) while calls run may lose the increments of
 * that instant.
 *
 * Safe in any context (process, softirq, hard IRQ, NMI, spinlocks held):
 * per-CPU increments and a tracepoint call, nothing that sleeps or allocates.
 *
 * The generated module defines KEDR_NFUNCTIONS (its kedr_functions[] size)
 * before including this file.
 */
#ifndef KEDR_TRACE_H
#define KEDR_TRACE_H

#include <linux/percpu.h>

#include "kedr_runtime.h"

struct kedr_trace_counters {
	u64 calls;		/* calls that ran the trace payload */
	u64 unrecorded;		/* ... of which the trace event was disabled */
};

/* One more than needed: a module with no functions still has an array. */
static DEFINE_PER_CPU(struct kedr_trace_counters [KEDR_NFUNCTIONS + 1], kedr_trace_counters);

/* Count a traced call; true when its event is enabled and should be written. */
static __always_inline bool kedr_trace_counted(struct kedr_function *fn, bool event_enabled)
{
	this_cpu_inc(kedr_trace_counters[fn->index].calls);
	if (unlikely(!event_enabled))
		this_cpu_inc(kedr_trace_counters[fn->index].unrecorded);
	return event_enabled;
}

/* A counter summed over the CPUs; @unrecorded picks which. */
static u64 kedr_trace_counter(const struct kedr_function *fn, bool unrecorded)
{
	unsigned int cpu;
	u64 sum = 0;

	for_each_possible_cpu(cpu) {
		const struct kedr_trace_counters *c = &per_cpu(kedr_trace_counters, cpu)[fn->index];

		sum += unrecorded ? READ_ONCE(c->unrecorded) : READ_ONCE(c->calls);
	}
	return sum;
}

static void kedr_trace_counter_reset(const struct kedr_function *fn, bool unrecorded)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu) {
		struct kedr_trace_counters *c = &per_cpu(kedr_trace_counters, cpu)[fn->index];

		if (unrecorded)
			WRITE_ONCE(c->unrecorded, 0);
		else
			WRITE_ONCE(c->calls, 0);
	}
}

#endif /* KEDR_TRACE_H */
