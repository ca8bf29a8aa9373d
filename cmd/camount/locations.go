package main

// Locations: every command-line value naming a store, cache, index or
// output is parsed once by location.Parse (package location owns which
// schemes each use supports) before any work starts.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/camount/camount/location"
	"golang.org/x/sys/unix"
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
// refused before anything is fetched or created. It returns the index to
// use: a file:// URL becomes its path.
func (o *blobFlags) checkReadLocations(index string) (string, error) {
	l, err := location.Parse("INDEX", index, location.Index)
	if err != nil {
		return "", err
	}
	if l.IsLocal() {
		index = l.Path
	}
	if t := o.remote.trustOf(); kindOf(index) == kindArchive && t != nil && (t.digest != "" || len(t.keys) > 0) {
		return "", usagef("--index-digest and --trusted-key authenticate .caibx/.caidx indexes; %s is a .catar archive", index)
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
				return "", err
			}
		}
	}
	if o.remote != nil {
		if err := o.remote.check(); err != nil {
			return "", err
		}
		if o.remote.cacheDir, err = parseLocal("--cache", o.remote.cacheDir, location.Cache); err != nil {
			return "", err
		}
	}
	return index, nil
}

// indexSource is how a mount or device names its index where anybody can
// read it (/proc/mounts): a local index's absolute path, a URL without
// password, query or fragment.
func indexSource(index string) string {
	if location.IsURL(index) {
		return location.WithoutSecrets(index)
	}
	if l, err := location.Parse("INDEX", index, location.Index); err == nil {
		index = l.Path
	}
	abs, err := filepath.Abs(index)
	if err != nil {
		return index
	}
	return abs
}

// indexName is the name an image gets from its index location (a blob
// mount's file, an NBD export, a loop device's file): the last path
// element without suffix, percent-decoded and without query for a URL.
func indexName(index, suffix string) string {
	return strings.TrimSuffix(location.Base(index), suffix)
}

// redactAttr keeps passwords of URLs out of every log line (messages,
// strings, errors), whoever logs them: the producers redact what they
// show (location.Redact), and this catches what they pass through.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); strings.Contains(s, "@") {
			a.Value = slog.StringValue(location.RedactText(s))
		}
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			if s := v.Error(); strings.Contains(s, "@") {
				a.Value = slog.StringValue(location.RedactText(s))
			}
		case fmt.Stringer:
			if s := v.String(); strings.Contains(s, "@") {
				a.Value = slog.StringValue(location.RedactText(s))
			}
		}
	}
	return a
}

// checkOutputFile checks, before any work, that flag's value names a
// local file that can be written: its directory exists and is writable,
// and it is not a directory or read-only. Nothing is created. It returns
// the path ("" when not given).
func checkOutputFile(flag, value string) (string, error) {
	p, err := parseLocal(flag, value, location.Output)
	if err != nil || p == "" {
		return p, err
	}
	if st, err := os.Stat(p); err == nil {
		if st.IsDir() {
			return "", fmt.Errorf("%s %s: is a directory", flag, p)
		}
		if err := unix.Access(p, unix.W_OK); err != nil {
			return "", fmt.Errorf("%s %s: cannot be written: %w", flag, p, err)
		}
		return p, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s %s: %w", flag, p, err)
	}
	dir := filepath.Dir(p)
	st, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, p, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s %s: %s is not a directory", flag, p, dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return "", fmt.Errorf("%s %s: cannot create a file in %s: %w", flag, p, dir, err)
	}
	return p, nil
}

// checkFiles checks the files of the prefetch flags at start: the
// profile to read is a local file, the profile and statistics to write
// can be written (so that they are not lost at exit).
func (o *prefetchFlags) checkFiles() error {
	if _, err := parseLocal("--prefetch-profile", o.prefetchProfile, location.Input); err != nil {
		return err
	}
	var err error
	if o.recordProfile, err = checkOutputFile("--record-profile", o.recordProfile); err != nil {
		return err
	}
	if o.statsJSON, err = checkOutputFile("--stats-json", o.statsJSON); err != nil {
		return err
	}
	return nil
}

// fileKind names the type of a file for messages.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&os.ModeSymlink != 0:
		return "symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// check refuses HTTP settings that cannot work: a timeout of zero or less
// would be no bound at all on a stalled server.
func (r *remoteFlags) check() error {
	if r.timeout <= 0 {
		return usagef("--http-timeout=%s: must be more than 0 (a stalled server would hang every read)", r.timeout)
	}
	if r.retries < 0 {
		return usagef("--http-retries=%d: must be 0 or more", r.retries)
	}
	return nil
}

// interrupted tells a verb stopped by SIGINT or SIGTERM (its context
// cancelled by the signal, the error a cancellation) from a failure: it
// returns the shell's exit code for the signal (128+N) and "interrupted".
func interrupted(ctx context.Context, err error) (code int, msg string, ok bool) {
	if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
		return 0, "", false
	}
	cause := context.Cause(ctx)
	switch {
	case cause != nil && cause.Error() == os.Interrupt.String()+" signal received":
		return 128 + int(unix.SIGINT), "interrupted (SIGINT)", true
	case cause != nil && cause.Error() == unix.SIGTERM.String()+" signal received":
		return 128 + int(unix.SIGTERM), "interrupted (SIGTERM)", true
	}
	return 1, "interrupted", true
}

// missingDirs returns the directories that creating p with MkdirAll would
// make, deepest first.
func missingDirs(p string) []string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil
	}
	var out []string
	for d := abs; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || !errors.Is(err, os.ErrNotExist) {
			return out
		}
		out = append(out, d)
		if filepath.Dir(d) == d {
			return out
		}
	}
}

// removeDirs removes the directories missingDirs named, deepest first,
// as long as they are empty.
func removeDirs(dirs []string) {
	for _, d := range dirs {
		if os.Remove(d) != nil {
			return
		}
	}
}
