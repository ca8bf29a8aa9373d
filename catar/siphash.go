package catar

import "math/bits"

// SipHash-2-4 key casync uses for goodbye-table hashes (FORMAT.md §4.5).
const (
	sipK0 uint64 = 0x8574442b0f1d84b3
	sipK1 uint64 = 0x2736ed30d1c22ec1
)

// NameHash returns SipHash-2-4 of name with casync's key.
func NameHash(name string) uint64 { return siphash24(sipK0, sipK1, name) }

func siphash24(k0, k1 uint64, m string) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(m)
	i := 0
	for ; i+8 <= n; i += 8 {
		w := uint64(m[i]) | uint64(m[i+1])<<8 | uint64(m[i+2])<<16 | uint64(m[i+3])<<24 |
			uint64(m[i+4])<<32 | uint64(m[i+5])<<40 | uint64(m[i+6])<<48 | uint64(m[i+7])<<56
		v3 ^= w
		round()
		round()
		v0 ^= w
	}
	b := uint64(n) << 56
	for j := 0; i+j < n; j++ {
		b |= uint64(m[i+j]) << (8 * j)
	}
	v3 ^= b
	round()
	round()
	v0 ^= b
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
