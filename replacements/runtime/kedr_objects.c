// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, leak payload (KEDR_PAYLOAD_LEAKS), the object table: track what the target
 * allocates and frees, report what is still allocated and every bad free.
 *
 * Included by the generated module after kedr_runtime.h; the generated
 * replacements call kedr_leak_alloc() after an allocating call returned and
 * kedr_leak_free() before a freeing call (false = do not call the real free).
 *
 * Why this shape:
 *  - Called from any context the target calls an allocator from (process,
 *    softirq, hard IRQ, spinlocks held, IRQs off), so nothing here sleeps or
 *    allocates: every record and every stack comes from pools vmalloc'ed at
 *    load. A full pool is a counted drop, never a failure of the target's call.
 *  - No lock is shared by all CPUs. Objects are sharded by the hash of their
 *    address: KEDR_OBJ_SHARDS shards, each with its own spinlock, hash heads,
 *    record pool and quarantine, so two CPUs contend only when their objects
 *    hash to the same shard. Stacks are deduplicated in a second, equally
 *    sharded table (by the hash of the frames). Hot counters are per-CPU
 *    (this_cpu_inc, one instruction on x86, IRQ-safe), summed on read.
 *  - A freed object's record stays in its shard's quarantine (a FIFO of the
 *    last KEDR_QUARANTINE frees per shard, evicted first when the pool runs
 *    out), with the stack of the free. A kmalloc'ed object's memory is held
 *    there (the real free runs at eviction): a second free of it is then
 *    certainly a double free, reported with both stacks and not passed on.
 *  - NMI context takes no lock: allocations there are forbidden anyway; a call
 *    seen in NMI is only counted (nmi_skipped).
 *  - Stacks: the kernel's unwinder (ORC on x86_64) started at the target's
 *    frame (kedr_save_stack_at(): our frames are found through this module's
 *    frame pointers; __unwind_start(), unwind_next_frame(), EXPORT_SYMBOL_GPL),
 *    else stack_trace_save() (kernel/stacktrace.c) trimmed so that frame 0 is
 *    the call site in the target.
 *  - Sections of the target: a module notifier (register_module_notifier)
 *    records, at MODULE_STATE_COMING, the run-time address of each section
 *    symbol (STT_SECTION) in the target's kallsyms symbol table (struct
 *    module.kallsyms, include/linux/module.h, the full ELF symtab until init
 *    ends). The host maps any address in them back to the module's own ELF
 *    symbols, so calls from __init code, whose .init.text is freed after init,
 *    are still named right.
 *
 * Report: /sys/kernel/debug/kedr_build/<module>/leaks, format "kedr-leaks 1"
 * (one record per line, key=value; see replacements/runtime/README.md).
 */
#include <linux/jhash.h>
#include <linux/hash.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/stacktrace.h>
#include <linux/sched/task_stack.h>
#include <asm/unwind.h>
#include <linux/string.h>
#include <linux/timer.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <linux/device.h>
#include <linux/netdevice.h>
#include <linux/rcupdate.h>
#include <net/net_namespace.h>

#include "kedr_runtime.h"

#define KEDR_LEAK_FORMAT	1

/* kedr_rules.c, included after this file. */
static void kedr_rule_violation(const struct kedr_function *fn, unsigned int rule,
				unsigned long ip);

