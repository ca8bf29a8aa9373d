#!/usr/bin/env bash
# bench/makecache.sh: re-making a tree index with casync's make-time cache
# (casync make --cache=DIR) beside camount's (make --make-cache=DIR), issue
# 13: the first make (filling the cache), then re-makes of the unchanged tree
# with and without the cache, the store already holding every chunk. The
# tree is /usr/share (or $TREE); the indexes must be identical. Median of
# RUNS (default 3) wall times, casync and camount alternately.
. "$(dirname "$0")/lib.sh"
command -v casync >/dev/null || { echo "bench/makecache.sh: casync not installed" >&2; exit 1; }
ensure_corpus
TREE=${TREE:-$SHARE_TREE}
W=$(mktemp -d /var/tmp/camount-bench-makecache.XXXXXX)
trap 'rm -rf "$W"' EXIT
tar cf - "$TREE" 2>/dev/null >/dev/null # both read the tree from the page cache

# pair CMD_C CMD_M: RUNS alternating runs; sets C and M to the medians.
pair() {
	local i tc=() tm=()
	for ((i = 0; i < RUNS; i++)); do
		tc+=("$(eval "time_once $1")")
		tm+=("$(eval "time_once $2")")
	done
	C=$(median "${tc[@]}")
	M=$(median "${tm[@]}")
}
same() {
	cmp -s "$W/$1" "$W/$2" || { echo "bench/makecache.sh: $1 and $2 differ" >&2; exit 1; }
}

table_header "make of a tree index with the make cache ($(find "$TREE" | wc -l) entries; re-makes: $RUNS runs, median)" casync
c=$(median "$(time_once casync make --cache="$W/cc" --store="$W/c.castr" "$W/c.caidx" "$TREE")")
m=$(median "$(time_once "$CAMOUNT" make --make-cache="$W/mc" --store="$W/m.castr" "$W/m.caidx" "$TREE")")
same c.caidx m.caidx
table_row "first make, filling the cache (one run)" "$c" "$m"
pair "casync make --store=$W/c.castr $W/c2.caidx $TREE" "$CAMOUNT make --store=$W/m.castr $W/m2.caidx $TREE"
same c.caidx c2.caidx
same c.caidx m2.caidx
table_row "re-make, unchanged, no cache" "$C" "$M"
pair "casync make --cache=$W/cc --store=$W/c.castr $W/c3.caidx $TREE" "$CAMOUNT make --make-cache=$W/mc --store=$W/m.castr $W/m3.caidx $TREE"
same c.caidx c3.caidx
same c.caidx m3.caidx
table_row "re-make, unchanged, with the cache" "$C" "$M"
