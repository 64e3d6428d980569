// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, leak payload: the hooks the generated replacements call
 * (kedr_leak_alloc/free/realloc, resources). The object table they fill is in
 * kedr_objects.c; the judgments at unload in kedr_judge.c; the report in
 * kedr_report.c.
 */

#include <linux/mm.h>
#include <linux/skbuff.h>

/*
 * alloc_pages() returns a struct page *, __get_free_pages() its address, and
 * a driver may free either way (free_pages(page_address(p)), __free_pages(
 * virt_to_page(a))): both are keyed by the address. (x86_64 has no highmem:
 * page_address() is the linear map's address of every page.)
 */
static unsigned long kedr_page_key(unsigned long page)
{
	return (unsigned long)page_address((struct page *)page);
}

/*
 * The object kvfree_call_rcu(head, func) frees up to 6.1 (include/linux/
 * rcupdate.h, kvfree_rcu_arg_2/_1): func is the offset of head in it, or,
 * head NULL, the object itself.
 */
static inline unsigned long __maybe_unused kedr_rcu_offset_object(unsigned long head,
								   unsigned long func)
{
	return head ? head - func : func;
}

static void kedr_fill_task(pid_t *pid, char *comm, size_t len)
{
	/* In IRQ context this is the interrupted task: still the best hint there is. */
	*pid = task_pid_nr(current);
	strscpy(comm, current->comm, len);
}

static void kedr_obj_forget(struct kedr_obj_shard *sh, unsigned int bucket, struct kedr_obj *o);

/*
 * Is @lock held by the current task? (__mutex_owner() of kernel/locking/
 * mutex.c: the owner word without its MUTEX_FLAGS, 0x07, on both pinned
 * kernels; a PREEMPT_RT mutex has no such word, and this does not compile.)
 */
static bool kedr_mutex_held_by_current(const struct mutex *lock)
{
	return (atomic_long_read(&lock->owner) & ~0x07L) == (long)current;
}

/*
 * A new record for @ptr, linked into @bucket of @sh, whose lock is held: from the
 * free list, else the oldest quarantined one; NULL when there is none.
 */
static struct kedr_obj *kedr_obj_take(struct kedr_obj_shard *sh, unsigned int bucket,
				      unsigned long ptr)
{
	struct kedr_obj *o;
	u32 id = sh->free_list;

	if (id)
		sh->free_list = kedr_obj_at(id)->next;
	else
		id = kedr_quarantine_evict(sh);
	if (!id)
		return NULL;
	o = kedr_obj_at(id);
	o->ptr = ptr;
	o->next = sh->heads[bucket];
	sh->heads[bucket] = id;
	return o;
}

/* --- the hooks the generated replacements call ----------------------------------------- */

