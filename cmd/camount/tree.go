package main

// STUB written by the lead so cmd/camount builds before the catar work lands.
// The catar engineer owns this file: replace it whole with the real
// treeFlags/addTreeFlags/makeTree/extractTree (same signatures).

import (
	"context"
	"errors"
	"flag"
)

type treeFlags struct{}

func addTreeFlags(fs *flag.FlagSet) *treeFlags { return &treeFlags{} }

func makeTree(ctx context.Context, e *env, tf *treeFlags, out string, dir string) error {
	return errors.New("tree images (.caidx/.catar) are not supported yet")
}

func extractTree(ctx context.Context, e *env, tf *treeFlags, in string, dir string) error {
	return errors.New("tree images (.caidx/.catar) are not supported yet")
}
