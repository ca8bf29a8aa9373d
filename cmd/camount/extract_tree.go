package main

import (
	"context"
	"flag"
	"strings"

	"github.com/camount/camount/extract"
)

// extractTreeFlags are extract's flags for writing a tree (and holes).
type extractTreeFlags struct {
	del, hardlink, punchHoles string
	undoImmutable             bool
}

func addExtractTreeFlags(fs *flag.FlagSet) *extractTreeFlags {
	x := &extractTreeFlags{}
	fs.StringVar(&x.del, "delete", "yes", "remove entries of an existing output directory that the archive lacks: yes or no")
	fs.BoolVar(&x.undoImmutable, "undo-immutable", false, "clear chattr +i/+a of entries that must be replaced or removed")
	fs.StringVar(&x.hardlink, "hardlink", "no", "hard-link files equal in contents and metadata to a seed tree's file instead of writing them: yes or no")
	fs.StringVar(&x.punchHoles, "punch-holes", "yes", "leave runs of zeros as holes in regular files: yes or no (no writes the zeros)")
	return x
}

// yesNo parses a casync-style boolean flag value.
func yesNo(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "y", "true", "1", "on":
		return true, nil
	case "no", "n", "false", "0", "off":
		return false, nil
	}
	return false, usagef("--%s: want yes or no, not %q", name, v)
}

// treeOptions turns the flags into extract.TreeOptions.
func (x *extractTreeFlags) treeOptions(e *env, mask uint64) (extract.TreeOptions, error) {
	o := extract.TreeOptions{Features: mask, UndoImmutable: x.undoImmutable}
	o.Log = e.log
	del, err := yesNo("delete", x.del)
	if err != nil {
		return o, err
	}
	holes, err := yesNo("punch-holes", x.punchHoles)
	if err != nil {
		return o, err
	}
	o.KeepExtra, o.WriteZeros = !del, !holes
	return o, nil
}

// wantHardlinks reports --hardlink=yes.
func (x *extractTreeFlags) wantHardlinks() (bool, error) { return yesNo("hardlink", x.hardlink) }

// extractTree recreates the tree of a .catar or .caidx under dir.
func extractTree(ctx context.Context, e *env, tf *treeFlags, xf *extractTreeFlags, in string, dir string) error {
	mask, err := tf.mask()
	if err != nil {
		return err
	}
	o, err := xf.treeOptions(e, mask)
	if err != nil {
		return err
	}
	if o.UIDShift, err = tf.uid.get(); err != nil {
		return err
	}
	r, closer, err := openStream(ctx, e, tf, in)
	if err != nil {
		return err
	}
	defer closer()
	_, err = extract.Tree(ctx, r, dir, o)
	return err
}
