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
 * Safe in any context (process, softirq, hard IRQ, NMI, spinlocks held):
 * atomic64 increments and a tracepoint call, nothing that sleeps or allocates.
 */
#ifndef KEDR_TRACE_H
#define KEDR_TRACE_H

#include "kedr_runtime.h"

/* Count a traced call; true when its event is enabled and should be written. */
static __always_inline bool kedr_trace_counted(struct kedr_function *fn, bool event_enabled)
{
	atomic64_inc(&fn->calls);
	if (unlikely(!event_enabled))
		atomic64_inc(&fn->unrecorded);
	return event_enabled;
}

#endif /* KEDR_TRACE_H */
