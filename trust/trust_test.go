package trust

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

func TestDigest(t *testing.T) {
	b := []byte("an index")
	d := DigestOf(b)
	p, err := ParseDigest(d.String())
	if err != nil || p.Check(b) != nil {
		t.Fatalf("round trip: %v %v", err, p.Check(b))
	}
	if err := p.Check([]byte("another")); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("mismatch: %v", err)
	}
	for _, s := range []string{"", "sha256", "md5:00", "sha256:zz", "sha256:" + strings.Repeat("0", 62)} {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("ParseDigest(%q) accepted", s)
		}
	}
}

func TestSignVerify(t *testing.T) {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub2, _, _ := minisign.GenerateKey(rand.Reader)
	idx := []byte("index bytes")
	sig := Sign(priv, idx, "disk.caibx", "")
	ks := Keys{pub2, pub}
	if c, err := ks.Verify(idx, sig, "disk.caibx"); err != nil || !strings.Contains(c, "file:disk.caibx") {
		t.Fatalf("Verify: %q %v", c, err)
	}
	for name, c := range map[string]struct {
		keys Keys
		idx  []byte
		name string
	}{
		"untrusted key": {Keys{pub2}, idx, "disk.caibx"},
		"other bytes":   {ks, []byte("index bytez"), "disk.caibx"},
		"other name":    {ks, idx, "other.caibx"},
	} {
		if _, err := c.keys.Verify(c.idx, sig, c.name); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// (Encrypted secret keys: minisign's scrypt parameters take ~1 GiB
	// and tens of seconds, too much for make test; LoadPrivateKey hands
	// them to minisign.DecryptKey.)
	// Keys as base64 strings and key files.
	txt, _ := pub.MarshalText()
	pf := filepath.Join(t.TempDir(), "k.pub")
	os.WriteFile(pf, txt, 0o644)
	lines := strings.Split(strings.TrimSpace(string(txt)), "\n")
	for _, v := range []string{pf, lines[len(lines)-1]} {
		if k, err := LoadKey(v); err != nil || k.ID() != pub.ID() {
			t.Errorf("LoadKey(%q): %v", v, err)
		}
	}
	ks2, err := LoadKeysFile(pf)
	if err != nil || len(ks2) != 1 {
		t.Errorf("LoadKeysFile: %v %d", err, len(ks2))
	}
}
