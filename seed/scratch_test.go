package seed

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestScratchCleanup: a scan directory left by a killed scan (no lock
// holder, old) is removed by the next scan; one whose owner lives (locked)
// or that was just made is kept, whatever its age.
func TestScratchCleanup(t *testing.T) {
	parent := t.TempDir()
	old := time.Now().Add(-2 * scratchGrace)
	// Left by a killed process: nobody holds its lock.
	dead := filepath.Join(parent, scratchPrefix+"123456")
	if err := os.MkdirAll(filepath.Join(dead, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dead, "sub", "chunks"), []byte("x"), 0o644)
	os.Chtimes(dead, old, old)
	// Made a moment ago, not yet locked by its owner.
	fresh := filepath.Join(parent, scratchPrefix+"654321")
	os.Mkdir(fresh, 0o755)
	// Owned by a live scan (this process, through another open file).
	live, lock, err := makeScratch(parent)
	if err != nil {
		t.Fatal(err)
	}
	os.Chtimes(live, old, old)
	// Not a scratch directory.
	other := filepath.Join(parent, "tree-abc")
	os.Mkdir(other, 0o755)
	os.Chtimes(other, old, old)

	if n := cleanScratch(parent, slog.New(slog.DiscardHandler)); n != 1 {
		t.Errorf("removed %d directories, want 1", n)
	}
	for p, want := range map[string]bool{dead: false, fresh: true, live: true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", filepath.Base(p), err == nil, want)
		}
	}
	// Its owner gone (the lock released), the live one goes too.
	lock.Close()
	if n := cleanScratch(parent, slog.New(slog.DiscardHandler)); n != 1 {
		t.Errorf("after unlock: removed %d directories, want 1", n)
	}
	if _, err := os.Stat(live); err == nil {
		t.Errorf("%s kept after its owner let go", live)
	}

	// A tree scan cleans up before it starts, and leaves nothing behind.
	os.MkdirAll(dead, 0o755)
	os.Chtimes(dead, old, old)
	o := testOptions()
	o.CacheDir = parent
	tr, err := ScanTree(context.Background(), makeTestTree(t), o)
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if m, _ := filepath.Glob(filepath.Join(parent, scratchPrefix+"*")); len(m) != 1 || m[0] != fresh {
		t.Errorf("scratch directories after a scan: %v, want only the fresh one", m)
	}
}
