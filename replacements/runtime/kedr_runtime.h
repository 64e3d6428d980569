/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kedr-build replacement module runtime: what every replacement function and
 * every runtime part share.
 *
 * A replacement reads one word, kedr_active(fn), and when it is 0 (everything
 * switched off) it only calls the original function: no lock, no allocation,
 * no atomic. The word is a set of payload bits; the control part
 * (kedr_control.c) recomputes it whenever a switch changes.
 */
#ifndef KEDR_RUNTIME_H
#define KEDR_RUNTIME_H

#include <linux/atomic.h>
#include <linux/compiler.h>
#include <linux/types.h>

/* One bit per payload a replacement can run around the original call. */
#define KEDR_PAYLOAD_TRACE	(1U << 0)	/* kedr_trace.h: one trace event per call */
#define KEDR_PAYLOAD_LEAKS	(1U << 1)	/* kedr_leak.c: track allocations and frees */
#define KEDR_PAYLOAD_RULES	(1U << 3)	/* kedr_rules.c: API rules (sleeping in atomic context) */
#define KEDR_PAYLOAD_FAULTS	(1U << 2)	/* kedr_faults.c: fail the call as the scenario says */
#define KEDR_PAYLOADS_DEFAULT	(KEDR_PAYLOAD_TRACE | KEDR_PAYLOAD_LEAKS | KEDR_PAYLOAD_RULES | \
				 KEDR_PAYLOAD_FAULTS)

struct kedr_function {
	const char *name;		/* the kernel function replaced: "kfree" */
	const char *replacement;	/* the exported replacement: "Kfree" */
	unsigned int index;		/* in kedr_functions[] */
	unsigned int payloads;		/* payloads this function can run */
	unsigned int wanted;		/* payloads switched on for this function */
	unsigned int active;		/* wanted, or 0 while globally disabled */
	/* Its trace counters: kedr_trace_counters[index], per CPU (kedr_trace.h). */
};

#define KEDR_FUNCTION(fn_name, repl_name, idx, can) {			\
	.name = fn_name,						\
	.replacement = repl_name,					\
	.index = idx,							\
	.payloads = can,						\
	.wanted = (can) & KEDR_PAYLOADS_DEFAULT,			\
	.active = 0,							\
}

/* API rules (kedr_rules.c); kedr_leak.c reports unlocks of locks not held. */
enum kedr_rule { KEDR_RULE_SLEEP_IN_ATOMIC, KEDR_RULE_UNLOCK_NOT_HELD,
		KEDR_RULE_LOCK_HELD_AT_RETURN };

/* The only thing a replacement reads before deciding to be a pass-through. */
static __always_inline unsigned int kedr_active(const struct kedr_function *fn)
{
	return READ_ONCE(fn->active);
}

#endif /* KEDR_RUNTIME_H */
