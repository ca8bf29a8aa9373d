package main

import (
	"strings"
)

// --what: casync's way of naming what the first operand is (an input to
// read, or make's output) when its name does not say it by suffix. It
// applies to that operand only: kindOf answers the named kind for it.
var what struct {
	path string
	kind indexKind
	set  bool
}

// whatKinds are casync's --what values camount reads or writes by kind.
var whatKinds = map[string]indexKind{
	"archive":       kindArchive,
	"archive-index": kindTreeIndex,
	"blob-index":    kindBlobIndex,
	"blob":          kindUnknown, // a plain file or block device (digest)
	"directory":     kindUnknown, // told apart by the file type, as without --what
}

// setWhat applies --what=value to the verb's first operand.
func setWhat(value string, args []string) error {
	if value == "" {
		return nil
	}
	if value == "help" {
		names := make([]string, 0, len(whatKinds))
		for _, n := range []string{"archive", "archive-index", "blob", "blob-index", "directory"} {
			names = append(names, n)
		}
		return usagef("--what: one of %s", strings.Join(names, ", "))
	}
	k, ok := whatKinds[value]
	if !ok {
		return usagef("--what=%s: want archive, archive-index, blob, blob-index or directory", value)
	}
	if len(args) == 0 {
		return usagef("--what=%s: no operand to apply it to", value)
	}
	what.path, what.kind, what.set = args[0], k, true
	return nil
}

// whatKind reports the --what kind of path, if it is the operand --what names.
func whatKind(path string) (indexKind, bool) {
	if what.set && path == what.path {
		return what.kind, true
	}
	return 0, false
}

// casyncDefaultArgs fills in casync's default operand: the current
// directory as the tree list, mtree, stat and digest read with no operand,
// and as the input of make given only its output.
func casyncDefaultArgs(verb string, args []string) []string {
	switch {
	case len(args) == 0 && (verb == "list" || verb == "mtree" || verb == "stat" || verb == "digest"):
		return []string{"."}
	case len(args) == 1 && verb == "make":
		return append(args, ".")
	}
	return args
}
