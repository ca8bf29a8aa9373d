package publish

import (
	"context"
	"errors"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

// DefaultListLimit bounds how many chunks of a remote store are listed
// before publishing into it (see MakeOptions.ListLimit).
const DefaultListLimit = 1 << 20

var errListFull = errors.New("list limit reached")

// present lists the chunks a remote store holds, so that publishing asks
// the store about each chunk only when the listing could not tell: one
// LIST request names a thousand chunks where a HEAD request names one, and
// a fresh prefix (the common first publish) costs one request instead of
// one per chunk. Only S3 stores are listed: a local directory's stat is
// cheap (and refreshes the chunk's time for gc), and an sftp store lists
// one request per fan-out directory. It returns nil (ask per chunk) for
// the others, when limit < 0, and when the store holds more than limit
// chunks (0 means DefaultListLimit) or the listing fails.
func present(ctx context.Context, s fetch.WriteStore, limit int) map[chunker.ID]bool {
	if limit < 0 {
		return nil
	}
	if limit == 0 {
		limit = DefaultListLimit
	}
	ls, ok := s.(*fetch.S3Store)
	if !ok {
		return nil
	}
	m := map[chunker.ID]bool{}
	err := ls.ListChunks(ctx, func(c fetch.ChunkInfo) error {
		if len(m) >= limit {
			return errListFull
		}
		m[c.ID] = true
		return nil
	})
	if err != nil {
		return nil
	}
	return m
}
