// SPDX-License-Identifier: GPL-2.0
/*
 * A PCI driver for QEMU's "edu" device (1234:11e8, QEMU docs/specs/edu.rst): MMIO
 * through BAR 0, an interrupt after each factorial and each DMA, and DMA through a
 * coherent buffer. For the device tests (DEVICES=edu):
 *   /sys/bus/pci/devices/<dev>/factorial - write N: the device computes N! and
 *        raises its interrupt; read: the result
 *   /sys/bus/pci/devices/<dev>/dma - write N (1-2048): N bytes go RAM -> device ->
 *        RAM by DMA, each waited for by its interrupt; read: "ok" or "mismatch"
 * mode=clean (default) unwinds every probe failure; mode=leaky leaves the DMA buffer
 * behind when request_irq() fails (the error path jumps one label too far), the bug
 * the fault sweep must find at that call. The default comes from the build
 * (MAKE_ARGS='EDU_MODE=leaky'; Kbuild), so a pack check can test the leaky one.
 * mode=idioms does, besides, what in-tree drivers of the device corpus do and the
 * leak checker once took for leaks (tests/test_verdicts_vm.py):
 *   - managed regions: pcim_enable_device(), then pci_request_regions(), released
 *     by devres at detach, never by the driver (snd-intel8x0);
 *   - pages given back with put_page(): a dev_alloc_page() kept until remove(),
 *     put there on its last reference (vmxnet3's receive ring), after a
 *     get_page()/put_page() pair that is not the last; and one alloc_page() whose
 *     extra reference is never dropped, a real leak of one page;
 *   - the device lock the driver core holds around probe() and remove(), dropped
 *     and taken again (snd-hda-intel's azx_remove()).
 * mode=fzunload gives the bound device a node to fuzz, /dev/kedr_edu, whose rare
 * ioctls only ask for something at remove(), where it goes wrong, at the driver's
 * unload only, on a driver that needs its device (tests/test_fuzz_reboots_vm.py):
 *   - _IOC_NR(cmd) == 11, "reset": remove() works around the firmware and marks the
 *     kernel TAINT_FIRMWARE_WORKAROUND (I) with no WARN or BUG line (reduced across
 *     fresh boots);
 *   - _IOC_NR(cmd) == 12, "flush": remove() WARNs that the flush was never done
 *     (reduced in the judged run's boot, each attempt unloading).
 */
#include <linux/completion.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/panic.h>
#include <linux/pci.h>
#include <linux/skbuff.h>
#include <linux/slab.h>

#define EDU_ID		0x00
#define EDU_FACT	0x08
#define EDU_STATUS	0x20
#define EDU_STATUS_IRQ	0x80
#define EDU_IRQ_STATUS	0x24
#define EDU_IRQ_ACK	0x64
#define EDU_DMA_SRC	0x80
#define EDU_DMA_DST	0x88
#define EDU_DMA_COUNT	0x90
#define EDU_DMA_CMD	0x98
#define EDU_DMA_START	0x01
#define EDU_DMA_TO_RAM	0x02
#define EDU_DMA_IRQ	0x04
#define EDU_BUF		0x40000		/* the device's own 4 KiB buffer */
#define EDU_IRQ_FACT	0x001
#define EDU_IRQ_DMA	0x100
#define BUF_SIZE	4096

static char *mode = EDU_MODE;
module_param(mode, charp, 0444);

struct edu {
	struct pci_dev *pdev;
	void __iomem *mmio;
	void *buf;
	dma_addr_t buf_dma;
	struct completion done;
	struct mutex lock;		/* one operation at a time */
	struct page *page;		/* mode=idioms: put_page() at remove() */
	u32 fact;
	bool dma_ok;
	bool reset_asked;		/* mode=fzunload: ioctl nr 11 was made */
	bool flush_asked;		/* ... nr 12 */
};

/* mode=fzunload: the one edu device's node (the tests attach one). */
static struct edu *fz_edu;

static long edu_fz_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	switch (_IOC_NR(cmd)) {
	case 11:
		WRITE_ONCE(fz_edu->reset_asked, true);
		return 0;
	case 12:
		WRITE_ONCE(fz_edu->flush_asked, true);
		return 0;
	}
	return -ENOTTY;
}

static const struct file_operations edu_fz_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = edu_fz_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice edu_fz = {
	.minor = MISC_DYNAMIC_MINOR, .name = "kedr_edu", .fops = &edu_fz_fops,
};

