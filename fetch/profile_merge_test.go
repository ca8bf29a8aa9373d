package fetch

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestMergeProfiles(t *testing.T) {
	a := &Profile{Identity: "sha256:x", Chunks: []int{5, 1, 2, 3}}
	b := &Profile{Identity: "sha256:x", Chunks: []int{1, 9}}
	m, err := MergeProfiles(a, b)
	if err != nil {
		t.Fatal(err)
	}
	// positions: 5:0 1:0 (b) 2:.5 9:.5 3:.75
	if want := []int{5, 1, 2, 9, 3}; !slices.Equal(m.Chunks, want) || m.Identity != "sha256:x" {
		t.Fatalf("merged %v %s, want %v", m.Chunks, m.Identity, want)
	}
	if _, err := MergeProfiles(a, &Profile{Identity: "sha256:y"}); !errors.Is(err, ErrProfileMismatch) {
		t.Fatalf("merging profiles of two images: %v, want ErrProfileMismatch", err)
	}
	if _, err := MergeProfiles(); err == nil {
		t.Fatal("merging nothing succeeded")
	}
}

// TestRecordChunkAnyPriority: chunks a caller consumes at Readahead
// priority (a directory crawl, a page-cache push) are in the profile;
// chunks only prefetched are not.
func TestRecordChunkAnyPriority(t *testing.T) {
	st := newGateStore()
	b, _ := fakeBlob(t, st, 40, 8192, 31)
	rec := b.Record()
	if _, err := b.Chunk(context.Background(), 3, Readahead); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Chunk(context.Background(), 7, Foreground); err != nil {
		t.Fatal(err)
	}
	b.Prefetch(int64(b.idx.Chunks[20].Start), 1, Readahead)
	if got := rec.Profile().Chunks; !slices.Equal(got, []int{3, 7}) {
		t.Fatalf("recorded %v, want [3 7]", got)
	}
}
