package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
)

// RemoteFile is an index (or a file beside one) on an S3 or sftp server:
// an *S3Object or an *SFTPFile.
type RemoteFile interface {
	String() string
	// readChanged reads the file whole (at most limit bytes). With tag
	// (a tag it returned before) it may answer notModified instead.
	readChanged(ctx context.Context, limit int64, tag string) (b []byte, newTag string, notModified bool, err error)
}

// ValidIndex accepts the bytes of an index file (FetchFileCached's and
// FetchRemoteFileCached's valid for indexes).
func ValidIndex(b []byte) error {
	_, err := chunker.ReadIndex(bytes.NewReader(b))
	return err
}

// FetchRemoteFileCached is FetchFileCached for an S3 object or an sftp
// file at u: the file is kept in dir/indexes (dir is a --cache directory)
// when valid accepts it (nil: always), and the kept copy serves when the
// server does not answer (network errors, timeouts, 5xx), with a warning
// logged. When the server answers about the file (it is missing, access
// is denied, the credentials or the host key are refused), its answer is
// the error. open returns the file; oneAttempt is true when a copy is
// kept, and the file should then be opened without retries, so that a
// start without network (a boot) does not wait them out. An S3 object is
// revalidated by its ETag (If-None-Match); an sftp file is read whole.
func FetchRemoteFileCached(ctx context.Context, u string, open func(oneAttempt bool) (RemoteFile, error), dir string, valid func([]byte) error, log *slog.Logger) ([]byte, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cdir := filepath.Join(dir, IndexCacheDir)
	key := indexCacheKey(u)
	dataPath, metaPath := filepath.Join(cdir, key+".idx"), filepath.Join(cdir, key+".json")
	var meta indexMeta
	cached, cerr := os.ReadFile(dataPath)
	if cerr == nil {
		if b, err := os.ReadFile(metaPath); err != nil || json.Unmarshal(b, &meta) != nil {
			meta = indexMeta{}
		}
	}
	f, err := open(cerr == nil)
	if err != nil {
		return nil, err
	}
	tag := ""
	if cerr == nil {
		tag = meta.ETag
	}
	b, newTag, notModified, err := f.readChanged(ctx, MaxIndexSize, tag)
	shown := location.Redact(u)
	switch {
	case err == nil && notModified:
		log.Debug("index not modified; using the cached copy", "index", shown, "cached", dataPath)
		now := time.Now()
		os.Chtimes(dataPath, now, now)
		return cached, nil
	case err == nil:
		if valid == nil || valid(b) == nil {
			meta = indexMeta{URL: location.WithoutSecrets(u), ETag: newTag, Fetched: time.Now().UTC()}
			if werr := keepIndex(cdir, dataPath, metaPath, b, meta); werr != nil {
				log.Warn("cannot keep the index in the cache", "index", shown, "dir", cdir, "err", werr)
			}
		}
		return b, nil
	case cerr == nil && ctx.Err() == nil && !remoteAnswered(err):
		log.Warn("index server did not answer: using the cached copy", "index", shown,
			"fetched", meta.Fetched.Format(time.RFC3339), "err", err)
		return cached, nil
	}
	return nil, err
}

// remoteAnswered reports whether err is an S3 or sftp server's answer
// about a file (missing, refused) rather than its absence.
func remoteAnswered(err error) bool {
	var s3e *S3Error
	var sfe *SFTPError
	return errors.Is(err, ErrNotFound) || errors.As(err, &s3e) || errors.As(err, &sfe)
}
