#!/bin/bash
# bench/cold.sh INDEX 'CMD' — camount alone, for performance work: RUNS cold
# runs (fresh mount, dropped caches) of CMD (which reads $MNT), each printing
# wall seconds, camount CPU seconds (user+system), peak RSS, minor page
# faults, context switches of all its threads and the machine's idle CPU
# time during the run, then the medians of wall and CPU.
# On a shared machine CPU seconds are steadier than wall time; quote the load.
# Env: CAMOUNT, CORPUS, RUNS (lib.sh); MOUNT_FLAGS (default --cache-size=256M);
# PROF=FILE writes a CPU profile of the last run (CAMOUNT_CPUPROFILE).
# Example: bench/cold.sh /work/corpus/disk.caibx 'cat $MNT/* | wc -c'
. "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || { echo "usage: bench/cold.sh INDEX 'CMD'" >&2; exit 2; }
index=$1 cmd=$2
STORE=${STORE:-$CORPUS/store.castr}
MNT=$(mktemp -d /tmp/camount-cold.XXXXXX)
trap 'fusermount3 -u "$MNT" 2>/dev/null || true; rmdir "$MNT" 2>/dev/null || true' EXIT
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  runs: $RUNS  $cmd"
walls=() cpus=()
for ((r = 1; r <= RUNS; r++)); do
	prof=
	[ "$r" -eq "$RUNS" ] && prof=${PROF:-}
	CAMOUNT_CPUPROFILE=$prof "$CAMOUNT" mount --store="$STORE" ${MOUNT_FLAGS:---cache-size=256M} "$index" "$MNT" >/dev/null 2>&1 &
	pid=$!
	for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
	mountpoint -q "$MNT" || { echo "bench/cold.sh: mount failed" >&2; exit 1; }
	drop_caches
	i0=$(awk '/^cpu /{print $5+$6}' /proc/stat)
	s=$(date +%s.%N)
	out=$(MNT=$MNT bash -c "$cmd")
	e=$(date +%s.%N)
	i1=$(awk '/^cpu /{print $5+$6}' /proc/stat)
	cpu=$(awk '{print ($14+$15)/100}' /proc/$pid/stat)
	rss=$(awk '/VmHWM/{print int($2/1024)}' /proc/$pid/status)
	flt=$(awk '{print $10}' /proc/$pid/stat)
	cs=$(cat /proc/$pid/task/*/status 2>/dev/null | awk '/ctxt_switches/{n+=$2} END{print n}')
	fusermount3 -u "$MNT"
	wait $pid || true
	wall=$(echo "$e - $s" | bc -l)
	walls+=("$wall") cpus+=("$cpu")
	printf 'run %d: wall %.2fs cpu %.2fs rss %dMiB minflt %d ctxsw %d idle %.2fs out %s\n' \
		"$r" "$wall" "$cpu" "$rss" "$flt" "$cs" "$(echo "($i1 - $i0) / 100" | bc -l)" "$out"
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }
echo "median: wall $(med "${walls[@]}")s cpu $(med "${cpus[@]}")s"
