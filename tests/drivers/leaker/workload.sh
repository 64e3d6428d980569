#!/bin/sh
# The pack tests' workload for kedr_leaker: its init did the work; show what it ran.
cat /sys/module/kedr_leaker/parameters/mode
