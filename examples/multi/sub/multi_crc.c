// SPDX-License-Identifier: GPL-2.0
/* Uses an in-tree module's export (crc7 from lib/crc7.ko): the VM must load it first. */
#include <linux/module.h>
#include <linux/crc7.h>

static int __init multi_crc_init(void)
{
	static const u8 data[] = "kedr";

	pr_info("multi_crc: crc7 = 0x%02x\n", crc7_be(0, data, 4));
	return 0;
}

static void __exit multi_crc_exit(void)
{
}

module_init(multi_crc_init);
module_exit(multi_crc_exit);
MODULE_LICENSE("GPL");
