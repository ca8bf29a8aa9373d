package catar

import "sort"

// goodbyeItem is one child in a directory's goodbye table. In the archive,
// the item stores G-F (G = goodbye offset, F = FILENAME offset).
type goodbyeItem struct {
	hash  uint64
	start int64 // F: archive offset of the child's FILENAME
	size  int64 // bytes from F to the end of the child
}

// eytzinger returns, for n sorted items, the sorted index stored in each
// slot: the in-order traversal of the implicit complete binary tree over
// slots 0..n-1 visits sorted indices 0..n-1 (FORMAT.md §4.5).
func eytzinger(n int) []int {
	out := make([]int, n)
	k := 0
	var walk func(i int)
	walk = func(i int) {
		if i >= n {
			return
		}
		walk(2*i + 1)
		out[i] = k
		k++
		walk(2*i + 2)
	}
	walk(0)
	return out
}

// appendGoodbye appends the GOODBYE record for a directory whose ENTRY is at
// entryOff and whose GOODBYE starts at g. items is reordered.
func appendGoodbye(buf []byte, items []goodbyeItem, entryOff, g int64) []byte {
	sort.Slice(items, func(i, j int) bool {
		if items[i].hash != items[j].hash {
			return items[i].hash < items[j].hash
		}
		return items[i].start < items[j].start
	})
	size := uint64(headerSize + goodbyeItemSize*(len(items)+1))
	buf = le.AppendUint64(buf, size)
	buf = le.AppendUint64(buf, TypeGoodbye)
	for _, k := range eytzinger(len(items)) {
		it := items[k]
		buf = le.AppendUint64(buf, uint64(g-it.start))
		buf = le.AppendUint64(buf, uint64(it.size))
		buf = le.AppendUint64(buf, it.hash)
	}
	buf = le.AppendUint64(buf, uint64(g-entryOff))
	buf = le.AppendUint64(buf, size)
	buf = le.AppendUint64(buf, GoodbyeTailMarker)
	return buf
}
