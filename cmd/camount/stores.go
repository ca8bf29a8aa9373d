package main

// Remote stores beyond HTTP (S3, sftp): opening them for reading and
// writing, and reading and writing index files at remote locations.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

// s3Options are the S3 settings: the HTTP flags' transport, timeout and
// retries (r may be nil: the defaults), credentials and region from the
// environment (fetch.S3Options).
func (r *remoteFlags) s3Options(e *env) (fetch.S3Options, error) {
	if r == nil {
		return fetch.S3Options{HTTP: fetch.HTTPOptions{Log: e.log}}, nil
	}
	o, err := r.httpOptions(e.log)
	if err != nil {
		return fetch.S3Options{}, err
	}
	return fetch.S3Options{HTTP: o}, nil
}

// openWriteStore opens a parsed store location for writing: a directory
// (created if missing) or an S3 prefix. r may be nil (default settings).
func openWriteStore(e *env, r *remoteFlags, loc location.Location) (fetch.WriteStore, error) {
	if !loc.IsLocal() && strings.Contains(loc.Raw, "|") {
		return nil, fmt.Errorf("chunk store %s: a 'URL1|URL2' failover group is for reading; write to one store (push copies to another)", loc)
	}
	switch loc.Scheme {
	case "":
		if err := os.MkdirAll(loc.Path, 0o755); err != nil {
			return nil, fmt.Errorf("chunk store: %w", err)
		}
		return fetch.NewLocalStore(loc.Path), nil
	case "s3+http", "s3+https":
		o, err := r.s3Options(e)
		if err != nil {
			return nil, err
		}
		return fetch.NewS3Store(loc.Raw, o)
	case "sftp":
		return fetch.NewSFTPStore(loc.Raw, r.sftpOptions(e))
	}
	return nil, fmt.Errorf("chunk store %s: no writer for %s:// stores", loc, loc.Scheme)
}

// sftpOptions are the sftp settings: the HTTP flags' timeout and retries
// (r may be nil: the defaults); keys, agent and known_hosts the user's.
func (r *remoteFlags) sftpOptions(e *env) fetch.SFTPOptions {
	o := fetch.SFTPOptions{HTTP: fetch.HTTPOptions{Log: e.log}}
	if r != nil {
		retries := r.retries
		if retries == 0 {
			retries = -1
		}
		o.HTTP.Timeout, o.HTTP.Retries = r.timeout, retries
	}
	return o
}

// openS3Store opens an S3 store for reading.
func (r *remoteFlags) openS3Store(e *env, spec string) (fetch.Store, error) {
	o, err := r.s3Options(e)
	if err != nil {
		return nil, err
	}
	return fetch.NewS3Store(spec, o)
}

// loadRemoteIndex reads an index from an S3 or sftp location.
func (r *remoteFlags) loadRemoteIndex(ctx context.Context, e *env, loc string) (*chunker.Index, error) {
	b, err := r.readRemoteFile(ctx, e, loc)
	if err != nil {
		return nil, err
	}
	x, err := chunker.ReadIndex(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", loc, err)
	}
	return x, nil
}

// readRemoteFile reads a whole file (an index, a signature) from an S3 or
// sftp location.
func (r *remoteFlags) readRemoteFile(ctx context.Context, e *env, loc string) ([]byte, error) {
	var b []byte
	var err error
	if fetch.IsSFTPURL(loc) {
		var f *fetch.SFTPFile
		if f, err = fetch.NewSFTPFile(loc, r.sftpOptions(e)); err != nil {
			return nil, err
		}
		b, err = f.Read(ctx, fetch.MaxIndexSize)
	} else {
		var o fetch.S3Options
		if o, err = r.s3Options(e); err != nil {
			return nil, err
		}
		var obj *fetch.S3Object
		if obj, err = fetch.NewS3Object(loc, o); err != nil {
			return nil, err
		}
		b, err = obj.Read(ctx, fetch.MaxIndexSize)
	}
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", loc, err)
	}
	return b, nil
}

