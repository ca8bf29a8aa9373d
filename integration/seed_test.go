package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/camount/camount/chunker"
)

// seedImages are v1 and v2 of a GPT+ext4 disk image, both indexed by
// casync into one store published by nginx: v2 rewrites a few MiB of
// files, deletes and adds some, and renames one (so data moves).
type seedImages struct {
	dir            string
	v1, v2         string // raw images
	v1idx, v2idx   string // casync indexes
	store          string
	ngx            *nginxServer
	unseeded       int // distinct non-zero chunks of v2 that v1 lacks
	partOff, fsLen int64
}

func makeSeedImages(t *testing.T) *seedImages {
	t.Helper()
	needCmd(t, "sfdisk", "mkfs.ext4", "casync", "nginx")
	dir := t.TempDir()
	s := &seedImages{dir: dir, v1: filepath.Join(dir, "v1.img"), v2: filepath.Join(dir, "v2.img"),
		v1idx: filepath.Join(dir, "v1.caibx"), v2idx: filepath.Join(dir, "v2.caibx"),
		store: filepath.Join(dir, "default.castr"), partOff: 1 << 20}
	const size = 40 << 20
	s.fsLen = size - 2<<20
	src1, src2 := filepath.Join(dir, "src1"), filepath.Join(dir, "src2")
	for i := 0; i < 40; i++ {
		p := filepath.Join(src1, fmt.Sprintf("d%d/f%02d.bin", i%4, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, randomBytes(400<<10+i*1000, uint64(100+i)), 0o644)
	}
	runCmd(t, "cp", "-a", src1, src2)
	for i := 0; i < 4; i++ { // rewritten
		os.WriteFile(filepath.Join(src2, fmt.Sprintf("d%d/f%02d.bin", i%4, i*7)), randomBytes(400<<10, uint64(900+i)), 0o644)
	}
	os.Remove(filepath.Join(src2, "d1/f05.bin"))
	os.Remove(filepath.Join(src2, "d2/f10.bin"))
	os.WriteFile(filepath.Join(src2, "d3/new1.bin"), randomBytes(700<<10, 991), 0o644)
	os.Rename(filepath.Join(src2, "d0/f08.bin"), filepath.Join(src2, "d0/zz-renamed.bin"))
	for _, v := range []struct{ img, src string }{{s.v1, src1}, {s.v2, src2}} {
		f, _ := os.Create(v.img)
		f.Truncate(size)
		f.Close()
		sf := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", v.img)
		sf.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nlabel-id: 8F2E1A57-3C3B-4C4E-9C57-1B2D3E4F5A6B\nstart=%d, size=%d, type=linux, name=root, uuid=0B5E2C1D-1111-4222-8333-944455556666\n", s.partOff/512, s.fsLen/512))
		if out, err := sf.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		mk := exec.Command("mkfs.ext4", "-q", "-F", "-L", "seeds", "-U", "6a3c1a3e-5f0b-4b8e-9d0e-0123456789ab",
			"-E", fmt.Sprintf("root_owner=0:0,offset=%d,hash_seed=6a3c1a3e-5f0b-4b8e-9d0e-0123456789ab", s.partOff),
			"-d", v.src, v.img, strconv.FormatInt(s.fsLen>>10, 10)+"k")
		mk.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
		if out, err := mk.CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v\n%s", err, out)
		}
	}
	os.RemoveAll(src1)
	os.RemoveAll(src2)
	runCmd(t, "casync", "make", "--store="+s.store, s.v1idx, s.v1)
	runCmd(t, "casync", "make", "--store="+s.store, s.v2idx, s.v2)
	x1, x2 := readIndex(t, s.v1idx), readIndex(t, s.v2idx)
	in1 := map[chunker.ID]bool{}
	for _, c := range x1.Chunks {
		in1[c.ID] = true
	}
	zero := zeroIDs(x2)
	seen := map[chunker.ID]bool{}
	for _, c := range x2.Chunks {
		if !in1[c.ID] && !zero[c.ID] && !seen[c.ID] {
			seen[c.ID] = true
			s.unseeded++
		}
	}
	if s.unseeded == 0 || s.unseeded > len(x2.Chunks)/4 {
		t.Fatalf("v2 has %d chunks v1 lacks, of %d: not a small update", s.unseeded, len(x2.Chunks))
	}
	s.ngx = startNginx(t, dir, nil)
	return s
}

