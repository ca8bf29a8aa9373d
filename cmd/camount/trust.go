package main

// Trust (issue 15): an index is accepted only after its pinned digest
// (--index-digest) or its minisign signature by a trusted key
// (--trusted-key, or the keys of /etc/camount/trusted-keys) checks; the
// sign verb writes minisign-compatible signatures. Package trust does the
// cryptography.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
	"github.com/camount/camount/trust"
)

// defaultTrustedKeys is the file of keys every command trusts (for boot
// use); $CAMOUNT_TRUSTED_KEYS names another ("" or "none": no file).
const defaultTrustedKeys = "/etc/camount/trusted-keys"

// trustFlags are the index authentication flags of every reading verb.
type trustFlags struct {
	digest string
	keys   stringList
}

func addTrustFlags(fs *flag.FlagSet) *trustFlags {
	t := &trustFlags{}
	fs.StringVar(&t.digest, "index-digest", "", "accept the index only if its file has this digest, `sha256:HEX` (camount info prints it); checked before any use")
	fs.Var(&t.keys, "trusted-key", "accept the index only with a valid minisign signature (INDEX.minisig beside it) by this public `KEY` (a .pub file or the base64 key; repeatable; also the keys in "+defaultTrustedKeys+")")
	return t
}

// keysFile is the file of trusted keys every command reads.
func keysFile() string {
	if v, ok := os.LookupEnv("CAMOUNT_TRUSTED_KEYS"); ok {
		if v == "none" {
			return ""
		}
		return v
	}
	return defaultTrustedKeys
}

// trustedKeys returns the keys of --trusted-key and of the keys file.
func (t *trustFlags) trustedKeys() (trust.Keys, error) {
	var ks trust.Keys
	for _, v := range t.keys {
		k, err := trust.LoadKey(v)
		if err != nil {
			return nil, fmt.Errorf("--trusted-key: %w", err)
		}
		ks = append(ks, k)
	}
	if f := keysFile(); f != "" {
		fk, err := trust.LoadKeysFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		ks = append(ks, fk...)
	}
	return ks, nil
}

// check authenticates the bytes b of the index at path: the pinned digest,
// then a signature by a trusted key (INDEX.minisig, read the way the index
// was). Nothing has used the index yet.
func (t *trustFlags) check(ctx context.Context, e *env, r *remoteFlags, path string, b []byte) error {
	if t == nil {
		return nil
	}
	shown := location.Redact(path)
	if t.digest != "" {
		d, err := trust.ParseDigest(t.digest)
		if err != nil {
			return usagef("--index-digest: %v", err)
		}
		if err := d.Check(b); err != nil {
			return fmt.Errorf("index %s: %w (--index-digest): refusing it", shown, err)
		}
		e.log.Debug("index digest matches", "index", shown, "digest", d)
	}
	ks, err := t.trustedKeys()
	if err != nil || len(ks) == 0 {
		return err
	}
	sigPath := signaturePath(path)
	sig, err := r.readFile(ctx, e, sigPath, useFile)
	if err != nil {
		return fmt.Errorf("index %s: no signature to check against the trusted keys: %w", shown, err)
	}
	comment, err := ks.Verify(b, sig, indexName(path, ""))
	if err != nil {
		return fmt.Errorf("index %s: %w (%s): refusing it", shown, err, location.Redact(sigPath))
	}
	e.log.Debug("index signature valid", "index", shown, "trusted_comment", comment)
	return nil
}

// signaturePath is where the signature of an index lives: INDEX.minisig,
// for a URL before its query.
func signaturePath(index string) string {
	if location.IsURL(index) {
		if u, err := url.Parse(index); err == nil {
			u.Path += ".minisig"
			u.RawPath = ""
			u.Fragment, u.RawFragment = "", ""
			return u.String()
		}
	}
	return index + ".minisig"
}

// readLocalIndex reads a local index file whole (bounded).
func readLocalIndex(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, fetch.MaxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > fetch.MaxIndexSize {
		return nil, fmt.Errorf("%s: more than %d bytes: not an index", path, fetch.MaxIndexSize)
	}
	return b, nil
}

func init() {
	register(&command{
		name:    "sign",
		args:    "--key=KEY [--trusted-comment=TEXT] INDEX...",
		summary: "sign indexes with a minisign secret key (writes INDEX.minisig; minisign -V verifies it)",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			key := fs.String("key", "", "minisign secret key `FILE` (minisign -G; an encrypted one takes its password from $CAMOUNT_KEY_PASSWORD)")
			comment := fs.String("trusted-comment", "", "trusted (signed) comment `TEXT` (default: minisign's, timestamp:T<TAB>file:NAME<TAB>hashed; a file:NAME in it must name the index)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) == 0 {
					return usagef("want the indexes to sign")
				}
				if *key == "" {
					return usagef("--key: give the minisign secret key")
				}
				kp, err := parseLocal("--key", *key, location.Input)
				if err != nil {
					return err
				}
				paths := make([]string, len(args))
				for i, in := range args {
					if paths[i], err = parseLocal("INDEX", in, location.Input); err != nil {
						return err
					}
				}
				k, err := trust.LoadPrivateKey(kp, os.Getenv("CAMOUNT_KEY_PASSWORD"))
				if err != nil {
					return err
				}
				for _, p := range paths {
					b, err := readLocalIndex(p)
					if err != nil {
						return err
					}
					name := indexName(p, "")
					tc := *comment
					if tc != "" && !strings.Contains(tc, "file:") {
						tc += "\tfile:" + name
					}
					sig := trust.Sign(k, b, name, tc)
					if err := writeBytesAtomic(signaturePath(p), sig); err != nil {
						return err
					}
					fmt.Fprintln(e.stdout, signaturePath(p))
				}
				return nil
			}
		},
	})
}

// trustOf returns the trust flags of r (nil without).
func (r *remoteFlags) trustOf() *trustFlags {
	if r == nil {
		return nil
	}
	return r.trust
}
