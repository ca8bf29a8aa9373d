#!/usr/bin/env bash
# FUSE mounts, cold (a fresh mount and dropped kernel caches for every
# measure), on the reference corpus (../shared/bench/mkcorpus.sh):
#   share.caidx (/usr/share): find MNT | wc -l and tar cf - MNT | wc -c,
#     camount mount beside casync mount
#   disk.caibx (1.5 GiB ext4 disk image): cat MNT/disk, camount mount
#     beside desync mount-index (installed for the benchmark only)
# and the peak RSS of each mount process.
# Targets (issue 4): find >= 20x casync, tar >= 15x, cat >= 3x desync,
# camount RSS <= cache size + 64 MiB.
# MOUNT_RUNS (default 1) runs of each measure; the median is shown.
. "$(dirname "$0")/lib.sh"
command -v casync >/dev/null || { echo "bench/mount.sh: casync not installed" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "bench/mount.sh: fusermount3 (fuse3) not installed" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "bench/mount.sh: no /dev/fuse" >&2; exit 1; }
ensure_corpus
STORE=$CORPUS/store.castr
CACHE=${CACHE:-256M}
MOUNT_RUNS=${MOUNT_RUNS:-1}
ensure_desync

mount_setup /var/tmp/camount-bench-mount.XXXXXX

# up TOOL INDEX: mounts INDEX at $MNT with TOOL (camount, casync, desync).
up() {
	case $1 in
	camount) mount_start --listed "$CAMOUNT" mount --store="$STORE" --cache-size="$CACHE" "$2" "$MNT" ;;
	casync) mount_start --listed casync mount --store="$STORE" "$2" "$MNT" ;;
	desync) mount_start --listed "$DESYNC" mount-index -s "$STORE" "$2" "$MNT" ;;
	esac
}

# measure TOOL INDEX CMD: MOUNT_RUNS cold runs (fresh mount, dropped caches)
# of the shell command CMD (MNT set); sets T (median seconds), R (max peak
# RSS, MiB) and OUT (the command's output of the last run).
measure() {
	local ts=() rs=0 i
	for ((i = 0; i < MOUNT_RUNS; i++)); do
		up "$1" "$2"
		drop_caches
		time_mounted "$3"
		mount_stop
		ts+=("$WALL")
		rs=$((MOUNT_RSS > rs ? MOUNT_RSS : rs))
	done
	T=$(MEDIAN_DIGITS=2 median "${ts[@]}")
	R=$((rs / 1024))
}

share=$CORPUS/share.caidx
disk=$CORPUS/disk.caibx
entries=$(find "$SHARE_TREE" | wc -l)

measure camount "$share" 'find "$MNT" | wc -l'
m_find=$T m_find_rss=$R m_find_n=$OUT
measure casync "$share" 'find "$MNT" | wc -l'
c_find=$T c_find_rss=$R c_find_n=$OUT
[ "$m_find_n" = "$c_find_n" ] || { echo "bench/mount.sh: find counts differ: camount $m_find_n, casync $c_find_n" >&2; exit 1; }

measure camount "$share" 'tar cf - "$MNT" 2>/dev/null | wc -c'
m_tar=$T m_tar_rss=$R m_tar_n=$OUT
measure casync "$share" 'tar cf - "$MNT" 2>/dev/null | wc -c'
c_tar=$T c_tar_rss=$R c_tar_n=$OUT
[ "$m_tar_n" = "$c_tar_n" ] || { echo "bench/mount.sh: tar sizes differ: camount $m_tar_n, casync $c_tar_n" >&2; exit 1; }

measure camount "$disk" 'cat "$MNT"/* | wc -c'
m_cat=$T m_cat_rss=$R m_cat_n=$OUT
measure desync "$disk" 'cat "$MNT"/* | wc -c'
d_cat=$T d_cat_rss=$R d_cat_n=$OUT
[ "$m_cat_n" = "$d_cat_n" ] || { echo "bench/mount.sh: cat sizes differ: camount $m_cat_n, desync $d_cat_n" >&2; exit 1; }
# The bytes are right: the mounted file equals the image.
up camount "$disk"
cmp "$MNT/disk" "$CORPUS/disk.img" || { echo "bench/mount.sh: mounted disk differs from disk.img" >&2; exit 1; }
mount_stop

cache_mib=$(numfmt --from=iec "$CACHE" | awk '{printf "%d", $1 / 1048576}')
table_header "FUSE mounts, cold (fresh mount, dropped caches), median of $MOUNT_RUNS; share.caidx = $SHARE_TREE ($entries entries, $m_tar_n tar bytes), disk.caibx = $(numfmt --to=iec "$m_cat_n") ext4 disk image; camount --cache-size=$CACHE" peer
table_row "find MNT | wc -l (casync mount)" "$c_find" "$m_find"
table_row "tar cf - MNT | wc -c (casync mount)" "$c_tar" "$m_tar"
table_row "cat MNT/disk, .caibx (desync mount-index)" "$d_cat" "$m_cat"
table_row "peak RSS, find (casync mount)" "$c_find_rss" "$m_find_rss" MiB
table_row "peak RSS, tar (casync mount)" "$c_tar_rss" "$m_tar_rss" MiB
table_row "peak RSS, cat .caibx (desync mount-index)" "$d_cat_rss" "$m_cat_rss" MiB
echo "targets: find >= 20x, tar >= 15x, cat >= 3x; camount RSS <= cache + 64 MiB = $((cache_mib + 64)) MiB"
