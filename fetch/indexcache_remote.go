package fetch

import (
	"bytes"
	"context"
	"errors"
	"log/slog"

	"github.com/camount/camount/chunker"
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
	ce := openCacheEntry(dir, u)
	f, err := open(ce.ok)
	if err != nil {
		return nil, err
	}
	tag := ""
	if ce.ok {
		tag = ce.meta.ETag
	}
	b, newTag, notModified, err := f.readChanged(ctx, MaxIndexSize, tag)
	switch {
	case err == nil && notModified:
		return ce.reuse(log), nil
	case err == nil:
		if valid == nil || valid(b) == nil {
			ce.keep(log, b, indexMeta{ETag: newTag})
		}
		return b, nil
	case ce.ok && ctx.Err() == nil && !remoteAnswered(err):
		return ce.fallback(log, err), nil
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