/* What an allocating function returns (catalog key "track"). */
enum kedr_kind {
	KEDR_KIND_NONE,
	KEDR_KIND_KMALLOC,	/* kmalloc & co: kfree, kvfree */
	KEDR_KIND_CACHE,	/* kmem_cache_alloc: kmem_cache_free (same cache), kfree, kvfree */
	KEDR_KIND_VMALLOC,	/* vmalloc & co: vfree, kvfree */
	KEDR_KIND_KVMALLOC,	/* kvmalloc: kvfree; kfree or vfree as the address says */
	KEDR_KIND_PAGES,	/* __get_free_pages: free_pages, same order */
	KEDR_KIND_PAGE,		/* alloc_pages (struct page *): __free_pages, same order */
	KEDR_KIND_PAGES_EXACT,	/* alloc_pages_exact: free_pages_exact, same size */
	KEDR_KIND_KMEM_CACHE,	/* kmem_cache_create: kmem_cache_destroy */
	KEDR_KIND_MUTEX,	/* a mutex the target holds: mutex_unlock */
	KEDR_KIND_TIMER,	/* a timer the target armed: timer_delete*, or it fires */
	KEDR_KIND_SPINLOCK,	/* a spinlock the target holds: _raw_spin_unlock* */
	KEDR_KIND_WORK,		/* a work item the target queued: cancel_work*, flush_work, or it ran */
	KEDR_KIND_DWORK,	/* a delayed work item: cancel_delayed_work*, flush_delayed_work */
	/*
	 * Resources (catalog track = <kind>, released by track = "release" with
	 * resource = <kind>), identified by a key of one or two values: a pointer,
	 * an irq and its dev_id, a region's start and length, a dev_t ...
	 */
	KEDR_KIND_NETDEV,	/* alloc_netdev_mqs: free_netdev */
	KEDR_KIND_NETDEV_REGISTERED,	/* register_netdev: unregister_netdev */
	KEDR_KIND_SKB,		/* __alloc_skb & co: kfree_skb_reason, consume_skb, netif_rx ... */
	KEDR_KIND_DMA_COHERENT,	/* dma_alloc_attrs: dma_free_attrs */
	KEDR_KIND_DMA_MAPPING,	/* dma_map_page_attrs: dma_unmap_page_attrs (address + device) */
	KEDR_KIND_IRQ,		/* request_threaded_irq: free_irq (irq + dev_id) */
	KEDR_KIND_IOMAP,	/* ioremap*, pci_iomap: iounmap, pci_iounmap */
	KEDR_KIND_REGION,	/* __request_region: __release_region (start + length) */
	KEDR_KIND_PCI_REGIONS,	/* pci_request_regions: pci_release_regions */
	KEDR_KIND_PCI_ENABLED,	/* pci_enable_device: pci_disable_device */
	KEDR_KIND_WORKQUEUE,	/* alloc_workqueue: destroy_workqueue */
	KEDR_KIND_FIRMWARE,	/* request_firmware: release_firmware */
	KEDR_KIND_URB,		/* usb_alloc_urb: usb_free_urb */
	KEDR_KIND_CHRDEV_REGION,	/* alloc_chrdev_region, register_chrdev_region (dev_t) */
	KEDR_KIND_CHRDEV,	/* __register_chrdev: __unregister_chrdev (dev_t of major, baseminor) */
	KEDR_KIND_CDEV,		/* cdev_add: cdev_del */
	KEDR_KIND_MISC,		/* misc_register: misc_deregister */
	KEDR_KIND_CLASS,	/* class_create: class_destroy */
	KEDR_KIND_DEVICE,	/* device_create: device_destroy (dev_t + class) */
	KEDR_KIND_DEBUGFS,	/* debugfs_create_dir/file at the top level: debugfs_remove */
	KEDR_KIND_DRIVER,	/* __pci_register_driver & co: pci_unregister_driver & co */
	KEDR_KIND_DEVICE_REF,	/* get_device: put_device */
	KEDR_KIND_NOTIFIER,	/* register_netdevice_notifier: unregister_netdevice_notifier */
	KEDR_KIND_PERNET,	/* register_pernet_subsys/device: unregister_pernet_subsys/device */
	KEDR_KIND_COUNT
};

static const char *const kedr_kind_names[KEDR_KIND_COUNT] = {
	"none", "kmalloc", "cache", "vmalloc", "kvmalloc", "pages", "page", "pages_exact",
	"kmem_cache", "mutex", "timer", "spinlock", "work", "dwork",
	"netdev", "netdev_registered", "skb", "dma_coherent", "dma_mapping", "irq", "iomap", "region",
	"pci_regions", "pci_enabled", "workqueue", "firmware", "urb", "chrdev_region", "chrdev",
	"cdev", "misc", "class", "device", "debugfs", "driver", "device_ref", "notifier", "pernet",
};
#define KEDR_KIND_FIRST_RESOURCE	KEDR_KIND_NETDEV
#define kedr_kind_resource(kind)	((kind) >= KEDR_KIND_FIRST_RESOURCE)