static void kedr_leak_alloc(const struct kedr_function *fn, unsigned int kind, unsigned long ptr,
			    unsigned long size, unsigned long aux, unsigned long ip)
{
	struct kedr_obj_shard *sh;
	struct kedr_obj *o;
	unsigned int bucket;
	unsigned long flags;
	u32 stack;

	if (unlikely(in_nmi())) {
		kedr_count(nmi_skipped);
		return;
	}
	if (kind == KEDR_KIND_PAGE)
		ptr = kedr_page_key(ptr);
	ptr = kedr_key(kedr_kind_tagged(kind), ptr);
	kedr_count(allocs);
	stack = kedr_current_stack(ip);
	sh = &kedr_obj_shards[kedr_obj_shard_of(ptr, &bucket)];

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, ptr, NULL);
	if (o && o->state == KEDR_OBJ_LENT) {
		/*
		 * The target takes back a mutex it released for the task's
		 * caller (kedr_leak_lend()): the caller holds it again, and
		 * releases it, not the target. Counted as taken and released.
		 */
		kedr_obj_forget(sh, bucket, o);
		spin_unlock_irqrestore(&sh->lock, flags);
		kedr_count(frees);
		return;
	}
	if (o) {
		/*
		 * A freed address allocated again, or a live one we missed the
		 * free of (freed through a function not intercepted): reuse.
		 */
		if (kedr_obj_freed(o))	/* (never HELD: held memory is not handed out) */
			kedr_quarantine_unlink(sh, o - kedr_objs);
		else
			kedr_count(frees);	/* implicitly released: keep allocs - frees == live */
	} else {
		o = kedr_obj_take(sh, bucket, ptr);
		if (!o) {
			spin_unlock_irqrestore(&sh->lock, flags);
			kedr_count(dropped_objects);
			/* Its free will be of an object we do not know: not a foreign one. */
			WRITE_ONCE(kedr_leak_gap, true);
			return;
		}
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

/*
 * Before the target unlocks @lock, which this task holds but the target did
 * not take (kedr_leak_judge()): a LENT record, so that the target's relock
 * gives the lock back (kedr_leak_alloc()) instead of making it the target's.
 */
static void kedr_leak_lend(const struct kedr_function *fn, unsigned long lock, unsigned long ip)
{
	unsigned long key = kedr_key(true, lock), flags;
	struct kedr_obj_shard *sh;
	struct kedr_obj *o;
	unsigned int bucket;

	sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];
	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	if (o) {
		/* A FREED record of the lock (the target took and released it before). */
		kedr_quarantine_unlink(sh, o - kedr_objs);	/* (a LENT one is in none) */
	} else {
		o = kedr_obj_take(sh, bucket, key);
		if (!o) {
			spin_unlock_irqrestore(&sh->lock, flags);
			kedr_count(dropped_objects);
			WRITE_ONCE(kedr_leak_gap, true);
			return;
		}
	}
	o->state = KEDR_OBJ_LENT;
	o->kind = KEDR_KIND_MUTEX;
	o->fn = fn->index;
	o->size = 0;
	o->aux = 0;
	o->caller = ip;
	o->stack = 0;
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
	case KEDR_FREE_KVFREE_RCU:
		return o->kind == KEDR_KIND_KMALLOC || o->kind == KEDR_KIND_CACHE ||
		       o->kind == KEDR_KIND_VMALLOC || o->kind == KEDR_KIND_KVMALLOC;
	case KEDR_FREE_VFREE:
		return o->kind == KEDR_KIND_VMALLOC ||
		       (o->kind == KEDR_KIND_KVMALLOC && is_vmalloc_addr((void *)o->ptr));
	case KEDR_FREE_CACHE:
		return o->kind == KEDR_KIND_CACHE && o->aux == aux;
	case KEDR_FREE_PAGES:
	case KEDR_FREE_PAGE:
		/* free_pages(a, order) is __free_pages(virt_to_page(a), order) (mm/page_alloc.c). */
		return (o->kind == KEDR_KIND_PAGES || o->kind == KEDR_KIND_PAGE) && o->aux == aux;
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
	case KEDR_FREE_KVFREE_RCU:
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
	bool kept, first_unkept = false;

	kedr_count(bad_frees);
	spin_lock_irqsave(&kedr_bad_lock, flags);
	kept = kedr_nbad < KEDR_BAD_FREES;
	if (!kept && !kedr_bad_unkept) {
		kedr_bad_unkept = true;
		first_unkept = true;
	}
	if (kept) {
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
	/*
	 * The console gets what the report keeps, then one line: a driver freeing
	 * badly in a loop would otherwise flood it (a serial console under TCG
	 * prints a few thousand lines a second, stalling the task that frees).
	 */
	if (kept)
		pr_err("%s: %s free: %s(%px) from %pS%s\n", KEDR_MODULE_NAME,
		       kedr_bad_names[what], fn->name, (void *)ptr, (void *)ip,
		       passed ? "" : " (not passed on)");
	else if (first_unkept)
		pr_err("%s: more than %d bad frees: the rest are counted (totals bad_frees=), "
		       "not printed\n", KEDR_MODULE_NAME, KEDR_BAD_FREES);
}

/* A free of memory (not a lock, timer, work item or resource). */
#define kedr_op_memory(op)	((op) <= KEDR_FREE_KMEM_CACHE)

/*
 * What the real free takes as nothing to free: kfree() returns early on
 * ZERO_OR_NULL_PTR() (NULL and ZERO_SIZE_PTR, what kmalloc(0) returns;
 * kvfree() and kfree_const() end in kfree()), vfree(), free_pages(),
 * free_pages_exact(), kmem_cache_destroy() on NULL. __free_pages(NULL)
 * would oops. kmem_cache_free(s, NULL) is passed on as it always was.
 */
static bool kedr_free_noop(unsigned int op, unsigned long ptr)
{
	switch (op) {
	case KEDR_FREE_KFREE:
	case KEDR_FREE_KFREE_CONST:
	case KEDR_FREE_KVFREE:
		return ZERO_OR_NULL_PTR((void *)ptr);
	case KEDR_FREE_PAGE:
		return false;
	}
	return ptr == 0;
}

/*
 * May a free of kind @op be held by the quarantine (kedr_holdable(), for some
 * object)? Only then is the stack of the free ever shown: a held record is the
 * one a double free is judged against (kedr_report.c prints free_stack only
 * for it); a record merely FREED is forgotten at a second free, so the stack of
 * an unlock, a timer or work cancel, a resource release, a vfree or a
 * kmem_cache_free would be unwound for nothing (a bad free's own stack is
 * unwound when it is reported).
 */
#define kedr_op_holds(op)	((op) == KEDR_FREE_KFREE || (op) == KEDR_FREE_KFREE_CONST || \
				 (op) == KEDR_FREE_KVFREE)

