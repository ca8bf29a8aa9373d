#!/usr/bin/env bash
# bench/seed.sh: image updates with seeds (issue 12). v1 = the corpus disk.img
# (../shared/bench/mkcorpus.sh), v2 = v1 with about 5% of its used blocks
# changed (a second copy of some of its files written into its ext4), both in
# one store served by nginx behind a proxy adding 20 ms per request.
# Side by side: casync extract --seed=v1.img, desync extract --seed v1.caibx
# (its data beside it), camount extract --seed=v1.img (cold: scanned; warm:
# scan cache), camount extract --seed=v1.caibx, and camount mount --seed=v1.img
# + cat: wall time, chunks and bytes fetched (from nginx's access log).
# Every output is checked against v2 (cmp).
# Env: DELAY (default 20ms), SEED_RUNS (default 1: the peers take minutes).
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/seed.sh: needs root (loop mounts)" >&2; exit 1; }
DELAY=${DELAY:-20ms}
SEED_RUNS=${SEED_RUNS:-1}
ensure_corpus
ensure_desync

work=$(mktemp -d /tmp/camount-bench-seed.XXXXXX)
pids=()
cleanup() {
	set +e
	mountpoint -q "$work/mnt" 2>/dev/null && { fusermount3 -u "$work/mnt" 2>/dev/null || fusermount3 -uz "$work/mnt"; }
	mountpoint -q "$work/ext" 2>/dev/null && umount "$work/ext"
	mountpoint -q "$work/bt" 2>/dev/null && umount "$work/bt"
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	grep -q " $work/" /proc/mounts && { echo "bench: leaving $work (still mounted)" >&2; return; }
	rm -rf "$work"
}
trap cleanup EXIT

# v1 and v2, and one store holding both (the corpus store's chunks hard-linked).
V1=$work/srv/v1.img
mkdir -p "$work/srv"
cp --sparse=always "$CORPUS/disk.img" "$V1"
cp --sparse=always "$V1" "$work/v2.img"
cp -al "$CORPUS/store.castr" "$work/srv/store.castr"
cp "$CORPUS/disk.caibx" "$work/srv/v1.img.caibx" # desync's and camount's index seed: data beside it
part=$(sfdisk -d "$work/v2.img" | awk -F'[=,]' '/start=/ {print $2 * 512; exit}')
mkdir -p "$work/ext"
mount -o loop,offset="$part" "$work/v2.img" "$work/ext" # the loop device goes with umount
used=$(df -B1 --output=used "$work/ext" | tail -1)
want=$((used / 20))
# A second copy of the tree's files, in path order, up to 5% of the used bytes.
mkdir -p "$work/ext/copy"
find "$work/ext" -path "$work/ext/copy" -prune -o -type f -printf '%s %P\n' | sort -k2 |
	awk -v lim="$want" 'done { next } { t += $1; if (t > lim) { done = 1; next } sub(/^[0-9]+ /, ""); print }' |
	(cd "$work/ext" && xargs -r -d '\n' cp --parents -t copy)
umount "$work/ext"
casync make --store="$work/srv/store.castr" "$work/srv/v2.caibx" "$work/v2.img" >/dev/null
echo "v1 $(numfmt --to=iec "$(stat -c %s "$V1")")B, v2 = v1 with $(numfmt --to=iec "$want")B of files copied inside its ext4" >&2

# Tools: the delaying proxy in front of nginx (access log: one "URI STATUS" line a request).
start_nginx "$work/nginx" "$work/srv" log
pids+=("$NGINX_PID")
start_delay_proxy "$work" "$NGINX_PORT" "$DELAY"
pids+=("$PROXY_PID")
pxport=$PROXY_PORT
URL="http://127.0.0.1:$pxport"
STORE="$URL/store.castr"