// zeroIDs returns the IDs of x's chunks that are all zeros.
func zeroIDs(x *chunker.Index) map[chunker.ID]bool {
	d := x.Digest()
	out := map[chunker.ID]bool{}
	sizes := map[uint64]chunker.ID{}
	for _, c := range x.Chunks {
		id, ok := sizes[c.Size]
		if !ok {
			id = d.Sum(make([]byte, c.Size))
			sizes[c.Size] = id
		}
		if id == c.ID {
			out[c.ID] = true
		}
	}
	return out
}

// fetched returns the chunk requests nginx served since the last call.
func (s *seedImages) fetched(t *testing.T) int {
	t.Helper()
	n := s.ngx.chunkRequests(t)
	os.Truncate(s.ngx.AccessLog, 0)
	return n
}

func (s *seedImages) url(name string) string { return s.ngx.URL + "/" + name }

func TestSeedExtractKinds(t *testing.T) {
	s := makeSeedImages(t)
	s.fetched(t)
	// casync's own count, for comparison.
	cout := filepath.Join(t.TempDir(), "casync.img")
	runCmd(t, "casync", "extract", "--seed="+s.v1, "--store="+s.url("default.castr"), s.v2idx, cout)
	cmpFiles(t, cout, s.v2)
	casyncFetched := s.fetched(t)
	t.Logf("v2 has %d chunks v1 lacks; casync extract --seed fetched %d", s.unseeded, casyncFetched)

	// The index seed: v1's data lies beside v1.img.caibx.
	idxDir := t.TempDir()
	runCmd(t, "cp", s.v1idx, filepath.Join(idxDir, "v1.img.caibx"))
	os.Symlink(s.v1, filepath.Join(idxDir, "v1.img"))

	cases := []struct {
		name string
		args func(out string) []string
	}{
		{"file", func(out string) []string { return []string{"--seed=" + s.v1} }},
		{"index", func(out string) []string { return []string{"--seed=" + filepath.Join(idxDir, "v1.img.caibx")} }},
		{"output", func(out string) []string { runCmd(t, "cp", s.v1, out); return nil }},
	}
	// What --stats-json must count as seeded: every place in v2 of a
	// non-zero chunk v1 holds.
	var wantSeeded, wantSeededBytes int64
	{
		x1, x2 := readIndex(t, s.v1idx), readIndex(t, s.v2idx)
		in1 := map[chunker.ID]bool{}
		for _, c := range x1.Chunks {
			in1[c.ID] = true
		}
		zero := zeroIDs(x2)
		for _, c := range x2.Chunks {
			if in1[c.ID] && !zero[c.ID] {
				wantSeeded++
				wantSeededBytes += int64(c.Size)
			}
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.img")
			stats := filepath.Join(t.TempDir(), "stats.json")
			args := append([]string{"extract", "--cache=" + t.TempDir(), "--stats-json=" + stats}, c.args(out)...)
			camount(t, append(args, s.url("v2.caibx"), out)...)
			cmpFiles(t, out, s.v2)
			n := s.fetched(t)
			if n != s.unseeded {
				t.Errorf("fetched %d chunks, want exactly the %d no seed holds", n, s.unseeded)
			}
			if n > casyncFetched {
				t.Errorf("fetched %d chunks, casync %d", n, casyncFetched)
			}
			// The statistics tell seeded chunks from fetched ones.
			var ss struct {
				Fetched int64 `json:"fetched_chunks"`
				Seeded  *struct {
					Chunks, Bytes int64
				} `json:"seeded"`
			}
			if b, err := os.ReadFile(stats); err != nil {
				t.Fatal(err)
			} else if err := json.Unmarshal(b, &ss); err != nil {
				t.Fatalf("%s: %v", stats, err)
			}
			if ss.Fetched != int64(n) {
				t.Errorf("--stats-json: fetched_chunks %d, the server saw %d", ss.Fetched, n)
			}
			if ss.Seeded == nil || ss.Seeded.Chunks != wantSeeded || ss.Seeded.Bytes != wantSeededBytes {
				t.Errorf("--stats-json: seeded %+v, want %d chunks, %d bytes", ss.Seeded, wantSeeded, wantSeededBytes)
			}
		})
	}

	t.Run("corrupted-after-scan", func(t *testing.T) {
		cache := t.TempDir()
		seedCopy := filepath.Join(t.TempDir(), "v1.img")
		runCmd(t, "cp", "--sparse=always", s.v1, seedCopy)
		// Scan it once (the cache keeps the scan), then damage it keeping
		// size and mtime, so the cached scan is taken as still good.
		camount(t, "extract", "--cache="+cache, "--seed="+seedCopy, s.url("v2.caibx"), filepath.Join(t.TempDir(), "warm.img"))
		s.fetched(t)
		st, _ := os.Stat(seedCopy)
		f, _ := os.OpenFile(seedCopy, os.O_WRONLY, 0)
		f.WriteAt(bytes.Repeat([]byte("garbage!"), 1<<17), s.partOff+4<<20)
		f.Close()
		os.Chtimes(seedCopy, st.ModTime(), st.ModTime())
		out := filepath.Join(t.TempDir(), "out.img")
		camount(t, "extract", "--cache="+cache, "--seed="+seedCopy, s.url("v2.caibx"), out)
		cmpFiles(t, out, s.v2)
		// The chunks v1 lacks are in the disk cache (--cache) since the
		// first run: what is fetched now is what the damage cost.
		if n := s.fetched(t); n == 0 {
			t.Errorf("fetched nothing after damaging the seed: the damaged chunks were not replaced")
		}
	})

	t.Run("eio-seed", func(t *testing.T) {
		// A seed that fails with EIO: v1 served by a camount mount whose
		// store has a damaged chunk (the mount answers EIO there).
		needCmd(t, "fusermount3")
		bad := filepath.Join(t.TempDir(), "bad.castr")
		runCmd(t, "cp", "-a", s.store, bad)
		x1 := readIndex(t, s.v1idx)
		zero := zeroIDs(x1)
		for i := len(x1.Chunks) / 2; i < len(x1.Chunks); i++ {
			if !zero[x1.Chunks[i].ID] {
				damageChunk(t, bad, x1.Chunks[i])
				break
			}
		}
		mnt := filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(mnt, 0o755)
		startMount(t, nil, "--store="+bad, "--http-retries=0", s.v1idx, mnt)
		out := filepath.Join(t.TempDir(), "out.img")
		seedArg := "--seed=" + filepath.Join(mnt, "v1")
		_, err := tryCamount("extract", "--cache="+t.TempDir(), seedArg, s.url("v2.caibx"), out)
		if err == nil || !strings.Contains(err.Error(), filepath.Join(mnt, "v1")) || !strings.Contains(err.Error(), "input/output error") {
			t.Errorf("extract with a seed failing with EIO: %v", err)
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Errorf("the failed extract left %s", out)
		}
		// With --seed-optional: a warning, and v2 exactly.
		camount(t, "extract", "--cache="+t.TempDir(), "--seed-optional", seedArg, s.url("v2.caibx"), out)
		cmpFiles(t, out, s.v2)
		s.fetched(t)
	})

	t.Run("other-chunk-size", func(t *testing.T) {
		// An index seed made with other chunk sizes: fewer chunks match,
		// the output is still v2.
		dir := t.TempDir()
		runCmd(t, "casync", "make", "--chunk-size=32K", "--store="+filepath.Join(dir, "s.castr"), filepath.Join(dir, "v1.img.caibx"), s.v1)
		os.Symlink(s.v1, filepath.Join(dir, "v1.img"))
		out := filepath.Join(t.TempDir(), "out.img")
		camount(t, "extract", "--seed="+filepath.Join(dir, "v1.img.caibx"), s.url("v2.caibx"), out)
		cmpFiles(t, out, s.v2)
		s.fetched(t)
	})

	t.Run("missing-seed", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out.img")
		_, err := tryCamount("extract", "--seed=/nonexistent/seed.img", s.url("v2.caibx"), out)
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/seed.img") {
			t.Errorf("missing seed: %v", err)
		}
		_, err = tryCamount("extract", "--seed-optional", "--seed=/nonexistent/seed.img", s.url("v2.caibx"), out)
		if err != nil {
			t.Errorf("--seed-optional with a missing seed: %v", err)
		}
		cmpFiles(t, out, s.v2)
		s.fetched(t)
	})
}

