package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// byteSize is a flag holding a size with an optional K/M/G/T suffix (powers of 1024).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }
func (b *byteSize) Set(v string) error {
	n, err := parseByteSize(v)
	*b = byteSize(n)
	return err
}

func parseByteSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	if s != "" {
		switch strings.ToUpper(s[len(s)-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:len(s)-1]
		}
		s = strings.TrimSuffix(strings.TrimSuffix(s, "i"), "B")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) || err == nil && n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is out of range (at most %d bytes, 8388607T)", v, int64(math.MaxInt64))
	}
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 1048576, 512K, 256M, 2G)", v)
	}
	return n * mult, nil
}

// blobFlags are the flags of every verb that reads an image through stores.
type blobFlags struct {
	stores    stringList
	extra     stringList // --extra-store
	cacheSize byteSize
	workers   int
	remote    *remoteFlags // HTTP stores, index URLs, mirrors, disk cache (remote.go)
	seeds     *seedFlags   // --seed (seed.go); nil for verbs without seeds
	// readTimeout is not a flag: 0 bounds a reader's wait for a chunk by
	// fetch.DefaultReadTimeout (mount, nbd); extract sets -1 and waits as
	// long as the stores' retries go on.
	readTimeout time.Duration
	// bulk is not a flag: a blob extract and a .caidx's archive stream
	// (openStream) set it, as the one reader of the image
	// (fetch.SchedulerOptions.Bulk).
	bulk bool
}

func addBlobFlags(fs *flag.FlagSet) *blobFlags {
	o := &blobFlags{cacheSize: cache.DefaultMemoryBytes}
	fs.Var(&o.stores, "store", "chunk store `DIR|URL` (repeatable: tried in order; 'URL1|URL2' is a failover group of mirrors); default: $CASYNC_STORE, else default.castr beside the index")
	fs.Var(&o.extra, "extra-store", "additional chunk store `DIR|URL`, tried after --store (or its default), as casync's (repeatable)")
	fs.Var(&o.cacheSize, "cache-size", "memory cache of verified chunks, in `BYTES` (K/M/G suffixes)")
	fs.IntVar(&o.workers, "fetch-workers", 0, "concurrent chunk fetches (0: 32; extract uses them all, while a mount or device leaves readers one free: readahead may use 3/4 of them, background fill 1/2)")
	o.remote = addRemoteFlags(fs)
	return o
}

// storeSpecs returns the store locations for an index, casync's way.
func (o *blobFlags) storeSpecs(index string) []string {
	return append(o.primaryStores(index), o.extra...)
}

// primaryStores is --store, else $CASYNC_STORE, else the index's default.
func (o *blobFlags) primaryStores(index string) []string {
	if len(o.stores) > 0 {
		return o.stores
	}
	if s := os.Getenv("CASYNC_STORE"); s != "" {
		return []string{s}
	}
	if s := defaultStore(index, o.remote.chunkQuery); s != "" {
		return []string{s}
	}
	return []string{filepath.Join(filepath.Dir(index), "default.castr")}
}

// openStore turns a --store value into a Store.
func openStore(spec string) (fetch.Store, error) {
	st, err := os.Stat(spec)
	if err != nil {
		return nil, fmt.Errorf("chunk store %s: %w", spec, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("chunk store %s: not a directory", spec)
	}
	return fetch.NewLocalStore(spec), nil
}

// loadIndex reads and validates an index file, or fetches it from an
// http(s):// URL (with default HTTP settings and $CAMOUNT_HTTP_AUTH; verbs
// with blobFlags use their TLS and retry flags through remoteFlags.loadIndex).
func loadIndex(ctx context.Context, path string) (*chunker.Index, error) {
	if fetch.IsURL(path) {
		return fetchIndex(ctx, path, fetch.HTTPOptions{Authorization: os.Getenv("CAMOUNT_HTTP_AUTH")})
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	x, err := chunker.ReadIndex(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return x, nil
}

// openBlob loads an index and returns a Blob reading it through the stores.
func openBlob(ctx context.Context, e *env, index string, o *blobFlags) (*fetch.Blob, *chunker.Index, error) {
	index, err := o.checkReadLocations(index)
	if err != nil {
		return nil, nil, err
	}
	x, err := o.remote.loadIndex(ctx, e, index)
	if err != nil {
		return nil, nil, err
	}
	// An index whose chunks are all zero (or that has none) needs no store,
	// as with casync, which makes no store for an empty input.
	needStore := false
	for _, z := range fetch.ZeroChunks(x) {
		if !z {
			needStore = true
			break
		}
	}
	var stores []fetch.Store
	for _, spec := range o.storeSpecs(index) {
		s, err := o.remote.openStore(e, spec)
		if err != nil && needStore {
			return nil, nil, err
		}
		if err != nil {
			s = fetch.NewLocalStore(spec)
		}
		stores = append(stores, o.remote.limit(s, spec))
	}
	seedStores, err := o.seeds.lazyStores(ctx, e, o, x)
	if err != nil {
		return nil, nil, err
	}
	stores = append(seedStores, stores...)
	mem := cache.NewMemory(int64(o.cacheSize))
	if o.cacheSize == 0 {
		mem = cache.NewMemory(-1)
	}
	so := fetch.SchedulerOptions{Stores: stores, Memory: mem, Workers: o.workers, Log: e.log, ReadTimeout: o.readTimeout, Bulk: o.bulk}
	disk, err := o.remote.openDisk(e)
	if err != nil {
		return nil, nil, err
	}
	if disk != nil {
		so.Disk = disk
	}
	s, err := fetch.NewScheduler(so)
	if err != nil {
		return nil, nil, err
	}
	return fetch.NewBlob(x, s, location.Redact(index)), x, nil
}

// indexKind tells a blob index from a tree index or archive by suffix, as casync does.
type indexKind int

const (
	kindUnknown indexKind = iota
	kindBlobIndex
	kindTreeIndex
	kindArchive
)

// A URL's query and fragment (a signed CDN URL) are not part of its name.
func kindOf(path string) indexKind {
	if k, ok := whatKind(path); ok { // --what (what.go)
		return k
	}
	path = location.StripQuery(path)
	switch {
	case strings.HasSuffix(path, ".caibx"):
		return kindBlobIndex
	case strings.HasSuffix(path, ".caidx"):
		return kindTreeIndex
	case strings.HasSuffix(path, ".catar"):
		return kindArchive
	}
	return kindUnknown
}
