#!/usr/bin/env bash
# make bench: runs every benchmark script; each prints a table
# "measure | peer | camount | ratio" (ratio > 1 means camount is better).
set -uo pipefail
cd "$(dirname "$0")"
status=0
for s in blob.sh $(ls *.sh | grep -v -e '^lib.sh$' -e '^run.sh$' -e '^blob.sh$'); do
	echo "=== bench/$s"
	bash "./$s" || { echo "bench/$s failed" >&2; status=1; }
done
exit $status
