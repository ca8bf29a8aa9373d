#!/usr/bin/env bash
# bench/prefetch.sh: lazy-and-fast over a slow network. nginx serves the reference corpus
# (../shared/bench/mkcorpus.sh) behind a proxy adding 20 ms to every request (prefetchtool proxy).
#   1. cold full read of disk.caibx (1.5 GiB): camount mount + dd, against desync mount-index + dd
#      and casync extract (targets: >= 5x casync, >= 3x desync)
#   2. foreground 4 KiB random-read latency p50/p99 on a camount mount, without and with
#      --prefetch=all filling in the background (target: p99 raised by <= 20%)
#   3. a boot-like trace (ext4 of the image loop-mounted from the camount file: list the tree,
#      read the heads of 300 files), cold, without and with a --prefetch-profile recorded on an
#      earlier run (target: half the wall time)
# Prints "measure | peer | camount | ratio" tables (ratio > 1: camount is better).
# Env: PARTS (default full,rand,trace: which measures to run), DELAY (default 20ms), FULL_RUNS (default 1: the peers take minutes), RAND_N (300 reads) x RAND_ROUNDS (2).
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/prefetch.sh: needs root (FUSE mounts, loop devices)" >&2; exit 1; }
DELAY=${DELAY:-20ms}
FULL_RUNS=${FULL_RUNS:-1}
RAND_N=${RAND_N:-300}
PARTS=${PARTS:-full,rand,trace}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
ensure_corpus

