package fetch

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// fakeRemote is a RemoteFile answering with a fixed result.
type fakeRemote struct {
	b        []byte
	tag      string
	err      error
	gotTag   string
	oneShot  bool
	requests int
}

func (f *fakeRemote) String() string { return "fake" }

func (f *fakeRemote) readChanged(_ context.Context, _ int64, tag string) ([]byte, string, bool, error) {
	f.requests++
	f.gotTag = tag
	if f.err != nil {
		return nil, "", false, f.err
	}
	if tag != "" && tag == f.tag {
		return nil, f.tag, true, nil
	}
	return f.b, f.tag, false, nil
}

// TestFetchRemoteFileCached: kept when valid, revalidated by tag, opened
// for one attempt once a copy is kept, the copy served when the server
// does not answer, the server's answers (missing, refused) returned.
func TestFetchRemoteFileCached(t *testing.T) {
	x, _ := blobFixture(t, bytes.Repeat([]byte("camount"), 50000))
	var buf bytes.Buffer
	if _, err := x.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	idx := buf.Bytes()
	dir := t.TempDir()
	ctx := context.Background()
	f := &fakeRemote{b: idx, tag: `"v1"`}
	open := func(one bool) (RemoteFile, error) { f.oneShot = one; return f, nil }
	const u = "s3+http://h/b/i.caibx"

	// Not an index: returned, not kept.
	bad := &fakeRemote{b: []byte("junk")}
	if b, err := FetchRemoteFileCached(ctx, u, func(bool) (RemoteFile, error) { return bad, nil }, dir, ValidIndex, nil); err != nil || string(b) != "junk" {
		t.Fatalf("junk: %q %v", b, err)
	}
	for i := 0; i < 2; i++ {
		b, err := FetchRemoteFileCached(ctx, u, open, dir, ValidIndex, nil)
		if err != nil || !bytes.Equal(b, idx) {
			t.Fatalf("read %d: %d bytes, %v", i, len(b), err)
		}
	}
	if !f.oneShot || f.gotTag != `"v1"` {
		t.Errorf("second read: one attempt %v, tag %q; want true, \"v1\"", f.oneShot, f.gotTag)
	}
	f.err = &NetworkError{URL: u, Attempts: 1, Msg: "connection refused"}
	if b, err := FetchRemoteFileCached(ctx, u, open, dir, ValidIndex, nil); err != nil || !bytes.Equal(b, idx) {
		t.Errorf("server down: %d bytes, %v; want the kept copy", len(b), err)
	}
	for _, answer := range []error{
		ErrNotFound,
		&S3Error{Location: u, Op: "GET", Code: "AccessDenied", Status: 403},
		&SFTPError{Location: u, Msg: "host key mismatch"},
	} {
		f.err = answer
		if _, err := FetchRemoteFileCached(ctx, u, open, dir, ValidIndex, nil); !errors.Is(err, answer) {
			t.Errorf("server answered %v: got %v", answer, err)
		}
	}
}
