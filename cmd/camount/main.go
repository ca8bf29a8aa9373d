// Command camount gives lazy, verified, read-only access to casync images
// (.caibx blobs and .caidx trees) and creates and inspects them byte-compatibly
// with casync.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"syscall"
)

// command is one verb of the CLI. Each verb lives in its own file and
// registers itself from init, so verbs can be added without touching main.
type command struct {
	name    string
	args    string // usage synopsis after the verb, e.g. "[flags] INDEX DIR"
	summary string // one line for the verb list
	// run parses its own flags from fs (already populated by setup) and args.
	setup func(fs *flag.FlagSet) func(ctx context.Context, env *env, args []string) error
}

// env is what every verb gets: streams and the logger.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("camount: duplicate command " + c.name)
	}
	commands[c.name] = c
}

// usageError is returned for bad command-line use; main prints the verb's usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func main() {
	// For performance work: CAMOUNT_CPUPROFILE=FILE writes a CPU profile,
	// CAMOUNT_TRACE=FILE a runtime execution trace (go tool trace), of
	// the whole command.
	var stops []func()
	if p := os.Getenv("CAMOUNT_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil && pprof.StartCPUProfile(f) == nil {
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if p := os.Getenv("CAMOUNT_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil && trace.Start(f) == nil {
			stops = append(stops, func() { trace.Stop(); f.Close() })
		}
	}
	var code int
	if isMountHelper(os.Args[0]) { // mount -t camount (mounthelper.go)
		code = mountHelperMain(os.Args[1:], os.Stdout, os.Stderr)
	} else {
		code = run(os.Args[1:], os.Stdout, os.Stderr)
	}
	for _, stop := range stops {
		stop()
	}
	os.Exit(code)
}

func run(argv []string, stdout, stderr io.Writer) int {
	if len(argv) == 0 || argv[0] == "-h" || argv[0] == "--help" || argv[0] == "help" && len(argv) == 1 {
		if len(argv) == 0 {
			printUsage(stderr)
			return 2
		}
		printUsage(stdout)
		return 0
	}
	if argv[0] == "--version" || argv[0] == "version" {
		fmt.Fprintln(stdout, "camount", version)
		return 0
	}
	if _, ok := commands[argv[0]]; !ok && !cobraVerbs[argv[0]] {
		fmt.Fprintf(stderr, "camount: unknown command %q\n\n", argv[0])
		printUsage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer watchInterrupt(ctx, argv[0], stderr)()
	return execute(ctx, argv, stdout, stderr)
}

var version = "dev"

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "camount: lazy, verified, read-only access to casync images")
	fmt.Fprintln(w, "\nusage: camount COMMAND [flags] ARGS...\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'camount COMMAND --help' for a command's flags.")
}

// bufferedStdout wraps stdout for verbs that print many lines.
func bufferedStdout(e *env) *bufio.Writer { return bufio.NewWriterSize(e.stdout, 1<<16) }
