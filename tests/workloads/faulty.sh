# Workload for tests/drivers/faulty: four allocations from one call site, in this process.
echo "4 32" > /sys/module/kedr_faulty/parameters/trigger
