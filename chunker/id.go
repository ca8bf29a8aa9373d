// Package chunker holds casync's chunk IDs and digests, the .caibx/.caidx index
// codec and the buzhash content-defined chunker. It depends on the standard
// library only.
package chunker

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
)

// ID is a chunk's digest: SHA-512/256 or SHA-256 of its uncompressed bytes.
type ID [32]byte

// String returns the lower-case hex form used in store paths and output.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses 64 lower-case hex characters, as casync does (upper case is refused).
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return id, fmt.Errorf("chunk ID %q: want 64 hex characters, have %d", s, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return id, fmt.Errorf("chunk ID %q: not lower-case hex", s)
		}
	}
	hex.Decode(id[:], []byte(s))
	return id, nil
}

// Digest selects the chunk and archive digest algorithm.
type Digest int

const (
	SHA512_256 Digest = iota // casync's default (feature flag bit 61 set)
	SHA256
)

// FlagSHA512_256 is the feature flag bit that selects SHA-512/256.
const FlagSHA512_256 uint64 = 0x2000000000000000

// DigestOf returns the digest selected by an index's feature flags.
func DigestOf(flags uint64) Digest {
	if flags&FlagSHA512_256 != 0 {
		return SHA512_256
	}
	return SHA256
}

// Sum returns the chunk ID of data.
func (d Digest) Sum(data []byte) ID {
	if d == SHA256 {
		return sha256.Sum256(data)
	}
	return sha512.Sum512_256(data)
}

// New returns a streaming hash of this algorithm.
func (d Digest) New() hash.Hash {
	if d == SHA256 {
		return sha256.New()
	}
	return sha512.New512_256()
}

func (d Digest) String() string {
	if d == SHA256 {
		return "sha256"
	}
	return "sha512-256"
}

// ParseDigest parses the --digest flag values.
func ParseDigest(s string) (Digest, error) {
	switch s {
	case "sha512-256", "":
		return SHA512_256, nil
	case "sha256":
		return SHA256, nil
	}
	return 0, fmt.Errorf("unknown digest %q (want sha512-256 or sha256)", s)
}
