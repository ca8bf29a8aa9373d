#!/usr/bin/env bash
# bench/casync-verbs.sh: casync's maintenance and inspection verbs side by
# side with camount's (issue 13): gc of the corpus store keeping disk.caibx
# only (share.caidx's chunks go; both on hard-linked copies of the store, the
# chunks left compared), stat of a file deep in share.caidx (random access
# for camount, a decoder run for casync), and digest of disk.caibx (the whole
# image read and hashed). Median of RUNS (default 3) wall times.
. "$(dirname "$0")/lib.sh"
ensure_corpus
# camount gc keeps chunks modified within --grace plus two seconds (coarse
# file-system clocks); a corpus built just now must age past that first.
newest=$(find "$CORPUS/store.castr" -type f -printf '%T@\n' | sort -g | tail -n 1)
wait_s=$(echo "$newest + 3 - $(date +%s.%N)" | bc -l)
[ "$(echo "$wait_s > 0" | bc -l)" = 1 ] && sleep "$wait_s"

work=$(mktemp -d /tmp/camount-bench-verbs.XXXXXX)
trap 'rm -rf "$work"' EXIT
copy() { rm -rf "$work/$1"; cp -al "$CORPUS/store.castr" "$work/$1"; }

table_header "casync verbs on the corpus ($RUNS runs each, median)" casync
# gc: camount with --grace=0, as casync keeps no young chunks.
c=$(median_time 'copy c.castr' casync gc --store="$work/c.castr" "$CORPUS/disk.caibx")
m=$(median_time 'copy m.castr' "$CAMOUNT" gc --grace=0 --store="$work/m.castr" "$CORPUS/disk.caibx")
diff <(cd "$work/c.castr" && find . -type f | sort) <(cd "$work/m.castr" && find . -type f | sort) >/dev/null ||
	{ echo "bench: casync gc and camount gc left different chunks" >&2; exit 1; }
table_row "gc (keep disk.caibx; drop share's chunks)" "$c" "$m"

# stat of the last regular file casync lists in share.caidx.
path=$(casync list --store="$CORPUS/store.castr" "$CORPUS/share.caidx" | awk '$1 ~ /^-/ {p=$2} END {print p}')
[ "$(casync stat --store="$CORPUS/store.castr" "$CORPUS/share.caidx" "$path")" = \
	"$("$CAMOUNT" stat --store="$CORPUS/store.castr" "$CORPUS/share.caidx" "$path")" ] ||
	{ echo "bench: stat output differs from casync's for $path" >&2; exit 1; }
c=$(median_time : casync stat --store="$CORPUS/store.castr" "$CORPUS/share.caidx" "$path")
m=$(median_time : "$CAMOUNT" stat --store="$CORPUS/store.castr" "$CORPUS/share.caidx" "$path")
table_row "stat (a file at the end of share.caidx)" "$c" "$m"

c=$(median_time : casync digest --store="$CORPUS/store.castr" "$CORPUS/disk.caibx")
m=$(median_time : "$CAMOUNT" digest --store="$CORPUS/store.castr" "$CORPUS/disk.caibx")
table_row "digest disk.caibx" "$c" "$m"
