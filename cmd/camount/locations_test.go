package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseByteSizeRange(t *testing.T) {
	for _, v := range []string{"16777216T", "18014398509481985K", "9223372036854775808", "8796093022208M", "8589934592G"} {
		if n, err := parseByteSize(v); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("parseByteSize(%q) = %d, %v; want out of range", v, n, err)
		}
	}
	for v, want := range map[string]int64{"8388607T": 8388607 << 40, "1K": 1024, "256M": 256 << 20, "0": 0, "9223372036854775807": 1<<63 - 1} {
		if n, err := parseByteSize(v); err != nil || n != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", v, n, err, want)
		}
	}
}

func TestHTTPTimeoutRefused(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		r := &remoteFlags{timeout: d}
		if err := r.check(); err == nil || !strings.Contains(err.Error(), "--http-timeout") {
			t.Errorf("--http-timeout=%v: %v", d, err)
		}
	}
	if err := (&remoteFlags{timeout: time.Second}).check(); err != nil {
		t.Error(err)
	}
}
