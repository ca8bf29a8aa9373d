package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runGuarded runs camount with a generous hang guard (not a timing
// assertion) and returns its stderr and error.
func runGuarded(t *testing.T, guard time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	cmd := exec.CommandContext(ctx, camountBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("camount %s hung (killed after %v)\nstderr: %s", strings.Join(args, " "), guard, stderr.String())
	}
	return stderr.String(), err
}

// TestExtractFIFOInStore puts a FIFO where a chunk file belongs, in a local
// store and in a disk cache. The store's is refused at once with an error
// naming it (the open must not wait for a writer); the cache's is skipped
// (the chunk comes from the store).
func TestExtractFIFOInStore(t *testing.T) {
	needCmd(t, "casync")
	dir := t.TempDir()
	data := randomBytes(1<<20, 11)
	src := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "default.castr")
	index := filepath.Join(dir, "img.caibx")
	runCmd(t, "casync", "make", "--store="+store, index, src)
	x := readIndex(t, index)
	c := x.Chunks[len(x.Chunks)/2]

	// A FIFO in the disk cache: skipped, the extract is exact.
	cdir := filepath.Join(dir, "cache")
	id := c.ID.String()
	if err := os.MkdirAll(filepath.Join(cdir, id[:4]), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(cdir, id[:4], id), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out1")
	if stderr, err := runGuarded(t, 2*time.Minute, "extract", "--cache", cdir, index, out); err != nil {
		t.Fatalf("extract with a FIFO in the disk cache: %v\n%s", err, stderr)
	}
	checkFile(t, out, data)

	// A FIFO in the store: a clear error naming it.
	p := chunkFile(store, c)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	stderr, err := runGuarded(t, 2*time.Minute, "extract", index, filepath.Join(dir, "out2"))
	if err == nil {
		t.Fatal("extract succeeded with a FIFO in place of a chunk")
	}
	if !strings.Contains(stderr, p) || !strings.Contains(stderr, "FIFO") {
		t.Fatalf("error does not name the FIFO %s:\n%s", p, stderr)
	}
	// casync's "known missing" marker (a symlink to /dev/null) still means missing.
	os.Remove(p)
	if err := os.Symlink("/dev/null", p); err != nil {
		t.Fatal(err)
	}
	stderr, err = runGuarded(t, 2*time.Minute, "extract", index, filepath.Join(dir, "out3"))
	if err == nil || !strings.Contains(stderr, "not found") {
		t.Fatalf("chunk linked to /dev/null: %v, want not found:\n%s", err, stderr)
	}
}

// TestExtractSIGTERMWhileStalled sends SIGTERM to an extract whose store
// stalls every request: it exits (with an error) instead of waiting out the
// stall and its retries.
func TestExtractSIGTERMWhileStalled(t *testing.T) {
	im := makeRemoteImage(t, 2<<20, nil)
	px := startFaultProxy(t, im.ngx.URL)
	px.setStall(10 * time.Minute)
	px.set("stall", -1)
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command(camountBin, "extract", "--store", px.URL+"/default.castr", im.index, out)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for px.requests.Load() == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("extract sent no request in a minute\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("extract reported success after SIGTERM with nothing fetched")
		}
	case <-time.After(time.Minute): // hang guard: the stall alone lasts 10 minutes per attempt
		cmd.Process.Kill()
		<-done
		t.Fatalf("extract did not exit after SIGTERM\n%s", stderr.String())
	}
}
