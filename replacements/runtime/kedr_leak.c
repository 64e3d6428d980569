// SPDX-License-Identifier: GPL-2.0
/*
 * kedr-build runtime, leak payload: the hooks the generated replacements call
 * (kedr_leak_alloc/free/realloc, resources). The object table they fill is in
 * kedr_objects.c; the judgments at unload in kedr_judge.c; the report in
 * kedr_report.c.
 */

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