/*
 * Slab memory the target freed with kfree()/kvfree(): the quarantine keeps
 * it allocated (kedr_quarantine_hold()) so that its address is not reused
 * while the record says "freed". Not a kmem_cache object (its cache may be
 * destroyed while we hold it, through a path we do not see), not vmalloc
 * memory (vfree() may sleep, eviction happens under a spinlock), not pages
 * (a page is refcounted: get_page() is inline, so a second __free_pages() can
 * be right).
 */
static bool kedr_holdable(unsigned int op, const struct kedr_obj *o)
{
	return kedr_op_holds(op) &&
	       (o->kind == KEDR_KIND_KMALLOC ||
		(o->kind == KEDR_KIND_KVMALLOC && !is_vmalloc_addr((void *)o->ptr)));
}

/*
 * Is @ptr inside (not at the start of) a live memory object of the target?
 * A large kmalloc (a compound page) starts at its folio. A slab object starts
 * in the same slab folio, at most KEDR_INTERIOR_MAX bytes before @ptr (the
 * largest kmalloc slab object, KMALLOC_MAX_CACHE_SIZE with SLUB; a larger
 * kmem_cache object is not looked for): one lookup per 8 bytes back, and only
 * on the path of a free of an address the target never allocated. (ksize()
 * would give the slab's object size, but it checks, under KASAN, that the
 * object is not free: the address may be in a freed one.)
 */
#define KEDR_INTERIOR_MAX	8192

static bool kedr_interior_at(unsigned long a, unsigned long ptr, struct kedr_obj *copy,
			     bool *found)
{
	unsigned int bucket;
	struct kedr_obj_shard *sh = &kedr_obj_shards[kedr_obj_shard_of(a, &bucket)];
	struct kedr_obj *o;
	unsigned long flags;
	bool inside;

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, a, NULL);
	inside = o && (o->state == KEDR_OBJ_LIVE || o->state == KEDR_OBJ_BLOCKED) &&
		 kedr_kind_memory(o->kind) && ptr - a < max(o->size, 1UL);
	if (inside)
		*copy = *o;
	*found = o != NULL;
	spin_unlock_irqrestore(&sh->lock, flags);
	return inside;
}

