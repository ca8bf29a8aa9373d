#!/usr/bin/env bash
# Remote images: the corpus disk image (.caibx, 1.5 GiB) served by nginx on
# 127.0.0.1, as a CDN would serve a casync store.
#   1. `fdisk -l` of the image through `camount mount` of the index URL:
#      wall time and chunks fetched (nginx access log lines). casync cannot
#      read a remote blob lazily without /dev/nbd (casync mkdev), so its
#      column is `casync extract` of the whole image, then fdisk -l.
#   2. a full read: `casync extract` against `camount extract` from the same
#      HTTP store, alternating, best of RUNS (nginx serves from the page cache).
# Targets (issue 5): fdisk -l fetches <= 2 chunks; full read >= 5x casync.
. "$(dirname "$0")/lib.sh"
RUNS=${REMOTE_BENCH_RUNS:-3}
ensure_corpus
for c in casync nginx fdisk; do
	command -v $c >/dev/null || { echo "bench/remote.sh: $c is not installed (make deps)" >&2; exit 1; }
done
W=$(mktemp -d /var/tmp/camount-bench-remote.XXXXXX)
ngx_pid=""
mnt_pid=""
cleanup() {
	if [ -n "$mnt_pid" ]; then
		"$CAMOUNT" umount "$W/mnt" >/dev/null 2>&1 || true
		kill "$mnt_pid" 2>/dev/null || true
	fi
	[ -n "$ngx_pid" ] && kill "$ngx_pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

start_nginx "$W/ngx" "$CORPUS" log
ngx_pid=$NGINX_PID
port=$NGINX_PORT
URL=http://127.0.0.1:$port
STORE=$URL/store.castr
ALOG=$W/ngx/access.log
chunks_fetched() { grep -c '\.cacnk 200' "$ALOG" || true; }
now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l | awk '{printf "%.3f", $1}'; }

# Warm the server's page cache, so both tools see the same server. (find, not
# a glob: the corpus store's ~60,000 chunk files are more than one command line takes.)
find "$CORPUS/store.castr" -type f -exec cat {} + >/dev/null

# 1. fdisk -l through a mount of the index URL.
mkdir -p "$W/mnt"
t0=$(now)
"$CAMOUNT" mount --store="$STORE" "$URL/disk.caibx" "$W/mnt" >"$W/mount.out" 2>"$W/mount.err" &
mnt_pid=$!
for ((i = 0; i < 200; i++)); do
	grep -q mounted "$W/mount.out" 2>/dev/null && break
	sleep 0.05
done
[ -f "$W/mnt/disk" ] || { echo "bench/remote.sh: mount failed:" >&2; cat "$W/mount.err" >&2; exit 1; }
before=$(chunks_fetched)
fdisk -l "$W/mnt/disk" >"$W/fdisk.cam"
t1=$(now)
sleep 0.5 # let readahead started by fdisk's reads show in the log
m_fdisk_chunks=$(($(chunks_fetched) - before))
m_fdisk_time=$(elapsed "$t0" "$t1")
"$CAMOUNT" umount "$W/mnt" >/dev/null 2>&1 || true
wait "$mnt_pid" 2>/dev/null || true
mnt_pid=""

before=$(chunks_fetched)
t0=$(now)
casync extract --store="$STORE" "$URL/disk.caibx" "$W/c.img" 2>/dev/null
fdisk -l "$W/c.img" >"$W/fdisk.cas"
t1=$(now)
c_fdisk_chunks=$(($(chunks_fetched) - before))
c_fdisk_time=$(elapsed "$t0" "$t1")
sed -i "s|$W/mnt/disk|IMG|; s|$W/c.img|IMG|; s/  */ /g" "$W/fdisk.cam" "$W/fdisk.cas"
cmp -s "$W/fdisk.cam" "$W/fdisk.cas" || { echo "bench/remote.sh: fdisk -l output differs" >&2; diff "$W/fdisk.cas" "$W/fdisk.cam" >&2; exit 1; }
rm -f "$W/c.img"

# 2. Full read from the HTTP store, alternating casync and camount.
# Wall time (best of RUNS) and CPU time (user+sys, children included) of
# that run; the machine's load average is printed with the table.
c_best=""
m_best=""
TIMEFORMAT='%R %U %S'
for ((r = 0; r < RUNS; r++)); do
	rm -f "$W/c.out" "$W/m.out"
	{ time casync extract --store="$STORE" "$CORPUS/disk.caibx" "$W/c.out" 2>/dev/null; } 2>"$W/c.time"
	before=$(chunks_fetched)
	{ time "$CAMOUNT" extract --store="$STORE" "$CORPUS/disk.caibx" "$W/m.out" 2>/dev/null; } 2>"$W/m.time"
	m_chunks=$(($(chunks_fetched) - before))
	read -r c cu cs <"$W/c.time"
	read -r m mu ms <"$W/m.time"
	if [ -z "$c_best" ] || [ "$(echo "$c < $c_best" | bc -l)" = 1 ]; then c_best=$c; c_cpu=$(echo "$cu + $cs" | bc -l); fi
	if [ -z "$m_best" ] || [ "$(echo "$m < $m_best" | bc -l)" = 1 ]; then m_best=$m; m_cpu=$(echo "$mu + $ms" | bc -l); fi
done
cmp "$W/c.out" "$CORPUS/disk.img" && cmp "$W/m.out" "$CORPUS/disk.img" || { echo "bench/remote.sh: extracted bytes differ" >&2; exit 1; }
distinct=$("$CAMOUNT" info --json "$CORPUS/disk.caibx" | sed -n 's/.*"distinct_chunks": *\([0-9]*\).*/\1/p')
zero=$("$CAMOUNT" info --json "$CORPUS/disk.caibx" | sed -n 's/.*"zero_chunks": *\([0-9]*\).*/\1/p')

table_header "remote .caibx over HTTP (nginx on 127.0.0.1), $(du -h --apparent-size "$CORPUS/disk.img" | cut -f1) disk image" casync
table_row "fdisk -l: chunks fetched (casync: extract)" "$c_fdisk_chunks" "$m_fdisk_chunks" " "
table_row "fdisk -l: seconds (camount: mount+fdisk)" "$c_fdisk_time" "$m_fdisk_time"
table_row "full read from HTTP store, best of $RUNS" "$c_best" "$m_best"
table_row "full read: CPU seconds of that run" "$c_cpu" "$m_cpu"
table_row "full read: chunks fetched ($distinct distinct)" "$c_fdisk_chunks" "$m_chunks" " "
echo "(image: $distinct distinct chunks, $zero zero chunks never fetched by camount; load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores)"
