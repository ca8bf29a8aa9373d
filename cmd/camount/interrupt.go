package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// interruptGrace is how long a one-shot pipeline (extract, make, …) may
// take to stop after SIGINT/SIGTERM cancelled its context. Every wait in
// them honours the context; this is the backstop for one that cannot (an
// open(2) of a FIFO given as input or output, a hung file system), so a
// signal always ends the command.
const interruptGrace = 10 * time.Second

// hardStopVerbs are the verbs that are simply ended when they outlive the
// grace. Servers (mount, nbd, mkdev) are not: they stop on their own terms,
// unmounting or detaching what they serve.
var hardStopVerbs = map[string]bool{"extract": true, "make": true, "list": true, "mtree": true, "digest": true, "list-chunks": true}

// watchInterrupt starts the backstop for verb; the returned func stops it
// (call it when the verb returns).
func watchInterrupt(ctx context.Context, verb string, stderr io.Writer) func() {
	if !hardStopVerbs[verb] {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(interruptGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			fmt.Fprintf(stderr, "camount %s: interrupted; a wait did not end within %v, exiting\n", verb, interruptGrace)
			os.Exit(130)
		}
	}()
	return func() { close(done) }
}
