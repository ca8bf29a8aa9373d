package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

func init() {
	register(&command{
		name:    "profile",
		args:    "merge --output=OUT PROFILE...",
		summary: "merge access profiles (--record-profile) of several runs of one image",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			out := fs.String("output", "", "write the merged profile to `FILE` (default: stdout)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) < 2 || args[0] != "merge" {
					return usagef("want 'merge' and at least one profile")
				}
				if _, err := checkOutputFile("--output", *out); err != nil {
					return err
				}
				var ps []*fetch.Profile
				for _, p := range args[1:] {
					p, err := parseLocal("PROFILE", p, location.Input)
					if err != nil {
						return err
					}
					f, err := os.Open(p)
					if err != nil {
						return err
					}
					prof, err := fetch.ReadProfile(f)
					f.Close()
					if err != nil {
						return fmt.Errorf("%s: %w", p, err)
					}
					ps = append(ps, prof)
				}
				m, err := fetch.MergeProfiles(ps...)
				if err != nil {
					return err
				}
				if *out == "" {
					_, err = m.WriteTo(e.stdout)
					return err
				}
				tmp, err := os.CreateTemp(filepath.Dir(*out), ".profile-*")
				if err != nil {
					return fmt.Errorf("--output: %w", err)
				}
				if _, err := m.WriteTo(tmp); err != nil {
					tmp.Close()
					os.Remove(tmp.Name())
					return fmt.Errorf("--output %s: %w", *out, err)
				}
				if err := tmp.Close(); err != nil {
					os.Remove(tmp.Name())
					return fmt.Errorf("--output %s: %w", *out, err)
				}
				if err := os.Rename(tmp.Name(), *out); err != nil {
					os.Remove(tmp.Name())
					return fmt.Errorf("--output %s: %w", *out, err)
				}
				fmt.Fprintf(e.stderr, "camount profile merge: %d chunks from %d profiles in %s\n", len(m.Chunks), len(ps), *out)
				return nil
			}
		},
	})
}
