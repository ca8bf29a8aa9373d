#!/usr/bin/env bash
# make bench: runs every benchmark, bench/*.sh but lib.sh (helpers) and this
# file; bench/tools/ holds tools for performance work that take arguments and
# are not benchmarks. Each benchmark prints one or more tables
# "measure | peer | camount | ratio" (ratio > 1 means camount is better),
# saying in the header how many runs each figure is.
#
# bench/run.sh --quick (make test runs it): every benchmark once, on a small
# corpus (BENCH_QUICK=1, see lib.sh), so that a broken benchmark fails the
# tests; its figures mean nothing.
# BENCH_ONLY="blob.sh nbd.sh" runs only those.
#
# Exits 0 only when every benchmark ran to completion and printed its tables.
set -uo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = --quick ]; then
	export BENCH_QUICK=1
	shift
fi
[ $# -eq 0 ] || { echo "usage: bench/run.sh [--quick]" >&2; exit 2; }
scripts=${BENCH_ONLY:-$(ls *.sh | grep -v -e '^lib\.sh$' -e '^run\.sh$')}
failed=()
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for s in $scripts; do
	echo "=== bench/$s${BENCH_QUICK:+ (quick: small corpus, one run; figures mean nothing)}"
	start=$(date +%s)
	bash "./$s" | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ]; then
		failed+=("$s (exit $rc)")
	elif ! grep -q '^measure ' "$out"; then
		failed+=("$s (printed no table)")
	fi
	echo "=== bench/$s: $([ "$rc" -eq 0 ] && echo done || echo FAILED) in $(($(date +%s) - start)) s"
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "bench: failed: ${failed[*]}" >&2
	exit 1
fi
echo "bench: all $(echo $scripts | wc -w) benchmarks produced their tables"
