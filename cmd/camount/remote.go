package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

// remoteFlags are the flags for HTTP(S) stores and index URLs, store
// failover groups and the disk cache. Every verb that takes blobFlags has them.
type remoteFlags struct {
	caFile, certFile, keyFile string
	auth                      string
	timeout                   time.Duration
	retries                   int
	failBack                  time.Duration
	cacheDir                  string
	cacheMax                  byteSize
	chunkQuery                bool
	trust                     *trustFlags // --index-digest, --trusted-key (trust.go)
	rate                      rateLimits  // --rate-limit-bps

	once   sync.Once
	opts   fetch.HTTPOptions // shared by every store: one connection pool
	optErr error
}

func addRemoteFlags(fs *flag.FlagSet) *remoteFlags {
	r := addHTTPFlags(fs)
	fs.DurationVar(&r.failBack, "failback", time.Minute, "after switching to another mirror of a 'URL1|URL2' group, go back to the first after this `DURATION`")
	fs.StringVar(&r.cacheDir, "cache", "", "persistent disk cache `DIR` of verified chunks (a .castr-layout store, shareable between processes)")
	fs.BoolVar(&r.chunkQuery, "chunk-query", false, "send the query of an index URL (a signed or tokenised CDN URL: ?sig=…) with the chunk requests of the store derived from it (default.castr beside the index); a --store URL's own query is always sent")
	fs.Var(&r.cacheMax, "cache-max-size", "bound of the disk cache in `BYTES` (K/M/G/T suffixes); least recently used chunks are evicted")
	fs.Var(&r.rate.bps, "rate-limit-bps", "cap all fetching from remote stores at `BYTES`/s of stored (compressed) chunk data, as casync (K/M/G suffixes; 0: no cap)")
	return r
}

// addHTTPFlags registers only the HTTP(S) flags, for verbs that read an
// index but no chunks (info, list-chunks).
func addHTTPFlags(fs *flag.FlagSet) *remoteFlags {
	r := &remoteFlags{cacheMax: cache.DefaultDiskBytes, failBack: time.Minute}
	r.trust = addTrustFlags(fs)
	fs.StringVar(&r.caFile, "ca-file", "", "PEM `FILE` of CA certificates for HTTPS (default: the system's)")
	fs.StringVar(&r.certFile, "client-cert", "", "PEM `FILE` with a TLS client certificate for HTTPS")
	fs.StringVar(&r.keyFile, "client-key", "", "PEM `FILE` with the TLS client certificate's key")
	fs.StringVar(&r.auth, "http-auth", "", "Authorization header `VALUE` sent with HTTP requests, e.g. 'Bearer TOKEN' (default: $CAMOUNT_HTTP_AUTH)")
	fs.DurationVar(&r.timeout, "http-timeout", 30*time.Second, "give up on an HTTP request after this `DURATION` (then retry)")
	fs.IntVar(&r.retries, "http-retries", 4, "retries of a failed HTTP request (network errors, 5xx, truncated bodies), with exponential backoff")
	return r
}

// httpOptions returns the HTTP settings, building the shared client once.
func (r *remoteFlags) httpOptions(log *slog.Logger) (fetch.HTTPOptions, error) {
	r.once.Do(func() {
		auth := r.auth
		if auth == "" {
			auth = os.Getenv("CAMOUNT_HTTP_AUTH")
		}
		retries := r.retries
		if retries == 0 {
			retries = -1 // the flag's 0 means none; the option's 0 means the default
		}
		o := fetch.HTTPOptions{CAFile: r.caFile, CertFile: r.certFile, KeyFile: r.keyFile,
			Authorization: auth, Timeout: r.timeout, Retries: retries, Log: log}
		o.Client, r.optErr = fetch.NewHTTPClient(o)
		r.opts = o
	})
	return r.opts, r.optErr
}

// loadIndex reads an index from a file or an http(s):// URL.
//
// The index is read whole and authenticated (--index-digest,
// --trusted-key: trust.go) before it is parsed or used.
func (r *remoteFlags) loadIndex(ctx context.Context, e *env, path string) (*chunker.Index, error) {
	x, _, err := r.loadIndexBytes(ctx, e, path)
	return x, err
}

// loadIndexBytes is loadIndex that also returns the index file's bytes.
func (r *remoteFlags) loadIndexBytes(ctx context.Context, e *env, path string) (*chunker.Index, []byte, error) {
	if err := r.check(); err != nil {
		return nil, nil, err
	}
	b, err := r.readFile(ctx, e, path, useIndex)
	if err != nil {
		return nil, nil, err
	}
	if err := r.trust.check(ctx, e, r, path, b); err != nil {
		return nil, nil, err
	}
	x, err := chunker.ReadIndex(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", location.Redact(path), err)
	}
	return x, b, nil
}

