package gc

import (
	"context"

	"github.com/camount/camount/fetch"
)

// List adapts a fetch.ListStore (an S3 bucket, any store that can list
// and remove its chunks) to Store. Its Remove cannot re-check the time
// atomically, so against remote stores the grace period alone protects
// chunks a concurrent writer stores.
type List struct{ S fetch.ListStore }

// Walk lists the store's chunks.
func (l List) Walk(ctx context.Context, fn func(Entry) error) error {
	return l.S.ListChunks(ctx, func(c fetch.ChunkInfo) error {
		h := c.ID.String()
		return fn(Entry{ID: c.ID, Name: h[:4] + "/" + h + fetch.ChunkSuffix, Size: c.Size, ModTime: c.ModTime})
	})
}

// Remove removes a chunk.
func (l List) Remove(ctx context.Context, e Entry) error { return l.S.RemoveChunk(ctx, e.ID) }