// storeStat returns the chunks the named store served, from --stats-json.
func storeStat(t *testing.T, path, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ss struct {
		Stores []struct {
			Name   string `json:"name"`
			Chunks int64  `json:"chunks"`
		} `json:"stores"`
	}
	if err := json.Unmarshal(b, &ss); err != nil {
		t.Fatal(err)
	}
	for _, s := range ss.Stores {
		if s.Name == name {
			return s.Chunks
		}
	}
	return -1
}

func TestSeedLazyMount(t *testing.T) {
	needCmd(t, "fusermount3")
	s := makeSeedImages(t)
	idxDir := t.TempDir()
	runCmd(t, "cp", s.v1idx, filepath.Join(idxDir, "v1.img.caibx"))
	os.Symlink(s.v1, filepath.Join(idxDir, "v1.img"))
	cache := t.TempDir()
	// Warm the scan cache of the file seed.
	camount(t, "extract", "--cache="+cache, "--seed="+s.v1, s.url("v2.caibx"), filepath.Join(t.TempDir(), "warm.img"))
	for _, seedArg := range []string{filepath.Join(idxDir, "v1.img.caibx"), s.v1} {
		t.Run(filepath.Base(seedArg), func(t *testing.T) {
			s.fetched(t)
			mnt := filepath.Join(t.TempDir(), "mnt")
			os.Mkdir(mnt, 0o755)
			statsPath := filepath.Join(t.TempDir(), "stats.json")
			// A fresh chunk cache, with the warm scan cache in it.
			cache2 := t.TempDir()
			runCmd(t, "cp", "-a", filepath.Join(cache, "seeds"), cache2)
			m := startMount(t, nil, "--cache="+cache2, "--cache-size=0", "--prefetch=none", "--stats-json="+statsPath,
				"--seed="+seedArg, s.url("v2.caibx"), mnt)
			cmpFiles(t, filepath.Join(mnt, "v2"), s.v2)
			m.kill(t)
			if n := s.fetched(t); n != s.unseeded {
				t.Errorf("the mount fetched %d chunks, want exactly the %d no seed holds", n, s.unseeded)
			}
			if n := storeStat(t, statsPath, "seeds"); n <= 0 {
				t.Errorf("stats count %d chunks from seeds", n)
			}
		})
	}
	t.Run("cold-file-seed", func(t *testing.T) {
		// No scan cache: the seed is scanned in the background while the
		// image is read; a read of a chunk the scan has not found yet
		// waits for it (the scan then runs at normal priority), so the
		// mount still fetches exactly what v1 lacks, as extract does.
		s.fetched(t)
		mnt := filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(mnt, 0o755)
		m := startMount(t, nil, "--cache="+t.TempDir(), "--cache-size=0", "--seed="+s.v1, s.url("v2.caibx"), mnt)
		cmpFiles(t, filepath.Join(mnt, "v2"), s.v2)
		m.kill(t)
		if n := s.fetched(t); n != s.unseeded {
			t.Errorf("a cold seed: the mount fetched %d chunks, want exactly the %d no seed holds", n, s.unseeded)
		}
	})
	t.Run("cold-nbd", func(t *testing.T) {
		needCmd(t, "nbdcopy")
		s.fetched(t)
		srv := startNBD(t, "unix", []string{"--cache=" + t.TempDir(), "--cache-size=0", "--seed=" + s.v1}, s.url("v2.caibx"))
		out := filepath.Join(t.TempDir(), "copy.img")
		runCmd(t, "nbdcopy", srv.uris[0], out)
		srv.stop(t)
		cmpFiles(t, out, s.v2)
		if n := s.fetched(t); n != s.unseeded {
			t.Errorf("a cold seed: nbd fetched %d chunks, want exactly the %d no seed holds", n, s.unseeded)
		}
	})
	t.Run("nbd", func(t *testing.T) {
		needCmd(t, "nbdcopy")
		s.fetched(t)
		cache2 := t.TempDir()
		runCmd(t, "cp", "-a", filepath.Join(cache, "seeds"), cache2)
		srv := startNBD(t, "unix", []string{"--cache=" + cache2, "--cache-size=0", "--seed=" + s.v1}, s.url("v2.caibx"))
		out := filepath.Join(t.TempDir(), "copy.img")
		runCmd(t, "nbdcopy", srv.uris[0], out)
		srv.stop(t)
		cmpFiles(t, out, s.v2)
		if n := s.fetched(t); n != s.unseeded {
			t.Errorf("nbd fetched %d chunks, want exactly the %d no seed holds", n, s.unseeded)
		}
	})
	t.Run("mkdev", func(t *testing.T) {
		needRoot(t)
		needLoopOverFUSE(t)
		s.fetched(t)
		cache2 := t.TempDir()
		runCmd(t, "cp", "-a", filepath.Join(cache, "seeds"), cache2)
		p := startMkdev(t, "--cache="+cache2, "--cache-size=0", "--seed="+s.v1, s.url("v2.caibx"))
		cmpFiles(t, p.dev, s.v2)
		p.stop(t)
		if n := s.fetched(t); n != s.unseeded {
			t.Errorf("mkdev fetched %d chunks, want exactly the %d no seed holds", n, s.unseeded)
		}
	})
}

