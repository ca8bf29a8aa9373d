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

c_make=$(median_time "rm -rf $W/c.castr" casync make --store="$W/c.castr" "$W/c.caibx" "$IMG")
m_make=$(median_time "rm -rf $W/m.castr" "$CAMOUNT" make --store="$W/m.castr" "$W/m.caibx" "$IMG")
cmp "$W/c.caibx" "$W/m.caibx" || { echo "bench: indexes differ" >&2; exit 1; }
c_ext=$(median_time "rm -f $W/c.out" casync extract --store="$W/c.castr" "$W/c.caibx" "$W/c.out")
m_ext=$(median_time "rm -f $W/m.out" "$CAMOUNT" extract --store="$W/c.castr" "$W/c.caibx" "$W/m.out")
cmp "$W/c.out" "$IMG" && cmp "$W/m.out" "$IMG" || { echo "bench: extracted bytes differ" >&2; exit 1; }

table_header "blob make/extract, $(du -h --apparent-size "$IMG" | cut -f1) disk image, median of $RUNS (seconds)" casync
table_row "make (zstd, default chunk sizes)" "$c_make" "$m_make"
table_row "extract (sparse output)" "$c_ext" "$m_ext"
