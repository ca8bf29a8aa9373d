#!/usr/bin/env bash
# S3 stores (issue 16), against a real S3 server on loopback (versitygw,
# posix backend, built once by scripts/versitygw.sh), on the reference
# corpus's disk image (../shared/bench/mkcorpus.sh):
#   publish: camount make --store=s3+http://… beside desync make -s s3+http://…
#     (chunk, compress and upload into an empty prefix)
#   cold full read from S3: camount mount + cat beside desync mount-index + cat,
#     camount extract beside desync extract (desync v0.9.3, benchmark only)
# Targets: publish >= 2x faster than desync, cold reads >= 3x.
# The reads run twice: with the page cache dropped (the server reads its
# files from this machine's disk too), and with the server's files read
# back into the page cache after the drop, as a server on a machine of its
# own keeps its hot objects in memory: the readers' caches are cold either
# way.
# S3_RUNS (default 1) runs of each measure; the median is shown.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/s3.sh: needs root (FUSE mounts, dropping caches)" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "bench/s3.sh: fusermount3 (fuse3) not installed" >&2; exit 1; }
S3_RUNS=${S3_RUNS:-1}
[ -n "${BENCH_QUICK:-}" ] && S3_RUNS=1
ensure_corpus
ensure_desync
VGW=$("$REPO/scripts/versitygw.sh")

mount_setup /var/tmp/camount-bench-s3.XXXXXX
root=$W/s3root
mkdir -p "$root/bucket"
port=$(free_port)
export AWS_ACCESS_KEY_ID=camountbench AWS_SECRET_ACCESS_KEY=camount-bench-secret-0123 AWS_REGION=us-east-1
export S3_ACCESS_KEY=$AWS_ACCESS_KEY_ID S3_SECRET_KEY=$AWS_SECRET_ACCESS_KEY S3_REGION=$AWS_REGION
"$VGW" --access "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY" --port "127.0.0.1:$port" --keep-alive --quiet posix "$root" >"$W/vgw.log" 2>&1 &
vgw=$!
s3_cleanup() {
	mount_cleanup
	kill "$vgw" 2>/dev/null
	wait "$vgw" 2>/dev/null
}
trap s3_cleanup EXIT
# mount_cleanup removes $W (and the bucket) once the server is gone too.
wait_port "$port"
S3=s3+http://127.0.0.1:$port/bucket
img=$CORPUS/disk.img
size=$(stat -c %s "$img")

# publish TOOL RUN: make the image into the empty prefix TOOL-RUN; prints seconds.
publish() {
	local pfx=$S3/$1-$2
	drop_caches
	case $1 in
	camount) time_once "$CAMOUNT" make --store="$pfx" "$W/$1-$2.caibx" "$img" ;;
	desync) time_once "$DESYNC" make -s "$pfx" "$W/$1-$2.caibx" "$img" ;;
	esac
}

ts_m=() ts_d=()
for ((i = 0; i < S3_RUNS; i++)); do
	ts_m+=("$(publish camount "$i")")
	ts_d+=("$(publish desync "$i")")
done
m_pub=$(MEDIAN_DIGITS=2 median "${ts_m[@]}")
d_pub=$(MEDIAN_DIGITS=2 median "${ts_d[@]}")
# camount's index is casync's (the corpus's disk.caibx was made by casync make).
cmp -s "$W/camount-0.caibx" "$CORPUS/disk.caibx" || { echo "bench/s3.sh: camount make's index differs from casync's disk.caibx" >&2; exit 1; }
chunks=$(find "$root/bucket/camount-0" -name '*.cacnk' | wc -l)
stored=$(du -sb "$root/bucket/camount-0" | cut -f1)

# add A B: A + B with two decimals.
add() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f\n", a + b}'; }

# cpu_s PID: the CPU seconds (user + system) process PID has used.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14 + $15) / t}' "/proc/$1/stat"; }

# Reads: both tools read the store camount published. Beside each read's
# wall time, its CPU time and the S3 server's are taken: on a machine where
# the server shares the cores, what the server spends serving the same
# requests to both tools bounds the wall-time ratio.
STORE=$S3/camount-0
INDEX=$W/camount-0.caibx

# cold: drops the page cache; with SERVER_WARM set, then reads the
# server's files of the store back into it.
cold() {
	drop_caches
	[ -z "$SERVER_WARM" ] || find "$root/bucket/camount-0" -type f -print0 | xargs -0 cat >/dev/null
}