static bool kedr_interior(unsigned long ptr, struct kedr_obj *copy)
{
	unsigned long start, a;
	struct folio *folio;
	bool found;

	if (!virt_addr_valid((void *)ptr))
		return false;
	folio = virt_to_folio((void *)ptr);
	start = (unsigned long)folio_address(folio);
	if (!folio_test_slab(folio))
		return folio_test_large(folio) && start != ptr &&
		       kedr_interior_at(start, ptr, copy, &found);
	if (ptr - start > KEDR_INTERIOR_MAX)
		start = ptr - KEDR_INTERIOR_MAX;
	for (a = ALIGN_DOWN(ptr - 1, 8); a >= start && a < ptr; a -= 8) {
		if (kedr_interior_at(a, ptr, copy, &found))
			return true;
		if (found)
			return false;	/* an object of ours starts here: ptr is past its end */
	}
	return false;
}

/* Take a record out of its hash chain (the caller holds the shard's lock). */
static void kedr_obj_unhash(struct kedr_obj_shard *sh, unsigned int bucket, struct kedr_obj *o)
{
	u32 *link;

	if (kedr_obj_find(sh, bucket, o->ptr, &link))
		*link = o->next;
}

/* A freed record we no longer trust (its address may be someone else's now): forget it. */
static void kedr_obj_forget(struct kedr_obj_shard *sh, unsigned int bucket, struct kedr_obj *o)
{
	u32 id = o - kedr_objs;

	kedr_quarantine_unlink(sh, id);
	kedr_obj_unhash(sh, bucket, o);
	o->state = KEDR_OBJ_UNUSED;
	o->next = sh->free_list;
	sh->free_list = id;
}

/*
 * Before a free: true when the real free may run. A free of a live object
 * of a matching kind forgets it (before the real free, so that the address,
 * once reused, is never confused with it); a kmalloc'ed one is held by the
 * quarantine instead (false: the real free runs when it leaves the
 * quarantine). @detach (krealloc): a live object is taken out of the table
 * (its record id in *detach) and kedr_leak_realloc() decides after the call
 * whether it is gone; nothing is held (krealloc frees it itself).
 */