// fileUse says whether readFile keeps a remote file in the --cache
// directory, and which bytes it keeps.
type fileUse int

const (
	useIndex    fileUse = iota // kept if it parses as an index
	useFile                    // kept as it is (a signature)
	useUncached                // never kept (push copies it elsewhere)
)

// readFile reads a whole index (or a file beside one) from a path or a
// URL; from HTTP(S), S3 or sftp with --cache, unless use is useUncached,
// it is kept in the disk cache (revalidated, used when the server is
// down: offline start).
func (r *remoteFlags) readFile(ctx context.Context, e *env, path string, use fileUse) ([]byte, error) {
	loc, err := location.Parse("INDEX", path, location.Index)
	if err != nil {
		return nil, err
	}
	if loc.IsLocal() {
		return readLocalIndex(loc.Path)
	}
	valid := fetch.ValidIndex
	if use != useIndex {
		valid = nil
	}
	if fetch.IsS3URL(path) || fetch.IsSFTPURL(path) {
		if r.cacheDir == "" || use == useUncached {
			return r.readRemoteFile(ctx, e, path)
		}
		return r.readRemoteFileCached(ctx, e, path, valid)
	}
	o, err := r.httpOptions(e.log)
	if err != nil {
		return nil, err
	}
	var b []byte
	if r.cacheDir != "" && use != useUncached {
		b, err = fetch.FetchFileCached(ctx, path, o, r.cacheDir, valid)
	} else {
		b, err = fetch.FetchURL(ctx, path, o)
	}
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", location.Redact(path), err)
	}
	return b, nil
}

func fetchIndex(ctx context.Context, u string, o fetch.HTTPOptions) (*chunker.Index, error) {
	b, err := fetch.FetchURL(ctx, u, o)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", location.Redact(u), err)
	}
	x, err := chunker.ReadIndex(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", location.Redact(u), err)
	}
	return x, nil
}

// defaultStore is the store of an index when neither --store nor
// $CASYNC_STORE is given: default.castr beside it, on disk or on the server.
// The index URL's query and fragment are dropped, as casync does; with
// chunkQuery (--chunk-query) the query is kept for the chunk requests.
// An S3 URL's query (?lookup=, ?region=) says how to reach the bucket: the
// derived store keeps it.
func defaultStore(index string, chunkQuery bool) string {
	if fetch.IsURL(index) || fetch.IsS3URL(index) || fetch.IsSFTPURL(index) {
		if u, err := fetch.DefaultStoreURL(index); err == nil {
			if q := indexQuery(index); (chunkQuery || fetch.IsS3URL(index)) && q != "" {
				u += "?" + q
			}
			return u
		}
	}
	return ""
}

// indexQuery is the raw query of an index URL ("" for none).
func indexQuery(index string) string {
	if u, err := url.Parse(index); err == nil {
		return u.RawQuery
	}
	return ""
}

// openStore turns a --store value into a Store: a directory, a file:// or
// http(s):// URL, or mirrors separated by '|' forming a failover group.
func (r *remoteFlags) openStore(e *env, spec string) (fetch.Store, error) {
	if strings.Contains(spec, "|") {
		var mirrors []fetch.Store
		for _, m := range strings.Split(spec, "|") {
			if m == "" {
				return nil, fmt.Errorf("chunk store %q: empty mirror in a failover group", spec)
			}
			s, err := r.openStore(e, m)
			if err != nil {
				return nil, err
			}
			mirrors = append(mirrors, s)
		}
		return fetch.NewFailover(mirrors, fetch.FailoverOptions{FailBack: r.failBack, Log: e.log})
	}
	loc, err := location.Parse("--store", spec, location.ReadStore)
	if err != nil {
		return nil, err
	}
	switch loc.Scheme {
	case "":
		return openStore(loc.Path)
	case "http", "https":
		o, err := r.httpOptions(e.log)
		if err != nil {
			return nil, err
		}
		return fetch.NewHTTPStore(spec, o)
	case "s3+http", "s3+https":
		return r.openS3Store(e, spec)
	case "sftp":
		return fetch.NewSFTPStore(spec, r.sftpOptions(e))
	}
	return nil, fmt.Errorf("chunk store %s: no reader for %s:// stores", loc, loc.Scheme)
}

// openDisk opens the --cache directory, or returns nil without one.
func (r *remoteFlags) openDisk(e *env) (*cache.Disk, error) {
	if r.cacheDir == "" {
		return nil, nil
	}
	return cache.OpenDisk(cache.DiskOptions{Dir: r.cacheDir, MaxBytes: int64(r.cacheMax), Log: e.log})
}
