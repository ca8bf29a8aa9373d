package main

// camount gc on remote stores (S3, sftp): the gc package sweeps any
// gc.Store; this adapts the stores' listing and removal (fetch.ListStore).

import (
	"context"
	"fmt"

	"github.com/camount/camount/fetch"
	"github.com/camount/camount/gc"
	"github.com/camount/camount/location"
)

func init() {
	for _, scheme := range []string{"s3+http", "s3+https"} {
		gcStores[scheme] = func(ctx context.Context, loc location.Location) (gc.Store, error) {
			s, err := fetch.NewS3Store(loc.Raw, fetch.S3Options{})
			if err != nil {
				return nil, err
			}
			return gcListStore{s}, nil
		}
	}
	gcStores["sftp"] = func(ctx context.Context, loc location.Location) (gc.Store, error) {
		s, err := fetch.NewSFTPStore(loc.Raw, fetch.SFTPOptions{})
		if err != nil {
			return nil, err
		}
		return gcListStore{s}, nil
	}
}

// gcListStore sweeps a fetch.ListStore. Entries are named by the store's
// URL and the chunk's path in casync's layout.
type gcListStore struct{ s fetch.ListStore }

func (g gcListStore) Walk(ctx context.Context, fn func(gc.Entry) error) error {
	return g.s.ListChunks(ctx, func(c fetch.ChunkInfo) error {
		h := c.ID.String()
		return fn(gc.Entry{ID: c.ID, Name: fmt.Sprintf("%s/%s/%s%s", g.s, h[:4], h, fetch.ChunkSuffix), Size: c.Size, ModTime: c.ModTime})
	})
}

// Remove removes the chunk. Remote stores cannot compare and delete in one
// request, so a chunk rewritten between the listing and the removal is
// removed all the same (see docs/REMOTE.md: run gc on a remote store while
// no publisher writes to it, or with a --grace longer than any make).
func (g gcListStore) Remove(ctx context.Context, e gc.Entry) error {
	return g.s.RemoveChunk(ctx, e.ID)
}
