#!/usr/bin/env bash
# Peak RSS under concurrent load on the corpus disk.caibx (issue 15.5: peak
# RSS within --cache-size + 64 MiB), loads driven by fio:
#   FUSE: 64 readers, each doing 4 MiB O_DIRECT reads at random offsets of
#     the mounted image: camount mount beside desync mount-index (the same
#     load through desync's FUSE mount; desync has no memory cache to size).
#   NBD: 16 connections (fio's libnbd engine), each with 16 reads of 4 MiB
#     in flight at random offsets: camount nbd beside the bound, cache +
#     64 MiB (no peer serves a casync image over NBD: nbdkit has no casync
#     plugin).
# Peak RSS is the server process's own VmHWM. Cache sizes: MEMORY_CACHES
# (default "16M 256M"; quick: 16M). MEMORY_SECONDS (default 20; quick: 3)
# of load per measure, one run each. fio's read bandwidth is printed under
# the table for reference (the machine's load moves it).
. "$(dirname "$0")/lib.sh"
command -v fio >/dev/null || { echo "bench/memory.sh: fio not installed" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "bench/memory.sh: fusermount3 (fuse3) not installed" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "bench/memory.sh: no /dev/fuse" >&2; exit 1; }
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "bench/memory.sh: fio has no nbd (libnbd) engine" >&2; exit 1; }
ensure_corpus
ensure_desync
STORE=$CORPUS/store.castr
DISK=$CORPUS/disk.caibx
if [ -n "${BENCH_QUICK:-}" ]; then
	CACHES=${MEMORY_CACHES:-16M}
	SECS=${MEMORY_SECONDS:-3}
else
	CACHES=${MEMORY_CACHES:-16M 256M}
	SECS=${MEMORY_SECONDS:-20}
fi

mount_setup /var/tmp/camount-bench-memory.XXXXXX
NBD_PID=
trap 'mount_cleanup; [ -z "$NBD_PID" ] || { kill "$NBD_PID" 2>/dev/null; wait "$NBD_PID" 2>/dev/null; } || true' EXIT

# fio_bw ARGS...: runs fio with ARGS for SECS seconds of random 4 MiB reads;
# prints the read bandwidth in MiB/s.
fio_bw() {
	local out
	out=$(fio --name=memory --rw=randread --bs=4M --time_based --runtime="$SECS" --group_reporting --minimal "$@" 2>"$W/fio.err") ||
		{ echo "bench/memory.sh: fio $* failed:" >&2; cat "$W/fio.err" >&2; exit 1; }
	# terse format (the line of version 3; the nbd engine logs its connections
	# too): field 7 is the read bandwidth in KiB/s
	echo "$out" | awk -F';' '$1 == "3" {printf "%d", $7 / 1024}'
}

# fuse TOOL CACHE: mounts the disk image with TOOL and runs the FUSE load;
# sets RSS (MiB) and BW (MiB/s).
fuse() {
	case $1 in
	camount) mount_start --listed "$CAMOUNT" mount --store="$STORE" --cache-size="$2" "$DISK" "$MNT" ;;
	desync) mount_start --listed "$DESYNC" mount-index -s "$STORE" "$DISK" "$MNT" ;;
	esac
	local f
	f=$(ls -d "$MNT"/*)
	BW=$(fio_bw --filename="$f" --readonly --direct=1 --ioengine=psync --numjobs=64)
	mount_stop
	RSS=$((MOUNT_RSS / 1024))
}

# nbd CACHE: serves the disk image with camount nbd and runs the NBD load;
# sets RSS (MiB) and BW (MiB/s).
nbd() {
	local uri
	rm -f "$W/nbd.out" # not the last run's URI: the shell truncates it only in the child
	"$CAMOUNT" nbd --listen=tcp://127.0.0.1:0 --store="$STORE" --cache-size="$1" "$DISK" >"$W/nbd.out" 2>"$W/nbd.log" &
	NBD_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		[ -s "$W/nbd.out" ] && break
		kill -0 "$NBD_PID" 2>/dev/null || break
		sleep 0.1
	done
	uri=$(head -n 1 "$W/nbd.out")
	[ -n "$uri" ] || {
		echo "bench/memory.sh: camount nbd printed no URI in 30 s ($(kill -0 "$NBD_PID" 2>/dev/null && echo running || echo exited)):" >&2
		cat "$W/nbd.log" >&2
		exit 1
	}
	BW=$(fio_bw --ioengine=nbd --uri="$uri" --numjobs=16 --iodepth=16)
	RSS=$(awk '/^VmHWM/ {printf "%d", $2 / 1024}' "/proc/$NBD_PID/status")
	kill "$NBD_PID"
	wait "$NBD_PID" 2>/dev/null || true
	NBD_PID=
}

rows=() notes=()
fuse desync 0
d_rss=$RSS d_bw=$BW
for c in $CACHES; do
	mib=$(numfmt --from=iec "$c" | awk '{printf "%d", $1 / 1048576}')
	fuse camount "$c"
	rows+=("FUSE 64x4M O_DIRECT, --cache-size=$c|$d_rss|$RSS|desync")
	notes+=("FUSE, camount --cache-size=$c: $BW MiB/s (desync mount-index: $d_bw MiB/s); bound $((mib + 64)) MiB")
	[ "$RSS" -le $((mib + 64)) ] || notes+=("  OVER THE BOUND: camount $RSS MiB > $((mib + 64)) MiB")
	nbd "$c"
	rows+=("NBD 16 conns x QD16 x 4M, --cache-size=$c|$((mib + 64))|$RSS|bound")
	notes+=("NBD, camount --cache-size=$c: $BW MiB/s; bound $((mib + 64)) MiB")
	[ "$RSS" -le $((mib + 64)) ] || notes+=("  OVER THE BOUND: camount $RSS MiB > $((mib + 64)) MiB")
done

table_header "Peak RSS under concurrent random 4 MiB reads of disk.caibx ($(numfmt --to=iec "$(stat -c %s "$CORPUS/disk.img")") image), $SECS s of fio load, 1 run each; peer: desync mount-index (FUSE rows), the cache + 64 MiB bound (NBD rows; no NBD peer serves casync images)" "peer|bound"
for r in "${rows[@]}"; do
	IFS='|' read -r m p c _ <<<"$r"
	table_row "$m" "$p" "$c" MiB
done
printf '%s\n' "${notes[@]}"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
