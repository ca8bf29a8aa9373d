#!/usr/bin/env bash
# make demo: camount's main job on a self-contained example, made here.
#  1. a generated disk image -> .caibx, extract it again, compare (byte-exact)
#  2. a generated tree -> .caidx, mount it read-only with FUSE, list and read it, unmount
set -euo pipefail
cd "$(dirname "$0")/.."
CAMOUNT=${CAMOUNT:-$PWD/bin/camount}
W=$(mktemp -d /tmp/camount-demo.XXXXXX)
MNT=$W/mnt
cleanup() {
	if mountpoint -q "$MNT" 2>/dev/null; then "$CAMOUNT" umount "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true; fi
	[ -n "${MPID:-}" ] && wait "$MPID" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A disk image as a .caibx blob: make, inspect, extract, compare"
head -c 8M /dev/urandom >"$W/disk.img"
truncate -s 40M "$W/disk.img" # a long run of zeros, as disk images have
head -c 4M /dev/urandom >>"$W/disk.img"
echo "\$ camount make --store=$W/store.castr $W/disk.caibx $W/disk.img"
"$CAMOUNT" make --store="$W/store.castr" "$W/disk.caibx" "$W/disk.img"
"$CAMOUNT" info "$W/disk.caibx"
echo "\$ camount extract --store=$W/store.castr $W/disk.caibx $W/disk.out"
"$CAMOUNT" extract --store="$W/store.castr" "$W/disk.caibx" "$W/disk.out"
cmp "$W/disk.img" "$W/disk.out" && echo "extracted image is identical to the original ($(du -k "$W/disk.out" | cut -f1) KiB on disk: zero chunks stay holes)"

step "2. A file tree as a .caidx: make, then mount it without extracting"
T=$W/tree
mkdir -p "$T/docs/deep/er" "$T/bin"
echo "hello from camount" >"$T/hello.txt"
seq 1 100000 >"$T/docs/numbers.txt"
printf 'nested\n' >"$T/docs/deep/er/file"
ln -s ../hello.txt "$T/bin/link-to-hello"
cp /bin/true "$T/bin/true"
echo "\$ camount make --store=$W/store.castr $W/tree.caidx $T"
"$CAMOUNT" make --store="$W/store.castr" "$W/tree.caidx" "$T"
echo "\$ camount mount --store=$W/store.castr $W/tree.caidx $MNT &"
"$CAMOUNT" mount --store="$W/store.castr" "$W/tree.caidx" "$MNT" &
MPID=$!
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { echo "demo: the mount did not come up" >&2; exit 1; }
echo "\$ find $MNT"
(cd "$MNT" && find . | sort)
echo "\$ cat $MNT/hello.txt"
cat "$MNT/hello.txt"
echo "\$ readlink $MNT/bin/link-to-hello"
readlink "$MNT/bin/link-to-hello"
diff -r "$T" "$MNT" && echo "diff -r: the mounted tree equals the source"
touch "$MNT/new" 2>/dev/null && { echo "demo: a write succeeded on a read-only mount" >&2; exit 1; } || echo "writes are refused (read-only)"
echo "\$ camount umount $MNT"
"$CAMOUNT" umount "$MNT"
wait "$MPID" && MPID=
echo
echo "demo finished: make, extract, info and mount work."