// readRemoteFileCached is readRemoteFile through the --cache directory
// (fetch.FetchRemoteFileCached): kept if valid accepts it (nil: always),
// the kept copy used when the server does not answer.
func (r *remoteFlags) readRemoteFileCached(ctx context.Context, e *env, loc string, valid func([]byte) error) ([]byte, error) {
	open := func(oneAttempt bool) (fetch.RemoteFile, error) {
		if fetch.IsSFTPURL(loc) {
			o := r.sftpOptions(e)
			if oneAttempt {
				o.HTTP.Retries = -1
			}
			return fetch.NewSFTPFile(loc, o)
		}
		o, err := r.s3Options(e)
		if err != nil {
			return nil, err
		}
		if oneAttempt {
			o.HTTP.Retries = -1
		}
		return fetch.NewS3Object(loc, o)
	}
	b, err := fetch.FetchRemoteFileCached(ctx, loc, open, r.cacheDir, valid, e.log)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", location.Redact(loc), err)
	}
	return b, nil
}

// indexWriter is where an index file is published.
type indexWriter interface {
	Write(ctx context.Context, data []byte) error
	String() string
}

// localIndexFile writes an index file atomically.
type localIndexFile string

func (f localIndexFile) String() string { return string(f) }

func (f localIndexFile) Write(ctx context.Context, data []byte) error {
	return writeFileAtomic(string(f), func(w io.Writer) error { _, err := w.Write(data); return err })
}

// openIndexWriter opens an output location for an index file.
func openIndexWriter(e *env, r *remoteFlags, loc location.Location) (indexWriter, error) {
	switch loc.Scheme {
	case "":
		return localIndexFile(loc.Path), nil
	case "s3+http", "s3+https":
		o, err := r.s3Options(e)
		if err != nil {
			return nil, err
		}
		return fetch.NewS3Object(loc.Raw, o)
	case "sftp":
		return fetch.NewSFTPFile(loc.Raw, r.sftpOptions(e))
	}
	return nil, fmt.Errorf("%s: no writer for %s:// index locations", loc, loc.Scheme)
}

// defaultPushSource is push's source store when --from is not given:
// $CASYNC_STORE, else default.castr beside the first index.
func defaultPushSource(index string) string {
	if s := os.Getenv("CASYNC_STORE"); s != "" {
		return s
	}
	if location.IsURL(index) {
		return defaultStore(index, false)
	}
	return defaultLocalStore(index)
}

// indexDest is where push publishes the index given as arg: inside the
// --index-to directory or prefix under the index's own name, or, for a
// single index and a location naming an index file, that location.
func indexDest(e *env, r *remoteFlags, loc location.Location, arg string, n int) (indexWriter, error) {
	name := location.Base(arg)
	isFile := n == 1 && kindOf(location.Base(loc.Raw)) != kindOf("")
	if loc.IsLocal() {
		p := loc.Path
		if !isFile {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return nil, err
			}
			p = filepath.Join(p, name)
		}
		return localIndexFile(p), nil
	}
	if !isFile {
		u := *loc.URL
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + name
		u.RawPath = ""
		loc.Raw = u.String()
	}
	return openIndexWriter(e, r, loc)
}

// indexBytes serialises an index.
func indexBytes(x *chunker.Index) ([]byte, error) {
	var b bytes.Buffer
	if _, err := x.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// pushSignature publishes the signature file of the index src
// (src.minisig) beside its destination d, if src has one.
func pushSignature(ctx context.Context, e *env, r *remoteFlags, src string, d indexWriter) error {
	sig, err := r.readFile(ctx, e, signaturePath(src), useUncached)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fetch.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signature of %s: %w", src, err)
	}
	dst := signaturePath(d.String())
	loc, err := location.Parse("--index-to", dst, location.WriteStore)
	if err != nil {
		return err
	}
	w, err := openIndexWriter(e, r, loc)
	if err != nil {
		return err
	}
	if err := w.Write(ctx, sig); err != nil {
		return fmt.Errorf("publishing signature %s: %w", w, err)
	}
	fmt.Fprintf(e.stdout, "published %s\n", w)
	return nil
}
