#!/usr/bin/env bash
# make demo: camount's main job on a self-contained example, made here.
#  1. a generated disk image -> .caibx, extract it again, compare (byte-exact)
#  2. a generated tree -> .caidx, mount it read-only with FUSE, list and read it, unmount
#  3. a GPT disk image with that tree in an ext4 partition -> .caibx, mounted as one
#     file: fdisk -l reads its partition table, a loop device mounts the partition
set -euo pipefail
cd "$(dirname "$0")/.."
CAMOUNT=${CAMOUNT:-$PWD/bin/camount}
W=$(mktemp -d /tmp/camount-demo.XXXXXX)
MNT=$W/mnt
cleanup() {
	if [ -n "${LOOPMNT:-}" ] && mountpoint -q "$LOOPMNT" 2>/dev/null; then umount "$LOOPMNT" 2>/dev/null || umount -l "$LOOPMNT" 2>/dev/null || true; fi
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
step "3. A partitioned disk image as a .caibx, mounted as one file: fdisk and a loop device read it lazily"
D=$W/gpt.img
truncate -s 64M "$D"
printf 'label: gpt\n,,L\n' | sfdisk -q "$D"
start=$(sfdisk -d "$D" | sed -n 's/.*start= *\([0-9]*\).*/\1/p')
size=$(sfdisk -d "$D" | sed -n 's/.*size= *\([0-9]*\).*/\1/p')
mkfs.ext4 -q -F -E offset=$((start * 512)) -d "$T" "$D" $((size / 2))k # the tree of step 2, in an ext4 partition
echo "\$ camount make --store=$W/store.castr $W/gpt.caibx $D"
"$CAMOUNT" make --store="$W/store.castr" "$W/gpt.caibx" "$D"
echo "\$ camount mount --store=$W/store.castr $W/gpt.caibx $MNT &"
"$CAMOUNT" mount --store="$W/store.castr" "$W/gpt.caibx" "$MNT" &
MPID=$!
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { echo "demo: the mount did not come up" >&2; exit 1; }
ls -l "$MNT"
echo "\$ fdisk -l $MNT/gpt"
fdisk -l "$MNT/gpt"
if [ "$(id -u)" = 0 ]; then
	LOOPMNT=$W/part
	mkdir -p "$LOOPMNT"
	echo "\$ mount -o ro,loop,offset=$((start * 512)) $MNT/gpt $LOOPMNT"
	mount -o ro,loop,offset=$((start * 512)),sizelimit=$((size * 512)) "$MNT/gpt" "$LOOPMNT"
	cat "$LOOPMNT/hello.txt"
	diff -r -x lost+found "$T" "$LOOPMNT" && echo "diff -r: the ext4 partition inside the mounted image equals the tree"
	umount "$LOOPMNT"
fi
cmp "$D" "$MNT/gpt" && echo "cmp: the mounted file equals the original image"
echo "\$ camount umount $MNT"
"$CAMOUNT" umount "$MNT"
wait "$MPID" && MPID=

echo
echo "demo finished: make, extract, info and mount work."
