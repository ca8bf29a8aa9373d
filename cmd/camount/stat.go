package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
)

func init() {
	register(&command{
		name:    "stat",
		args:    "[flags] DIR|ARCHIVE.catar|INDEX.caidx [PATH]",
		summary: "print one entry's metadata (the root, or PATH inside an archive), as casync stat",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			tf := addTreeReadFlags(fs, "digest of a directory's files: sha512-256 or sha256")
			return func(ctx context.Context, e *env, args []string) error {
				return runStat(ctx, e, tf, args)
			}
		},
	})
}

// chattrLetters and fatLetters are casync's ls_format_chattr and
// ls_format_fat_attrs columns, as feature-flag bits.
var chattrLetters = []struct {
	bit  uint64
	code byte
}{
	{catar.WithFlagSync, 'S'}, {catar.WithFlagDirsync, 'D'}, {catar.WithFlagImmutable, 'i'},
	{catar.WithFlagAppend, 'a'}, {catar.WithFlagNodump, 'd'}, {catar.WithFlagNoatime, 'A'},
	{catar.WithFlagCompr, 'c'}, {catar.WithFlagNocomp, 'N'}, {catar.WithFlagNocow, 'C'},
	{catar.WithFlagProjinherit, 'P'},
}

var fatLetters = []struct {
	bit  uint64
	code byte
}{{catar.WithFlagHidden, 'h'}, {catar.WithFlagSystem, 's'}, {catar.WithFlagArchive, 'a'}}

const (
	chattrBits = catar.WithFlagSync | catar.WithFlagDirsync | catar.WithFlagImmutable | catar.WithFlagAppend |
		catar.WithFlagNodump | catar.WithFlagNoatime | catar.WithFlagCompr | catar.WithFlagNocomp |
		catar.WithFlagNocow | catar.WithFlagProjinherit
	fatBits = catar.WithFlagHidden | catar.WithFlagSystem | catar.WithFlagArchive
)

func runStat(ctx context.Context, e *env, tf *treeFlags, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("want a directory, .catar or .caidx, and optionally a path inside it")
	}
	in := args[0]
	sub := ""
	if len(args) == 2 {
		sub = strings.TrimLeft(args[1], "/") // casync's normalize_seek_path
	}
	if kindOf(in) == kindBlobIndex {
		return usagef("%s: stat works on trees; use camount info for a .caibx", in)
	}
	isDir := false
	if !location.IsURL(in) {
		st, err := os.Stat(in)
		if err != nil {
			return err
		}
		isDir = st.IsDir()
	}
	w := bufio.NewWriter(e.stdout)
	defer w.Flush()
	if isDir {
		if sub != "" {
			return usagef("a path inside is only supported for archives and indexes")
		}
		// The directory's own entry, as casync's encoder sees it: encode
		// just far enough to decode the root entry.
		features, err := tf.features()
		if err != nil {
			return err
		}
		r, closer, err := treeStream(ctx, e, tf, in)
		if err != nil {
			return err
		}
		defer closer()
		en, err := catar.NewDecoder(r).Next()
		if err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		statEntry(w, en, features&(catar.ExcludeNodump|chattrBits) != 0, features&fatBits != 0, features&catar.WithQuotaProjID != 0)
		return nil
	}
	a, closer, err := openArchive(ctx, e, tf, in)
	if err != nil {
		return err
	}
	defer closer()
	en := a.Root()
	if sub != "" {
		if en, err = a.LookupPath(strings.TrimRight(sub, "/")); err != nil {
			return err
		}
	}
	regOrDir := en.IsRegular() || en.IsDir()
	statEntry(w, en, regOrDir, regOrDir, en.ProjID != 0)
	if en.IsDir() {
		return nil
	}
	dg := chunker.DigestOf(a.Features())
	buf := make([]byte, 1<<20)
	if en.IsRegular() || en.Type() == catar.ModeBlock { // as casync: a block device's (empty) payload too
		h := dg.New()
		var p io.Reader = strings.NewReader("")
		if en.IsRegular() {
			p = a.Payload(en)
		}
		if _, err := io.CopyBuffer(h, p, buf); err != nil {
			return fmt.Errorf("%s: %s: %w", in, en.Path, err)
		}
		fmt.Fprintf(w, "  Digest: %s\n", hex.EncodeToString(h.Sum(nil)))
	}
	// casync's hardlink digest: the node's bytes from its ENTRY record to
	// its end (metadata and payload, without the FILENAME record).
	h := dg.New()
	if _, err := io.CopyBuffer(h, io.NewSectionReader(a.ReaderAt(), en.Offset, en.End-en.Offset), buf); err != nil {
		return fmt.Errorf("%s: %s: %w", in, en.Path, err)
	}
	fmt.Fprintf(w, "HLDigest: %s\n", hex.EncodeToString(h.Sum(nil)))
	return nil
}

