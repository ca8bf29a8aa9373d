#!/usr/bin/env bash
# make and extract of the corpus disk image (1.5 GiB ext4 .caibx), casync beside camount.
# Targets (issue 2): make >= 2x casync, extract >= 1.5x casync.
. "$(dirname "$0")/lib.sh"
ensure_corpus
command -v casync >/dev/null || { echo "bench/blob.sh: casync not installed" >&2; exit 1; }
W=$(mktemp -d /var/tmp/camount-bench-blob.XXXXXX)
trap 'rm -rf "$W"' EXIT
IMG=$CORPUS/disk.img
cat "$IMG" >/dev/null # both tools read the input from the page cache

# Each make writes a fresh store (deleting one just before a run leaves the
# file system discarding blocks during it); the tools alternate, so load
# changes on a shared machine hit both alike.
ct=() mt=()
for ((i = 0; i < RUNS; i++)); do
	sync
	ct+=("$(time_once casync make --store="$W/c$i.castr" "$W/c.caibx" "$IMG")")
	sync
	mt+=("$(time_once "$CAMOUNT" make --store="$W/m$i.castr" "$W/m.caibx" "$IMG")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f\n", m}'; }
c_make=$(median "${ct[@]}")
m_make=$(median "${mt[@]}")
cmp "$W/c.caibx" "$W/m.caibx" || { echo "bench: indexes differ" >&2; exit 1; }
mv "$W/c0.castr" "$W/c.castr"
c_ext=$(median_time "rm -f $W/c.out; sync" casync extract --store="$W/c.castr" "$W/c.caibx" "$W/c.out")
m_ext=$(median_time "rm -f $W/m.out; sync" "$CAMOUNT" extract --store="$W/c.castr" "$W/c.caibx" "$W/m.out")
cmp "$W/c.out" "$IMG" && cmp "$W/m.out" "$IMG" || { echo "bench: extracted bytes differ" >&2; exit 1; }

table_header "blob make/extract, $(du -h --apparent-size "$IMG" | cut -f1) disk image, median of $RUNS (seconds)" casync
table_row "make (zstd, default chunk sizes)" "$c_make" "$m_make"
table_row "extract (sparse output)" "$c_ext" "$m_ext"