# fetched: prints "CHUNKS BYTES" requested since the last call (bytes as stored), and resets the log.
fetched() {
	local n b
	n=$(grep -c '\.cacnk ' "$work/nginx/access.log" || true)
	b=$({ grep '\.cacnk ' "$work/nginx/access.log" || true; } | awk '{print $1}' | sed "s|^/|$work/srv/|" | xargs -r stat -c %s | awk '{s += $1} END {print s + 0}')
	: >"$work/nginx/access.log"
	echo "$n $b"
}

# run NAME CMD...: one timed run (caches dropped before); sets T_NAME, N_NAME, B_NAME and checks $work/out.img.
declare -A T N B
run() {
	local name=$1 ts=() i
	shift
	for ((i = 0; i < SEED_RUNS; i++)); do
		rm -rf "$work/out.img" "$work/xdg"
		[ "$name" = camount-warm ] && cp -a "$work/xdg-warm" "$work/xdg"
		drop_caches
		fetched >/dev/null
		export XDG_CACHE_HOME=$work/xdg
		ts+=("$(time_once "$@")")
		unset XDG_CACHE_HOME
		read -r N[$name] B[$name] < <(fetched)
		if [ -f "$work/out.img" ]; then cmp "$work/out.img" "$work/v2.img" || { echo "bench: $name wrote a wrong image" >&2; exit 1; }; fi
	done
	T[$name]=$(median "${ts[@]}")
}

run casync casync extract --seed="$V1" --store="$STORE" "$work/srv/v2.caibx" "$work/out.img"
run desync "$DESYNC" extract -s "$STORE" --seed "$work/srv/v1.img.caibx" "$work/srv/v2.caibx" "$work/out.img"
run camount-cold "$CAMOUNT" extract --seed="$V1" --store="$STORE" "$work/srv/v2.caibx" "$work/out.img"
# Warm: the scan cache of v1 made by the cold run.
rm -rf "$work/xdg-warm"
mkdir -p "$work/xdg-warm"
XDG_CACHE_HOME=$work/xdg-warm "$CAMOUNT" extract --seed="$V1" --store="$STORE" "$work/srv/v2.caibx" "$work/warm.img" >/dev/null 2>&1
rm -f "$work/warm.img"
run camount-warm "$CAMOUNT" extract --seed="$V1" --store="$STORE" "$work/srv/v2.caibx" "$work/out.img"
run camount-index "$CAMOUNT" extract --seed="$work/srv/v1.img.caibx" --store="$STORE" "$work/srv/v2.caibx" "$work/out.img"

# Lazy: mount v2 with v1 as seed (scanned in the background), cat the image.
lazy() {
	mkdir -p "$work/mnt"
	"$CAMOUNT" mount --seed="$V1" --store="$STORE" "$work/srv/v2.caibx" "$work/mnt" >"$work/mount.log" 2>&1 &
	local pid=$! i
	for ((i = 0; i < 300; i++)); do
		[ -e "$work/mnt/v2" ] && break
		sleep 0.05
	done
	cat "$work/mnt/v2" >"$work/out.img"
	fusermount3 -u "$work/mnt"
	wait "$pid"
}
run camount-mount lazy

# Reflinks: v1 and the output on one btrfs file system (a loop-mounted image
# file); the share of the seeded bytes the output shares with v1 (its
# extents also referenced elsewhere: btrfs filesystem du's Total minus
# Exclusive), casync and camount each extracting v2 with --seed=v1.img.
# Only the 4 KiB blocks wholly inside a seeded range can be cloned.
REFLINK=no
if command -v mkfs.btrfs >/dev/null && command -v btrfs >/dev/null; then
	imgsz=$(stat -c %s "$V1")
	truncate -s $((3 * imgsz + (256 << 20))) "$work/btrfs.img"
	mkfs.btrfs -q "$work/btrfs.img" >/dev/null 2>&1
	mkdir -p "$work/bt"
	if mount -o loop "$work/btrfs.img" "$work/bt" 2>/dev/null; then
		REFLINK=yes
	else
		echo "bench: cannot loop-mount a btrfs image; no reflink figures" >&2
	fi
