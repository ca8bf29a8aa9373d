package integration

// Issue 18.4: signed and tokenised CDN URLs (…/img/blob.caibx?sig=abc).
// The query is ignored for suffix checks and store derivation, sent with
// the index request, and with --chunk-query (or in a --store URL) with
// every chunk request. Issue 18.9: a blob mount's file name is decoded
// from the URL.

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// sigServer serves dir and refuses (403) requests without ?sig=abc: for
// the index always, for chunks when chunksNeedSig.
type sigServer struct {
	URL           string
	chunksNeedSig bool
	mu            sync.Mutex
	paths         []string // request URIs seen
}

func startSigServer(t testing.TB, dir string, chunksNeedSig bool) *sigServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sigServer{URL: "http://" + l.Addr().String(), chunksNeedSig: chunksNeedSig}
	fsrv := http.FileServer(http.Dir(dir))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.RequestURI())
		s.mu.Unlock()
		chunk := strings.HasSuffix(r.URL.Path, ".cacnk")
		if (!chunk || s.chunksNeedSig) && r.URL.Query().Get("sig") != "abc" {
			http.Error(w, "signature required", http.StatusForbidden)
			return
		}
		fsrv.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func TestSignedURLs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "img")
	os.Mkdir(dir, 0o755)
	data := makeLocalImage(t, dir, 512<<10, 21)
	if err := os.Rename(filepath.Join(dir, "img.caibx"), filepath.Join(dir, "b l+ob.caibx")); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(t.TempDir(), "tree")
	os.Mkdir(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "hello"), []byte("hello world\n"), 0o644)
	camount(t, "make", filepath.Join(dir, "tree.caidx"), tree)

	open := startSigServer(t, root, false)
	index := open.URL + "/img/b%20l+ob.caibx?sig=abc"
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", index, out)
	checkFile(t, out, data)
	var sawIndex, chunkWithSig bool
	for _, p := range open.paths {
		sawIndex = sawIndex || p == "/img/b%20l+ob.caibx?sig=abc"
		chunkWithSig = chunkWithSig || strings.Contains(p, ".cacnk?")
	}
	if !sawIndex || chunkWithSig {
		t.Errorf("requests %v: want the index with its query, chunks of default.castr without", open.paths)
	}

	// info classifies a .caidx with a query as a tree.
	info := camount(t, "info", open.URL+"/img/tree.caidx?sig=abc#frag")
	if !strings.Contains(info, "(tree)") {
		t.Errorf("info of tree.caidx?sig=abc: %q", info)
	}
	ls := camount(t, "list", open.URL+"/img/tree.caidx?sig=abc")
	if !strings.Contains(ls, "hello") {
		t.Errorf("list of tree.caidx?sig=abc: %q", ls)
	}

	// A server that wants the signature on chunks too: refused without
	// --chunk-query, served with it or with a signed --store URL.
	signed := startSigServer(t, root, true)
	index = signed.URL + "/img/b%20l+ob.caibx?sig=abc"
	if _, err := tryCamount("extract", "--http-retries=0", index, filepath.Join(t.TempDir(), "o")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("extract without --chunk-query from a server wanting signed chunks: %v", err)
	}
	out = filepath.Join(t.TempDir(), "out2")
	camount(t, "extract", "--chunk-query", index, out)
	checkFile(t, out, data)
	out = filepath.Join(t.TempDir(), "out3")
	camount(t, "extract", "--store="+signed.URL+"/img/default.castr?sig=abc", index, out)
	checkFile(t, out, data)

	// A blob mount's file is named from the decoded URL path.
	needRoot(t)
	needCmd(t, "fusermount3")
	mnt, _ := remoteMountLine(t, "--chunk-query", index)
	names, err := os.ReadDir(mnt)
	if err != nil || len(names) != 1 || names[0].Name() != "b l+ob" {
		t.Fatalf("mount of %s shows %v (%v), want one file \"b l+ob\"", index, names, err)
	}
	checkFile(t, filepath.Join(mnt, "b l+ob"), data)
}
