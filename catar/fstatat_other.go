//go:build linux && (arm64 || riscv64 || loong64 || mips64 || mips64le)

package catar

import "syscall"

// fstatat is fstatat(2) with AT_SYMLINK_NOFOLLOW: syscall's own on the
// 64-bit architectures other than amd64 (ARM devices among them).
func fstatat(dirfd int, name string, st *syscall.Stat_t) error {
	return syscall.Fstatat(dirfd, name, st, atSymlinkNofollow)
}
