#!/bin/sh
# A flaky workload made deterministic, for the RETRIES= test: it fails the first run of
# its pack test and passes any retry. KEDR_ATTEMPT is the run's number (1 the first),
# which the check exports to every workload.
echo "run ${KEDR_ATTEMPT:-unknown}"
[ "${KEDR_ATTEMPT:-1}" -ge 2 ]
