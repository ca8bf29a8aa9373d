package chunker

import (
	"strings"
	"testing"
)

// A size whose suffix multiplies it past 64 bits is refused, not wrapped
// to a small valid size (17592186044480M used to be 64M).
func TestParseParamsOutOfRange(t *testing.T) {
	for _, s := range []string{"17592186044480M", "16K:17592186044480M:256K", "18014398509481985K"} {
		if p, err := ParseParams(s); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("ParseParams(%q) = %+v, %v; want out of range", s, p, err)
		}
	}
}
