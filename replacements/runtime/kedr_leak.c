// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, leak payload (KEDR_PAYLOAD_LEAKS): track what the target
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
 *    out), with the stack of the free: a second free of the same address is
 *    then a double free reported with both stacks, and is not passed on.
 *  - NMI context takes no lock: allocations there are forbidden anyway; a call
 *    seen in NMI is only counted (nmi_skipped).
 *  - Stacks: stack_trace_save() (kernel/stacktrace.c, EXPORT_SYMBOL_GPL since
 *    2.6.x; ORC unwinder on x86_64), trimmed so that frame 0 is the call site
 *    in the target.
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
#define KEDR_TARGETS		8
#define KEDR_SECTIONS		64

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

enum kedr_obj_state { KEDR_OBJ_UNUSED, KEDR_OBJ_LIVE, KEDR_OBJ_FREED, KEDR_OBJ_BLOCKED };

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
	u64 untracked_frees;	/* heap objects freed that we never saw allocated (tracking gap) */
	u64 nmi_skipped;	/* calls in NMI context, not tracked */
};
static DEFINE_PER_CPU(struct kedr_leak_counters, kedr_leak_counters);

enum kedr_bad_what { KEDR_BAD_DOUBLE, KEDR_BAD_FOREIGN, KEDR_BAD_MISMATCH };
static const char *const kedr_bad_names[] = { "double", "foreign", "mismatch" };

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

