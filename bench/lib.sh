# Shared helpers for bench/*.sh. Source it: . "$(dirname "$0")/lib.sh"
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
CAMOUNT=${CAMOUNT:-$REPO/bin/camount}
CORPUS=${CORPUS:-/work/corpus}
RUNS=${RUNS:-3}

# ensure_corpus builds the reference corpus once (../shared/bench/mkcorpus.sh).
ensure_corpus() {
	if [ ! -f "$CORPUS/disk.caibx" ] || [ ! -f "$CORPUS/share.caidx" ]; then
		local mk
		for mk in "$REPO/../shared/bench/mkcorpus.sh" /work/shared/bench/mkcorpus.sh; do
			[ -f "$mk" ] && break
		done
		bash "$mk" "$CORPUS" >&2
	fi
}

# time_once CMD... : prints the wall time of one run in seconds (output discarded).
time_once() {
	local s e
	s=$(date +%s.%N)
	"$@" >/dev/null 2>&1 || { echo "bench: command failed: $*" >&2; return 1; }
	e=$(date +%s.%N)
	echo "$e - $s" | bc -l
}

# median_time SETUP CMD... : runs SETUP (a shell string, untimed) then CMD, RUNS times; prints the median seconds.
median_time() {
	local setup=$1; shift
	local ts=() i
	for ((i = 0; i < RUNS; i++)); do
		eval "$setup"
		ts+=("$(time_once "$@")")
	done
	median "${ts[@]}"
}

# median VALUES...: prints the median of VALUES with MEDIAN_DIGITS decimals
# (default 3).
median() {
	printf '%s\n' "$@" | sort -g | awk -v f="%.${MEDIAN_DIGITS:-3}f\n" '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf f, m}'
}

table_header() {
	printf '\n%s\n' "$1"
	printf '%-44s %12s %12s %8s\n' "measure" "${2:-peer}" "camount" "ratio"
	printf '%-44s %12s %12s %8s\n' "-------" "----" "-------" "-----"
}

# table_row MEASURE PEER CAMOUNT [UNIT]: ratio = peer/camount (>1: camount is faster/smaller).
table_row() {
	local ratio
	ratio=$(echo "scale=2; $2 / $3" | bc -l 2>/dev/null || echo "?")
	printf '%-44s %12s %12s %7sx\n' "$1" "$2${4:-s}" "$3${4:-s}" "$ratio"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# Cold runs on FUSE mounts (bench/mount.sh, bench/cold.sh): a fresh mount
# at MNT for each run, caches dropped, one timed command, unmount.

# mount_setup TEMPLATE: makes the work directory W (mktemp -d TEMPLATE)
# holding the mount point MNT and the mount's output MOUNT_LOG; on exit
# mount_cleanup unmounts, stops the mount process and removes W.
mount_setup() {
	W=$(mktemp -d "$1")
	MNT=$W/mnt MOUNT_LOG=$W/log MOUNT_PID=
	mkdir -p "$MNT"
	trap mount_cleanup EXIT
}

mount_cleanup() {
	if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true; fi
	[ -n "$MOUNT_PID" ] && { kill "$MOUNT_PID" 2>/dev/null; wait "$MOUNT_PID" 2>/dev/null; } || true
	rm -rf "$W"
}

# mount_start [--listed] CMD...: runs the mount command CMD (which mounts at
# MNT) in the background, output to MOUNT_LOG, sets MOUNT_PID and waits up to
# 30 s until MNT is a mount point and, with --listed, its root lists
# something (casync mount shows the mount point before it serves). Exits
# with the log if it does not mount.
mount_start() {
	local listed= i
	[ "$1" = --listed ] && { listed=1; shift; }
	"$@" >"$MOUNT_LOG" 2>&1 &
	MOUNT_PID=$!
	for ((i = 0; i < 300; i++)); do
		mountpoint -q "$MNT" && { [ -z "$listed" ] || [ -n "$(ls -A "$MNT" 2>/dev/null)" ]; } && return 0
		kill -0 "$MOUNT_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench/${0##*/}: $* did not mount:" >&2
	cat "$MOUNT_LOG" >&2
	exit 1
}

# time_mounted CMD: runs the shell command CMD (which reads $MNT) once and
# sets OUT (its output), WALL (seconds) and IDLE (the machine's idle CPU
# seconds meanwhile). Exits if CMD fails. Drop the caches before.
time_mounted() {
	local s e i0 i1
	i0=$(awk '/^cpu /{print $5+$6}' /proc/stat)
	s=$(date +%s.%N)
	OUT=$(MNT=$MNT bash -c "$1") || { echo "bench/${0##*/}: $1 failed" >&2; exit 1; }
	e=$(date +%s.%N)
	i1=$(awk '/^cpu /{print $5+$6}' /proc/stat)
	WALL=$(echo "$e - $s" | bc -l)
	IDLE=$(echo "($i1 - $i0) / 100" | bc -l)
}

# mount_stop: sets MOUNT_RSS to the mount process's peak RSS (KiB), unmounts
# MNT (lazily if it stays busy) and waits for the process to end.
mount_stop() {
	MOUNT_RSS=$(awk '/^VmHWM/ {print $2}' "/proc/$MOUNT_PID/status" 2>/dev/null || echo 0)
	fusermount3 -u "$MNT" 2>/dev/null || { sleep 1; fusermount3 -uz "$MNT"; }
	wait "$MOUNT_PID" 2>/dev/null || true
	MOUNT_PID=
}

# free_port: prints a loopback TCP port nothing listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# wait_port PORT: waits (up to 5 s) until something listens on PORT.
wait_port() {
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench: nothing listens on port $1" >&2
	return 1
}

# start_nginx DIR ROOT [log]: serves ROOT over HTTP on a free loopback port,
# as a CDN serves a casync store; config, logs and temp files go under DIR.
# With "log", DIR/access.log gets one "URI STATUS" line a request. Sets
# NGINX_PORT and NGINX_PID (the caller kills it) and waits until it listens.
start_nginx() {
	local dir=$1 root=$2 alog=off
	[ "${3:-}" = log ] && alog="$dir/access.log plain"
	NGINX_PORT=$(free_port)
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<NGINX
user root;
daemon off;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  default_type application/octet-stream;
  log_format plain '\$request_uri \$status';
  access_log $alog;
  client_body_temp_path $dir/client;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  sendfile on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$NGINX_PORT; root $root; }
}
NGINX
	nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
	NGINX_PID=$!
	wait_port "$NGINX_PORT"
}
