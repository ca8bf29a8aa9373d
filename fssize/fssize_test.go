package fssize

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestParse(t *testing.T) {
	le := binary.LittleEndian
	blank := func() []byte { return make([]byte, probeSize) }

	sq := blank()
	le.PutUint32(sq, squashfsMagic)
	le.PutUint64(sq[40:], 5000)

	and := blank()
	copy(and, "ANDROID!")
	le.PutUint32(and[8:], 1)
	le.PutUint32(and[36:], 4096)
	andBadPage := blank()
	copy(andBadPage, "ANDROID!")
	le.PutUint32(andBadPage[36:], 3000)

	fat16 := blank()
	le.PutUint16(fat16[510:], fatSignature)
	le.PutUint16(fat16[11:], 512)
	le.PutUint16(fat16[19:], 100)
	fat32 := blank()
	le.PutUint16(fat32[510:], fatSignature)
	le.PutUint16(fat32[11:], 4096)
	le.PutUint32(fat32[32:], 7)

	ext := blank()
	le.PutUint16(ext[1024+56:], ext2Magic)
	le.PutUint32(ext[1024+4:], 300)
	le.PutUint32(ext[1024+24:], 2) // 4 KiB blocks

	for _, c := range []struct {
		name string
		b    []byte
		size uint64
		ok   bool
	}{
		{"squashfs", sq, 8192, true},
		{"android", and, 4096 + 4096, true},
		{"android, page not a power of two", andBadPage, 0, false},
		{"fat16", fat16, 51200, true},
		{"fat32", fat32, 28672, true},
		{"ext", ext, 300 * 4096, true},
		{"none", blank(), 0, false},
		{"short", ext[:probeSize-1], 0, false},
	} {
		size, ok, err := Parse(c.b)
		if err != nil || ok != c.ok || size != c.size {
			t.Errorf("%s: %d %v %v, want %d %v", c.name, size, ok, err, c.size, c.ok)
		}
		if len(c.b) == probeSize {
			if s2, ok2, _ := Size(bytes.NewReader(c.b)); s2 != size || ok2 != ok {
				t.Errorf("%s: Size and Parse disagree", c.name)
			}
		}
	}
	if _, ok, err := Size(bytes.NewReader(ext[:100])); ok || err != nil {
		t.Errorf("a 100-byte device: %v %v", ok, err)
	}
}
