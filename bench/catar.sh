#!/usr/bin/env bash
# Tree images: make (.caidx and .catar), extract and a full list of a real
# ~50,000-entry tree (/usr/share, or $TREE), casync beside camount; then
# random lookups through a Blob (chunks touched per lookup).
# Targets (issue 3): make >= 1.5x casync, extract >= 1.5x, lookup <= 3 chunk reads.
. "$(dirname "$0")/lib.sh"
command -v casync >/dev/null || { echo "bench/catar.sh: casync not installed" >&2; exit 1; }
TREE=${TREE:-/usr/share}
W=$(mktemp -d /var/tmp/camount-bench-catar.XXXXXX)
trap 'chattr -R -i -a "$W" 2>/dev/null; rm -rf "$W"' EXIT
entries=$(find "$TREE" | wc -l)
tar cf - "$TREE" 2>/dev/null >/dev/null # both tools read the tree from the page cache

c_make=$(median_time "rm -rf $W/c.castr" casync make --store="$W/c.castr" "$W/c.caidx" "$TREE")
m_make=$(median_time "rm -rf $W/m.castr" "$CAMOUNT" make --store="$W/m.castr" "$W/m.caidx" "$TREE")
cmp "$W/c.caidx" "$W/m.caidx" || { echo "bench: indexes differ" >&2; exit 1; }
c_tar=$(median_time "rm -f $W/c.catar" casync make "$W/c.catar" "$TREE")
m_tar=$(median_time "rm -f $W/m.catar" "$CAMOUNT" make "$W/m.catar" "$TREE")
cmp "$W/c.catar" "$W/m.catar" || { echo "bench: archives differ" >&2; exit 1; }
rm -f "$W/m.catar"
c_ext=$(median_time "rm -rf $W/c.out" casync extract --store="$W/c.castr" "$W/c.caidx" "$W/c.out")
m_ext=$(median_time "rm -rf $W/m.out" "$CAMOUNT" extract --store="$W/c.castr" "$W/c.caidx" "$W/m.out")
[ "$(casync digest "$W/m.out")" = "$(casync digest "$W/c.out")" ] || { echo "bench: extracted trees differ" >&2; exit 1; }
rm -rf "$W/c.out" "$W/m.out"
c_cext=$(median_time "rm -rf $W/c.out" casync extract "$W/c.catar" "$W/c.out")
m_cext=$(median_time "rm -rf $W/m.out" "$CAMOUNT" extract "$W/c.catar" "$W/m.out")
rm -rf "$W/c.out" "$W/m.out"
c_list=$(median_time "" casync list --store="$W/c.castr" "$W/c.caidx")
m_list=$(median_time "" "$CAMOUNT" list --store="$W/c.castr" "$W/c.caidx")
[ "$(casync list --store="$W/c.castr" "$W/c.caidx" | sha256sum)" = "$("$CAMOUNT" list --store="$W/c.castr" "$W/c.caidx" | sha256sum)" ] ||
	{ echo "bench: list output differs" >&2; exit 1; }
c_mtree=$(median_time "" casync mtree "$W/c.catar")
m_mtree=$(median_time "" "$CAMOUNT" mtree "$W/c.catar")

table_header "tree images, $TREE ($entries entries, $(du -sh --apparent-size "$W/c.catar" | cut -f1) archive), median of $RUNS (seconds)" casync
table_row "make .caidx (zstd, default chunk sizes)" "$c_make" "$m_make"
table_row "make .catar" "$c_tar" "$m_tar"
table_row "extract .caidx" "$c_ext" "$m_ext"
table_row "extract .catar" "$c_cext" "$m_cext"
table_row "list .caidx (all entries)" "$c_list" "$m_list"
table_row "mtree .catar (all entries, payload digests)" "$c_mtree" "$m_mtree"

echo
echo "random lookups through a Blob (camount only; casync has no equivalent):"
(cd "$REPO" && go run ./bench/lookup --store="$W/c.castr" -n 10000 "$W/c.caidx") | grep -v '^PERCALL'
