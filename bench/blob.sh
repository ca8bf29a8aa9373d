#!/usr/bin/env bash
# make and extract of the corpus disk image (1.5 GiB ext4 .caibx), casync beside camount.
# Targets (issue 2): make >= 2x casync, extract >= 1.5x casync.
. "$(dirname "$0")/lib.sh"
ensure_corpus
command -v casync >/dev/null || { echo "bench/blob.sh: casync not installed" >&2; exit 1; }
W=$(mktemp -d /var/tmp/camount-bench-blob.XXXXXX)
trap 'rm -rf "$W"' EXIT
IMG=$CORPUS/disk.img
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# run_make TOOL STORE INDEX: one timed make; prints "wall cpu" (cpu = user+sys
# seconds). The input is read into the page cache first (untimed), so both
# tools read it from memory even if the kernel dropped it since the last run.
run_make() {
	local t
	cat "$IMG" >/dev/null
	sync
	t=$({ TIMEFORMAT='%R %U %S'; time "$1" make --store="$2" "$3" "$IMG" >/dev/null 2>&1; } 2>&1) ||
		{ echo "bench: $1 make failed" >&2; return 1; }
	echo "$t" | awk '{printf "%.3f %.3f\n", $1, $2 + $3}'
}

# Each make writes a fresh store (deleting one just before a run leaves the
# file system discarding blocks during it); the tools alternate, so load
# changes on a shared machine hit both alike.
ct=() mt=() cc=() mc=()
for ((i = 0; i < RUNS; i++)); do
	r=$(run_make casync "$W/c$i.castr" "$W/c.caibx")
	read -r w c <<<"$r"
	ct+=("$w") cc+=("$c")
	r=$(run_make "$CAMOUNT" "$W/m$i.castr" "$W/m.caibx")
	read -r w c <<<"$r"
	mt+=("$w") mc+=("$c")
done
echo "make runs (wall s): casync ${ct[*]}; camount ${mt[*]}; (CPU s): casync ${cc[*]}; camount ${mc[*]}" >&2
c_make=$(median "${ct[@]}")
m_make=$(median "${mt[@]}")
c_cpu=$(median "${cc[@]}")
m_cpu=$(median "${mc[@]}")
cmp "$W/c.caibx" "$W/m.caibx" || { echo "bench: indexes differ" >&2; exit 1; }
mv "$W/c0.castr" "$W/c.castr"
c_ext=$(median_time "rm -f $W/c.out; sync" casync extract --store="$W/c.castr" "$W/c.caibx" "$W/c.out")
m_ext=$(median_time "rm -f $W/m.out; sync" "$CAMOUNT" extract --store="$W/c.castr" "$W/c.caibx" "$W/m.out")
cmp "$W/c.out" "$IMG" && cmp "$W/m.out" "$IMG" || { echo "bench: extracted bytes differ" >&2; exit 1; }

table_header "blob make/extract, $(du -h --apparent-size "$IMG" | cut -f1) disk image, median of $RUNS (seconds), load average $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after, $(nproc) cores" casync
table_row "make (zstd, default chunk sizes)" "$c_make" "$m_make"
table_row "make, CPU (user+sys)" "$c_cpu" "$m_cpu"
table_row "extract (sparse output)" "$c_ext" "$m_ext"