fi
# shared FILE: bytes of FILE's extents shared with other files.
shared() {
	sync
	btrfs filesystem du --raw "$1" | awk 'NR == 2 { print $1 - $2 }'
}
if [ "$REFLINK" = yes ]; then
	cp --sparse=always "$V1" "$work/bt/v1.img"
	rm -f "$work/bt/out.img"
	casync extract --seed="$work/bt/v1.img" --store="$STORE" "$work/srv/v2.caibx" "$work/bt/out.img" >/dev/null 2>&1
	cmp "$work/bt/out.img" "$work/v2.img" || { echo "bench: casync wrote a wrong image on btrfs" >&2; exit 1; }
	SH_casync=$(shared "$work/bt/out.img")
	rm -f "$work/bt/out.img"
	XDG_CACHE_HOME=$work/xdg-bt "$CAMOUNT" extract --seed="$work/bt/v1.img" --reflink=yes --stats-json="$work/bt-stats.json" \
		--store="$STORE" "$work/srv/v2.caibx" "$work/bt/out.img" >/dev/null 2>&1
	cmp "$work/bt/out.img" "$work/v2.img" || { echo "bench: camount wrote a wrong image on btrfs" >&2; exit 1; }
	SH_camount=$(shared "$work/bt/out.img")
	seeded=$(sed -n 's/.*"bytes": \([0-9]*\).*/\1/p' "$work/bt-stats.json" | tail -1)
	reflinked=$(sed -n 's/.*"reflinked_bytes": \([0-9]*\).*/\1/p' "$work/bt-stats.json")
	rm -f "$work/bt/out.img" "$work/bt/v1.img"
	umount "$work/bt"
	rm -f "$work/btrfs.img"
	fetched >/dev/null
fi

total=$(stat -c %s "$work/v2.img")
table_header "update v1 -> v2 ($(numfmt --to=iec "$total")B image, ~5% of used blocks changed) over HTTP with $DELAY per request; median of $SEED_RUNS; chunks: requests at the server" "peer"
table_row "wall: casync --seed=v1.img vs camount" "${T[casync]}" "${T[camount-cold]}"
table_row "wall: desync --seed v1.caibx vs camount v1.img" "${T[desync]}" "${T[camount-cold]}"
table_row "wall: desync vs camount, both --seed=v1.caibx" "${T[desync]}" "${T[camount-index]}"
table_row "wall: casync vs camount, scan cache warm" "${T[casync]}" "${T[camount-warm]}"
table_row "wall: casync extract vs camount mount+cat" "${T[casync]}" "${T[camount-mount]}"
table_row "chunks fetched: casync vs camount" "${N[casync]}" "${N[camount-cold]}" " "
table_row "chunks fetched: desync vs camount" "${N[desync]}" "${N[camount-index]}" " "
table_row "chunks fetched: extract vs mount+cat (camount)" "${N[camount-cold]}" "${N[camount-mount]}" " "
table_row "MiB fetched: casync vs camount" "$(echo "scale=1; ${B[casync]} / 1048576" | bc)" "$(echo "scale=1; ${B[camount-cold]} / 1048576" | bc)" " "
table_row "MiB fetched: desync vs camount" "$(echo "scale=1; ${B[desync]} / 1048576" | bc)" "$(echo "scale=1; ${B[camount-index]} / 1048576" | bc)" " "
if [ "$REFLINK" = yes ] && [ "${seeded:-0}" -gt 0 ]; then
	table_header "reflinks on btrfs (loop-mounted image file): bytes of the output sharing extents with v1, of the $(numfmt --to=iec "$seeded")B camount seeded (${reflinked}B cloned); 1 run" "casync"
	table_row "share of seeded bytes reflinked (%)" "$(echo "scale=1; 100 * $SH_casync / $seeded" | bc)" "$(echo "scale=1; 100 * $SH_camount / $seeded" | bc)" " "
fi
