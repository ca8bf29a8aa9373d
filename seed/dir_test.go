package seed

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
)

// indexOf chunks b into an index with flags.
func indexOf(t *testing.T, b []byte, flags uint64, p chunker.Params) *chunker.Index {
	t.Helper()
	d := chunker.DigestOf(flags)
	x := &chunker.Index{Flags: flags, Min: p.Min, Avg: p.Avg, Max: p.Max}
	for _, c := range chunkStream(t, b, TreeOptions{Params: p, Digest: d}) {
		x.Chunks = append(x.Chunks, c)
	}
	return x
}

// TestDirSeedInSet: a directory seed in a Set serves the chunks of a tree
// target (its .caidx flags) and of a blob target holding the same archive
// (flags naming no metadata: serialised with casync's defaults).
func TestDirSeedInSet(t *testing.T) {
	dir := makeTestTree(t)
	ctx := context.Background()
	var arch bytes.Buffer
	if _, err := catar.Encode(ctx, &arch, dir, catar.EncodeOptions{}); err != nil {
		t.Fatal(err)
	}
	p := testOptions().Params
	for _, flags := range []uint64{catar.DefaultFeatures, catar.ExcludeNodump | catar.ExcludeFile | catar.SHA512_256} {
		x := indexOf(t, arch.Bytes(), flags, p)
		set := NewSet(x, SetOptions{})
		sd, err := Open(dir, ParamsOf(x), &ScanCache{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := sd.(*DirSeed); !ok {
			t.Fatalf("Open of a directory gave a %T", sd)
		}
		set.Add(sd)
		set.Start(ctx)
		if err := set.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if set.Known() != len(x.Chunks) {
			t.Fatalf("flags %#x: %d of %d chunks found", flags, set.Known(), len(x.Chunks))
		}
		for _, c := range x.Chunks {
			b, err := set.Get(ctx, c.ID)
			if err != nil || !bytes.Equal(b, arch.Bytes()[c.Start:c.End()]) {
				t.Fatalf("chunk at %d: %v", c.Start, err)
			}
		}
		set.Close()
		// After Close, reads fail (a fetch), never crash.
		if _, err := set.Get(ctx, x.Chunks[0].ID); err == nil {
			t.Fatal("a closed seed served a chunk")
		}
	}
}

// TestDirSeedMissing: a missing directory is an error naming it.
func TestDirSeedMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope")
	_, err := OpenDir(p, Params{Digest: chunker.SHA512_256, Chunk: chunker.DefaultParams}, nil, false)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(p)) || !os.IsNotExist(errorsUnwrapAll(err)) {
		t.Fatalf("missing seed: %v", err)
	}
}

func errorsUnwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}