# read_mounted TOOL: cold cat of the mounted image (to /dev/null); sets T (median
# seconds), C (median CPU seconds of the mount process) and S (of the server).
read_mounted() {
	local ts=() cs=() ss=() i c0 s0
	for ((i = 0; i < S3_RUNS; i++)); do
		case $1 in
		camount) mount_start "$CAMOUNT" mount --store="$STORE" "$INDEX" "$MNT" ;;
		desync) mount_start --listed "$DESYNC" mount-index -s "$STORE" "$INDEX" "$MNT" ;;
		esac
		cold
		c0=$(cpu_s "$MOUNT_PID") s0=$(cpu_s "$vgw")
		# cat to /dev/null: through a pipe (| wc -c) the copy into the
		# pipe and wc's reads took ~1.8 s a GiB more here (cat of 1 GiB
		# from a mount: 0.47 s to /dev/null, 2.23 s into wc -c), on the
		# cores the reader and the server share. The bytes are counted
		# after, from the page cache the cold read filled.
		time_mounted 'cat "$MNT"/* >/dev/null'
		cs+=("$(add "$(cpu_s "$MOUNT_PID")" "-$c0")") ss+=("$(add "$(cpu_s "$vgw")" "-$s0")")
		OUT=$(cat "$MNT"/* | wc -c)
		mount_stop
		[ "$OUT" = "$size" ] || { echo "bench/s3.sh: $1 mount read $OUT bytes of $size" >&2; exit 1; }
		ts+=("$WALL")
	done
	T=$(MEDIAN_DIGITS=2 median "${ts[@]}")
	C=$(MEDIAN_DIGITS=2 median "${cs[@]}")
	S=$(MEDIAN_DIGITS=2 median "${ss[@]}")
}

# extract_cold TOOL: cold extract to a file; sets T, C (CPU seconds of the
# tool) and S (of the server), medians.
extract_cold() {
	local ts=() cs=() ss=() i out=$W/extract.out s0 t TIMEFORMAT='%R %U %S'
	for ((i = 0; i < S3_RUNS; i++)); do
		rm -f "$out"
		cold
		s0=$(cpu_s "$vgw")
		case $1 in
		camount) t=$({ time "$CAMOUNT" extract --store="$STORE" "$INDEX" "$out" >/dev/null 2>&1 || true; } 2>&1) ;;
		desync) t=$({ time "$DESYNC" extract -s "$STORE" "$INDEX" "$out" >/dev/null 2>&1 || true; } 2>&1) ;;
		esac
		ss+=("$(add "$(cpu_s "$vgw")" "-$s0")")
		cmp "$out" "$img" || { echo "bench/s3.sh: $1 extract differs from the image (or failed: $t)" >&2; exit 1; }
		read -r wall user sys <<<"$t"
		ts+=("$wall") cs+=("$(add "$user" "$sys")")
	done
	rm -f "$out"
	T=$(MEDIAN_DIGITS=2 median "${ts[@]}")
	C=$(MEDIAN_DIGITS=2 median "${cs[@]}")
	S=$(MEDIAN_DIGITS=2 median "${ss[@]}")
}

table_header "S3 store on loopback (versitygw $(basename "$(dirname "$VGW")" | sed 's/.*-//'), posix backend), median of $S3_RUNS; $(numfmt --to=iec "$size") disk image, $chunks chunks, $(numfmt --to=iec "$stored") stored" desync
table_row "make + publish to S3 (desync make)" "$d_pub" "$m_pub"
echo "target: publish >= 2x"

# reads TITLE: the four cold reads, their table and the CPU table.
reads() {
	local load0 m_cat mc_cat ms_cat d_cat dc_cat ds_cat m_ext mc_ext ms_ext d_ext dc_ext ds_ext
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	read_mounted camount
	m_cat=$T mc_cat=$C ms_cat=$S
	read_mounted desync
	d_cat=$T dc_cat=$C ds_cat=$S
	extract_cold camount
	m_ext=$T mc_ext=$C ms_ext=$S
	extract_cold desync
	d_ext=$T dc_ext=$C ds_ext=$S
	table_header "$1, median of $S3_RUNS; load average before the reads: $load0" desync
	table_row "cold cat of a mount (desync mount-index)" "$d_cat" "$m_cat"
	table_row "cold extract (desync extract)" "$d_ext" "$m_ext"
	echo "target: cold reads >= 3x"
	table_header "CPU seconds of the same reads (the tool's; the S3 server's serving it; their sum)" desync
	table_row "cold cat: mount process CPU" "$dc_cat" "$mc_cat"
	table_row "cold cat: S3 server CPU" "$ds_cat" "$ms_cat"
	table_row "cold cat: both" "$(add "$dc_cat" "$ds_cat")" "$(add "$mc_cat" "$ms_cat")"
	table_row "cold extract: extract CPU" "$dc_ext" "$mc_ext"
	table_row "cold extract: S3 server CPU" "$ds_ext" "$ms_ext"
	table_row "cold extract: both" "$(add "$dc_ext" "$ds_ext")" "$(add "$mc_ext" "$ms_ext")"
}

SERVER_WARM=
reads "Cold reads, page cache dropped (the server reads its files from disk too)"
SERVER_WARM=1
reads "Cold reads, the server's files in its page cache (as a server with memory of its own)"