/* How a freeing function releases (catalog key "track" of a "frees" entry). */
enum kedr_free_op {
	KEDR_FREE_KFREE,
	KEDR_FREE_KFREE_CONST,
	KEDR_FREE_KVFREE,
	KEDR_FREE_KVFREE_RCU,	/* kvfree after a grace period (kfree_rcu): never held */
	KEDR_FREE_VFREE,
	KEDR_FREE_CACHE,
	KEDR_FREE_PAGES,
	KEDR_FREE_PAGE,
	KEDR_FREE_PAGES_EXACT,
	KEDR_FREE_KMEM_CACHE,
	KEDR_FREE_MUTEX_UNLOCK,
	KEDR_FREE_TIMER,
	KEDR_FREE_SPIN_UNLOCK,
	KEDR_FREE_WORK,		/* cancel or flush: a work item (or a delayed one) no longer pending */
	KEDR_FREE_RELEASE,	/* a resource; aux = its kind */
};

/*
 * A mutex or a timer is often the first member of a kmalloc'ed structure:
 * same address. Its key has bit 0 set, which no object address has (the slab,
 * vmalloc and page allocators align to at least 8), so they never meet.
 */
#define KEDR_LOCK_TAG		1UL
#define kedr_key(tagged, ptr)	((ptr) | ((tagged) ? KEDR_LOCK_TAG : 0))
#define kedr_addr(key)		((key) & ~KEDR_LOCK_TAG)
#define kedr_kind_tagged(kind)	((kind) == KEDR_KIND_MUTEX || (kind) == KEDR_KIND_TIMER || \
				 (kind) == KEDR_KIND_SPINLOCK || (kind) == KEDR_KIND_WORK || \
				 (kind) == KEDR_KIND_DWORK)
#define kedr_op_tagged(op)	((op) == KEDR_FREE_MUTEX_UNLOCK || (op) == KEDR_FREE_TIMER || \
				 (op) == KEDR_FREE_SPIN_UNLOCK || (op) == KEDR_FREE_WORK)
/* Memory the target owns (a timer or a work item inside it can be read). */
#define kedr_kind_memory(kind)	((kind) == KEDR_KIND_KMALLOC || (kind) == KEDR_KIND_CACHE || \
				 (kind) == KEDR_KIND_VMALLOC || (kind) == KEDR_KIND_KVMALLOC || \
				 (kind) == KEDR_KIND_PAGES || (kind) == KEDR_KIND_PAGES_EXACT)

/*
 * A resource's key: a hash of its kind and identifying values, with bits
 * 1-0 = 10, which neither an object (8-aligned) nor a tagged lock (bit 0)
 * has. The record keeps the first value in aux, for the report. Two kinds
 * never share a key, so a netdev allocated and the same netdev registered
 * are two resources.
 */
static inline unsigned long kedr_res_key(unsigned int kind, unsigned long v, unsigned long v2)
{
	u64 h = hash_64(v ^ hash_64(v2 + kind, 64), 61);

	return (unsigned long)(h << 2) | 2UL;
}

/* A value an allocator returns that is an object: not NULL, ZERO_SIZE_PTR or ERR_PTR. */
#define kedr_leak_valid(v) \
	((unsigned long)(v) > (unsigned long)ZERO_SIZE_PTR && !IS_ERR_VALUE((unsigned long)(v)))

/* --- settings (module parameters, checked at load) ----------------------------- */

#define KEDR_MAX_DEPTH		32
#define KEDR_OBJ_SHARDS		64
#define KEDR_OBJ_BUCKETS	256	/* per shard */
#define KEDR_STACK_SHARDS	16
#define KEDR_STACK_BUCKETS	256	/* per shard */
#define KEDR_QUARANTINE		16	/* freed records kept per shard */
#define KEDR_BAD_FREES		64	/* bad frees kept with details */

static unsigned int kedr_stack_depth = 16;
module_param_named(stack_depth, kedr_stack_depth, uint, 0444);
MODULE_PARM_DESC(stack_depth, "Frames saved per allocation and free (1-32, default 16; 1: the call site only, no unwinding)");

/*
 * Unwinding is most of the payload's cost (ORC, kernel/stacktrace.c): a free's
 * stack is only needed to show the first free of a double free.
 */
static bool kedr_free_stacks = true;
module_param_named(free_stacks, kedr_free_stacks, bool, 0444);
MODULE_PARM_DESC(free_stacks, "Save the stack of every free, for double-free reports (default 1)");

static unsigned int kedr_max_objects = 65536;
module_param_named(max_objects, kedr_max_objects, uint, 0444);
MODULE_PARM_DESC(max_objects, "Tracked objects, live and recently freed (1024-4194304)");

