package main

// The command line: verbs keep registering their flags on a Go
// *flag.FlagSet (see command.setup); here those flags are carried over to
// spf13/pflag through spf13/cobra, which gives GNU long options
// (--store=DIR, --store DIR), casync's short options (-v, -n, -l LEVEL,
// -c), shell completion and man pages from the same definitions. The old
// single-dash spelling of long flags (-store=x, -store x) keeps working:
// normalizeArgs rewrites it before parsing.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/camount/camount/location"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// shorthands are casync's one-letter options (casync-tool.c's getopt
// string "hl:vnc"), given to a verb's flag of that long name when it has one.
var shorthands = map[string]string{
	"log-level":  "l",
	"verbose":    "v",
	"dry-run":    "n",
	"cache-auto": "c",
}

// cobraVerbs are the verbs cobra itself provides.
var cobraVerbs = map[string]bool{
	"completion":                    true,
	"help":                          true,
	cobra.ShellCompRequestCmd:       true,
	cobra.ShellCompNoDescRequestCmd: true,
	"gen-man":                       true,
}

// logLevels maps casync's --log-level names (and syslog numbers) to slog's.
func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "emerg", "emergency", "0", "alert", "1", "crit", "critical", "2", "err", "error", "3":
		return slog.LevelError, nil
	case "warn", "warning", "4":
		return slog.LevelWarn, nil
	case "notice", "5", "info", "6":
		return slog.LevelInfo, nil
	case "debug", "7":
		return slog.LevelDebug, nil
	}
	return 0, fmt.Errorf("--log-level=%s: want debug, info, notice, warning, err (or a syslog level 0-7)", s)
}

// goFlagValue is a Go flag carried into pflag: setting it goes through
// the Go FlagSet, so the verb's FlagSet knows the flag was set (Visit).
type goFlagValue struct {
	fs *flag.FlagSet
	f  *flag.Flag
}

func (v goFlagValue) String() string { return v.f.Value.String() }
func (v goFlagValue) Set(s string) error {
	if isBoolFlag(v.f) {
		// casync's (systemd's) boolean spellings: --undo-immutable=yes.
		switch strings.ToLower(s) {
		case "yes", "y", "on":
			s = "true"
		case "no", "n", "off":
			s = "false"
		}
	}
	return v.fs.Set(v.f.Name, s)
}
func (v goFlagValue) Type() string {
	if isBoolFlag(v.f) {
		return "bool"
	}
	t := reflect.TypeOf(v.f.Value)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n := strings.TrimSuffix(t.Name(), "Value"); n {
	case "int", "int64", "uint", "uint64", "float64", "string", "duration":
		return n
	}
	return "value"
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// verb is one registered command as a cobra command, with the Go FlagSet
// its setup populated and the function that runs it.
func newVerb(c *command, e *env) *cobra.Command {
	gfs := flag.NewFlagSet("camount "+c.name, flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	verbose := gfs.Bool("verbose", false, "log debug messages")
	logLevel := gfs.String("log-level", "", "log messages of this `LEVEL` and above: debug, info, notice, warning, err (casync's names; default info)")
	whatFlag := gfs.String("what", "", "what the first operand is when its suffix does not say, as casync: archive, archive-index, blob-index, blob or directory (`KIND`)")
	runFn := c.setup(gfs)
	cc := &cobra.Command{
		Use:                   c.name + " " + c.args,
		Short:                 c.summary,
		Args:                  cobra.ArbitraryArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cc *cobra.Command, args []string) error {
			level := slog.LevelInfo
			// casync's environment: $CASYNC_LOG_LEVEL, $CASYNC_VERBOSE.
			if *logLevel == "" {
				*logLevel = os.Getenv("CASYNC_LOG_LEVEL")
			}
			if v, err := strconv.ParseBool(os.Getenv("CASYNC_VERBOSE")); err == nil && v {
				*verbose = true
			}
			if *logLevel != "" {
				l, err := parseLogLevel(*logLevel)
				if err != nil {
					return &usageError{err.Error()}
				}
				level = l
			}
			if *verbose {
				level = slog.LevelDebug
			}
			e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}))
			args = casyncDefaultArgs(c.name, args)
			if err := setWhat(*whatFlag, args); err != nil {
				return err
			}
			args, after, err := stdioOperands(c.name, gfs, e, args) // "-" (stdio.go)
			if err != nil {
				return err
			}
			return after(runFn(cc.Context(), e, args))
		},
	}
	gfs.VisitAll(func(f *flag.Flag) {
		pf := &pflag.Flag{
			Name:      f.Name,
			Shorthand: shorthands[f.Name],
			Usage:     f.Usage,
			Value:     goFlagValue{gfs, f},
			DefValue:  f.DefValue,
		}
		if isBoolFlag(f) {
			pf.NoOptDefVal = "true"
		}
		cc.Flags().AddFlag(pf)
	})
	cc.SetHelpFunc(func(cc *cobra.Command, _ []string) { printVerbUsage(e.stdout, c, cc.Flags()) })
	return cc
}