work=$(mktemp -d /tmp/camount-bench-prefetch.XXXXXX)
pids=()
mnts=()
cleanup() {
	set +e
	umount "$work/cam.ext" 2>/dev/null
	losetup -j "$work/cam/disk" 2>/dev/null | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
	for m in "${mnts[@]}"; do
		fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	# Never remove files through a mount that is still there.
	if grep -q " $work/" /proc/mounts; then
		echo "bench: leaving $work (still mounted)" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# Tools: the delaying proxy, and desync for the comparison (benchmark only).
ensure_desync

start_nginx "$work/nginx" "$CORPUS"
pids+=("$NGINX_PID")
start_delay_proxy "$work" "$NGINX_PORT" "$DELAY"
pids+=("$PROXY_PID")
STORE="http://127.0.0.1:$PROXY_PORT/store.castr"
INDEX="$CORPUS/disk.caibx"
echo "corpus $CORPUS: $(stat -c %s "$CORPUS/disk.img") byte image; store behind a $DELAY proxy at $STORE" >&2

# mount_cam DIR FLAGS...: camount mount of disk.caibx on DIR (file DIR/disk), waits until ready.
mount_cam() {
	local dir=$1; shift
	mkdir -p "$dir"
	"$CAMOUNT" mount --store="$STORE" "$@" "$INDEX" "$dir" >"$dir.out" 2>"$dir.err" &
	local pid=$!
	campid=$pid
	pids+=($pid)
	mnts+=("$dir")
	for _ in $(seq 200); do
		[ -e "$dir/disk" ] && return 0
		kill -0 "$pid" 2>/dev/null || { cat "$dir.err" >&2; return 1; }
		sleep 0.05
	done
	echo "camount mount did not come up" >&2; cat "$dir.err" >&2; return 1
}
umount_cam() {
	fusermount3 -u "$1" 2>/dev/null || umount "$1"
	wait "$campid" 2>/dev/null || true # it writes its profile and stats on the way out
}

# 1. Cold full read.
full_cam() {
	mount_cam "$work/cam"
	dd if="$work/cam/disk" of=/dev/null bs=1M status=none
	umount_cam "$work/cam"
}
full_desync() {
	mkdir -p "$work/des"
	"$DESYNC" mount-index -s "$STORE" "$INDEX" "$work/des" 2>"$work/des.err" &
	local pid=$!
	for _ in $(seq 200); do [ -e "$work/des/disk.caibx" ] || [ -n "$(ls "$work/des" 2>/dev/null)" ] && break; sleep 0.05; done
	dd if="$work/des/$(ls "$work/des" | head -1)" of=/dev/null bs=1M status=none
	fusermount3 -u "$work/des" 2>/dev/null || umount "$work/des"
	wait $pid 2>/dev/null || true
}
full_casync() {
	rm -f "$work/casync.img"
	casync extract --store="$STORE" "$INDEX" "$work/casync.img"
	rm -f "$work/casync.img"
}
if part full; then
RUNS=$FULL_RUNS
t_cam=$(median_time drop_caches full_cam)
t_des=$(median_time drop_caches full_desync)
t_cas=$(median_time drop_caches full_casync)
table_header "cold full read of disk.caibx ($(numfmt --to=iec "$(stat -c %s "$CORPUS/disk.img")")B image) over HTTP with $DELAY per request (median of $FULL_RUNS)" "peer"
table_row "full read: casync extract vs camount mount+dd" "$t_cas" "$t_cam"
table_row "full read: desync mount-index+dd vs camount" "$t_des" "$t_cam"
fi

# 2. Foreground random-read latency with and without the background fill, and desync's, in
# alternating rounds (the machine's load varies); percentiles of the pooled reads.
rand_cam() { # OUT FLAGS...
	local out=$1; shift
	drop_caches
	mount_cam "$work/cam" "$@"
	"$work/prefetchtool" randread -file "$work/cam/disk" -index "$INDEX" -n "$RAND_N" -seed "$round" -out "$out" >/dev/null
	umount_cam "$work/cam"
}
rand_desync() { # OUT
	drop_caches
	mkdir -p "$work/des"
	"$DESYNC" mount-index -s "$STORE" "$INDEX" "$work/des" 2>>"$work/des.err" &
	local dpid=$!
	for _ in $(seq 200); do [ -n "$(ls "$work/des" 2>/dev/null)" ] && break; sleep 0.05; done
	"$work/prefetchtool" randread -file "$work/des/$(ls "$work/des" | head -1)" -index "$INDEX" -n "$RAND_N" -seed "$round" -out "$1" >/dev/null
	fusermount3 -u "$work/des" 2>/dev/null || umount "$work/des"
	wait $dpid 2>/dev/null || true
}
if part rand; then
for round in $(seq "${RAND_ROUNDS:-2}"); do
	rand_cam "$work/lat.ra" --prefetch=readahead
	rand_cam "$work/lat.all" --prefetch=all
	rand_desync "$work/lat.des"
done
read -r p50_ra p99_ra < <("$work/prefetchtool" pct "$work/lat.ra")
read -r p50_all p99_all < <("$work/prefetchtool" pct "$work/lat.all")
read -r des50 des99 < <("$work/prefetchtool" pct "$work/lat.des")
table_header "foreground 4 KiB random reads (${RAND_ROUNDS:-2} rounds x $RAND_N, cold, data chunks only), ms" "peer"
table_row "p50: desync mount-index vs camount" "$des50" "$p50_ra" ms
table_row "p99: desync mount-index vs camount" "$des99" "$p99_ra" ms
table_row "p50: camount vs camount --prefetch=all" "$p50_ra" "$p50_all" ms
table_row "p99: camount vs camount --prefetch=all" "$p99_ra" "$p99_all" ms
fi

# 3. Boot-like trace on the ext4 inside the image, cold, without and with a profile.
part_off=$(( $(sfdisk -d "$CORPUS/disk.img" | sed -n 's/.*start= *\([0-9]*\).*/\1/p' | head -1) * 512 ))
trace() { # runs the trace on the mounted image in $work/cam
	loopdev=$(losetup -r -f --show -o "$part_off" "$work/cam/disk")
	mkdir -p "$work/cam.ext"
	mount -t ext4 -o ro,noload "$loopdev" "$work/cam.ext"
	find "$work/cam.ext" -xdev -printf '%s %p\n' >/dev/null
	# (awk, not head, picks the files: head would end the pipe early, which pipefail reports)
	find "$work/cam.ext" -xdev -type f | sort | awk 'NR % 5 == 0 && n++ < 300' | xargs -d '\n' head -q -c 65536 >/dev/null
	umount "$work/cam.ext"
	losetup -d "$loopdev"
	loopdev=
}
timed_trace() { # FLAGS... → seconds of the trace alone
	mount_cam "$work/cam" "$@"
	local s e
	s=$(date +%s.%N)
	trace
	e=$(date +%s.%N)
	umount_cam "$work/cam"
	echo "$e - $s" | bc -l
}
if part trace; then
drop_caches
timed_trace --record-profile="$work/boot.profile" >/dev/null # the recording run
tp=() tq=()
for round in $(seq "${TRACE_ROUNDS:-2}"); do
	drop_caches
	tp+=("$(timed_trace)")
	drop_caches
	tq+=("$(timed_trace --prefetch-profile="$work/boot.profile")")
done
t_plain=$(median "${tp[@]}")
t_prof=$(median "${tq[@]}")
table_header "boot-like trace (list ext4 tree, read heads of 300 files), cold, median of ${TRACE_ROUNDS:-2}" "no profile"
table_row "trace wall time: without vs with --prefetch-profile" "$(printf %.3f "$t_plain")" "$(printf %.3f "$t_prof")"
echo "profile: $(sed -n 3p "$work/boot.profile"); last camount stats: $(grep 'stats:' "$work/cam.err" | tail -1)"
fi
