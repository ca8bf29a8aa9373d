package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
)

// IndexCacheDir is the subdirectory of a disk cache (--cache DIR) that
// keeps fetched index files, so that an image starts without its server
// (offline boot). Chunk scans skip it (it is not a 4-hex fan-out
// directory).
const IndexCacheDir = "indexes"

// indexMeta is what is kept beside a cached index: its URL (without
// userinfo, to show) and the validators to revalidate it with.
type indexMeta struct {
	URL          string    `json:"url"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Fetched      time.Time `json:"fetched"`
}

// indexCacheKey names a cached index: the SHA-256 of its URL without
// userinfo (the query stays: it may select a version; hashed, a
// signature in it is not kept in clear).
func indexCacheKey(u string) string {
	if p, err := url.Parse(u); err == nil {
		p.User = nil
		p.Fragment, p.RawFragment = "", ""
		u = p.String()
	}
	sum := sha256.Sum256([]byte(u))
	return hex.EncodeToString(sum[:])
}

// FetchIndexCached fetches the index at URL u, keeping a copy in
// dir/indexes (dir is a --cache directory). With a copy kept, the request
// is conditional on its ETag and Last-Modified (one attempt, no
// retries): a 304 answer serves the copy. When the server does not answer
// (network errors, timeouts, 5xx), the copy is used with a warning logged; when it
// answers otherwise (404, 403), its answer is the error. A fetched index
// is kept only if it parses.
func FetchIndexCached(ctx context.Context, u string, o HTTPOptions, dir string) ([]byte, error) {
	return FetchFileCached(ctx, u, o, dir, func(b []byte) error {
		_, err := chunker.ReadIndex(bytes.NewReader(b))
		return err
	})
}

// FetchFileCached is FetchIndexCached for any file beside an index (a
// signature): a fetched file is kept if valid (nil: always) accepts it.
func FetchFileCached(ctx context.Context, u string, o HTTPOptions, dir string, valid func([]byte) error) ([]byte, error) {
	cdir := filepath.Join(dir, IndexCacheDir)
	key := indexCacheKey(u)
	dataPath, metaPath := filepath.Join(cdir, key+".idx"), filepath.Join(cdir, key+".json")
	var meta indexMeta
	cached, cerr := os.ReadFile(dataPath)
	if cerr == nil {
		// With a copy at hand, revalidating is worth one attempt, not
		// the retries: a start without network (a boot) must not wait
		// out (retries+1) timeouts before using it.
		o.Retries = -1
	}
	g, err := newHTTPGetter(o)
	if err != nil {
		return nil, err
	}
	if cerr == nil {
		if b, err := os.ReadFile(metaPath); err != nil || json.Unmarshal(b, &meta) != nil {
			meta = indexMeta{}
		}
	}
	c := &conditional{}
	if cerr == nil {
		c.etag, c.lastModified = meta.ETag, meta.LastModified
	}
	b, err := g.getWith(ctx, u, MaxIndexSize, c)
	shown := location.Redact(u)
	switch {
	case err == nil && c.notModified:
		g.log.Debug("index not modified; using the cached copy", "index", shown, "cached", dataPath)
		now := time.Now()
		os.Chtimes(dataPath, now, now)
		return cached, nil
	case err == nil:
		if valid == nil || valid(b) == nil {
			meta = indexMeta{URL: location.WithoutSecrets(u), ETag: c.respETag, LastModified: c.respLM, Fetched: time.Now().UTC()}
			if werr := keepIndex(cdir, dataPath, metaPath, b, meta); werr != nil {
				g.log.Warn("cannot keep the index in the cache", "index", shown, "dir", cdir, "err", werr)
			}
		}
		return b, nil
	case cerr == nil && ctx.Err() == nil && !serverAnswered(err):
		g.log.Warn("index server did not answer: using the cached copy", "index", shown,
			"fetched", meta.Fetched.Format(time.RFC3339), "err", err)
		return cached, nil
	}
	return nil, err
}

// serverAnswered reports whether err is an answer of the server about the
// file (404, 403, 401…) rather than its absence (network errors, 5xx).
func serverAnswered(err error) bool {
	if errors.Is(err, ErrNotFound) {
		return true
	}
	var se *HTTPStatusError
	return errors.As(err, &se) && se.Code < 500 && se.Code != 429 && se.Code != 408
}

// keepIndex writes the index and its metadata atomically (temporary file
// and rename), the index first.
func keepIndex(cdir, dataPath, metaPath string, b []byte, meta indexMeta) error {
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return err
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{dataPath, b}, {metaPath, mb}} {
		tmp, err := os.CreateTemp(cdir, ".tmp-*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(f.data)
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Chmod(tmp.Name(), 0o644)
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), f.path)
		}
		if werr != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("%s: %w", f.path, werr)
		}
	}
	return nil
}
