package integration

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMountProfileTreeComplete: a profile recorded on a tree mount holds
// the chunks the workload consumed, however they arrived (foreground
// reads, readahead, the directory crawl, page-cache pushes): reading 150
// of the .pm files of a perl tree, the profile lists at least 90% of the
// chunks the run used (foreground fetches + prefetched chunks used), and a
// second mount that prefetched the profile reads the same files without a
// single foreground fetch. `camount profile merge` of two runs' profiles
// holds both.
func TestMountProfileTreeComplete(t *testing.T) {
	needFUSE(t)
	src := "/usr/share/perl"
	if _, err := os.Stat(src); err != nil {
		t.Skipf("%s: %v (perl-modules)", src, err)
	}
	var pms []string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".pm") {
			rel, _ := filepath.Rel(src, p)
			pms = append(pms, rel)
		}
		return nil
	})
	sort.Strings(pms)
	if len(pms) < 150 {
		t.Skipf("%s has %d .pm files, want 150", src, len(pms))
	}
	dir := t.TempDir()
	store := filepath.Join(dir, "store.castr")
	index := filepath.Join(dir, "perl.caidx")
	camount(t, "make", "--store="+store, index, src)
	srv := &countingStore{fs: http.FileServer(http.Dir(store))}
	// 20 ms per request, as over a wide-area link: more of the run's
	// chunks arrive through readahead and the crawl than on loopback.
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	mnt := filepath.Join(dir, "mnt")

	// read reads every step-th .pm file, from first, and checks its bytes.
	read := func(first, step int) {
		t.Helper()
		for i := first; i < len(pms); i += step {
			want, _ := os.ReadFile(filepath.Join(src, pms[i]))
			got, err := os.ReadFile(filepath.Join(mnt, pms[i]))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: %v (%d bytes, want %d)", pms[i], err, len(got), len(want))
			}
		}
	}
	step := len(pms) / 150
	record := func(name string, first int) (statsJSON, int) {
		t.Helper()
		prof := filepath.Join(dir, name+".profile")
		sj := filepath.Join(dir, name+".json")
		m := startMount(t, nil, "--store="+hs.URL, "--record-profile="+prof, "--stats-json="+sj, index, mnt)
		read(first, step)
		unmountAndWait(t, m)
		st := readStats(t, sj)
		b, err := os.ReadFile(prof)
		if err != nil {
			t.Fatal(err)
		}
		n := strings.Count(string(b), "\n") - 3
		used := st.Priorities["foreground"].Chunks + st.PrefetchUsed
		t.Logf("%s: read %d files; fetched %d chunks (foreground %d, prefetched and used %d); profile lists %d",
			name, (len(pms)-first+step-1)/step, st.FetchedChunks, st.Priorities["foreground"].Chunks, st.PrefetchUsed, n)
		if used == 0 || int64(n)*10 < used*9 {
			t.Errorf("%s: the profile lists %d chunks, less than 90%% of the %d the run used", name, n, used)
		}
		return st, n
	}
	run1, n1 := record("run1", 0)

	sj := filepath.Join(dir, "replay.json")
	m := startMount(t, nil, "--store="+hs.URL, "--prefetch-profile="+filepath.Join(dir, "run1.profile"), "--stats-json="+sj, index, mnt)
	// Wait until the profile is fetched. The mount itself reads the
	// archive's root at start, which may come before the fill gets to that
	// chunk (a foreground fetch): what counts is what the reads below fetch.
	deadline := time.Now().Add(60 * time.Second)
	var before statsJSON
	for {
		os.Remove(sj)
		m.cmd.Process.Signal(syscall.SIGUSR1)
		time.Sleep(50 * time.Millisecond)
		if b, err := os.ReadFile(sj); err == nil {
			if json.Unmarshal(b, &before) == nil && before.FetchedChunks >= int64(n1) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the profile fill did not finish in 60 s; stderr: %s", m.stderr)
		}
	}
	read(0, step)
	unmountAndWait(t, m)
	replay := readStats(t, sj)
	t.Logf("replay: fetched %d chunks (foreground %d, background %d)", replay.FetchedChunks, replay.Priorities["foreground"].Chunks, replay.Priorities["background"].Chunks)
	if fg := replay.Priorities["foreground"].Chunks - before.Priorities["foreground"].Chunks; fg != 0 {
		t.Errorf("the replayed run fetched %d chunks in the foreground (recorded run: %d)", fg, run1.Priorities["foreground"].Chunks)
	}

	// Another run reading other files; the merge holds both profiles' chunks.
	_, n2 := record("run2", 1)
	merged := filepath.Join(dir, "merged.profile")
	camount(t, "profile", "merge", "--output="+merged, filepath.Join(dir, "run1.profile"), filepath.Join(dir, "run2.profile"))
	lines := func(p string) map[string]bool {
		b, _ := os.ReadFile(p)
		m := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n")[3:] {
			if l != "" {
				m[l] = true
			}
		}
		return m
	}
	all := lines(merged)
	for _, p := range []string{"run1.profile", "run2.profile"} {
		for c := range lines(filepath.Join(dir, p)) {
			if !all[c] {
				t.Fatalf("merged profile lacks chunk %s of %s", c, p)
			}
		}
	}
	if len(all) < max(n1, n2) || len(all) > n1+n2 {
		t.Errorf("merged profile has %d chunks, runs had %d and %d", len(all), n1, n2)
	}
}
