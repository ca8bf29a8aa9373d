# Shared helpers for bench/*.sh. Source it: . "$(dirname "$0")/lib.sh"
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
CAMOUNT=${CAMOUNT:-$REPO/bin/camount}
[ -x "$CAMOUNT" ] || { echo "bench: $CAMOUNT is missing: make bench (or make build) builds it; or set CAMOUNT=" >&2; exit 1; }
# BENCH_QUICK=1 (bench/run.sh --quick, which make test runs): every benchmark
# once on a small corpus, to prove that each still runs to its table; the
# figures of a quick run mean nothing.
if [ -n "${BENCH_QUICK:-}" ]; then
	CORPUS=${CORPUS:-$REPO/corpus-quick}
	export RUNS=1 MOUNT_RUNS=1 NBD_BENCH_RUNS=1 NBD_BENCH_COLD_RUNS=1 REMOTE_BENCH_RUNS=1 FULL_RUNS=1 RAND_N=20 RAND_ROUNDS=1 TRACE_ROUNDS=1
	# The tree the corpus's share.caidx was made of (catar.sh makes its own images of it).
	SHARE_TREE=$CORPUS/share
else
	# The reference corpus lives in the checkout (git ignores it), or at $CORPUS.
	CORPUS=${CORPUS:-$REPO/corpus}
	SHARE_TREE=/usr/share
fi
RUNS=${RUNS:-3}
# Peer programs built for the benchmarks only (desync) are kept here.
BENCH_TOOLS=${BENCH_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/camount-bench}

# ensure_corpus builds the corpus once: the reference corpus
# (../shared/bench/mkcorpus.sh), or with BENCH_QUICK a small one of the same
# shape (make_quick_corpus).
ensure_corpus() {
	if [ -f "$CORPUS/disk.caibx" ] && [ -f "$CORPUS/share.caidx" ]; then
		return 0
	fi
	if [ -n "${BENCH_QUICK:-}" ]; then
		make_quick_corpus "$CORPUS" >&2
		return
	fi
	local mk
	for mk in "$REPO/../shared/bench/mkcorpus.sh" /work/shared/bench/mkcorpus.sh; do
		[ -f "$mk" ] && break
	done
	[ -f "$mk" ] || { echo "bench: the reference corpus needs ../shared/bench/mkcorpus.sh beside the checkout (or set CORPUS= to a built one)" >&2; return 1; }
	bash "$mk" "$CORPUS" >&2
}

# make_quick_corpus DIR: the reference corpus's layout at a small scale:
# disk.img (96 MiB sparse GPT image, one ext4 partition holding some of
# /usr/bin), disk.caibx, share/ (a copy of /usr/share/perl5 and
# /usr/share/common-licenses) and its share.caidx, all in store.castr, made
# by casync as mkcorpus.sh does.
make_quick_corpus() {
	local dir=$1 start size loop mnt
	mkdir -p "$dir"
	rm -rf "$dir/disk.img" "$dir/disk.caibx" "$dir/share" "$dir/share.caidx" "$dir/store.castr"
	truncate -s 96M "$dir/disk.img"
	printf 'label: gpt\n,,L\n' | sfdisk -q "$dir/disk.img"
	start=$(sfdisk -d "$dir/disk.img" | sed -n 's/.*start= *\([0-9]*\).*/\1/p')
	size=$(sfdisk -d "$dir/disk.img" | sed -n 's/.*size= *\([0-9]*\).*/\1/p')
	loop=$(losetup -f --show -o $((start * 512)) --sizelimit $((size * 512)) "$dir/disk.img")
	mnt=$(mktemp -d)
	mkfs.ext4 -q -L benchquick "$loop"
	mount "$loop" "$mnt"
	mkdir "$mnt/bin"
	# About 40 MiB of /usr/bin, the same files on every run of one machine.
	# awk reads its input to the end (next, not exit): an early exit would
	# kill sort with SIGPIPE, which pipefail turns into a failed build.
	find /usr/bin -maxdepth 1 -type f -size -4M -printf '%s %p\n' | sort -k2 |
		awk -v lim=$((40 << 20)) '{ t += $1; if (t > lim) next; sub(/^[0-9]+ /, ""); print }' |
		xargs -r -d '\n' cp -a -t "$mnt/bin"
	umount "$mnt"
	losetup -d "$loop"
	rmdir "$mnt"
	mkdir -p "$dir/share"
	cp -a /usr/share/perl5 /usr/share/common-licenses "$dir/share/"
	casync make --store="$dir/store.castr" "$dir/disk.caibx" "$dir/disk.img" >/dev/null
	casync make --store="$dir/store.castr" "$dir/share.caidx" "$dir/share" >/dev/null
	echo "quick corpus ready in $dir: $(du -sh "$dir/store.castr" | cut -f1) store"
}

