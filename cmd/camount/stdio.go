package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/camount/camount/catar"
)

// casync's "-" operand: standard input as the image a verb reads, and for
// make standard input as the input and standard output as the image made.
//
// The verbs work on files (random access, or a path to rename into), so
// "-" is mapped to one before the verb runs:
//   - an image read from standard input (an index, or an archive) is
//     copied to a temporary file in $TMPDIR named by its kind, which is
//     --what's or else recognised from its first bytes (a casync index or
//     archive; for digest anything else is a blob); a directory on
//     standard input (`< DIR`) is read in place;
//   - make's archive for standard output is streamed there; an index is
//     made in a temporary file and copied out at the end; the kind is --what's, else an archive for a
//     directory input and a blob index for anything else, as casync. The
//     digest casync prints on standard output too (after the index, which
//     spoils it) goes to standard error.
//
// The default store of an index without a path is default.castr in the
// current directory, as casync's.

// stdioVerbs are the verbs whose first operand may be "-" (standard input).
var stdioVerbs = map[string]bool{
	"extract": true, "list": true, "mtree": true, "stat": true, "digest": true,
	"mount": true, "mkdev": true, "nbd": true, "info": true, "list-chunks": true,
}

// stdioOperands maps "-" operands to files. It returns the new arguments
// and a function to run after the verb with its error: it copies make's
// output to standard output and removes temporary files.
func stdioOperands(verb string, fs *flag.FlagSet, e *env, args []string) ([]string, func(error) error, error) {
	done := func(err error) error { return err }
	switch {
	case verb == "make" && len(args) == 2 && (args[0] == "-" || args[1] == "-"):
		return stdioMake(fs, e, args)
	case stdioVerbs[verb] && len(args) >= 1 && args[0] == "-":
	default:
		return args, done, nil
	}
	if f := fs.Lookup("daemon"); f != nil && f.Value.String() == "true" {
		return nil, nil, usagef("-: an image on standard input cannot be served by a --daemon (its child process re-reads the command line)")
	}
	if dir, ok := stdinDir(); ok {
		args = append([]string{dir}, args[1:]...)
		return args, done, nil
	}
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		return nil, nil, usagef("-: standard input is a terminal; redirect the image from a file or a pipe")
	}
	k, known := whatKind("-")
	tmp, err := os.CreateTemp("", "camount-stdin-*")
	if err != nil {
		return nil, nil, fmt.Errorf("-: spooling standard input: %w", err)
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	head := make([]byte, 24)
	n, err := io.ReadFull(os.Stdin, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		cleanup()
		return nil, nil, fmt.Errorf("-: reading standard input: %w", err)
	}
	head = head[:n]
	if !known {
		k = sniffKind(head)
	}
	if _, err = tmp.Write(head); err == nil {
		_, err = io.Copy(tmp, os.Stdin)
	}
	if err == nil {
		err = tmp.Close()
	}
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("-: spooling standard input to %s: %w", tmp.Name(), err)
	}
	name := tmp.Name()
	if suffix := kindSuffix(k); suffix != "" {
		if err := os.Rename(name, name+suffix); err != nil {
			cleanup()
			return nil, nil, err
		}
		name += suffix
	} else if verb != "digest" {
		cleanup()
		return nil, nil, usagef("-: standard input is not a casync index or archive (say which with --what=archive|archive-index|blob-index)")
	}
	if k == kindBlobIndex || k == kindTreeIndex {
		defaultStoreHere(fs)
	}
	if known { // --what named "-"; it now names the file
		what.path = name
	}
	args = append([]string{name}, args[1:]...)
	return args, func(err error) error { os.Remove(name); return err }, nil
}

