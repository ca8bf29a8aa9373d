package fetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestFetchIndexCachedETag: revalidation by ETag (304 serves the kept
// copy), a 5xx serves the kept copy, a 404 is the error, not the copy.
func TestFetchIndexCachedETag(t *testing.T) {
	x, _ := blobFixture(t, bytes.Repeat([]byte("camount"), 50000))
	var buf bytes.Buffer
	if _, err := x.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	idx := buf.Bytes()
	var mode atomic.Value
	mode.Store("ok")
	var conditional, down atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "500":
			down.Add(1)
			http.Error(w, "down", 503)
			return
		case "404":
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("If-None-Match") == `"v1"` {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Write(idx)
	}))
	defer srv.Close()
	dir := t.TempDir()
	o := HTTPOptions{Backoff: time.Millisecond} // default retries: 4
	ctx := context.Background()
	for _, m := range []string{"ok", "ok", "500"} {
		mode.Store(m)
		b, err := FetchIndexCached(ctx, srv.URL+"/i.caibx", o, dir)
		if err != nil || !bytes.Equal(b, idx) {
			t.Fatalf("%s: %d bytes, %v", m, len(b), err)
		}
	}
	if conditional.Load() != 1 {
		t.Errorf("%d conditional requests answered 304, want 1", conditional.Load())
	}
	// With a copy at hand the server is asked once, not retried: an
	// offline start does not wait out the retries.
	if down.Load() != 1 {
		t.Errorf("%d requests to a server answering 503 with a copy kept, want 1", down.Load())
	}
	mode.Store("404")
	if _, err := FetchIndexCached(ctx, srv.URL+"/i.caibx", o, dir); !errors.Is(err, ErrNotFound) {
		t.Errorf("404 with a kept copy: %v, want ErrNotFound", err)
	}
	// A kept copy is keyed without userinfo: another user's URL finds it.
	mode.Store("500")
	u := "http://u:pw@" + srv.Listener.Addr().String() + "/i.caibx"
	if b, err := FetchIndexCached(ctx, u, o, dir); err != nil || !bytes.Equal(b, idx) {
		t.Errorf("userinfo URL: %d bytes, %v", len(b), err)
	}
}