// TestSeedReflink extracts v2 with v1 as seed onto btrfs and xfs (loop
// mounted image files): seeded ranges must be shared extents, not copies.
func TestSeedReflink(t *testing.T) {
	needRoot(t)
	s := makeSeedImages(t)
	// What can be cloned: the seeded chunks that lie in v1 at an offset
	// equal to theirs in v2 modulo the 4 KiB block (clones are of whole
	// blocks at equal offsets within a block).
	var cloneable int64
	{
		x1, x2 := readIndex(t, s.v1idx), readIndex(t, s.v2idx)
		at := map[chunker.ID][]uint64{}
		for _, c := range x1.Chunks {
			at[c.ID] = append(at[c.ID], c.Start)
		}
		zero := zeroIDs(x2)
		for _, c := range x2.Chunks {
			for _, o := range at[c.ID] {
				if !zero[c.ID] && o%4096 == c.Start%4096 {
					cloneable += int64(c.Size)
					break
				}
			}
		}
	}
	for _, fs := range []struct {
		name, mkfs string
		size       int64
		args       []string
	}{
		{"btrfs", "mkfs.btrfs", 256 << 20, []string{"-q", "-f"}},
		{"xfs", "mkfs.xfs", 320 << 20, []string{"-q", "-f", "-m", "reflink=1"}},
	} {
		t.Run(fs.name, func(t *testing.T) {
			needCmd(t, fs.mkfs, "filefrag")
			img := filepath.Join(t.TempDir(), fs.name+".img")
			f, _ := os.Create(img)
			f.Truncate(fs.size)
			f.Close()
			runCmd(t, fs.mkfs, append(fs.args, img)...)
			mnt := t.TempDir()
			if _, err := tryCmd("mount", "-o", "loop", img, mnt); err != nil {
				t.Skipf("cannot mount a loop %s: %v", fs.name, err)
			}
			t.Cleanup(func() { exec.Command("umount", mnt).Run() })
			seedPath := filepath.Join(mnt, "v1.img")
			runCmd(t, "cp", "--sparse=always", "--reflink=never", s.v1, seedPath)
			out := filepath.Join(mnt, "v2.img")
			stats := filepath.Join(t.TempDir(), "stats.json")
			camount(t, "extract", "--cache="+t.TempDir(), "--reflink=yes", "--stats-json="+stats, "--seed="+seedPath, s.url("v2.caibx"), out)
			cmpFiles(t, out, s.v2)
			// Whole runs of seeded chunks are cloned, the blocks that
			// straddle two chunks included: at least 97% of what can be
			// (one block a chunk lost would leave some 94%).
			var ss struct {
				Seeded struct {
					Bytes     int64 `json:"bytes"`
					Reflinked int64 `json:"reflinked_bytes"`
				} `json:"seeded"`
			}
			b, _ := os.ReadFile(stats)
			json.Unmarshal(b, &ss)
			t.Logf("seeded %d bytes, %d cloneable, %d reflinked", ss.Seeded.Bytes, cloneable, ss.Seeded.Reflinked)
			if ss.Seeded.Reflinked < cloneable*97/100 {
				t.Errorf("reflinked %d bytes of %d cloneable (seeded %d): under 97%%", ss.Seeded.Reflinked, cloneable, ss.Seeded.Bytes)
			}
			ff := runCmd(t, "filefrag", "-v", out)
			if !strings.Contains(ff, "shared") {
				t.Errorf("no shared extents in the output:\n%s", ff)
			}
			s.fetched(t)
		})
	}
}

