package main

// Locations: every command-line value naming a store, cache, index or
// output is parsed once by location.Parse (package location owns which
// schemes each use supports) before any work starts.

import (
	"os"
	"strings"

	"github.com/camount/camount/location"
)

// parseLocal parses a value that must be a local path for use (outputs,
// the disk cache): file:// URLs become paths, anything else that looks
// like a URL is refused. "" stays "" (not given).
func parseLocal(flag, value string, use location.Use) (string, error) {
	if value == "" {
		return "", nil
	}
	l, err := location.Parse(flag, value, use)
	if err != nil {
		return "", err
	}
	if !l.IsLocal() {
		// A scheme the table lists for use but this command has no
		// code for yet.
		return "", &location.Error{Flag: flag, Value: value, Use: use, Why: "not supported here yet"}
	}
	return l.Path, nil
}

// writeStoreLocation is the store make writes to: --store, else
// $CASYNC_STORE, else default.castr beside the index.
func (o *makeFlags) storeLocation(index string) (location.Location, error) {
	if o.store != "" {
		return location.Parse("--store", o.store, location.WriteStore)
	}
	if s := os.Getenv("CASYNC_STORE"); s != "" {
		return location.Parse("$CASYNC_STORE", s, location.WriteStore)
	}
	return location.Parse("--store", defaultLocalStore(index), location.WriteStore)
}

// checkReadLocations parses the index, every --store (each mirror of a
// 'URL1|URL2' group) and --cache of a reading verb, so that a bad one is
// refused before anything is fetched or created.
func (o *blobFlags) checkReadLocations(index string) error {
	if _, err := location.Parse("INDEX", index, location.Index); err != nil {
		return err
	}
	flag := "--store"
	specs := []string(o.stores)
	if len(specs) == 0 {
		if s := os.Getenv("CASYNC_STORE"); s != "" {
			flag, specs = "$CASYNC_STORE", []string{s}
		}
	}
	for _, spec := range specs {
		for _, m := range strings.Split(spec, "|") {
			if m == "" {
				continue // openStore names the empty mirror
			}
			if _, err := location.Parse(flag, m, location.ReadStore); err != nil {
				return err
			}
		}
	}
	if o.remote != nil {
		if _, err := parseLocal("--cache", o.remote.cacheDir, location.Cache); err != nil {
			return err
		}
	}
	return nil
}