static unsigned int kedr_max_stacks = 16384;
module_param_named(max_stacks, kedr_max_stacks, uint, 0444);
MODULE_PARM_DESC(max_stacks, "Distinct stacks kept (256-1048576)");

/* --- records ------------------------------------------------------------------ */

/*
 * FREED: in the quarantine, the real free was called (the address may have
 * been handed out again by an allocation we did not see). HELD: in the
 * quarantine, the real free not called yet (kedr_quarantine_hold()): the
 * address cannot have been reused, so a second free of it is certainly a
 * double free. LENT: a mutex the task that called the target holds, which
 * the target unlocked without having locked it (kedr_leak_lend()): its
 * relock by the target gives it back to that holder, and is no lock of the
 * target's.
 */
enum kedr_obj_state { KEDR_OBJ_UNUSED, KEDR_OBJ_LIVE, KEDR_OBJ_FREED, KEDR_OBJ_BLOCKED,
		      KEDR_OBJ_HELD, KEDR_OBJ_LENT };
#define kedr_obj_freed(o)	((o)->state == KEDR_OBJ_FREED || (o)->state == KEDR_OBJ_HELD)

/*
 * 64 bytes. Record indices are 1-based (0 = none) and global, so a record
 * names its stacks and links with u32s instead of pointers.
 */
struct kedr_obj {
	unsigned long ptr;
	unsigned long size;
	unsigned long caller;		/* return address into the target (alloc, or free once freed) */
	unsigned long aux;		/* the kmem_cache, or the page order */
	u32 next;			/* hash chain */
	u32 stack;			/* allocation stack id */
	u32 free_stack;			/* FREED: stack of the free; also quarantine link below */
	u32 qnext;			/* FREED: next (younger) record in the quarantine */
	pid_t pid;
	u16 fn;				/* index in kedr_functions[] of the allocator */
	u8 kind;
	u8 state;
	char comm[8];			/* first 7 characters of the allocating task */
};
/* Memory per tracked object (issue 10: <= 64 bytes plus the deduplicated stack). */
static_assert(sizeof(struct kedr_obj) == 64);

struct kedr_obj_shard {
	spinlock_t lock;
	u32 free_list;			/* unused records, linked by next */
	u32 q_head, q_tail;		/* quarantine, oldest first */
	unsigned int q_len;
	u32 heads[KEDR_OBJ_BUCKETS];
};

struct kedr_stack {
	u32 hash;
	u32 next;
	u32 nr;
	unsigned long frames[];		/* kedr_stack_depth of them */
};

struct kedr_stack_shard {
	spinlock_t lock;
	u32 used, first, count;		/* this shard owns ids first + 1 ... first + count */
	u32 heads[KEDR_STACK_BUCKETS];
};

/* Hot counters: per CPU, summed when the report is read. */
struct kedr_leak_counters {
	u64 allocs;		/* allocations tracked (including dropped ones) */
	u64 frees;		/* frees of tracked live objects */
	u64 bad_frees;		/* double, foreign and mismatched frees */
	u64 dropped_objects;	/* allocations not tracked: the shard's pool was full */
	u64 dropped_stacks;	/* stacks not kept: the stack pool was full */
	u64 untracked_frees;	/* frees not judged: heap objects we never saw allocated (tracking
				 * gap), and second frees of an address whose memory the quarantine
				 * no longer held (maybe reused by an allocation we did not see) */
	u64 nmi_skipped;	/* calls in NMI context, not tracked */
	u64 unwinds;		/* stacks unwound: most of the payload's cost */
	u64 full_unwinds;	/* ... of which from this module's own frames up (stack_trace_save()) */
};
static DEFINE_PER_CPU(struct kedr_leak_counters, kedr_leak_counters);

/*
 * invalid: an error pointer or an address in the first page, which the real
 * free would dereference (kfree(ERR_PTR(-ENOMEM))); interior: an address
 * inside a live object of the target, not its start.
 */
enum kedr_bad_what { KEDR_BAD_DOUBLE, KEDR_BAD_FOREIGN, KEDR_BAD_MISMATCH, KEDR_BAD_INVALID,
		     KEDR_BAD_INTERIOR };
static const char *const kedr_bad_names[] = { "double", "foreign", "mismatch", "invalid",
					      "interior" };

