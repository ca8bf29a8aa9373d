#!/bin/sh
# Builds the S3 server the S3 tests and bench/s3.sh run (versitygw, posix
# backend, Apache-2.0) from the Go module proxy, once, into a cache directory
# keyed by its version, and prints the binary's path. Its code is built in a
# scratch module outside the repository and never becomes part of camount.
#
# Why versitygw: a real S3 server (v4 signatures, ListObjectsV2, the real
# error codes: NoSuchBucket, AccessDenied, SignatureDoesNotMatch) that is a
# single Go binary built from the module proxy like everything else here,
# serving a plain directory (the posix backend), so tests can damage an
# object by editing its file, and start one per test on a loopback port.
set -eu
VERSION=v1.8.0
dir=${CAMOUNT_VERSITYGW_DIR:-${TMPDIR:-/tmp}/camount-versitygw-$VERSION}
bin=$dir/versitygw
if [ ! -x "$bin" ]; then
	mkdir -p "$dir"
	exec 9>"$dir/.lock"
	flock 9
	if [ ! -x "$bin" ]; then
		echo "building versitygw $VERSION into $dir (once)" >&2
		scratch=$(mktemp -d)
		trap 'rm -rf "$scratch"' EXIT
		(cd "$scratch" && go mod init versitygwbuild >/dev/null 2>&1 &&
			GOFLAGS=-mod=mod go get github.com/versity/versitygw/cmd/versitygw@$VERSION >&2 &&
			GOFLAGS=-mod=mod go build -o "$bin.tmp" github.com/versity/versitygw/cmd/versitygw >&2)
		mv "$bin.tmp" "$bin"
	fi
fi
echo "$bin"
