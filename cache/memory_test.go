package cache

import (
	"testing"

	"github.com/camount/camount/chunker"
)

func TestMemoryBoundsFootprint(t *testing.T) {
	m := NewMemory(1 << 20)
	id := func(i int) chunker.ID { return chunker.SHA512_256.Sum([]byte{byte(i), byte(i >> 8)}) }
	// A short slice holding a large buffer counts the buffer.
	m.Add(id(0), make([]byte, 10, 100<<10))
	if got := m.Bytes(); got != 104<<10 {
		t.Fatalf("bytes %d, want %d (cap rounded to 8 KiB pages)", got, 104<<10)
	}
	// 16 chunks of 64 KiB + 1 byte hold 72 KiB each: only 14 fit in 1 MiB.
	for i := 1; i <= 16; i++ {
		m.Add(id(i), make([]byte, 64<<10+1))
	}
	if m.Len() != 14 || m.Bytes() != 14*72<<10 {
		t.Fatalf("len %d bytes %d, want 14 chunks of 72 KiB", m.Len(), m.Bytes())
	}
	if _, ok := m.Get(id(16)); !ok {
		t.Fatal("newest chunk evicted")
	}
	if m.Contains(id(0)) || m.Contains(id(2)) {
		t.Fatal("oldest chunks kept")
	}
	m.Add(id(99), make([]byte, 1<<20+1)) // larger than the bound: not cached
	if m.Contains(id(99)) || m.Len() != 14 {
		t.Fatal("oversized chunk cached")
	}
}