static bool kedr_leak_judge(const struct kedr_function *fn, unsigned int op, unsigned long ptr,
			    unsigned long aux, unsigned long ip, u32 *detach)
{
	struct kedr_obj_shard *sh;
	struct kedr_obj *o, copy;
	unsigned int bucket, what;
	unsigned long flags, key;
	bool heap;
	u32 stack;

	if (kedr_op_memory(op)) {
		if (kedr_free_noop(op, ptr))
			return true;		/* kfree(NULL), kfree(ZERO_SIZE_PTR): no-ops */
		if (ptr < PAGE_SIZE || IS_ERR_VALUE(ptr)) {
			/* kfree(ERR_PTR(-ENOMEM)): the real free would oops. */
			if (unlikely(in_nmi())) {
				kedr_count(nmi_skipped);
				return false;
			}
			kedr_report_bad(KEDR_BAD_INVALID, fn, ptr, aux, ip, kedr_current_stack(ip),
					false, NULL);
			return false;
		}
		if (op == KEDR_FREE_PAGE)
			ptr = kedr_page_key(ptr);
	} else if (!kedr_leak_valid(ptr)) {
		return true;
	}
	if (unlikely(in_nmi())) {
		kedr_count(nmi_skipped);
		return true;
	}
	key = kedr_key(kedr_op_tagged(op), ptr);
	/* (@detach: nothing is held; kedr_leak_realloc() unwinds if it is freed.) */
	stack = kedr_free_stacks && kedr_op_holds(op) && !detach ? kedr_current_stack(ip) : 0;
	sh = &kedr_obj_shards[kedr_obj_shard_of(key, &bucket)];

	spin_lock_irqsave(&sh->lock, flags);
	o = kedr_obj_find(sh, bucket, key, NULL);
	if (o && (o->state == KEDR_OBJ_LIVE || o->state == KEDR_OBJ_BLOCKED) &&
	    kedr_free_matches(op, o, aux)) {
		bool pass = true;

		if (detach) {
			kedr_obj_unhash(sh, bucket, o);
			*detach = o - kedr_objs;
		} else if (kedr_holdable(op, o)) {
			kedr_quarantine_hold(sh, o, ip, stack);
			kedr_count(frees);
			pass = false;
		} else {
			kedr_quarantine_add(sh, o, ip, stack);
			kedr_count(frees);
		}
		spin_unlock_irqrestore(&sh->lock, flags);
		return pass;
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
	if (op == KEDR_FREE_MUTEX_UNLOCK &&
	    (!o || o->state == KEDR_OBJ_FREED || o->state == KEDR_OBJ_LENT) &&
	    kedr_mutex_held_by_current((struct mutex *)ptr)) {
		/*
		 * Held, by this task, not taken by the target: its caller's lock,
		 * which the target drops for a while (azx_remove() drops the
		 * device lock the driver core holds around remove(), and takes
		 * it again). Neither a violation nor, once taken again, the
		 * target's lock.
		 */
		spin_unlock_irqrestore(&sh->lock, flags);
		kedr_leak_lend(fn, ptr, ip);
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
	if (o && o->state == KEDR_OBJ_FREED) {
		/*
		 * Freed, and the real free ran: since then the address may have
		 * been handed out by an allocation we did not see (the kernel's,
		 * another module's, one made while tracking was off) and given to
		 * the target, whose free of it is then right. We cannot tell:
		 * counted, passed on, the stale record forgotten.
		 */
		kedr_obj_forget(sh, bucket, o);
		spin_unlock_irqrestore(&sh->lock, flags);
		kedr_count(untracked_frees);
		return true;
	}
	if (o) {
		copy = *o;
		if (o->state == KEDR_OBJ_HELD) {
			/* Still held by the quarantine: nobody else can have it. */
			what = KEDR_BAD_DOUBLE;
			copy.state = KEDR_OBJ_FREED;	/* the report shows the first free */
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

	if ((op == KEDR_FREE_KFREE || op == KEDR_FREE_KFREE_CONST || op == KEDR_FREE_KVFREE ||
	     op == KEDR_FREE_CACHE) && kedr_interior(ptr, &copy)) {
		/* kfree(p + 8) of the target's own p: the slab allocator would corrupt its lists. */
		kedr_report_bad(KEDR_BAD_INTERIOR, fn, ptr, aux, ip,
				stack ?: kedr_current_stack(ip), false, &copy);
		return false;
	}
	heap = kedr_heap_object(op, ptr);
	if (heap) {
		/*
		 * A heap object the target did not get from a tracked call: the
		 * kernel allocated it for the target (kobject_get_path(), an
		 * address freed by the target and handed out again), or it was
		 * allocated while tracking was off, or it is someone else's. We
		 * cannot tell which: counted, passed on, not reported.
		 */
		kedr_count(untracked_frees);
		return true;
	}
	if (op == KEDR_FREE_KFREE_CONST)
		return true;	/* kfree_const() of .rodata (kstrdup_const's own) is a no-op */
	kedr_report_bad(KEDR_BAD_FOREIGN, fn, ptr, aux, ip, stack ?: kedr_current_stack(ip), false,
			NULL);
	return false;
}

static bool kedr_leak_check(const struct kedr_function *fn, unsigned int op, unsigned long ptr,
			    unsigned long aux, unsigned long ip)
{
	return kedr_leak_judge(fn, op, ptr, aux, ip, NULL);
}

static bool kedr_leak_free(const struct kedr_function *fn, unsigned int op, unsigned long ptr,
			   unsigned long aux, unsigned long ip)
{
	return kedr_leak_judge(fn, op, ptr, aux, ip, NULL);
}

/*
 * Before krealloc()/kvrealloc(): judge the old object like a free, and take
 * its record out of the table before the real call (into *detached), so
 * that an allocation meanwhile (an interrupt on this CPU, another CPU) that
 * gets the same address once krealloc has freed it is recorded as itself.
 */
static bool __maybe_unused kedr_leak_detach(const struct kedr_function *fn, unsigned int op,
					    unsigned long old, unsigned long ip, u32 *detached)
{
	return kedr_leak_judge(fn, op, old, 0, ip, detached);
}

/*
 * After krealloc()/kvrealloc() that kedr_leak_detach() let run: the old
 * object is gone when a new one came back (possibly at the same address)
 * or when the new size was 0 (krealloc frees and returns ZERO_SIZE_PTR);
 * on failure the old one is untouched and its record goes back.
 */
static void __maybe_unused kedr_leak_realloc(const struct kedr_function *fn, unsigned int kind,
			      unsigned int op, unsigned long old, unsigned long ret,
			      unsigned long size, unsigned long ip, u32 detached)
{
	if (detached) {
		struct kedr_obj *o = kedr_obj_at(detached);
		unsigned int bucket;
		struct kedr_obj_shard *sh = &kedr_obj_shards[kedr_obj_shard_of(o->ptr, &bucket)];
		bool gone = kedr_leak_valid(ret) || size == 0;
		unsigned long flags;

		spin_lock_irqsave(&sh->lock, flags);
		if (!gone || !kedr_obj_find(sh, bucket, o->ptr, NULL)) {
			/* Back in the table: live again, or freed (the real free ran). */
			o->next = sh->heads[bucket];
			sh->heads[bucket] = detached;
			if (gone) {
				/* FREED, never held: its free's stack is never shown. */
				kedr_quarantine_add(sh, o, ip, 0);
				kedr_count(frees);
			}
		} else {
			/* Freed, and its address already recorded anew: no record to keep. */
			o->state = KEDR_OBJ_UNUSED;
			o->next = sh->free_list;
			sh->free_list = detached;
			kedr_count(frees);
		}
		spin_unlock_irqrestore(&sh->lock, flags);
	}
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

/*
 * The pages in the frags of an skb the target releases, by freeing it or by
 * handing it to the stack (which frees it): a page-based receive path puts
 * pages it allocated into an skb (skb_add_rx_frag(), or the inline
 * skb_fill_page_desc(): not interceptable, so the skb is looked at here) and
 * the kernel puts them with the skb (skb_release_data()). A page goes with the
 * skb only if the skb's frags hold all its references: one the target keeps
 * another reference to (get_page(): a recycling driver's) stays the target's,
 * released by its own put_page() or reported. A clone (skb_cloned()) shares
 * its frags with the skbs it was cloned with: they go with the last of them.
 * A frag_list's skbs are not looked at.
 */
static void kedr_skb_pages_released(const struct sk_buff *skb)
{
	const struct skb_shared_info *sh;
	int i, j, refs;

	if (!kedr_leak_valid(skb) || skb_cloned(skb))
		return;
	sh = skb_shinfo(skb);
	for (i = 0; i < sh->nr_frags; i++) {
		/* NULL for a frag of device memory, no page (6.12's net_iov). */
		struct page *page = skb_frag_page(&sh->frags[i]);

		if (!page)
			continue;
		page = compound_head(page);
		for (refs = 0, j = 0; j < sh->nr_frags; j++)
			refs += skb_frag_page(&sh->frags[j]) &&
				compound_head(skb_frag_page(&sh->frags[j])) == page;
		if (page_ref_count(page) == refs)
			kedr_obj_judge(kedr_page_key((unsigned long)page),
				       BIT_ULL(KEDR_KIND_PAGE) | BIT_ULL(KEDR_KIND_PAGES), false);
	}
}

static bool __maybe_unused kedr_res_release(const struct kedr_function *fn, unsigned int kind, unsigned long v,
			     unsigned long v2, unsigned long ip)
{
	if (kind == KEDR_KIND_SKB)
		kedr_skb_pages_released((const struct sk_buff *)v);
	kedr_leak_check(fn, KEDR_FREE_RELEASE, kedr_res_key(kind, v, v2), kind, ip);
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

