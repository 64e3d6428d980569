# bench/drivers/kedr_reach_run: each of its uses of kstrdup and kfree, 3 times.
echo 3 > /sys/module/kedr_reach_run/parameters/run
