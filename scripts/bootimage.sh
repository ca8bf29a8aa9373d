#!/bin/sh
# bootimage.sh OUT.img [EXTRA_DIR]
#
# Builds a bootable Debian (bookworm, minbase + systemd-sysv, udev, kmod) root
# file system image for the boot tests, benchmark and demo (docs/BOOT.md):
# an ext4 file system without a partition table (boot it with root=/dev/vda
# or from /dev/nbd0), label camountroot, made with mmdebstrap and
# `mkfs.ext4 -d`. Needs root and Debian's package repository.
#
# The image boots read-only to multi-user.target; then the unit
# camount-boot-marker.service runs the scripts in /etc/camount-boot-checks.d
# (each prints lines to the serial console; 10-root-daemon reports the
# @camount process serving /dev/nbd0 and prints its recorded profile), prints
#   CAMOUNT-BOOT-MARKER uptime=SECONDS root=SOURCE
# on /dev/ttyS0 and powers the machine off.
#
# EXTRA_DIR, if given, is copied over the root file system (extra files,
# checks, units). Set BOOTIMAGE_ROOTFS_CACHE=DIR to keep mmdebstrap's tarball
# there between runs, as DIR/rootfs-KEY.tar where KEY is a digest of the
# mmdebstrap command line (suite, variant, packages): it is reused while it
# is younger than BOOTIMAGE_ROOTFS_MAX_AGE days (default 7; Debian's
# updates arrive after that), else rebuilt. Delete it to refresh sooner.
set -eu
out=${1:?usage: bootimage.sh OUT.img [EXTRA_DIR]}
extra=${2:-}
for c in mmdebstrap mkfs.ext4; do
	command -v "$c" >/dev/null || { echo "bootimage.sh: $c is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/bootimage.XXXXXX")
trap 'rm -rf "$work" "${tarball:-$work/x}.$$.tmp"' EXIT
set -- --quiet --format=tar --variant=minbase --include=systemd-sysv,udev,kmod bookworm
tarball=$work/rootfs.tar
if [ -n "${BOOTIMAGE_ROOTFS_CACHE:-}" ]; then
	mkdir -p "$BOOTIMAGE_ROOTFS_CACHE"
	key=$(echo "mmdebstrap $* $(dpkg --print-architecture 2>/dev/null)" | sha256sum | cut -c1-16)
	tarball=$BOOTIMAGE_ROOTFS_CACHE/rootfs-$key.tar
	if [ -s "$tarball" ] && [ -n "$(find "$tarball" -mtime +"${BOOTIMAGE_ROOTFS_MAX_AGE:-7}")" ]; then
		echo "bootimage.sh: $tarball is older than ${BOOTIMAGE_ROOTFS_MAX_AGE:-7} days: rebuilding" >&2
		rm -f "$tarball"
	fi
fi
if [ ! -s "$tarball" ]; then
	# A temporary name of our own: parallel runs may fill the same cache.
	mmdebstrap "$@" "$tarball.$$.tmp" >&2
	mv "$tarball.$$.tmp" "$tarball"
else
	echo "bootimage.sh: reusing $tarball" >&2
fi
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$tarball"

mkdir -p "$root/etc/camount-boot-checks.d" "$root/etc/systemd/system/multi-user.target.wants"
cat >"$root/usr/local/sbin/camount-boot-marker" <<'SH'
#!/bin/sh
# Runs the boot checks, prints the boot marker and powers off (bootimage.sh).
exec >/dev/ttyS0 2>&1
for f in /etc/camount-boot-checks.d/*; do
	[ -x "$f" ] && "$f"
done
read -r up _ </proc/uptime
src=$(awk '$2 == "/" { s = $1 " " $3 " " $4 } END { print s }' /proc/self/mounts | tr ' ' ,)
echo "CAMOUNT-BOOT-MARKER uptime=$up root=$src"
systemctl --no-block --check-inhibitors=no poweroff
SH
chmod 755 "$root/usr/local/sbin/camount-boot-marker"
# Booted from /dev/nbd0 (root=camount:URL): report the serving process, which
# the initramfs started as @camount, and, if it records a profile, have it
# written (SIGUSR1) and print it, so the host can save it.
cat >"$root/etc/camount-boot-checks.d/10-root-daemon" <<'SH'
#!/bin/sh
for p in /proc/[0-9]*; do
	c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
	case "$c" in
	@camount*)
		# CPU seconds it used so far (utime + stime, in clock ticks).
		cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "$p/stat")
		echo "CAMOUNT-CHECK root-daemon pid=${p#/proc/} cpu=${cpu}s argv=$c"
		prof=$(echo "$c" | tr ' ' '\n' | sed -n 's/^--record-profile=//p')
		if [ -n "$prof" ]; then
			# The path is in the process's root: the initramfs.
			prof=$p/root$prof
			rm -f "$prof"
			kill -USR1 "${p#/proc/}"
			i=0
			while [ ! -s "$prof" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
			echo "CAMOUNT-PROFILE-BEGIN"
			cat "$prof"
			echo "CAMOUNT-PROFILE-END"
		fi
		;;
	esac
done 2>/dev/null
SH
chmod 755 "$root/etc/camount-boot-checks.d/10-root-daemon"
cat >"$root/etc/systemd/system/camount-boot-marker.service" <<'UNIT'
[Unit]
Description=camount boot marker: report boot time on the serial console, power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/camount-boot-marker
FailureAction=poweroff

[Install]
WantedBy=multi-user.target
UNIT
ln -sf ../camount-boot-marker.service "$root/etc/systemd/system/multi-user.target.wants/camount-boot-marker.service"
# No login prompts on the consoles: nothing waits for them.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@.service"
ln -sf /dev/null "$root/etc/systemd/system/getty-static.service"
echo camount-boot >"$root/etc/hostname"
printf 'LABEL=camountroot / ext4 ro 0 1\n' >"$root/etc/fstab"
if [ -n "$extra" ]; then
	cp -a "$extra/." "$root/"
fi
# Room for the files plus 15%, in MiB. 4 KiB blocks, as mkfs.ext4 makes a
# root file system of a real disk (for an image this small it would pick
# 1 KiB blocks, which spread a boot's metadata reads over more chunks).
kib=$(du -sk "$root" | cut -f1)
mib=$((kib * 115 / 100 / 1024 + 32))
rm -f "$out"
mkfs.ext4 -q -F -b 4096 -L camountroot -d "$root" "$out" "${mib}M"
echo "bootimage.sh: $out ($mib MiB)" >&2
