#!/bin/sh
# Installs what camount's build, demo and tests need on a Debian machine:
# the Go modules, and the peer programs the integration tests run against.
# Safe to run again: it installs only what is missing.
set -eu
pkgs=""
need() { # need COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || pkgs="$pkgs $2"
}
need casync casync
need nbdinfo libnbd-bin
need nbdsh python3-libnbd
need qemu-img qemu-utils
need nbdkit nbdkit
need sfdisk fdisk
need nginx nginx-light
need fusermount3 fuse3
need getfattr attr
need setfacl acl
need mkfs.ext4 e2fsprogs
need mkfs.btrfs btrfs-progs # seed reflink tests (integration/seed_test.go)
need mkfs.xfs xfsprogs
need mkfs.vfat dosfstools # FAT attributes on a real vfat in the VM (integration/vm_parity_test.go)
need losetup mount
need hyperfine hyperfine
need fio fio
need qemu-system-x86_64 qemu-system-x86
need busybox busybox-static
need cpio cpio
need depmod kmod # the VM tests (integration/vm_test.go) build an initramfs module tree
need cmp diffutils
[ -x /usr/bin/time ] || pkgs="$pkgs time" # GNU time: a child's own peak RSS (integration/faults_test.go)
need sshd openssh-server # the sftp store tests (integration/sftp_test.go) run a real sshd
need ssh-keygen openssh-client
need psktool gnutls-bin # TLS-PSK keys for nbd --tls-psk (integration/nbdtls_test.go)
need pkg-config pkg-config
pkg-config --exists gnutls 2>/dev/null || pkgs="$pkgs libgnutls28-dev" # nbd --tls-psk links GnuTLS (package tlspsk)
need minisign minisign # signed indexes, checked against the real tool (integration/trust_test.go)
# The boot tests and bench (docs/BOOT.md): a Debian root image, an initramfs
# with camount, and qemu's curl driver (the bench's peer).
need mmdebstrap mmdebstrap
need mkinitramfs initramfs-tools
ls /usr/lib/*/qemu/block-curl.so >/dev/null 2>&1 || pkgs="$pkgs qemu-block-extra"
# cgo: make compresses chunks with libzstd (bundled in github.com/DataDog/zstd,
# compiled by gcc); without a C compiler Go builds the pure-Go fallback.
need gcc gcc
[ -f /usr/include/stdlib.h ] || pkgs="$pkgs libc6-dev"
# The VM tests boot this kernel under qemu and load its nbd, virtio and ext4 modules.
if [ -z "$(ls /boot/vmlinuz-* 2>/dev/null)" ] || [ -z "$(ls /lib/modules/*/kernel/drivers/block/nbd.ko* 2>/dev/null)" ]; then pkgs="$pkgs linux-image-amd64"; fi
if [ -n "$pkgs" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing packages:$pkgs (run as root, or install them)" >&2
		exit 0
	fi
	echo "deps: installing$pkgs" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
go mod download
# The S3 tests and bench/s3.sh run versitygw, built once from the module proxy.
"$(dirname "$0")/versitygw.sh" >/dev/null