// TestSeedAB updates partition B (a loop device) to v2 with partition A
// (a loop device holding v1) as the seed, then mounts B read-only.
func TestSeedAB(t *testing.T) {
	needRoot(t)
	s := makeSeedImages(t)
	loop := func(img string) string {
		dev, err := tryCmd("losetup", "--show", "-f", img)
		if err != nil {
			t.Skipf("no loop devices: %v", err)
		}
		dev = strings.TrimSpace(dev)
		t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
		return dev
	}
	a := loop(s.v1)
	bImg := filepath.Join(t.TempDir(), "b.img")
	f, _ := os.Create(bImg)
	st, _ := os.Stat(s.v2)
	f.Truncate(st.Size())
	f.Close()
	b := loop(bImg)
	s.fetched(t)
	camount(t, "extract", "--cache="+t.TempDir(), "--seed="+a, s.url("v2.caibx"), b)
	if n := s.fetched(t); n != s.unseeded {
		t.Errorf("fetched %d chunks, want exactly the %d partition A lacks", n, s.unseeded)
	}
	cmpFiles(t, b, s.v2)
	mnt := t.TempDir()
	runCmd(t, "mount", "-o", fmt.Sprintf("ro,offset=%d", s.partOff), "-t", "ext4", b, mnt)
	defer exec.Command("umount", mnt).Run()
	if _, err := os.Stat(filepath.Join(mnt, "d3/new1.bin")); err != nil {
		t.Errorf("partition B does not hold v2's file system: %v", err)
	}
}