// newRoot builds the whole command tree (every verb, completion, gen-man).
func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "camount",
		Short:         "lazy, verified, read-only access to casync images",
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetVersionTemplate("camount {{.Version}}\n")
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetHelpFunc(func(*cobra.Command, []string) { printUsage(e.stdout) })
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		root.AddCommand(newVerb(commands[n], e))
	}
	root.AddCommand(&cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write a man page per verb (camount-VERB.1) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cc *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			date := time.Unix(0, 0).UTC()
			if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
				var sec int64
				if _, err := fmt.Sscan(v, &sec); err == nil {
					date = time.Unix(sec, 0).UTC()
				}
			}
			return doc.GenManTree(root, &doc.GenManHeader{
				Title: "CAMOUNT", Section: "1", Source: "camount " + version,
				Manual: "camount manual", Date: &date,
			}, args[0])
		},
	})
	return root
}

// execute parses argv with the command tree and runs the verb.
func execute(ctx context.Context, argv []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: redactAttr}))}
	root := newRoot(e)
	if sub, _, err := root.Find(argv[:1]); err == nil && sub != root {
		argv = append(argv[:1:1], normalizeArgs(sub.Flags(), argv[1:])...)
	}
	root.SetArgs(argv)
	cc, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	name := argv[0]
	if cc != nil && cc != root {
		name = cc.Name()
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "camount %s: %s\n", name, ue.msg)
		if c, ok := commands[name]; ok {
			fmt.Fprintf(stderr, "usage: camount %s %s\nTry 'camount %s --help' for its options.\n", c.name, c.args, c.name)
		}
		return 2
	}
	if code, msg, ok := interrupted(ctx, err); ok {
		fmt.Fprintf(stderr, "camount %s: %s\n", name, msg)
		return code
	}
	fmt.Fprintf(stderr, "camount %s: %s\n", name, location.RedactText(err.Error()))
	return 1
}

// normalizeArgs rewrites the single-dash spelling of long flags that Go's
// flag package accepted (-store=x, -store x, -verbose) to GNU's (--store=x).
// Arguments after "--" and values of flags are left alone.
func normalizeArgs(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(a) > 1 {
			name, _, _ := strings.Cut(a[1:], "=")
			if f := fs.Lookup(name); f != nil && (len(name) > 1 || fs.ShorthandLookup(name) == nil) {
				a = "-" + a
			}
		}
		out = append(out, a)
		if strings.HasPrefix(a, "--") && len(a) > 2 {
			name, _, hasValue := strings.Cut(a[2:], "=")
			if f := fs.Lookup(name); f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
		}
	}
	return out
}

// printVerbUsage prints a verb's help, options GNU style (--store=DIR).
func printVerbUsage(w io.Writer, c *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "usage: camount %s %s\n\n%s\n\noptions:\n", c.name, c.args, c.summary)
	fmt.Fprint(w, gnuFlagUsages(fs))
}

// gnuFlagUsages formats options as GNU tools' --help does:
// "  -v, --verbose" and "      --store=DIR".
func gnuFlagUsages(fs *pflag.FlagSet) string {
	type line struct{ left, usage string }
	var lines []line
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		left := "      "
		if f.Shorthand != "" {
			left = "  -" + f.Shorthand + ", "
		}
		left += "--" + f.Name
		varName, usage := pflag.UnquoteUsage(f)
		if f.NoOptDefVal == "" {
			switch {
			case strings.Contains(f.Usage, "`"):
			case varName == "int" || varName == "int64" || varName == "uint" || varName == "uint64":
				varName = "N"
			case strings.Contains(f.Usage, "yes or no"):
				varName = "yes|no"
			case varName == "string":
				varName = f.Name
			case varName == "" || varName == "value":
				varName = "VALUE"
			}
			if varName != "yes|no" {
				varName = strings.ToUpper(varName)
			}
			left += "=" + varName
		}
		switch f.DefValue {
		case "", "0", "false", "[]", "0s":
		default:
			if !strings.Contains(usage, "default") {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		if len(left) > width {
			width = len(left)
		}
		lines = append(lines, line{left, usage})
	})
	if width > 32 {
		width = 32
	}
	var b strings.Builder
	for _, l := range lines {
		if len(l.left) > width {
			fmt.Fprintf(&b, "%s\n%*s  %s\n", l.left, width, "", l.usage)
		} else {
			fmt.Fprintf(&b, "%-*s  %s\n", width, l.left, l.usage)
		}
	}
	return b.String()
}
