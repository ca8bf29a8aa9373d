package catar

import "testing"

func TestUIDShift(t *testing.T) {
	for _, c := range []struct {
		shift, rng string
		want       *UIDShift
		err        bool
	}{
		{"", "", nil, false},
		{"no", "", nil, false},
		{"yes", "", &UIDShift{0, 65536}, false},
		{"100000", "", &UIDShift{100000, 65536}, false},
		{"100000", "4294967296", &UIDShift{100000, 0}, false},
		{"", "1000", &UIDShift{0, 1000}, false},
		{"5", "no", nil, false},
		{"x", "", nil, true},
		{"", "0", nil, false}, // casync: not a range, so a boolean
		{"", "4294967297", nil, true},
	} {
		got, err := ParseUIDShift(c.shift, c.rng)
		if (err != nil) != c.err || (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
			t.Errorf("ParseUIDShift(%q, %q) = %+v, %v; want %+v", c.shift, c.rng, got, err, c.want)
		}
	}
	s := &UIDShift{Shift: 100000, Range: 65536}
	for _, c := range []struct {
		in, out uint32
		ok      bool
	}{{100000, 0, true}, {101000, 1000, true}, {99999, 0, false}, {165536, 0, true}, {0xFFFFFFFF, 0, false}} {
		if got, ok := s.ToArchive(c.in); ok != c.ok || ok && got != c.out {
			t.Errorf("ToArchive(%d) = %d %v", c.in, got, ok)
		}
	}
	if got, ok := s.FromArchive(70000); !ok || got != 100000+70000%65536 {
		t.Errorf("FromArchive(70000) = %d %v", got, ok)
	}
	if _, ok := (&UIDShift{Shift: 0xFFFFFF00}).FromArchive(0x1000); ok {
		t.Error("FromArchive overflow accepted")
	}
	var none *UIDShift
	if got, ok := none.FromArchive(7); !ok || got != 7 {
		t.Error("nil shift maps")
	}
}
