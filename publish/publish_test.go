package publish

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readBack reads every chunk of x from s, verified, and concatenates them.
func readBack(t *testing.T, s fetch.Store, x *chunker.Index) []byte {
	t.Helper()
	var out []byte
	for _, c := range x.Chunks {
		b, err := s.Get(context.Background(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		data, err := fetch.DecodeChunk(c, x.Digest(), b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data...)
	}
	return out
}

func TestMakeAndPush(t *testing.T) {
	ctx := context.Background()
	data := randomData(3<<20, 1)
	copy(data[1<<20:], make([]byte, 256<<10)) // zero chunks
	src := fetch.NewLocalStore(t.TempDir())
	var prog Progress
	res, err := Make(ctx, bytes.NewReader(data), MakeOptions{Store: src, Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, src, res.Index); !bytes.Equal(got, data) {
		t.Fatal("made chunks do not read back as the input")
	}
	if chunker.SHA512_256.Sum(data) != res.Digest {
		t.Error("stream digest differs")
	}
	stored := prog.Stored.Load()
	// A second make stores nothing.
	var prog2 Progress
	if _, err := Make(ctx, bytes.NewReader(data), MakeOptions{Store: src, Progress: &prog2}); err != nil {
		t.Fatal(err)
	}
	if prog2.Stored.Load() != 0 || prog2.Present.Load() != stored {
		t.Errorf("second make stored %d, found %d present; want 0 and %d", prog2.Stored.Load(), prog2.Present.Load(), stored)
	}
	// Push to an empty store copies everything, then nothing.
	dst := fetch.NewLocalStore(t.TempDir())
	r, err := Push(ctx, []*chunker.Index{res.Index, res.Index}, PushOptions{From: src, To: dst})
	if err != nil {
		t.Fatal(err)
	}
	if r.Copied != stored || r.Present != 0 || r.Chunks != stored {
		t.Errorf("push: %+v, want %d copied", r, stored)
	}
	if got := readBack(t, dst, res.Index); !bytes.Equal(got, data) {
		t.Fatal("pushed chunks do not read back as the input")
	}
	r, err = Push(ctx, []*chunker.Index{res.Index}, PushOptions{From: src, To: dst})
	if err != nil || r.Copied != 0 || r.Present != stored {
		t.Errorf("second push: %+v %v", r, err)
	}
	// A corrupt source chunk is not published, and the error says so.
	c := res.Index.Chunks[len(res.Index.Chunks)-1]
	p := src.Path(c.ID)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dst2 := fetch.NewLocalStore(filepath.Join(t.TempDir(), "s"))
	_, err = Push(ctx, []*chunker.Index{res.Index}, PushOptions{From: src, To: dst2})
	if !errors.Is(err, ErrCorruptSource) {
		t.Fatalf("push of a corrupt chunk: %v", err)
	}
	if has, _ := dst2.HasChunk(ctx, c.ID); has {
		t.Fatal("the corrupt chunk was published")
	}
}