# ensure_desync sets DESYNC to a desync v0.9.3 binary, built once into
# $BENCH_TOOLS for the comparisons (benchmark only). The module proxy may
# refuse the version list `go install …@v0.9.3` asks for, so it is built in
# a scratch module that requires that exact version.
ensure_desync() {
	DESYNC=${DESYNC:-$BENCH_TOOLS/desync}
	[ -x "$DESYNC" ] && return 0
	echo "bench: building desync v0.9.3 into $(dirname "$DESYNC") (benchmark only)" >&2
	local d
	mkdir -p "$(dirname "$DESYNC")"
	d=$(mktemp -d)
	(cd "$d" && printf 'module desyncbuild\n\ngo 1.22\n\nrequire github.com/folbricht/desync v0.9.3\n' >go.mod &&
		GOFLAGS=-mod=mod go mod download github.com/folbricht/desync@v0.9.3 &&
		GOFLAGS=-mod=mod go build -o "$DESYNC.tmp" github.com/folbricht/desync/cmd/desync) >&2 &&
		mv "$DESYNC.tmp" "$DESYNC"
	local rc=$?
	rm -rf "$d"
	[ $rc -eq 0 ] || { echo "bench: could not build desync v0.9.3" >&2; return 1; }
}

# time_once CMD... : prints the wall time of one run in seconds (output discarded).
time_once() {
	local s e err
	err=$(mktemp)
	s=$(date +%s.%N)
	"$@" >/dev/null 2>"$err" || {
		echo "bench: command failed: $*; its last error lines:" >&2
		tail -n 5 "$err" | sed 's/^/  /' >&2
		rm -f "$err"
		return 1
	}
	rm -f "$err"
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

# drop_caches empties the page cache before a cold run. BENCH_NO_DROP=1 makes
# it a no-op, for runs beside another benchmark whose cold runs depend on
# their own drops: the "cold" figures are then warm-page-cache ones (the
# tools' own caches are still empty; the files they read are not).
drop_caches() {
	[ -n "${BENCH_NO_DROP:-}" ] && return 0
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

# Cold runs on FUSE mounts (bench/mount.sh, bench/tools/cold.sh): a fresh mount
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

# free_port: prints a loopback TCP port nothing listens on, below the
# kernel's range of ephemeral ports: a port an outgoing connection uses as
# its local end takes no connection, yet a server cannot bind it (a CI run
# lost nginx so).
free_port() {
	local p lo _
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
	[ "$lo" -gt 12000 ] 2>/dev/null || lo=50000
	while :; do
		p=$((10000 + RANDOM % (lo - 10000)))
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

# start_nginx DIR ROOT [log|bytes]: serves ROOT over HTTP on a free loopback port,
# as a CDN serves a casync store; config, logs and temp files go under DIR.
# With "log", DIR/access.log gets one "URI STATUS" line a request; with
# "bytes", "URI STATUS BODY_BYTES". Sets
# NGINX_PORT and NGINX_PID (the caller kills it) and waits until it listens.
start_nginx() {
	local dir=$1 root=$2 alog=off
	case "${3:-}" in
	log) alog="$dir/access.log plain" ;;
	bytes) alog="$dir/access.log bytes" ;;
	esac
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
  log_format bytes '\$request_uri \$status \$body_bytes_sent';
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

# start_delay_proxy DIR UPSTREAM_PORT DELAY: builds bench/prefetchtool into
# DIR (PREFETCHTOOL: also its randread and pct tools) and starts its proxy,
# adding DELAY to every request to 127.0.0.1:UPSTREAM_PORT, as a store across
# a slow network; its log goes to DIR/proxy.log. Sets PROXY_PORT and
# PROXY_PID (the caller kills it) and waits until it listens.
start_delay_proxy() {
	local dir=$1 up=$2 delay=$3
	PREFETCHTOOL=$dir/prefetchtool
	[ -x "$PREFETCHTOOL" ] || (cd "$REPO" && go build -o "$PREFETCHTOOL" ./bench/prefetchtool)
	PROXY_PORT=$(free_port)
	"$PREFETCHTOOL" proxy -listen "127.0.0.1:$PROXY_PORT" -upstream "http://127.0.0.1:$up" -delay "$delay" 2>"$dir/proxy.log" &
	PROXY_PID=$!
	wait_port "$PROXY_PORT"
}
