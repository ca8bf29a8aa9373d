#!/usr/bin/env bash
# Tree images: make (.caidx and .catar), extract and a full list of a real
# ~50,000-entry tree (/usr/share, or $TREE), casync beside camount; then
# random lookups through a Blob (chunks touched per lookup).
# Targets (issue 3): make >= 1.5x casync, extract >= 1.5x, lookup <= 3 chunk reads.
. "$(dirname "$0")/lib.sh"
command -v casync >/dev/null || { echo "bench/catar.sh: casync not installed" >&2; exit 1; }
TREE=${TREE:-$SHARE_TREE}
W=$(mktemp -d /var/tmp/camount-bench-catar.XXXXXX)
trap 'chattr -R -i -a "$W" 2>/dev/null; rm -rf "$W"' EXIT
entries=$(find "$TREE" | wc -l)

# pair SETUP_C CMD_C -- SETUP_M CMD_M: runs casync and camount alternately
# RUNS times (each after its untimed setup and a sync, so that neither pays
# for the other's dirty pages) and sets C and M to the median seconds.
pair() {
	local sc=$1 sm=$2 i tc=() tm=()
	local cc=$3 cm=$4
	for ((i = 0; i < RUNS; i++)); do
		eval "$sc"; sync
		tc+=("$(eval "time_once $cc")")
		eval "$sm"; sync
		tm+=("$(eval "time_once $cm")")
	done
	C=$(median "${tc[@]}")
	M=$(median "${tm[@]}")
}
tar cf - "$TREE" 2>/dev/null >/dev/null # both tools read the tree from the page cache

pair "rm -rf $W/c.castr" "rm -rf $W/m.castr" \
	"casync make --store=$W/c.castr $W/c.caidx $TREE" "$CAMOUNT make --store=$W/m.castr $W/m.caidx $TREE"
c_make=$C m_make=$M
cmp "$W/c.caidx" "$W/m.caidx" || { echo "bench: indexes differ" >&2; exit 1; }
pair "rm -f $W/c.catar" "rm -f $W/m.catar" "casync make $W/c.catar $TREE" "$CAMOUNT make $W/m.catar $TREE"
c_tar=$C m_tar=$M
cmp "$W/c.catar" "$W/m.catar" || { echo "bench: archives differ" >&2; exit 1; }
rm -rf "$W/m.catar" "$W/m.castr"
pair "rm -rf $W/c.out" "rm -rf $W/m.out" \
	"casync extract --store=$W/c.castr $W/c.caidx $W/c.out" "$CAMOUNT extract --store=$W/c.castr $W/c.caidx $W/m.out"
c_ext=$C m_ext=$M
[ "$(casync digest "$W/m.out")" = "$(casync digest "$W/c.out")" ] || { echo "bench: extracted trees differ" >&2; exit 1; }
pair "rm -rf $W/c.out" "rm -rf $W/m.out" "casync extract $W/c.catar $W/c.out" "$CAMOUNT extract $W/c.catar $W/m.out"
c_cext=$C m_cext=$M
rm -rf "$W/c.out" "$W/m.out"
pair "" "" "casync list --store=$W/c.castr $W/c.caidx" "$CAMOUNT list --store=$W/c.castr $W/c.caidx"
c_list=$C m_list=$M
[ "$(casync list --store="$W/c.castr" "$W/c.caidx" | sha256sum)" = "$("$CAMOUNT" list --store="$W/c.castr" "$W/c.caidx" | sha256sum)" ] ||
	{ echo "bench: list output differs" >&2; exit 1; }
pair "" "" "casync mtree $W/c.catar" "$CAMOUNT mtree $W/c.catar"
c_mtree=$C m_mtree=$M

table_header "tree images, $TREE ($entries entries, $(du -sh --apparent-size "$W/c.catar" | cut -f1) archive), median of $RUNS alternating runs (seconds), load average $(cut -d' ' -f1 /proc/loadavg)" casync
table_row "make .caidx (zstd, default chunk sizes)" "$c_make" "$m_make"
table_row "make .catar" "$c_tar" "$m_tar"
table_row "extract .caidx" "$c_ext" "$m_ext"
table_row "extract .catar" "$c_cext" "$m_cext"
table_row "list .caidx (all entries)" "$c_list" "$m_list"
table_row "mtree .catar (all entries, payload digests)" "$c_mtree" "$m_mtree"

echo
echo "random lookups through a Blob (camount only; casync has no equivalent):"
(cd "$REPO" && go run ./bench/lookup --store="$W/c.castr" -n 10000 "$W/c.caidx") | grep -v '^PERCALL'