struct kedr_bad_free {
	unsigned int what;
	u16 fn;				/* the freeing function */
	bool passed;			/* handed to the real free anyway (someone else's heap object) */
	unsigned long ptr, caller, aux;
	u32 stack;
	pid_t pid;
	char comm[TASK_COMM_LEN];
	bool known;			/* the object's record below is valid */
	struct kedr_obj obj;		/* the object as we knew it (alloc; first free if FREED) */
};

struct kedr_section {
	unsigned int shndx;
	unsigned long addr;
};

/*
 * A module the replacement module was made for (one that links to it), from
 * MODULE_STATE_COMING on; one entry per name (a reload replaces it), as many
 * as there are. @mod is only compared, and only while !gone.
 */
struct kedr_target {
	struct list_head list;
	struct module *mod;
	char name[MODULE_NAME_LEN];
	bool gone;
	unsigned int nsections;
	struct kedr_section sections[];
};

static struct kedr_obj *kedr_objs;		/* kedr_max_objects records; [0] unused */
static struct kedr_obj_shard *kedr_obj_shards;
static void *kedr_stacks;			/* kedr_max_stacks stacks; id 0 unused */
static size_t kedr_stack_size;
static struct kedr_stack_shard *kedr_stack_shards;
static bool kedr_leak_ready;

/*
 * Set when tracking was off for a while or an object was dropped (table
 * full): unknown frees of heap objects are then not reported as foreign.
 */
static bool kedr_leak_gap;

static DEFINE_SPINLOCK(kedr_bad_lock);
static struct kedr_bad_free kedr_bad[KEDR_BAD_FREES];
static unsigned int kedr_nbad;
static bool kedr_bad_unkept;		/* a bad free was not kept: said once */

static DEFINE_MUTEX(kedr_targets_lock);
static LIST_HEAD(kedr_targets);
static unsigned int kedr_dropped_targets;	/* targets not recorded: no memory for the entry */

#define kedr_count(field) this_cpu_inc(kedr_leak_counters.field)

static inline struct kedr_obj *kedr_obj_at(u32 id)
{
	return &kedr_objs[id];
}

static inline struct kedr_stack *kedr_stack_at(u32 id)
{
	return kedr_stacks + (size_t)id * kedr_stack_size;
}

static inline unsigned int kedr_obj_shard_of(unsigned long ptr, unsigned int *bucket)
{
	/* Slab objects are at least 8-byte aligned: drop the bits that never vary. */
	u32 h = hash_long(ptr >> 3, 32);

	*bucket = (h >> 6) % KEDR_OBJ_BUCKETS;
	return h % KEDR_OBJ_SHARDS;
}

/* --- stacks ----------------------------------------------------------------------- */

/*
 * Save the current stack with frame 0 = @ip, the call site in the target.
 * stack_trace_save() starts in this module (this function, the hook, the
 * replacement: how many depends on inlining), so frames up to @ip are
 * skipped when @ip is among the first KEDR_SKIP_MAX.
 */
#define KEDR_SKIP_MAX	8

#ifndef KEDR_HOT
/*
 * The stack from the target's frame up, unwinding none of ours: the
 * replacement module is built with frame pointers (Kbuild.j2), so the frames
 * from here to the replacement the target called are an rbp chain; the frame
 * whose return address is @ip (the replacement's) gives the target's stack
 * pointer and rbp at the call, from which the kernel's unwinder (ORC, the same
 * one stack_trace_save() uses; __unwind_start() with registers, as for an
 * interrupted context) goes on. Without this every stack walked 4-5 frames of
 * ours first, each an ORC lookup in a module. 0 when @ip is not found in the
 * chain within KEDR_SKIP_MAX frames on the task's stack (a tail call whose site
 * kedr_tail_caller() moved, an interrupt stack): the caller then unwinds it all.
 */
