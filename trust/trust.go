// Package trust authenticates indexes before anything uses them, as
// dm-verity's root hash authenticates its hash tree: a pinned digest
// (--index-digest=sha256:HEX, like veritysetup's root hash) or a minisign
// signature by a trusted key (--trusted-key). Every chunk digest is in the
// index, so an authenticated index authenticates every byte served.
//
// Signatures are minisign's format (Ed25519; prehashed with BLAKE2b-512,
// minisign's default, or not), through aead.dev/minisign, so the real
// minisign tool verifies what Sign writes and camount verifies what
// minisign signs.
package trust

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
)

// ErrDigestMismatch is wrapped by the error of Digest.Check for an index
// whose digest is not the pinned one.
var ErrDigestMismatch = errors.New("index digest mismatch")

// ErrBadSignature is wrapped by the errors of Keys.Verify for an index
// without a valid signature by a trusted key.
var ErrBadSignature = errors.New("index signature not valid")

// Digest is a pinned index digest.
type Digest struct {
	Algorithm string // "sha256"
	Sum       []byte
}

// ParseDigest parses "sha256:HEX" (64 hex digits).
func ParseDigest(s string) (Digest, error) {
	alg, h, ok := strings.Cut(s, ":")
	if !ok || alg != "sha256" {
		return Digest{}, fmt.Errorf("%q: want sha256:HEX (camount info prints it)", s)
	}
	sum, err := hex.DecodeString(h)
	if err != nil || len(sum) != sha256.Size {
		return Digest{}, fmt.Errorf("%q: want 64 hex digits after sha256:", s)
	}
	return Digest{Algorithm: alg, Sum: sum}, nil
}

func (d Digest) String() string { return d.Algorithm + ":" + hex.EncodeToString(d.Sum) }

// DigestOf returns the digest to pin for index bytes.
func DigestOf(b []byte) Digest {
	s := sha256.Sum256(b)
	return Digest{Algorithm: "sha256", Sum: s[:]}
}

// Check returns nil if b has digest d, else an error wrapping
// ErrDigestMismatch that names both digests.
func (d Digest) Check(b []byte) error {
	got := DigestOf(b)
	if !bytes.Equal(got.Sum, d.Sum) {
		return fmt.Errorf("%w: the index has %s, %s is pinned", ErrDigestMismatch, got, d)
	}
	return nil
}

// Keys is a set of trusted minisign public keys.
type Keys []minisign.PublicKey

// ParseKey parses a public key: the contents of a minisign .pub file, or
// the base64 key alone (as minisign -P takes it).
func ParseKey(text []byte) (minisign.PublicKey, error) {
	var k minisign.PublicKey
	s := strings.TrimSpace(string(text))
	if !strings.Contains(s, "\n") {
		s = "untrusted comment: \n" + s
	}
	if err := k.UnmarshalText([]byte(s)); err != nil {
		return k, err
	}
	return k, nil
}

// LoadKey reads a trusted key given as a file (a minisign .pub file) or as
// the base64 key itself.
func LoadKey(v string) (minisign.PublicKey, error) {
	b, ferr := os.ReadFile(v)
	if ferr == nil {
		k, err := ParseKey(b)
		if err != nil {
			return k, fmt.Errorf("public key file %s: %w", v, err)
		}
		return k, nil
	}
	k, err := ParseKey([]byte(v))
	if err != nil {
		return k, fmt.Errorf("public key %s: neither a readable file (%v) nor a minisign public key", v, ferr)
	}
	return k, nil
}

// LoadKeysFile reads a file of trusted keys: minisign .pub files
// concatenated, or one base64 key per line; blank lines and lines starting
// with # or "untrusted comment:" are skipped.
func LoadKeysFile(path string) (Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ks Keys
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "untrusted comment:") {
			continue
		}
		k, err := ParseKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// Verify checks that sig (the text of a .minisig file) is a valid
// signature of index by one of the keys, and that its trusted comment, if
// it names a file (minisign's "file:NAME"), names this index (name):
// a valid signature of another image's index is refused, so signed
// indexes cannot be swapped. It returns the trusted comment.
func (ks Keys) Verify(index, sig []byte, name string) (string, error) {
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return "", fmt.Errorf("%w: not a minisign signature: %v", ErrBadSignature, err)
	}
	var key *minisign.PublicKey
	for i := range ks {
		if ks[i].ID() == s.KeyID {
			key = &ks[i]
			break
		}
	}
	if key == nil {
		return "", fmt.Errorf("%w: signed by key %016X, which is not trusted", ErrBadSignature, s.KeyID)
	}
	if !minisign.Verify(*key, index, sig) {
		return "", fmt.Errorf("%w: the signature by key %016X does not match the index (or its trusted comment was altered)", ErrBadSignature, s.KeyID)
	}
	if signed, ok := commentFile(s.TrustedComment); ok && signed != name {
		return "", fmt.Errorf("%w: the signature is for %q, not %q (trusted comment %q)", ErrBadSignature, signed, name, s.TrustedComment)
	}
	return s.TrustedComment, nil
}

// commentFile returns the file name of a trusted comment
// ("timestamp:…\tfile:NAME\thashed", minisign's form).
func commentFile(c string) (string, bool) {
	for _, f := range strings.Split(c, "\t") {
		if name, ok := strings.CutPrefix(f, "file:"); ok {
			return name, true
		}
	}
	return "", false
}

// LoadPrivateKey reads a minisign secret key file; an encrypted one is
// decrypted with password.
func LoadPrivateKey(path, password string) (minisign.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, err
	}
	if minisign.IsEncrypted(b) {
		if password == "" {
			return minisign.PrivateKey{}, fmt.Errorf("secret key %s is encrypted: give its password in $CAMOUNT_KEY_PASSWORD", path)
		}
		k, err := minisign.DecryptKey(password, b)
		if err != nil {
			return k, fmt.Errorf("secret key %s: %w", path, err)
		}
		return k, nil
	}
	var k minisign.PrivateKey
	if err := k.UnmarshalText(b); err != nil {
		return k, fmt.Errorf("secret key %s: %w", path, err)
	}
	return k, nil
}

// Sign returns the text of a .minisig file for index, prehashed as
// minisign signs by default. trusted is the trusted comment; "" gives
// minisign's default, "timestamp:T\tfile:NAME\thashed".
func Sign(key minisign.PrivateKey, index []byte, name, trusted string) []byte {
	if trusted == "" {
		trusted = "timestamp:" + strconv.FormatInt(time.Now().Unix(), 10) + "\tfile:" + name + "\thashed"
	}
	untrusted := "signature from camount secret key " + strings.ToUpper(strconv.FormatUint(key.ID(), 16))
	r := minisign.NewReader(bytes.NewReader(index))
	io.Copy(io.Discard, r) // hashes the index (BLAKE2b-512); reading memory does not fail
	return r.SignWithComments(key, trusted, untrusted)
}
