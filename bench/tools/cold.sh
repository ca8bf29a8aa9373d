#!/bin/bash
# bench/tools/cold.sh INDEX 'CMD' — camount alone, for performance work: RUNS cold
# runs (fresh mount, dropped caches) of CMD (which reads $MNT), each printing
# wall seconds, camount CPU seconds (user+system), peak RSS, minor page
# faults, context switches of all its threads and the machine's idle CPU
# time during the run, then the medians of wall and CPU.
# On a shared machine CPU seconds are steadier than wall time; quote the load.
# Env: CAMOUNT, CORPUS, RUNS (lib.sh); MOUNT_FLAGS (default --cache-size=256M);
# PROF=FILE writes a CPU profile of the last run (CAMOUNT_CPUPROFILE).
# BUILDS="bin/a bin/b ...": compare camount builds instead, run after run in
# turn (the host's speed drifts over minutes on this VM, so only
# interleaved runs compare), with the medians of each at the end.
# Example: bench/tools/cold.sh corpus/disk.caibx 'cat $MNT/* | wc -c'
#          BUILDS="/tmp/old /tmp/new" RUNS=7 bench/tools/cold.sh share.caidx 'find $MNT | wc -l'
. "$(dirname "$0")/../lib.sh"
[ $# -eq 2 ] || { echo "usage: bench/tools/cold.sh INDEX 'CMD'" >&2; exit 2; }
index=$1 cmd=$2
STORE=${STORE:-$CORPUS/store.castr}
mount_setup /tmp/camount-cold.XXXXXX
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  runs: $RUNS  $cmd"
builds=(${BUILDS:-$CAMOUNT})
declare -A walls cpus
for ((r = 1; r <= RUNS; r++)); do
	for b in "${builds[@]}"; do
		prof=
		[ "$r" -eq "$RUNS" ] && [ ${#builds[@]} -eq 1 ] && prof=${PROF:-}
		mount_start env CAMOUNT_CPUPROFILE="$prof" "$b" mount --store="$STORE" ${MOUNT_FLAGS:---cache-size=256M} "$index" "$MNT"
		pid=$MOUNT_PID
		drop_caches
		time_mounted "$cmd"
		cpu=$(awk '{print ($14+$15)/100}' /proc/$pid/stat)
		flt=$(awk '{print $10}' /proc/$pid/stat)
		cs=$(cat /proc/$pid/task/*/status 2>/dev/null | awk '/ctxt_switches/{n+=$2} END{print n}')
		mount_stop
		walls[$b]+=" $WALL" cpus[$b]+=" $cpu"
		name=
		[ ${#builds[@]} -gt 1 ] && name=" $b"
		printf 'run %d%s: wall %.2fs cpu %.2fs rss %dMiB minflt %d ctxsw %d idle %.2fs out %s\n' \
			"$r" "$name" "$WALL" "$cpu" "$((MOUNT_RSS / 1024))" "$flt" "$cs" "$IDLE" "$OUT"
	done
done
for b in "${builds[@]}"; do
	name=
	[ ${#builds[@]} -gt 1 ] && name=" $b"
	echo "median$name: wall $(MEDIAN_DIGITS=2 median ${walls[$b]})s cpu $(MEDIAN_DIGITS=2 median ${cpus[$b]})s"
done