static unsigned int kedr_save_stack_at(unsigned long *frames, unsigned long ip)
{
	unsigned long *fp = __builtin_frame_address(0), *next;
	struct unwind_state state;
	struct pt_regs regs = {};
	unsigned int n, i;

	for (i = 0; i < KEDR_SKIP_MAX; i++, fp = next) {
		if (!object_is_on_stack(fp) || !object_is_on_stack(fp + 1))
			return 0;
		if (fp[1] == ip)
			break;
		next = (unsigned long *)fp[0];
		if (next <= fp)
			return 0;
	}
	if (i == KEDR_SKIP_MAX || !object_is_on_stack(fp + 2))
		return 0;
	/*
	 * The call site's state: sp past the return address, rbp as the target
	 * left it (saved by our prologue). ip - 1, inside the call, finds the
	 * call's ORC entry even when the call ends its function (what the
	 * unwinder does for a return address; a register state is taken as is).
	 */
	regs.ip = ip - 1;
	regs.sp = (unsigned long)(fp + 2);
	regs.bp = fp[0];
	regs.cs = __KERNEL_CS;
	frames[0] = ip;
	n = 1;
	/* As arch_stack_walk(): __unwind_start() with registers is at their caller already. */
	for (unwind_start(&state, current, &regs, NULL);
	     n < kedr_stack_depth && !unwind_done(&state); unwind_next_frame(&state)) {
		unsigned long addr = unwind_get_return_address(&state);

		if (!addr)
			break;
		frames[n++] = addr;
	}
	return n;
}
#else
/* Attached (kedr_attach.c): the replacement is reached through ftrace, not a call. */
static unsigned int kedr_save_stack_at(unsigned long *frames, unsigned long ip)
{
	return 0;
}
#endif

static unsigned int kedr_save_stack(unsigned long *frames, unsigned long ip)
{
	unsigned long raw[KEDR_MAX_DEPTH + KEDR_SKIP_MAX];
	unsigned int n, i;

	if (kedr_stack_depth == 1) {
		frames[0] = ip;
		return 1;
	}
	kedr_count(unwinds);
	n = kedr_save_stack_at(frames, ip);
	if (n)
		return n;
	kedr_count(full_unwinds);
	n = stack_trace_save(raw, kedr_stack_depth + KEDR_SKIP_MAX, 0);
	for (i = 0; i < n && i < KEDR_SKIP_MAX; i++) {
		if (raw[i] == ip) {
			n = min(n - i, kedr_stack_depth);
			memcpy(frames, raw + i, n * sizeof(*frames));
			return n;
		}
	}
	/* ip not among them (a tail call into the replacement?): the caller, then the rest. */
	frames[0] = ip;
	n = min(n, kedr_stack_depth - 1);
	memcpy(frames + 1, raw, n * sizeof(*frames));
	return n + 1;
}

static u32 kedr_stack_find(struct kedr_stack_shard *sh, unsigned int bucket, u32 hash,
			   const unsigned long *frames, unsigned int nr)
{
	const struct kedr_stack *st;
	u32 id;

	for (id = smp_load_acquire(&sh->heads[bucket]); id; id = READ_ONCE(st->next)) {
		st = kedr_stack_at(id);
		if (st->hash == hash && st->nr == nr &&
		    !memcmp(st->frames, frames, nr * sizeof(*frames)))
			return id;
	}
	return 0;
}

/*
 * The id of this stack in the table, adding it if new; 0 when the table is
 * full. Most calls find their stack: that lookup takes no lock (every CPU
 * running the same code path would otherwise meet on one shard's lock).
 * Stacks are never removed, and a new one is written completely before
 * smp_store_release() publishes it at the head of its chain.
 */
static u32 kedr_stack_intern(const unsigned long *frames, unsigned int nr)
{
	u32 hash = jhash2((const u32 *)frames, nr * (sizeof(*frames) / sizeof(u32)), nr);
	struct kedr_stack_shard *sh = &kedr_stack_shards[hash % KEDR_STACK_SHARDS];
	unsigned int bucket = (hash / KEDR_STACK_SHARDS) % KEDR_STACK_BUCKETS;
	struct kedr_stack *st;
	unsigned long flags;
	u32 id;

	id = kedr_stack_find(sh, bucket, hash, frames, nr);
	if (id)
		return id;
	spin_lock_irqsave(&sh->lock, flags);
	id = kedr_stack_find(sh, bucket, hash, frames, nr);	/* added meanwhile? */
	if (id)
		goto out;
	if (sh->used == sh->count) {
		kedr_count(dropped_stacks);
		goto out;
	}
	id = sh->first + 1 + sh->used;
	st = kedr_stack_at(id);
	st->hash = hash;
	st->nr = nr;
	memcpy(st->frames, frames, nr * sizeof(*frames));
	st->next = sh->heads[bucket];
	smp_store_release(&sh->heads[bucket], id);
	/* The report reads used, then the stacks below it. */
	smp_store_release(&sh->used, sh->used + 1);
out:
	spin_unlock_irqrestore(&sh->lock, flags);
	return id;
}