static bool fzunload(void)
{
	return !strcmp(mode, "fzunload");
}

static irqreturn_t edu_irq(int irq, void *data)
{
	struct edu *edu = data;
	u32 status = ioread32(edu->mmio + EDU_IRQ_STATUS);

	if (!status)
		return IRQ_NONE;	/* a shared line: another device's */
	iowrite32(status, edu->mmio + EDU_IRQ_ACK);
	complete(&edu->done);
	return IRQ_HANDLED;
}

static int edu_wait(struct edu *edu)
{
	return wait_for_completion_timeout(&edu->done, msecs_to_jiffies(5000)) ? 0 : -ETIMEDOUT;
}

static ssize_t factorial_store(struct device *dev, struct device_attribute *attr,
			       const char *buf, size_t count)
{
	struct edu *edu = dev_get_drvdata(dev);
	u32 n;
	int ret = kstrtou32(buf, 0, &n);

	if (ret)
		return ret;
	mutex_lock(&edu->lock);
	reinit_completion(&edu->done);
	iowrite32(EDU_STATUS_IRQ, edu->mmio + EDU_STATUS);
	iowrite32(n, edu->mmio + EDU_FACT);
	ret = edu_wait(edu);
	if (!ret)
		edu->fact = ioread32(edu->mmio + EDU_FACT);
	mutex_unlock(&edu->lock);
	return ret ? ret : count;
}

static ssize_t factorial_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct edu *edu = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%u\n", edu->fact);
}
static DEVICE_ATTR_RW(factorial);

static int edu_dma(struct edu *edu, dma_addr_t src, dma_addr_t dst, u32 count, u32 dir)
{
	reinit_completion(&edu->done);
	writeq(src, edu->mmio + EDU_DMA_SRC);
	writeq(dst, edu->mmio + EDU_DMA_DST);
	writeq(count, edu->mmio + EDU_DMA_COUNT);
	writeq(EDU_DMA_START | EDU_DMA_IRQ | dir, edu->mmio + EDU_DMA_CMD);
	return edu_wait(edu);
}

static ssize_t dma_store(struct device *dev, struct device_attribute *attr,
			 const char *buf, size_t count)
{
	struct edu *edu = dev_get_drvdata(dev);
	u8 *cpu = edu->buf;
	u32 n, i;
	int ret = kstrtou32(buf, 0, &n);

	if (ret)
		return ret;
	if (!n || n > BUF_SIZE / 2)
		return -EINVAL;
	mutex_lock(&edu->lock);
	for (i = 0; i < n; i++) {
		cpu[i] = (u8)(i * 7 + 1);
		cpu[BUF_SIZE / 2 + i] = 0;
	}
	ret = edu_dma(edu, edu->buf_dma, EDU_BUF, n, 0);
	if (!ret)
		ret = edu_dma(edu, EDU_BUF, edu->buf_dma + BUF_SIZE / 2, n, EDU_DMA_TO_RAM);
	if (!ret)
		edu->dma_ok = !memcmp(cpu, cpu + BUF_SIZE / 2, n);
	mutex_unlock(&edu->lock);
	return ret ? ret : count;
}

static ssize_t dma_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct edu *edu = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%s\n", edu->dma_ok ? "ok" : "mismatch");
}
static DEVICE_ATTR_RW(dma);

static struct attribute *edu_attrs[] = {
	&dev_attr_factorial.attr, &dev_attr_dma.attr, NULL,
};
static const struct attribute_group edu_group = { .attrs = edu_attrs };

static bool idioms(void)
{
	return !strcmp(mode, "idioms");
}

/* mode=idioms: the device lock the driver core holds, dropped and taken again. */
static void edu_relock(struct pci_dev *pdev)
{
	device_unlock(&pdev->dev);
	device_lock(&pdev->dev);
}