// statEntry prints casync stat's lines for one entry.
func statEntry(w io.Writer, en *catar.Entry, showChattr, showFAT, showProjID bool) {
	fmt.Fprintf(w, "    File: %s\n    Mode: %s\n", listPath(en.Path, ""), lsMode(en.Mode))
	if showChattr {
		b := make([]byte, len(chattrLetters))
		for i, l := range chattrLetters {
			b[i] = '-'
			if en.Flags&l.bit != 0 {
				b[i] = l.code
			}
		}
		fmt.Fprintf(w, "FileAttr: %s\n", b)
	}
	if showFAT {
		b := make([]byte, len(fatLetters))
		for i, l := range fatLetters {
			b[i] = '-'
			if en.Flags&l.bit != 0 {
				b[i] = l.code
			}
		}
		fmt.Fprintf(w, " FATAttr: %s\n", b)
	}
	fmt.Fprintf(w, "  Offset: %d\n", en.Offset)
	if en.HasMTime() {
		t := time.Unix(int64(en.MTime/1e9), 0).Local()
		fmt.Fprintf(w, "    Time: %s.%09d\n", t.Format("2006-01-02 15:04:05"), en.MTime%1e9)
	}
	if en.IsRegular() {
		fmt.Fprintf(w, "    Size: %d\n", en.Size)
	}
	idLine := func(label string, has bool, id uint64, name string) {
		valid := has && uint32(id) != 0xFFFFFFFF && uint32(id) != 0xFFFF
		switch {
		case valid && name != "":
			fmt.Fprintf(w, "%s: %s (%d)\n", label, mtreeEscape(name), uint32(id))
		case valid:
			fmt.Fprintf(w, "%s: %d\n", label, uint32(id))
		case name != "":
			fmt.Fprintf(w, "%s: %s\n", label, mtreeEscape(name))
		}
	}
	// casync stores no name for root when it stores IDs, and shows one.
	user, group := en.User, en.Group
	if en.Features&catar.WithUserNames != 0 && en.HasUID() {
		if user == "" && en.UID == 0 {
			user = "root"
		}
		if group == "" && en.GID == 0 {
			group = "root"
		}
	}
	idLine("    User", en.HasUID(), en.UID, user)
	idLine("   Group", en.HasUID(), en.GID, group)
	if showProjID {
		fmt.Fprintf(w, "  ProjID: %d\n", uint32(en.ProjID))
	}
	if en.Type() == catar.ModeLink {
		fmt.Fprintf(w, "  Target: %s\n", mtreeEscape(en.Target))
	}
	if t := en.Type(); t == catar.ModeBlock || t == catar.ModeChar {
		fmt.Fprintf(w, "  Device: %d:%d\n", en.DevMajor, en.DevMinor)
	}
	for _, x := range en.Xattrs {
		fmt.Fprintf(w, "   XAttr: %s → %s\n", mtreeEscape(x.Name), mtreeEscape(string(x.Value)))
	}
}
