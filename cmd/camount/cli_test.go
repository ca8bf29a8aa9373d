package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// flagtest is a verb that only reports what it parsed.
var flagtestGot struct {
	stores  stringList
	dry     bool
	size    int
	args    []string
	set     []string
	verbose bool
}

func init() {
	register(&command{
		name:    "flagtest",
		args:    "[--store=DIR]... ARGS...",
		summary: "test verb",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			fs.Var(&flagtestGot.stores, "store", "chunk store `DIR`")
			dry := fs.Bool("dry-run", false, "only print")
			size := fs.Int("size", 7, "a `NUMBER`")
			return func(ctx context.Context, e *env, args []string) error {
				flagtestGot.dry, flagtestGot.size, flagtestGot.args = *dry, *size, args
				flagtestGot.set = nil
				fs.Visit(func(f *flag.Flag) { flagtestGot.set = append(flagtestGot.set, f.Name) })
				flagtestGot.verbose = e.log.Enabled(ctx, -4)
				if len(args) > 0 && args[0] == "usage" {
					return usagef("bad use")
				}
				return nil
			}
		},
	})
}

func runFlagtest(t *testing.T, argv ...string) (int, string, string) {
	t.Helper()
	flagtestGot.stores = nil
	var out, errb bytes.Buffer
	code := run(append([]string{"flagtest"}, argv...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLISpellings(t *testing.T) {
	for _, c := range []struct {
		argv    []string
		stores  []string
		dry     bool
		size    int
		args    []string
		verbose bool
	}{
		{[]string{"--store=a", "x"}, []string{"a"}, false, 7, []string{"x"}, false},
		{[]string{"--store", "a", "x"}, []string{"a"}, false, 7, []string{"x"}, false},
		{[]string{"-store=a", "x"}, []string{"a"}, false, 7, []string{"x"}, false},
		{[]string{"-store", "a", "x"}, []string{"a"}, false, 7, []string{"x"}, false},
		{[]string{"x", "--store=a", "y", "-store", "b"}, []string{"a", "b"}, false, 7, []string{"x", "y"}, false},
		{[]string{"-n", "x"}, nil, true, 7, []string{"x"}, false},
		{[]string{"-dry-run", "x"}, nil, true, 7, []string{"x"}, false},
		{[]string{"--dry-run=false", "x"}, nil, false, 7, []string{"x"}, false},
		{[]string{"--dry-run=yes", "x"}, nil, true, 7, []string{"x"}, false},
		{[]string{"-dry-run=no", "x"}, nil, false, 7, []string{"x"}, false},
		{[]string{"-vn", "x"}, nil, true, 7, []string{"x"}, true},
		{[]string{"-verbose", "x"}, nil, false, 7, []string{"x"}, true},
		{[]string{"-l", "debug", "x"}, nil, false, 7, []string{"x"}, true},
		{[]string{"--log-level=err", "x"}, nil, false, 7, []string{"x"}, false},
		{[]string{"-size=3", "--", "-store=a", "--size=4"}, nil, false, 3, []string{"-store=a", "--size=4"}, false},
		{[]string{"--size", "5", "x"}, nil, false, 5, []string{"x"}, false},
		{[]string{"--store", "-weird", "x"}, []string{"-weird"}, false, 7, []string{"x"}, false},
	} {
		code, _, stderr := runFlagtest(t, c.argv...)
		if code != 0 {
			t.Errorf("%q: exit %d: %s", c.argv, code, stderr)
			continue
		}
		g := flagtestGot
		if !reflect.DeepEqual([]string(g.stores), c.stores) || g.dry != c.dry || g.size != c.size || !reflect.DeepEqual(g.args, c.args) || g.verbose != c.verbose {
			t.Errorf("%q: got stores %q dry %v size %d args %q verbose %v, want %q %v %d %q %v",
				c.argv, g.stores, g.dry, g.size, g.args, g.verbose, c.stores, c.dry, c.size, c.args, c.verbose)
		}
	}
	// The verb's Go FlagSet knows which flags were given.
	runFlagtest(t, "--size=1", "-n", "x")
	if !reflect.DeepEqual(flagtestGot.set, []string{"dry-run", "size"}) {
		t.Errorf("flags seen as set: %q", flagtestGot.set)
	}
}

func TestCLIErrors(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"--bogus", "x"}, "camount flagtest: unknown flag: --bogus"},
		{[]string{"--size=x"}, `invalid argument "x" for "--size"`},
		{[]string{"--store"}, "flag needs an argument: --store"},
		{[]string{"--log-level=loud", "x"}, "--log-level=loud: want debug"},
		{[]string{"usage"}, "camount flagtest: bad use\nusage: camount flagtest [--store=DIR]... ARGS..."},
	} {
		code, _, stderr := runFlagtest(t, c.argv...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", c.argv, code, stderr, c.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"nosuchverb"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "nosuchverb"`) {
		t.Errorf("unknown verb: exit %d, %q", code, errb.String())
	}
}

func TestCLIHelp(t *testing.T) {
	code, stdout, _ := runFlagtest(t, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{
		"usage: camount flagtest [--store=DIR]... ARGS...",
		"\n      --store=DIR ", "\n  -n, --dry-run ", "\n  -v, --verbose ", "\n  -l, --log-level=LEVEL ",
		"\n      --size=NUMBER ", "(default 7)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, " -store") {
		t.Errorf("help shows a Go-style single-dash long flag:\n%s", stdout)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"help", "flagtest"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--store=DIR") {
		t.Errorf("help flagtest: exit %d, %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--version"}, &out, &errb); code != 0 || out.String() != "camount "+version+"\n" {
		t.Errorf("--version: exit %d, %q", code, out.String())
	}
}

func TestCLICompletionAndMan(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		var out, errb bytes.Buffer
		if code := run([]string{"completion", sh}, &out, &errb); code != 0 || !strings.Contains(out.String(), "camount") {
			t.Errorf("completion %s: exit %d, %d bytes, %s", sh, code, out.Len(), errb.String())
		}
	}
	// Completion of a verb's flags comes from the same definitions.
	var out, errb bytes.Buffer
	if code := run([]string{"__complete", "flagtest", "--st"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--store") {
		t.Errorf("__complete flagtest --st: exit %d, %q", code, out.String())
	}
	dir := t.TempDir()
	if code := run([]string{"gen-man", dir}, &out, &errb); code != 0 {
		t.Fatalf("gen-man: exit %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "camount-flagtest.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "store") || !strings.Contains(string(b), ".TH") {
		t.Errorf("man page lacks the verb's options:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "camount-make.1")); err != nil {
		t.Errorf("no man page for make: %v", err)
	}
}

func TestNormalizeArgsLeavesValues(t *testing.T) {
	// The value of a flag that takes one is never rewritten, nor is
	// anything after "--".
	c := newVerb(commands["flagtest"], &env{})
	got := normalizeArgs(c.Flags(), []string{"-store", "-size=3", "-size=4", "--", "-store=x"})
	want := []string{"--store", "-size=3", "--size=4", "--", "-store=x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
