package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
)

// IndexCacheDir is the subdirectory of a disk cache (--cache DIR) that
// keeps fetched index files, so that an image starts without its server
// (offline boot). Chunk scans skip it; the cache's bound counts it.
const IndexCacheDir = cache.IndexDir

// maxKeptIndexes bounds the indexes kept: a new URL (a signed URL whose
// signature changes on every start) makes a new entry, so the least
// recently used go.
const maxKeptIndexes = 64

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
	ce := openCacheEntry(dir, u)
	if ce.ok {
		// With a copy at hand, revalidating is worth one attempt, not
		// the retries: a start without network (a boot) must not wait
		// out (retries+1) timeouts before using it.
		o.Retries = -1
	}
	g, err := newHTTPGetter(o)
	if err != nil {
		return nil, err
	}
	c := &conditional{}
	if ce.ok {
		c.etag, c.lastModified = ce.meta.ETag, ce.meta.LastModified
	}
	b, err := g.getWith(ctx, u, MaxIndexSize, c)
	switch {
	case err == nil && c.notModified:
		return ce.reuse(g.log), nil
	case err == nil:
		if valid == nil || valid(b) == nil {
			ce.keep(g.log, b, indexMeta{ETag: c.respETag, LastModified: c.respLM})
		}
		return b, nil
	case ce.ok && ctx.Err() == nil && !serverAnswered(err):
		return ce.fallback(g.log, err), nil
	}
	return nil, err
}

// cacheEntry is one remote file's copy in the index cache: the file
// (key.idx) and what revalidates it (key.json).
type cacheEntry struct {
	u, cdir, dataPath, metaPath string
	data                        []byte    // the kept copy, if ok
	meta                        indexMeta // its metadata (zero if unreadable)
	ok                          bool      // a copy is kept
}

func openCacheEntry(dir, u string) *cacheEntry {
	cdir := filepath.Join(dir, IndexCacheDir)
	key := indexCacheKey(u)
	ce := &cacheEntry{u: u, cdir: cdir, dataPath: filepath.Join(cdir, key+".idx"), metaPath: filepath.Join(cdir, key+".json")}
	var err error
	if ce.data, err = os.ReadFile(ce.dataPath); err == nil {
		ce.ok = true
		if b, err := os.ReadFile(ce.metaPath); err != nil || json.Unmarshal(b, &ce.meta) != nil {
			ce.meta = indexMeta{}
		}
	}
	return ce
}

// reuse returns the kept copy after the server said it is unchanged, and
// marks it used (the cache's expiry goes by modification time).
func (ce *cacheEntry) reuse(log *slog.Logger) []byte {
	log.Debug("index not modified; using the cached copy", "index", location.Redact(ce.u), "cached", ce.dataPath)
	now := time.Now()
	os.Chtimes(ce.dataPath, now, now)
	return ce.data
}

// keep stores a freshly fetched copy with the validators in meta; failing
// to keep it is a warning, not an error of the fetch.
func (ce *cacheEntry) keep(log *slog.Logger, b []byte, meta indexMeta) {
	meta.URL, meta.Fetched = location.WithoutSecrets(ce.u), time.Now().UTC()
	if werr := keepIndex(ce.cdir, ce.dataPath, ce.metaPath, b, meta); werr != nil {
		log.Warn("cannot keep the index in the cache", "index", location.Redact(ce.u), "dir", ce.cdir, "err", werr)
	}
}

// fallback returns the kept copy when the server could not be asked.
func (ce *cacheEntry) fallback(log *slog.Logger, err error) []byte {
	log.Warn("index server did not answer: using the cached copy", "index", location.Redact(ce.u),
		"fetched", ce.meta.Fetched.Format(time.RFC3339), "err", err)
	return ce.data
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
		tmp, err := os.CreateTemp(cdir, cache.TempPrefix+"*")
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
	cache.TrimMeta(filepath.Dir(cdir), IndexCacheDir, maxKeptIndexes)
	return nil
}