// stdioMake handles make's "-" operands.
func stdioMake(fs *flag.FlagSet, e *env, args []string) ([]string, func(error) error, error) {
	out, in := args[0], args[1]
	done := func(err error) error { return err }
	var inDir bool
	if in == "-" {
		if dir, ok := stdinDir(); ok {
			in, inDir = dir, true
		} else {
			in = "/dev/stdin"
		}
	} else if st, err := os.Stat(in); err == nil {
		inDir = st.IsDir()
	}
	if out != "-" {
		if k := kindOf(out); in == "/dev/stdin" && (k == kindTreeIndex || k == kindArchive) {
			return nil, nil, usagef("-: a tree is made of a directory; standard input is not one (give the directory, or redirect it: < DIR)")
		}
		return []string{out, in}, done, nil
	}
	if isTerminal(e.stdout) {
		return nil, nil, usagef("-: standard output is a terminal; redirect the image to a file or a pipe")
	}
	k, known := whatKind("-")
	if !known {
		k = kindBlobIndex
		if inDir {
			k = kindArchive
		}
	}
	if k == kindBlobIndex && inDir {
		return nil, nil, usagef("-: --what=blob-index, but the input is a directory")
	}
	if (k == kindTreeIndex || k == kindArchive) && !inDir {
		return nil, nil, usagef("-: a tree is made of a directory; %s is not one", args[1])
	}
	if k == kindArchive {
		// Streamed by makeTree: no temporary copy.
		what.path, what.kind, what.set = "-", kindArchive, true
		stdoutImage, e.stdout = e.stdout, e.stderr
		return []string{"-", in}, func(err error) error { e.stdout = stdoutImage; return err }, nil
	}
	suffix := kindSuffix(k)
	if suffix == "" {
		return nil, nil, usagef("-: make writes an archive, an archive index or a blob index (--what=archive|archive-index|blob-index)")
	}
	dir, err := os.MkdirTemp("", "camount-stdout-*")
	if err != nil {
		return nil, nil, fmt.Errorf("-: %w", err)
	}
	if k != kindArchive {
		defaultStoreHere(fs)
	}
	tmp := dir + "/stdout" + suffix
	stdout := e.stdout
	e.stdout = e.stderr // the digest line
	return []string{tmp, in}, func(err error) error {
		defer os.RemoveAll(dir)
		e.stdout = stdout
		if err != nil {
			return err
		}
		f, err := os.Open(tmp)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(stdout, f); err != nil {
			return fmt.Errorf("-: writing the image to standard output: %w", err)
		}
		return nil
	}, nil
}

// stdoutImage is where makeTree streams an archive made for "-".
var stdoutImage io.Writer

// stdinDir returns the path of standard input if it is a directory.
func stdinDir() (string, bool) {
	st, err := os.Stdin.Stat()
	if err != nil || !st.IsDir() {
		return "", false
	}
	p, err := os.Readlink("/proc/self/fd/0")
	if err != nil {
		return "", false
	}
	return p, true
}

// defaultStoreHere makes casync's default store of an index without a
// path, default.castr in the current directory, the verb's --store when
// neither --store nor $CASYNC_STORE gives one.
func defaultStoreHere(fs *flag.FlagSet) {
	f := fs.Lookup("store")
	if f == nil || os.Getenv("CASYNC_STORE") != "" {
		return
	}
	set := false
	fs.Visit(func(v *flag.Flag) { set = set || v.Name == "store" })
	if !set {
		fs.Set("store", "default.castr")
	}
}

// sniffKind tells a casync index (blob or archive, by its feature flags)
// or archive by its first bytes.
func sniffKind(b []byte) indexKind {
	if len(b) < 24 {
		return kindUnknown
	}
	size, typ := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
	switch {
	case size == 48 && typ == 0x96824d9c7b129ff9: // the index header
		if binary.LittleEndian.Uint64(b[16:])&catar.WithMask == 0 {
			return kindBlobIndex
		}
		return kindTreeIndex
	case size == 64 && typ == catar.TypeEntry:
		return kindArchive
	}
	return kindUnknown
}

func kindSuffix(k indexKind) string {
	switch k {
	case kindBlobIndex:
		return ".caibx"
	case kindTreeIndex:
		return ".caidx"
	case kindArchive:
		return ".catar"
	}
	return ""
}
