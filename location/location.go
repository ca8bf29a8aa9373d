// Package location is the one owner of what a store, cache, index or
// output argument may name. Every command-line value naming one goes
// through Parse, which returns a local path or a URL whose scheme is
// supported for that use, or an error naming the flag, the value and what
// is supported, before any work starts. It also owns Redact, which every
// place that shows or logs a URL uses, so that no password leaks.
//
// API:
//
//	loc, err := location.Parse("--store", value, location.WriteStore)
//	if loc.IsLocal() { use loc.Path } else { use loc.URL (scheme loc.Scheme) }
//	fmt.Println(loc)                 // shown form, password redacted
//	location.Redact(u)               // "http://u:xxxxx@h/…"
//	location.RedactText(err.Error()) // every URL in a text
//
// The schemes each use supports are listed in one table, schemes (in
// schemes.go); a new store kind adds its scheme there.
//
// The rule for "is this a URL" is "looks like SCHEME://" (RFC 3986 scheme
// characters, then "://"), not "contains a colon": ./a:b and a:b are local
// paths. file:// URLs are local paths everywhere.
package location

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// Use is what a location is for; each use supports its own schemes.
type Use int

const (
	// ReadStore is a chunk store chunks are read from (--store of the
	// reading verbs).
	ReadStore Use = iota
	// WriteStore is a chunk store chunks are written to (--store of make).
	WriteStore
	// Index is an index (or archive) that is read (the INDEX argument).
	Index
	// Cache is a disk cache directory (--cache).
	Cache
	// Output is something written: an index made, an extracted file or
	// tree, a statistics or profile file, a mountpoint.
	Output
	// Input is a file read that is not an index (a profile, a key).
	Input
)

func (u Use) String() string {
	switch u {
	case ReadStore:
		return "chunk store"
	case WriteStore:
		return "chunk store to write"
	case Index:
		return "index"
	case Cache:
		return "cache"
	case Output:
		return "output"
	case Input:
		return "input file"
	}
	return fmt.Sprintf("Use(%d)", int(u))
}

// Supported returns the URL schemes use supports besides local paths
// (which every use supports, also as file:// URLs).
func Supported(use Use) []string { return append([]string(nil), schemes[use]...) }

// Supports reports whether use supports scheme (lower case).
func Supports(use Use, scheme string) bool {
	for _, s := range schemes[use] {
		if s == scheme {
			return true
		}
	}
	return false
}

// Location is a parsed location: a local path (URL nil) or a URL.
type Location struct {
	// Path is the local path (for file:// URLs, the URL's path, decoded).
	Path string
	// URL is the parsed URL of a remote location, nil for a local one.
	URL *url.URL
	// Scheme is the URL's scheme in lower case, "" for a local path.
	Scheme string
	// Raw is the value as given (it may hold a password: show String()).
	Raw string
}

// IsLocal reports whether the location is a local path.
func (l Location) IsLocal() bool { return l.URL == nil }

// String is the location as it may be shown: the path, or the URL with its
// password redacted.
func (l Location) String() string {
	if l.URL == nil {
		return l.Path
	}
	return Redact(l.Raw)
}

// ErrUnsupported is wrapped by the errors of Parse for a URL whose scheme
// the use does not support, or that is malformed.
var ErrUnsupported = errors.New("unsupported location")

// Error is the error of Parse: it names the flag, the value (redacted) and
// what is supported.
type Error struct {
	Flag, Value string
	Use         Use
	Why         string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s (%s)", e.Flag, Redact(e.Value), e.Why, supportedText(e.Use))
}

func (e *Error) Unwrap() error { return ErrUnsupported }

func supportedText(use Use) string {
	s := schemes[use]
	if len(s) == 0 {
		return "supported: local paths and file:// URLs only"
	}
	return "supported: local paths, file:// and " + strings.Join(withSep(s), ", ") + " URLs"
}

func withSep(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x + "://"
	}
	return out
}

var schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)

// Scheme returns the lower-case scheme of a value that looks like
// SCHEME://…, or "" for anything else (a local path).
func Scheme(value string) string {
	m := schemeRE.FindStringSubmatch(value)
	if m == nil {
		return ""
	}
	return strings.ToLower(m[1])
}

// IsURL reports whether value looks like SCHEME://… and is not a file://
// URL, i.e. names something that is not a local path.
func IsURL(value string) bool {
	s := Scheme(value)
	return s != "" && s != "file"
}

// Parse parses the value of flag (e.g. "--store", or "INDEX" for an
// argument) for use: a local path, a file:// URL (a local path), or a URL
// with a scheme the use supports. Anything else is an *Error.
func Parse(flag, value string, use Use) (Location, error) {
	fail := func(why string) (Location, error) {
		return Location{}, &Error{Flag: flag, Value: value, Use: use, Why: why}
	}
	if value == "" {
		return fail("empty")
	}
	scheme := Scheme(value)
	switch scheme {
	case "":
		return Location{Path: value, Raw: value}, nil
	case "file":
		u, err := url.Parse(value)
		if err != nil {
			return fail("not a valid file:// URL")
		}
		if u.Host != "" && u.Host != "localhost" {
			return fail(fmt.Sprintf("a file:// URL names a local path: file:///PATH, not host %q", u.Host))
		}
		if u.Path == "" {
			return fail("a file:// URL without a path")
		}
		return Location{Path: u.Path, Raw: value}, nil
	}
	if !Supports(use, scheme) {
		return fail(fmt.Sprintf("%s URLs are not supported for a %s", scheme+"://", use))
	}
	u, err := url.Parse(value)
	if err != nil {
		return fail("not a valid URL")
	}
	if u.Host == "" {
		return fail("a URL without a host")
	}
	return Location{URL: u, Scheme: scheme, Raw: value}, nil
}

// Redact returns a URL with the password of its userinfo replaced by
// xxxxx (u:xxxxx@); anything else, including local paths, is returned
// unchanged.
func Redact(s string) string {
	if !IsURL(s) || !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return RedactText(s)
	}
	if _, has := u.User.Password(); !has {
		return s
	}
	return u.Redacted()
}

// userinfoRE matches the userinfo of URLs inside a text, up to the "@".
var userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*):[^/?#@\s]*@`)

// RedactText redacts the passwords of every URL in a text (an error
// message, a log line).
func RedactText(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfoRE.ReplaceAllString(s, "${1}:xxxxx@")
}

// WithoutSecrets returns a URL without its userinfo, query and fragment:
// the form to show where no secret may appear at all (a mount's source in
// /proc/mounts, a cache key). Local paths are returned unchanged.
func WithoutSecrets(s string) string {
	if !IsURL(s) {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return RedactText(s)
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// Base returns the last path element of a location without a URL's query
// and fragment, percent-decoded for URLs (the name a file from it gets).
func Base(value string) string {
	if !IsURL(value) {
		if Scheme(value) == "file" {
			if u, err := url.Parse(value); err == nil {
				return path.Base(u.Path)
			}
		}
		return path.Base(value)
	}
	u, err := url.Parse(value)
	if err != nil {
		return path.Base(value)
	}
	return path.Base(u.Path)
}

// StripQuery returns value without a URL's query and fragment (a local
// path is returned unchanged: "?" and "#" are file name characters there).
// Suffix checks (.caibx, .caidx) look at this.
func StripQuery(value string) string {
	if !IsURL(value) {
		return value
	}
	if i := strings.IndexAny(value, "?#"); i >= 0 {
		return value[:i]
	}
	return value
}
