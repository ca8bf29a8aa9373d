// Package integration runs the built camount binary against real peers:
// the casync binary, FUSE, nginx, NBD clients. Each test starts what it needs
// and stops it; servers listen on loopback or unix sockets only.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/camount/camount/chunker"
)

// camountBin is the path of the camount binary built once for all tests.
var camountBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "camount-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	camountBin = filepath.Join(dir, "camount")
	args := []string{"build", "-o", camountBin}
	if gnutlsHeaders() && !strings.Contains(os.Getenv("GOFLAGS"), "gnutls") {
		args = append(args, "-tags=gnutls") // as the Makefile builds it: with TLS-PSK
	}
	build := exec.Command("go", append(args, "../cmd/camount")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building camount:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if fixtureRoot != "" {
		// The fixture trees hold immutable and append-only files.
		exec.Command("chattr", "-R", "-i", "-a", fixtureRoot).Run()
		os.RemoveAll(fixtureRoot)
	}
	os.Exit(code)
}

// gnutlsHeaders tells whether camount can be built with TLS-PSK here
// (GnuTLS's headers, libgnutls28-dev, found by pkg-config).
func gnutlsHeaders() bool {
	return exec.Command("pkg-config", "--exists", "gnutls").Run() == nil
}

// needCmd skips the test when a peer program is not installed. .ci/run
// installs all of them, so a skip only happens on a hand-made machine.
func needCmd(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s is not installed (make test / .ci/run install it)", n)
		}
	}
}

// needRoot skips tests that need root (loop devices, mount, chown).
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount, chown)")
	}
}

// runCmd runs a program and returns its stdout; it fails the test on error,
// showing stderr.
func runCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tryCmd(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// tryCmd runs a program and returns stdout, and an error that includes stderr.
func tryCmd(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstderr: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// camount runs the built binary and fails the test on error.
func camount(t testing.TB, args ...string) string {
	t.Helper()
	return runCmd(t, camountBin, args...)
}

// tryCamount runs the built binary and returns stdout and the error.
func tryCamount(args ...string) (string, error) {
	return tryCmd(camountBin, args...)
}

// readIndex reads an index file (.caibx, .caidx).
func readIndex(t testing.TB, path string) *chunker.Index {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	x, err := chunker.ReadIndex(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return x
}

// chunkFile is the path of chunk c's file in the local store.
func chunkFile(store string, c chunker.Chunk) string {
	id := c.ID.String()
	return filepath.Join(store, id[:4], id+".cacnk")
}

// damageChunk flips 16 bytes in the middle of chunk c's file in store, so
// the chunk no longer matches its ID.
func damageChunk(t testing.TB, store string, c chunker.Chunk) {
	t.Helper()
	p := chunkFile(store, c)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+16 && i < len(b); i++ {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// casyncMakeTree packs the directory src with casync make (flags first)
// into the store dir/store.castr and the index dir/tree.caidx, and returns
// their paths.
func casyncMakeTree(t testing.TB, dir, src string, flags ...string) (store, index string) {
	t.Helper()
	store = filepath.Join(dir, "store.castr")
	index = filepath.Join(dir, "tree.caidx")
	runCmd(t, "casync", append(append([]string{"make"}, flags...), "--store="+store, index, src)...)
	return store, index
}