static u32 kedr_current_stack(unsigned long ip)
{
	unsigned long frames[KEDR_MAX_DEPTH];

	return kedr_stack_intern(frames, kedr_save_stack(frames, ip));
}

/* --- object table (called with the shard's lock held) ------------------------------- */

static struct kedr_obj *kedr_obj_find(struct kedr_obj_shard *sh, unsigned int bucket,
				      unsigned long ptr, u32 **link)
{
	u32 *l = &sh->heads[bucket];
	struct kedr_obj *o;

	for (; *l; l = &o->next) {
		o = kedr_obj_at(*l);
		if (o->ptr == ptr) {
			if (link)
				*link = l;
			return o;
		}
	}
	return NULL;
}

/*
 * The real free of a held object (kedr_quarantine_hold()), now that it
 * leaves the quarantine: kfree() runs in any context, with our shard lock
 * held too (it never calls back into this module: the replacement module is
 * not patched). kfree_sensitive(), because the free the target asked for may
 * have been kfree_sensitive() (both are KEDR_FREE_KFREE).
 */
static void kedr_held_release(struct kedr_obj *o)
{
	kfree_sensitive((void *)o->ptr);
}

/* Take the oldest record out of the quarantine (and out of its hash chain). */
static u32 kedr_quarantine_evict(struct kedr_obj_shard *sh)
{
	u32 id = sh->q_head;
	struct kedr_obj *o;
	unsigned int bucket;
	u32 *link;

	if (!id)
		return 0;
	o = kedr_obj_at(id);
	sh->q_head = o->qnext;
	if (!sh->q_head)
		sh->q_tail = 0;
	sh->q_len--;
	kedr_obj_shard_of(o->ptr, &bucket);
	if (kedr_obj_find(sh, bucket, o->ptr, &link))
		*link = o->next;
	if (o->state == KEDR_OBJ_HELD)
		kedr_held_release(o);
	o->state = KEDR_OBJ_UNUSED;
	return id;
}

/* Remove a FREED record from the quarantine list (it is being reused). */
static void kedr_quarantine_unlink(struct kedr_obj_shard *sh, u32 id)
{
	u32 *l = &sh->q_head, prev = 0;

	while (*l && *l != id) {
		prev = *l;
		l = &kedr_obj_at(*l)->qnext;
	}
	if (!*l)
		return;
	*l = kedr_obj_at(id)->qnext;
	if (sh->q_tail == id)
		sh->q_tail = prev;
	sh->q_len--;
}

/* A live record becomes a freed one, at the young end of the quarantine. */
static void kedr_quarantine_put(struct kedr_obj_shard *sh, struct kedr_obj *o,
				unsigned long ip, u32 free_stack, enum kedr_obj_state state)
{
	u32 id = o - kedr_objs;

	o->state = state;
	o->caller = ip;
	o->free_stack = free_stack;
	o->qnext = 0;
	if (sh->q_tail)
		kedr_obj_at(sh->q_tail)->qnext = id;
	else
		sh->q_head = id;
	sh->q_tail = id;
	if (++sh->q_len > KEDR_QUARANTINE) {
		u32 old = kedr_quarantine_evict(sh);

		kedr_obj_at(old)->next = sh->free_list;
		sh->free_list = old;
	}
}

/* The real free was called: the address may be reused by anyone. */
static void kedr_quarantine_add(struct kedr_obj_shard *sh, struct kedr_obj *o,
				unsigned long ip, u32 free_stack)
{
	kedr_quarantine_put(sh, o, ip, free_stack, KEDR_OBJ_FREED);
}

/*
 * The real free is not called: the memory stays allocated while the record
 * is in the quarantine (KASAN's quarantine does the same), so the address
 * is never handed out again meanwhile and a second free of it is certainly
 * a double free. kedr_quarantine_evict() calls the real free.
 */
static void kedr_quarantine_hold(struct kedr_obj_shard *sh, struct kedr_obj *o,
				 unsigned long ip, u32 free_stack)
{
	kedr_quarantine_put(sh, o, ip, free_stack, KEDR_OBJ_HELD);
}

