/* Shared by the vendor's drivers: reached as $(src)/../include, $(PWD)/../include
 * and $(M)/../include, the ways real vendor trees spell it. */
#define VENDOR_MAGIC 42
int vendor_add(int a, int b);