struct kedr_target {
	char name[MODULE_NAME_LEN];
	bool gone;
	unsigned int nsections;
	struct kedr_section sections[KEDR_SECTIONS];
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

static DEFINE_MUTEX(kedr_targets_lock);
static struct kedr_target *kedr_targets[KEDR_TARGETS];
static unsigned int kedr_ntargets;

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

static unsigned int kedr_save_stack(unsigned long *frames, unsigned long ip)
{
	unsigned long raw[KEDR_MAX_DEPTH + KEDR_SKIP_MAX];
	unsigned int n, i;

	if (kedr_stack_depth == 1) {
		frames[0] = ip;
		return 1;
	}
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
static void kedr_quarantine_add(struct kedr_obj_shard *sh, struct kedr_obj *o,
				unsigned long ip, u32 free_stack)
{
	u32 id = o - kedr_objs;

	o->state = KEDR_OBJ_FREED;
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

static void kedr_fill_task(pid_t *pid, char *comm, size_t len)
{
	/* In IRQ context this is the interrupted task: still the best hint there is. */
	*pid = task_pid_nr(current);
	strscpy(comm, current->comm, len);
}

/* --- the hooks the generated replacements call ----------------------------------------- */

static void kedr_leak_alloc(const struct kedr_function *fn, unsigned int kind, unsigned long ptr,
			    unsigned long size, unsigned long aux, unsigned long ip)
{
	struct kedr_obj_shard *sh;
	struct kedr_obj *o;
	unsigned int bucket;
	unsigned long flags;
	u32 stack, id;

	if (unlikely(in_nmi())) {
		kedr_count(nmi_skipped);
		return;
	}
	ptr = kedr_key(kedr_kind_tagged(kind), ptr);
	kedr_count(allocs);
	stack = kedr_current_stack(ip);
	sh = &kedr_obj_shards[kedr_obj_shard_of(ptr, &bucket)];

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, ptr, NULL);
	if (o) {
		/*
		 * A freed address allocated again, or a live one we missed the
		 * free of (freed through a function not intercepted): reuse.
		 */
		if (o->state == KEDR_OBJ_FREED)
			kedr_quarantine_unlink(sh, o - kedr_objs);
		else
			kedr_count(frees);	/* implicitly released: keep allocs - frees == live */
	} else {
		id = sh->free_list;
		if (id)
			sh->free_list = kedr_obj_at(id)->next;
		else
			id = kedr_quarantine_evict(sh);
		if (!id) {
			spin_unlock_irqrestore(&sh->lock, flags);
			kedr_count(dropped_objects);
			/* Its free will be of an object we do not know: not a foreign one. */
			WRITE_ONCE(kedr_leak_gap, true);
			return;
		}
		o = kedr_obj_at(id);
		o->ptr = ptr;
		o->next = sh->heads[bucket];
		sh->heads[bucket] = id;
	}
	o->state = KEDR_OBJ_LIVE;
	o->kind = kind;
	o->fn = fn->index;
	o->size = size;
	o->aux = aux;
	o->caller = ip;
	o->stack = stack;
	o->free_stack = 0;
	kedr_fill_task(&o->pid, o->comm, sizeof(o->comm));
	spin_unlock_irqrestore(&sh->lock, flags);
}

/* May a free of kind @op release @o, allocated as o->kind? */
static bool kedr_free_matches(unsigned int op, const struct kedr_obj *o, unsigned long aux)
{
	switch (op) {
	case KEDR_FREE_KFREE:
	case KEDR_FREE_KFREE_CONST:
		/* kfree() of a kmem_cache object works in SLUB and is allowed since 6.4. */
		return o->kind == KEDR_KIND_KMALLOC || o->kind == KEDR_KIND_CACHE ||
		       (o->kind == KEDR_KIND_KVMALLOC && !is_vmalloc_addr((void *)o->ptr));
		/* (o->ptr is the address itself for every kind but a mutex.) */
	case KEDR_FREE_KVFREE:
		return o->kind == KEDR_KIND_KMALLOC || o->kind == KEDR_KIND_CACHE ||
		       o->kind == KEDR_KIND_VMALLOC || o->kind == KEDR_KIND_KVMALLOC;
	case KEDR_FREE_VFREE:
		return o->kind == KEDR_KIND_VMALLOC ||
		       (o->kind == KEDR_KIND_KVMALLOC && is_vmalloc_addr((void *)o->ptr));
	case KEDR_FREE_CACHE:
		return o->kind == KEDR_KIND_CACHE && o->aux == aux;
	case KEDR_FREE_PAGES:
		return o->kind == KEDR_KIND_PAGES && o->aux == aux;
	case KEDR_FREE_PAGE:
		return o->kind == KEDR_KIND_PAGE && o->aux == aux;
	case KEDR_FREE_PAGES_EXACT:
		return o->kind == KEDR_KIND_PAGES_EXACT && o->size == aux;
	case KEDR_FREE_KMEM_CACHE:
		return o->kind == KEDR_KIND_KMEM_CACHE;
	case KEDR_FREE_MUTEX_UNLOCK:
		return o->kind == KEDR_KIND_MUTEX;
	case KEDR_FREE_TIMER:
		return o->kind == KEDR_KIND_TIMER;
	case KEDR_FREE_SPIN_UNLOCK:
		return o->kind == KEDR_KIND_SPINLOCK;
	case KEDR_FREE_WORK:
		return o->kind == KEDR_KIND_WORK || o->kind == KEDR_KIND_DWORK;
	case KEDR_FREE_RELEASE:
		return o->kind == aux;
	}
	return false;
}

/*
 * Is @ptr, which the target did not allocate, something the real free can
 * take without corrupting memory: an object of the kernel heap of that kind?
 * (Memory the kernel allocated and handed to the target, or allocated while
 * tracking was off.) A pointer to the stack, to static data, to module
 * memory or to vmalloc space for kfree is not: such a free is blocked.
 */
static bool kedr_heap_object(unsigned int op, unsigned long ptr)
{
	void *p = (void *)ptr;

	switch (op) {
	case KEDR_FREE_KVFREE:
		if (is_vmalloc_addr(p))
			return true;
		fallthrough;
	case KEDR_FREE_KFREE:
	case KEDR_FREE_KFREE_CONST:
	case KEDR_FREE_CACHE: {
		struct folio *folio;

		if (!virt_addr_valid(p))
			return false;
		/* kfree() takes a slab object or a large kmalloc (a compound page). */
		folio = virt_to_folio(p);
		return folio_test_slab(folio) ||
		       (op != KEDR_FREE_CACHE && folio_test_large(folio) &&
			folio_address(folio) == p);
	}
	case KEDR_FREE_VFREE:
		return is_vmalloc_addr(p);
	case KEDR_FREE_PAGES:
	case KEDR_FREE_PAGES_EXACT:
		return virt_addr_valid(p) && PAGE_ALIGNED(ptr);
	case KEDR_FREE_PAGE:
	case KEDR_FREE_KMEM_CACHE:
	case KEDR_FREE_MUTEX_UNLOCK:
	case KEDR_FREE_TIMER:
	case KEDR_FREE_SPIN_UNLOCK:
	case KEDR_FREE_WORK:
	case KEDR_FREE_RELEASE:
		return true;		/* no cheap check: the kernel's call as it would be */
	}
	return false;
}

static void kedr_report_bad(unsigned int what, const struct kedr_function *fn, unsigned long ptr,
			    unsigned long aux, unsigned long ip, u32 stack, bool passed,
			    const struct kedr_obj *o)
{
	struct kedr_bad_free *b;
	unsigned long flags;

	kedr_count(bad_frees);
	pr_err("%s: %s free: %s(%px) from %pS%s\n", KEDR_MODULE_NAME, kedr_bad_names[what],
	       fn->name, (void *)ptr, (void *)ip, passed ? "" : " (not passed on)");
	spin_lock_irqsave(&kedr_bad_lock, flags);
	if (kedr_nbad < KEDR_BAD_FREES) {
		b = &kedr_bad[kedr_nbad++];
		b->what = what;
		b->fn = fn->index;
		b->passed = passed;
		b->ptr = ptr;
		b->caller = ip;
		b->aux = aux;
		b->stack = stack;
		kedr_fill_task(&b->pid, b->comm, sizeof(b->comm));
		b->known = o != NULL;
		if (o)
			b->obj = *o;
	}
	spin_unlock_irqrestore(&kedr_bad_lock, flags);
}

/*
 * Before a free: true when the real free may run. A free of a live object
 * of a matching kind forgets it (before the real free, so that the address,
 * once reused, is never confused with it). @check_only (krealloc): only
 * judge, the caller forgets the object once the call succeeded.
 */
static bool kedr_leak_check(const struct kedr_function *fn, unsigned int op, unsigned long ptr,
			    unsigned long aux, unsigned long ip, bool check_only)
{
	struct kedr_obj_shard *sh;
	struct kedr_obj *o, copy;
	unsigned int bucket, what;
	unsigned long flags, key;
	bool heap;
	u32 stack;

	if (!kedr_leak_valid(ptr))
		return true;		/* kfree(NULL), kfree(ZERO_SIZE_PTR): no-ops */
	if (unlikely(in_nmi())) {
		kedr_count(nmi_skipped);
		return true;
	}
	key = kedr_key(kedr_op_tagged(op), ptr);
	stack = kedr_free_stacks ? kedr_current_stack(ip) : 0;
	sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	if (o && (o->state == KEDR_OBJ_LIVE || o->state == KEDR_OBJ_BLOCKED) &&
	    kedr_free_matches(op, o, aux)) {
		if (!check_only) {
			kedr_quarantine_add(sh, o, ip, stack);
			kedr_count(frees);
		}
		spin_unlock_irqrestore(&sh->lock, flags);
		return true;
	}
	if ((op == KEDR_FREE_TIMER || op == KEDR_FREE_WORK) && (!o || o->state != KEDR_OBJ_LIVE)) {
		/* Deleting a timer or cancelling work not pending (or already run) is normal. */
		spin_unlock_irqrestore(&sh->lock, flags);
		return true;
	}
	if (op == KEDR_FREE_RELEASE) {
		/*
		 * A resource the target did not acquire through a tracked call:
		 * given to it by the kernel (an skb to transmit, a device it was
		 * probed with) or acquired while tracking was off. Never refused.
		 */
		spin_unlock_irqrestore(&sh->lock, flags);
		kedr_count(untracked_frees);
		return true;
	}
	if ((op == KEDR_FREE_MUTEX_UNLOCK || op == KEDR_FREE_SPIN_UNLOCK) &&
	    (!o || o->state != KEDR_OBJ_LIVE)) {
		/*
		 * Not a free: an unlock of a mutex the target does not hold is a
		 * rule violation, and is always passed on (the mutex may have been
		 * taken through a function not intercepted; mutex_unlock() of an
		 * unlocked mutex does no harm without CONFIG_DEBUG_MUTEXES).
		 */
		spin_unlock_irqrestore(&sh->lock, flags);
		if (!READ_ONCE(kedr_leak_gap))
			kedr_rule_violation(fn, KEDR_RULE_UNLOCK_NOT_HELD, ip);
		return true;
	}
	if (o) {
		copy = *o;
		if (o->state == KEDR_OBJ_FREED) {
			what = KEDR_BAD_DOUBLE;
		} else {
			what = KEDR_BAD_MISMATCH;
			/* Still allocated, but not a leak to report twice: the bad free is. */
			o->state = KEDR_OBJ_BLOCKED;
		}
		spin_unlock_irqrestore(&sh->lock, flags);
		kedr_report_bad(what, fn, ptr, aux, ip, stack ?: kedr_current_stack(ip), false,
				&copy);
		return false;
	}
	spin_unlock_irqrestore(&sh->lock, flags);

	heap = kedr_heap_object(op, ptr);
	if (heap && (READ_ONCE(kedr_leak_gap) || op == KEDR_FREE_KFREE_CONST)) {
		/* Allocated while we were not looking: nothing to say about it. */
		kedr_count(untracked_frees);
		return true;
	}
	if (!heap && op == KEDR_FREE_KFREE_CONST)
		return true;	/* kfree_const() of .rodata (kstrdup_const's own) is a no-op */
	kedr_report_bad(KEDR_BAD_FOREIGN, fn, ptr, aux, ip, stack ?: kedr_current_stack(ip), heap,
			NULL);
	return heap;
}

static bool kedr_leak_free(const struct kedr_function *fn, unsigned int op, unsigned long ptr,
			   unsigned long aux, unsigned long ip)
{
	return kedr_leak_check(fn, op, ptr, aux, ip, false);
}

/*
 * After krealloc()/kvrealloc() that kedr_leak_check(check_only) let run:
 * the old object is gone when a new one came back (possibly at the same
 * address) or when the new size was 0 (krealloc frees and returns
 * ZERO_SIZE_PTR); on failure the old one is untouched.
 */
static void __maybe_unused kedr_leak_realloc(const struct kedr_function *fn, unsigned int kind,
			      unsigned int op, unsigned long old, unsigned long ret,
			      unsigned long size, unsigned long ip)
{
	if (kedr_leak_valid(old) && (kedr_leak_valid(ret) || size == 0))
		kedr_leak_free(fn, op, old, 0, ip);
	if (kedr_leak_valid(ret))
		kedr_leak_alloc(fn, kind, ret, size, 0, ip);
}

/*
 * Resources (catalog track = a resource kind / "release"): the generated
 * replacement passes the values that identify one (kedr_res_key()). A
 * release is never refused: the kernel's call runs as the driver asked.
 */
/*
 * A live resource record's free_stack is unused (it names the stack of the
 * free once the record is FREED): for a netdev it says "the kernel frees it
 * when it is unregistered".
 */
#define KEDR_NETDEV_KERNEL_FREES	1

static void kedr_res_flag(unsigned int kind, unsigned long v, u32 flag)
{
	unsigned long key = kedr_res_key(kind, v, 0), flags;
	unsigned int bucket;
	struct kedr_obj_shard *sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];
	struct kedr_obj *o;

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	if (o && o->state == KEDR_OBJ_LIVE && o->kind == kind)
		o->free_stack = flag;
	spin_unlock_irqrestore(&sh->lock, flags);
}

static void __maybe_unused kedr_res_acquire(const struct kedr_function *fn, unsigned int kind, unsigned long v,
			     unsigned long v2, unsigned long size, unsigned long ip)
{
	kedr_leak_alloc(fn, kind, kedr_res_key(kind, v, v2), size, v, ip);
	/*
	 * A device whose setup asked the kernel to free it after unregistering
	 * it (net_device.needs_free_netdev, read now: it is gone by then), e.g.
	 * one an rtnl_link_ops driver (dummy) creates, which the kernel's
	 * rtnl_link_unregister() also unregisters for it.
	 */
	if (kind == KEDR_KIND_NETDEV_REGISTERED && ((struct net_device *)v)->needs_free_netdev)
		kedr_res_flag(KEDR_KIND_NETDEV, v, KEDR_NETDEV_KERNEL_FREES);
}

static bool __maybe_unused kedr_res_release(const struct kedr_function *fn, unsigned int kind, unsigned long v,
			     unsigned long v2, unsigned long ip)
{
	kedr_leak_check(fn, KEDR_FREE_RELEASE, kedr_res_key(kind, v, v2), kind, ip, false);
	return true;
}

/*
 * Variadic functions with no va_list twin exported (catalog "variadic"):
 * the name is formatted here and passed as "%s", which is what the kernel
 * does with it (alloc_workqueue() vsnprintf()s it into wq->name,
 * device_create() into the device's name).
 */
static __printf(1, 0) __maybe_unused struct workqueue_struct *
kedr_alloc_workqueue_va(const char *fmt, unsigned int flags, int max_active, va_list args)
{
	struct workqueue_struct *wq;
	char *name = kvasprintf(GFP_KERNEL, fmt, args);

	if (!name)
		return NULL;
	wq = alloc_workqueue("%s", flags, max_active, name);
	kfree(name);
	return wq;
}

/* const struct class * since v6.4 ("driver core: class: make struct class constant"). */
static __printf(5, 0) __maybe_unused struct device *
kedr_device_create_va(const struct class *cls, struct device *parent, dev_t devt, void *drvdata,
		      const char *fmt, va_list args)
{
	struct device *dev;
	char *name = kvasprintf(GFP_KERNEL, fmt, args);

	if (!name)
		return ERR_PTR(-ENOMEM);
	dev = device_create((void *)cls, parent, devt, drvdata, "%s", name);
	kfree(name);
	return dev;
}

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

static void kedr_rules_show(struct seq_file *m);	/* kedr_rules.c */

static int kedr_leaks_show(struct seq_file *m, void *unused)
{
	struct kedr_leak_counters sum = {};
	unsigned long flags, live = 0, live_bytes = 0;
	unsigned int s, i, b, cpu;

	seq_printf(m, "kedr-leaks %d\n", KEDR_LEAK_FORMAT);
	seq_printf(m, "module %s\n", KEDR_MODULE_NAME);
	seq_printf(m, "config stack_depth=%u free_stacks=%d max_objects=%u max_stacks=%u\n",
		   kedr_stack_depth, kedr_free_stacks, kedr_max_objects, kedr_max_stacks);
	mutex_lock(&kedr_targets_lock);
	for (i = 0; i < kedr_ntargets; i++) {
		struct kedr_target *t = kedr_targets[i];

		seq_printf(m, "target name=%s state=%s\n", t->name, t->gone ? "unloaded" : "loaded");
		for (s = 0; s < t->nsections; s++)
			seq_printf(m, "section target=%s shndx=%u addr=0x%lx\n", t->name,
				   t->sections[s].shndx, t->sections[s].addr);
	}
	mutex_unlock(&kedr_targets_lock);

	for (s = 0; kedr_leak_ready && s < KEDR_OBJ_SHARDS; s++) {
		struct kedr_obj_shard *sh = &kedr_obj_shards[s];

		spin_lock_irqsave(&sh->lock, flags);
		for (b = 0; b < KEDR_OBJ_BUCKETS; b++) {
			u32 id;

			for (id = sh->heads[b]; id; id = kedr_obj_at(id)->next) {
				const struct kedr_obj *o = kedr_obj_at(id);

				if (o->state != KEDR_OBJ_LIVE)
					continue;
				/* A timer or work item is reported once judged pending at unload. */
				if ((o->kind == KEDR_KIND_TIMER || o->kind == KEDR_KIND_WORK ||
				     o->kind == KEDR_KIND_DWORK) && o->aux != 1)
					continue;
				live++;
				live_bytes += o->size;
				/* A resource's key is a hash: print the value that names it. */
				seq_printf(m, "object fn=%s kind=%s ptr=0x%lx size=%lu caller=0x%lx "
					   "stack=%u pid=%d comm=", kedr_fn_name(o->fn),
					   kedr_kind_names[o->kind],
					   kedr_kind_resource(o->kind) ? o->aux : kedr_addr(o->ptr),
					   o->size, o->caller, o->stack, o->pid);
				kedr_put_comm(m, o->comm);
				seq_putc(m, '\n');
			}
		}
		spin_unlock_irqrestore(&sh->lock, flags);
	}

	spin_lock_irqsave(&kedr_bad_lock, flags);
	for (i = 0; i < kedr_nbad; i++) {
		const struct kedr_bad_free *bf = &kedr_bad[i];

		seq_printf(m, "badfree what=%s fn=%s ptr=0x%lx caller=0x%lx stack=%u passed=%d "
			   "pid=%d", kedr_bad_names[bf->what], kedr_fn_name(bf->fn), bf->ptr,
			   bf->caller, bf->stack, bf->passed, bf->pid);
		if (bf->known) {
			const struct kedr_obj *o = &bf->obj;

			seq_printf(m, " alloc_fn=%s alloc_kind=%s alloc_size=%lu alloc_stack=%u",
				   kedr_fn_name(o->fn), kedr_kind_names[o->kind], o->size, o->stack);
			if (o->state == KEDR_OBJ_FREED)
				seq_printf(m, " free_caller=0x%lx free_stack=%u", o->caller,
					   o->free_stack);
			else
				seq_printf(m, " alloc_caller=0x%lx", o->caller);
		}
		seq_puts(m, " comm=");
		kedr_put_comm(m, bf->comm);
		seq_putc(m, '\n');
	}
	spin_unlock_irqrestore(&kedr_bad_lock, flags);
	kedr_rules_show(m);

	for_each_possible_cpu(cpu) {
		const struct kedr_leak_counters *c = per_cpu_ptr(&kedr_leak_counters, cpu);

		sum.allocs += c->allocs;
		sum.frees += c->frees;
		sum.bad_frees += c->bad_frees;
		sum.dropped_objects += c->dropped_objects;
		sum.dropped_stacks += c->dropped_stacks;
		sum.untracked_frees += c->untracked_frees;
		sum.nmi_skipped += c->nmi_skipped;
	}
	seq_printf(m, "totals allocs=%llu frees=%llu live=%lu live_bytes=%lu bad_frees=%llu "
		   "dropped_objects=%llu dropped_stacks=%llu untracked_frees=%llu nmi_skipped=%llu "
		   "gap=%d\n", sum.allocs, sum.frees, live, live_bytes, sum.bad_frees,
		   sum.dropped_objects, sum.dropped_stacks, sum.untracked_frees, sum.nmi_skipped,
		   READ_ONCE(kedr_leak_gap));

	/* Stacks are written once and never change: no lock needed to print them. */
	for (s = 0; kedr_leak_ready && s < KEDR_STACK_SHARDS; s++) {
		struct kedr_stack_shard *sh = &kedr_stack_shards[s];
		u32 used = smp_load_acquire(&sh->used);	/* pairs with kedr_stack_intern() */
		for (i = 0; i < used; i++) {
			u32 id = sh->first + 1 + i;
			const struct kedr_stack *st = kedr_stack_at(id);

			seq_printf(m, "stack id=%u frames=%u\n", id, st->nr);
			for (b = 0; b < st->nr; b++)
				seq_printf(m, "frame 0x%lx %pS\n", st->frames[b],
					   (void *)st->frames[b]);
		}
	}
	seq_puts(m, "end\n");
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