/* At unload of the replacement module: the real free of everything still held. */
static void kedr_quarantine_release_all(void)
{
	unsigned long flags;
	unsigned int s;
	u32 id;

	for (s = 0; kedr_leak_ready && s < KEDR_OBJ_SHARDS; s++) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[s];

		spin_lock_irqsave(&sh->lock, flags);
		for (id = sh->q_head; id; id = kedr_obj_at(id)->qnext) {
			struct kedr_obj *o = kedr_obj_at(id);

			if (o->state == KEDR_OBJ_HELD) {
				kedr_held_release(o);
				o->state = KEDR_OBJ_FREED;
			}
		}
		spin_unlock_irqrestore(&sh->lock, flags);
	}
}

/* --- one walk over the table --------------------------------------------------------- */

/*
 * Every pass over the object table is this walk (mm/kmemleak.c's shape: one
 * table, one scan). kedr_walk() calls @visit for each record in use, with the
 * record's shard lock held and interrupts off (taken per bucket): @visit only looks and copies
 * (no sleeping, no printk, no other shard's lock). It returns KEDR_WALK_STOP
 * when the caller must act before going on (its batch is full, or it found
 * what it looked for): kedr_walk() then returns true, the locks dropped, and
 * the caller acts and calls it again with the same @w to resume after that
 * record. false: the whole table was walked.
 *
 * Resuming: @w names the record visited last. If it left its chain meanwhile
 * (a freed record evicted from the quarantine), its bucket is walked again
 * from the head: a record may then be visited twice, never skipped. Records
 * added meanwhile may be seen or not.
 */
enum { KEDR_WALK_GO, KEDR_WALK_STOP };

struct kedr_walk {
	unsigned int shard, bucket;	/* where to go on */
	u32 last;			/* the record visited last in that bucket; 0: none */
};

static bool kedr_walk(struct kedr_walk *w, int (*visit)(struct kedr_obj *o, void *arg),
		      void *arg)
{
	unsigned long flags;

	for (; w->shard < KEDR_OBJ_SHARDS; w->shard++, w->bucket = 0) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[w->shard];

		/*
		 * The lock is taken per bucket, not per shard: interrupts are off
		 * for one chain at a time (a shard holds max_objects / 64 records,
		 * 65536 at max_objects=4M).
		 */
		for (; w->bucket < KEDR_OBJ_BUCKETS; w->bucket++, w->last = 0) {
			u32 id, r;

			spin_lock_irqsave(&sh->lock, flags);
			id = sh->heads[w->bucket];
			if (w->last) {
				for (r = id; r && r != w->last; r = kedr_obj_at(r)->next)
					;
				if (r)
					id = kedr_obj_at(r)->next;
			}
			for (; id; id = kedr_obj_at(id)->next) {
				struct kedr_obj *o = kedr_obj_at(id);

				if (o->state == KEDR_OBJ_UNUSED)
					continue;
				if (visit(o, arg) == KEDR_WALK_STOP) {
					w->last = id;
					spin_unlock_irqrestore(&sh->lock, flags);
					return true;
				}
			}
			spin_unlock_irqrestore(&sh->lock, flags);
		}
	}
	return false;
}

/* Is the record of @key live? */
static bool kedr_obj_live(unsigned long key)
{
	unsigned int bucket;
	struct kedr_obj_shard *sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];
	const struct kedr_obj *o;
	unsigned long flags;
	bool live;

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	live = o && o->state == KEDR_OBJ_LIVE;
	spin_unlock_irqrestore(&sh->lock, flags);
	return live;
}

/*
 * The judgment on a live record of one of @kinds (a mask of BIT_ULL(kind)):
 * @held: still held, reported (aux = 1 for a timer or a work item, which are
 * reported only then); else released, by the kernel or by kedr.
 */
static_assert(KEDR_KIND_COUNT <= 64);

static bool kedr_obj_judge(unsigned long key, u64 kinds, bool held)
{
	unsigned int bucket;
	struct kedr_obj_shard *sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];
	struct kedr_obj *o;
	unsigned long flags;
	bool found = false;

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	if (o && o->state == KEDR_OBJ_LIVE && (kinds & BIT_ULL(o->kind))) {
		found = true;
		if (held) {
			o->aux = 1;
		} else {
			kedr_quarantine_add(sh, o, o->caller, o->stack);
			kedr_count(frees);
		}
	}
	spin_unlock_irqrestore(&sh->lock, flags);
	return found;
}
