package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/publish"
)

// makeTreeCached makes a .caidx with casync's make cache (--make-cache=DIR,
// casync's make --cache; publish/makecache.go): chunks inside files that
// have not changed since the last make of the tree are reused unread. It
// returns the stream digest, or noDigest when chunks were reused (casync
// prints none then either).
func makeTreeCached(ctx context.Context, e *env, tf *treeFlags, cacheDir, out, dir string, opts catar.EncodeOptions, features uint64) (id chunker.ID, noDigest bool, err error) {
	mf := &makeFlags{
		store:       tf.flagValue("store", ""),
		chunkSize:   tf.flagValue("chunk-size", "auto"),
		digest:      tf.flagValue("digest", "sha512-256"),
		compression: tf.flagValue("compression", "zstd"),
	}
	p, err := chunker.ParseParams(mf.chunkSize)
	if err != nil {
		return id, false, err
	}
	d, err := chunker.ParseDigest(mf.digest)
	if err != nil {
		return id, false, err
	}
	comp, err := fetch.ParseCompression(mf.compression)
	if err != nil {
		return id, false, err
	}
	loc, err := mf.storeLocation(out)
	if err != nil {
		return id, false, err
	}
	store, err := openWriteStore(e, nil, loc)
	if err != nil {
		return id, false, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return id, false, err
	}
	key := sha256.Sum256([]byte(abs))
	cachePath := filepath.Join(cacheDir, hex.EncodeToString(key[:12])+".makecache")
	old, err := publish.LoadMakeCache(cachePath, p, d)
	if err != nil {
		return id, false, err
	}
	ts := publish.NewTreeSource(old, p, e.log)
	opts.PayloadTo = ts.Payload
	encErr := make(chan error, 1)
	go func() {
		_, err := catar.Encode(ctx, ts, dir, opts)
		ts.CloseWithError(err)
		encErr <- err
	}()
	res, err := publish.Make(ctx, nil, publish.MakeOptions{Params: p, Digest: d, Compression: comp, Flags: features,
		Store: store, Log: e.log, Chunks: ts})
	if eerr := <-encErr; eerr != nil && err == nil {
		err = eerr
	}
	if err != nil {
		return id, false, err
	}
	if err := writeFileAtomic(out, func(w io.Writer) error { _, err := res.Index.WriteTo(w); return err }); err != nil {
		return id, false, err
	}
	if err := ts.Cache(res.Index, p, d).Save(cachePath); err != nil {
		return id, false, errors.Join(errors.New("saving the make cache"), err)
	}
	e.log.Debug("make cache", "cache", cachePath, "reused chunks", ts.Reused.Load(), "file bytes read", ts.Read.Load())
	return res.Digest, res.NoDigest, nil
}