/* mode=idioms: the pages (above); false when one could not be allocated. */
static bool edu_pages(struct edu *edu)
{
	struct page *leaked = alloc_page(GFP_KERNEL);

	if (!leaked)
		return false;
	get_page(leaked);
	put_page(leaked);		/* not the last reference: the page stays, leaked */
	edu->page = dev_alloc_page();
	if (!edu->page)
		return false;
	get_page(edu->page);
	put_page(edu->page);		/* not the last either: remove() puts the last */
	return true;
}

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct edu *edu;
	u32 ident;
	int ret;

	edu = kzalloc(sizeof(*edu), GFP_KERNEL);
	if (!edu)
		return -ENOMEM;
	edu->pdev = pdev;
	init_completion(&edu->done);
	mutex_init(&edu->lock);
	if (idioms()) {
		edu_relock(pdev);
		if (!edu_pages(edu)) {
			kfree(edu);
			return -ENOMEM;
		}
		/* Managed: devres disables the device and releases the regions at detach. */
		ret = pcim_enable_device(pdev);
		if (!ret)
			ret = pci_request_regions(pdev, "kedr_edu");
		if (ret) {
			put_page(edu->page);
			kfree(edu);
			return ret;
		}
	} else {
		ret = pci_enable_device(pdev);
		if (ret)
			goto err_free;
		ret = pci_request_regions(pdev, "kedr_edu");
		if (ret)
			goto err_disable;
	}
	edu->mmio = pci_iomap(pdev, 0, 0);
	if (!edu->mmio) {
		ret = -ENOMEM;
		goto err_regions;
	}
	ident = ioread32(edu->mmio + EDU_ID);
	if ((ident & 0xff) != 0xed) {
		dev_err(&pdev->dev, "not an edu device (id %#x)\n", ident);
		ret = -ENODEV;
		goto err_unmap;
	}
	/* The device decodes 28 address bits unless told otherwise (edu.rst). */
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(28));
	if (ret)
		goto err_unmap;
	pci_set_master(pdev);
	edu->buf = dma_alloc_coherent(&pdev->dev, BUF_SIZE, &edu->buf_dma, GFP_KERNEL);
	if (!edu->buf) {
		ret = -ENOMEM;
		goto err_unmap;
	}
	ret = request_irq(pdev->irq, edu_irq, IRQF_SHARED, "kedr_edu", edu);
	if (ret)
		/* The deliberate bug of mode=leaky: past the label that frees the buffer. */
		goto err_free_buf_or_not;
	pci_set_drvdata(pdev, edu);
	ret = sysfs_create_group(&pdev->dev.kobj, &edu_group);
	if (ret)
		goto err_irq;
	if (fzunload()) {
		fz_edu = edu;
		ret = misc_register(&edu_fz);
		if (ret) {
			sysfs_remove_group(&pdev->dev.kobj, &edu_group);
			goto err_irq;
		}
	}
	dev_info(&pdev->dev, "edu %u.%u, irq %u, DMA buffer at %pad\n", ident >> 24,
		 (ident >> 16) & 0xff, pdev->irq, &edu->buf_dma);
	return 0;

err_irq:
	free_irq(pdev->irq, edu);
err_free_buf_or_not:
	if (strcmp(mode, "leaky") != 0)
		dma_free_coherent(&pdev->dev, BUF_SIZE, edu->buf, edu->buf_dma);
err_unmap:
	pci_iounmap(pdev, edu->mmio);
err_regions:
	if (idioms()) {
		put_page(edu->page);
		kfree(edu);
		return ret;
	}
	pci_release_regions(pdev);
err_disable:
	pci_disable_device(pdev);
err_free:
	kfree(edu);
	return ret;
}

static void edu_remove(struct pci_dev *pdev)
{
	struct edu *edu = pci_get_drvdata(pdev);

	if (fzunload()) {
		misc_deregister(&edu_fz);
		/* The bug: a reset the firmware cannot take, worked around instead of refused. */
		if (edu->reset_asked) {
			pr_info("kedr_edu: reset at remove: working around the firmware\n");
			add_taint(TAINT_FIRMWARE_WORKAROUND, LOCKDEP_STILL_OK);
		}
		/* The bug: a flush asked for and never done, found out at remove(). */
		WARN(edu->flush_asked, "kedr_edu: a flush was asked for and never done\n");
	}
	sysfs_remove_group(&pdev->dev.kobj, &edu_group);
	free_irq(pdev->irq, edu);
	dma_free_coherent(&pdev->dev, BUF_SIZE, edu->buf, edu->buf_dma);
	pci_iounmap(pdev, edu->mmio);
	if (idioms()) {
		edu_relock(pdev);
		put_page(edu->page);	/* the last reference: the page is freed */
	} else {
		pci_release_regions(pdev);
		pci_disable_device(pdev);
	}
	kfree(edu);
	dev_info(&pdev->dev, "edu removed\n");
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ }
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static struct pci_driver edu_driver = {
	.name = "kedr_edu",
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
};
module_pci_driver(edu_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kedr-build test driver for QEMU's edu device");
