// SPDX-License-Identifier: GPL-2.0
/*
 * kedr_stock_fault: make ONE call of a kernel function from one call site fail in
 * the stock, unpatched kernel and modules, to check a failure kedr-build's fault
 * sweep reported on a patched driver with no kedr-build code in the driver's path
 * (bench/device_corpus_notes.toml). A kprobe on the function's entry picks the call
 * by its return address ("%pS", e.g. "nvme_remap_bar+0x68/0xf0 [nvme]" matches
 * FAULT_CALLER "nvme_remap_bar+0x68": the sweep's site; a patched module's code is
 * the stock one's, offsets included) and changes its arguments so that the real
 * function fails on its own, before it allocates or requests anything:
 *
 *   request_threaded_irq  handler and thread_fn NULL: -EINVAL (kernel/irq/manage.c)
 *   ioremap               size 0: NULL (arch/x86/mm/ioremap.c, __ioremap_caller)
 *   dma_map_page_attrs    size 1 TiB, beyond any 32/64-bit device's reach from low
 *                         memory: DMA_MAPPING_ERROR (kernel/dma/direct.h,
 *                         dma_direct_map_page: dma_capable() fails; with no swiotlb
 *                         it first says "DMA addr ... overflow" once, a WARNING)
 *   dma_alloc_attrs       size 1 TiB with __GFP_NOWARN and DMA_ATTR_NO_WARN: NULL
 *                         (kernel/dma/direct.c: neither CMA nor the page allocator
 *                         has that much)
 *   __kmalloc_noprof      size 1 TiB with __GFP_NOWARN: NULL (mm/slub.c: beyond
 *   (6.12), __kmalloc     KMALLOC_MAX_CACHE_SIZE it asks the page allocator for an
 *   (6.1)                 order above its maximum, which fails, silent with NOWARN)
 */
#include <linux/dma-mapping.h>
#include <linux/gfp.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/string.h>

static char *fn = FAULT_FN;
module_param(fn, charp, 0444);
static char *caller = FAULT_CALLER;
module_param(caller, charp, 0444);

static atomic_t failed = ATOMIC_INIT(0);

static bool is_kmalloc(const char *name)
{
	return !strcmp(name, "__kmalloc_noprof") || !strcmp(name, "__kmalloc");
}

/* x86-64 arguments: rdi, rsi, rdx, rcx, r8. At a kprobe on the entry (ftrace),
 * regs->sp points at the return address. */
static int before(struct kprobe *p, struct pt_regs *regs)
{
	unsigned long ret = *(unsigned long *)regs->sp;
	char where[KSYM_SYMBOL_LEN];
	size_t n = strlen(caller);

	sprint_symbol(where, ret);
	if (strncmp(where, caller, n) || (where[n] != '/' && where[n] != '\0') ||
	    atomic_xchg(&failed, 1))
		return 0;
	pr_info("kedr_stock_fault: %s from %s will fail\n", fn, where);
	if (!strcmp(fn, "request_threaded_irq")) {
		regs->si = 0;
		regs->dx = 0;
	} else if (!strcmp(fn, "ioremap")) {
		regs->si = 0;
	} else if (!strcmp(fn, "dma_alloc_attrs")) {
		/* dma_alloc_attrs(dev, size, dma_handle, gfp, attrs) */
		regs->si = 1UL << 40;
		regs->cx |= (__force unsigned long)__GFP_NOWARN;
		regs->r8 |= DMA_ATTR_NO_WARN;
	} else if (is_kmalloc(fn)) {	/* __kmalloc(size, flags) */
		regs->di = 1UL << 40;
		regs->si |= (__force unsigned long)__GFP_NOWARN;
	} else {	/* dma_map_page_attrs(dev, page, offset, size, ...) */
		regs->cx = 1UL << 40;
	}
	return 0;
}

static struct kprobe probe = { .pre_handler = before };

static int __init stock_fault_init(void)
{
	if (strcmp(fn, "request_threaded_irq") && strcmp(fn, "ioremap") &&
	    strcmp(fn, "dma_map_page_attrs") && strcmp(fn, "dma_alloc_attrs") &&
	    !is_kmalloc(fn)) {
		pr_err("kedr_stock_fault: fn=%s: only request_threaded_irq, ioremap, "
		       "dma_map_page_attrs, dma_alloc_attrs, __kmalloc_noprof, __kmalloc\n", fn);
		return -EINVAL;
	}
	probe.symbol_name = fn;
	return register_kprobe(&probe);
}

static void __exit stock_fault_exit(void)
{
	unregister_kprobe(&probe);
	pr_info("kedr_stock_fault: %s from %s failed %d time(s)\n", fn, caller,
		atomic_read(&failed));
}

module_init(stock_fault_init);
module_exit(stock_fault_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("fail one call of a kernel function from one call site, with a kprobe");
