package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
)

// HTTPOptions configure HTTP(S) access to chunk stores and index files. The
// zero value of each field has the documented default.
type HTTPOptions struct {
	// Client is the HTTP client; nil means one built by NewHTTPClient from
	// the TLS fields below. Share one client between stores so that they
	// share one keep-alive connection pool.
	Client *http.Client
	// CAFile is a PEM bundle of CA certificates that replaces the system
	// roots for HTTPS; "" means the system roots.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key for TLS
	// client authentication; both or neither.
	CertFile, KeyFile string
	// Authorization is sent as the Authorization header of every request
	// ("Bearer …", "Basic …"); "" sends none.
	Authorization string
	// Timeout bounds each request attempt, from sending it to the last body
	// byte; 0 means 30s. A stalled server is given up on and retried.
	Timeout time.Duration
	// Retries is how many times a failed request (network error, timeout,
	// 5xx, 429, truncated body) is retried; 0 means 4, negative means none.
	Retries int
	// Backoff is the first retry's mean delay; each retry doubles it, up to
	// MaxBackoff, with random jitter of ±50%. 0 means 100ms; MaxBackoff 0 means 5s.
	Backoff, MaxBackoff time.Duration
	// MaxConns bounds connections per host; 0 means 64.
	MaxConns int
	// Log receives warnings about retried requests; nil discards.
	Log *slog.Logger
}

func (o *HTTPOptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 30 * time.Second
}

func (o *HTTPOptions) retries() int {
	switch {
	case o.Retries < 0:
		return 0
	case o.Retries == 0:
		return 4
	}
	return o.Retries
}

// NewHTTPClient builds a client with one keep-alive connection pool (HTTP/2
// when a TLS server offers it), proxies from the environment (HTTPS_PROXY,
// HTTP_PROXY, NO_PROXY) and the TLS settings of o. Timeouts are per request
// (see HTTPOptions.Timeout), not on the client.
func NewHTTPClient(o HTTPOptions) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificates in it", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("a TLS client certificate needs both a certificate and a key file")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate %s, key %s: %w", o.CertFile, o.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	conns := o.MaxConns
	if conns <= 0 {
		conns = 64
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:       tc,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4 * conns,
		MaxIdleConnsPerHost:   conns,
		MaxConnsPerHost:       conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Chunks are compressed already; asking for gzip would only cost.
		DisableCompression: true,
		// Bodies are tens of KiB: fewer, larger socket reads.
		ReadBufferSize: 64 << 10,
	}
	return &http.Client{Transport: tr}, nil
}

// httpGetter runs GET requests with the per-attempt timeout and retries of
// HTTPOptions. HTTPStore and FetchURL share it.
type httpGetter struct {
	client  *http.Client
	o       HTTPOptions
	log     *slog.Logger
	retries atomic.Int64 // requests sent again after a transient failure
}

func newHTTPGetter(o HTTPOptions) (*httpGetter, error) {
	c := o.Client
	if c == nil {
		var err error
		if c, err = NewHTTPClient(o); err != nil {
			return nil, err
		}
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &httpGetter{client: c, o: o, log: log}, nil
}

// HTTPStatusError is a response status that is neither success nor "not found".
type HTTPStatusError struct {
	URL    string
	Status string
	Code   int
	// RetryAfter is the server's Retry-After (seconds form), capped at 30s;
	// the next attempt waits at least this long.
	RetryAfter time.Duration
}

func (e *HTTPStatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

// retryable reports whether a request that failed with err may succeed when
// sent again.
func retryable(err error) bool {
	var se *HTTPStatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout
	}
	if errors.Is(err, ErrNotFound) {
		return false
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		var ce *tls.CertificateVerificationError
		if errors.As(err, &ce) {
			return false // a certificate will not become valid by asking again
		}
	}
	// Network errors, resets, timeouts of the attempt, truncated bodies.
	return true
}

// get fetches u, retrying transient failures with exponential backoff and
// jitter. A 404 or 410 is ErrNotFound; limit bounds the body.
func (g *httpGetter) get(ctx context.Context, u string, limit int64) ([]byte, error) {
	return g.getWith(ctx, u, limit, nil)
}

// conditional makes a GET conditional on validators of a cached copy
// (If-None-Match, If-Modified-Since) and records the response's.
type conditional struct {
	etag, lastModified string // of the cached copy ("" for none)
	notModified        bool   // the server answered 304
	respETag, respLM   string // validators of a 200 response
}

// getWith is get, conditional on c when c is not nil: a 304 answer
// returns (nil, nil) with c.notModified set.
func (g *httpGetter) getWith(ctx context.Context, u string, limit int64, c *conditional) ([]byte, error) {
	var err error
	delay := g.o.Backoff
	if delay <= 0 {
		delay = 100 * time.Millisecond
	}
	maxDelay := g.o.MaxBackoff
	if maxDelay <= 0 {
		maxDelay = 5 * time.Second
	}
	retries := g.o.retries()
	attempts := 0
	shown := location.Redact(u) // u may carry a password: errors and logs show this
	for attempt := 0; ; attempt++ {
		attempts++
		var b []byte
		b, err = g.onceWith(ctx, u, limit, c)
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("GET %s: no complete response within %v", shown, g.o.timeout())
		}
		if attempt >= retries || !retryable(err) {
			break
		}
		g.retries.Add(1)
		wait := time.Duration(rand.Int64N(int64(delay)) + int64(delay)/2) // jitter in [d/2, 3d/2)
		if se := (*HTTPStatusError)(nil); errors.As(err, &se) && se.RetryAfter > wait {
			wait = se.RetryAfter
		}
		g.log.Debug("retrying HTTP request", "url", shown, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, maxDelay)
	}
	var se *HTTPStatusError
	if errors.Is(err, ErrNotFound) || errors.As(err, &se) {
		return nil, err
	}
	// A network failure: keep its text but not its chain, so that an
	// attempt's timeout or a reset is not mistaken for the caller's
	// cancellation or a local errno (a FUSE read must fail with EIO).
	return nil, &NetworkError{URL: shown, Attempts: attempts, Msg: location.RedactText(err.Error())}
}

// NetworkError is a request that failed at the network level (refused,
// reset, timed out, truncated) on every attempt.
type NetworkError struct {
	URL      string
	Attempts int
	Msg      string
}

func (e *NetworkError) Error() string {
	if e.Attempts > 1 {
		return fmt.Sprintf("%s (%d attempts)", e.Msg, e.Attempts)
	}
	return e.Msg
}

// once makes one attempt, bounded by the per-request timeout.
func (g *httpGetter) once(ctx context.Context, u string, limit int64) ([]byte, error) {
	return g.onceWith(ctx, u, limit, nil)
}

func (g *httpGetter) onceWith(ctx context.Context, u string, limit int64, c *conditional) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, g.o.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	// The request itself needs u's password (basic auth); what is shown
	// of it never does.
	shown := location.Redact(u)
	req.Header.Set("User-Agent", "camount")
	if g.o.Authorization != "" {
		req.Header.Set("Authorization", g.o.Authorization)
	}
	if c != nil && c.etag != "" {
		req.Header.Set("If-None-Match", c.etag)
	}
	if c != nil && c.lastModified != "" {
		req.Header.Set("If-Modified-Since", c.lastModified)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if c != nil {
		c.notModified = resp.StatusCode == http.StatusNotModified && (c.etag != "" || c.lastModified != "")
		c.respETag, c.respLM = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
		if c.notModified {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			return nil, nil
		}
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096)) // keep the connection
		return nil, &notFoundError{fmt.Sprintf("GET %s: %s", shown, resp.Status)}
	case resp.StatusCode != http.StatusOK:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		se := &HTTPStatusError{URL: shown, Status: resp.Status, Code: resp.StatusCode}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			se.RetryAfter = min(time.Duration(secs)*time.Second, 30*time.Second)
		}
		return nil, se
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("GET %s: %d bytes is more than %d", shown, resp.ContentLength, limit)
	}
	n := resp.ContentLength
	if n < 0 {
		n = 64 << 10
	}
	// One byte of room beyond the announced length, so that reading up to
	// EOF never grows (copies) the buffer.
	buf := make([]byte, 0, n+1)
	b, err := readAllLimit(resp.Body, buf, limit)
	if err != nil {
		// A body shorter than its Content-Length is io.ErrUnexpectedEOF:
		// a truncated response, retried.
		return nil, fmt.Errorf("GET %s: reading body: %w", shown, err)
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return nil, fmt.Errorf("GET %s: got %d bytes of %d: %w", shown, len(b), resp.ContentLength, io.ErrUnexpectedEOF)
	}
	return b, nil
}

func readAllLimit(r io.Reader, b []byte, limit int64) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("more than %d bytes", limit)
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// HTTPStore is a .castr store served over HTTP(S), in casync's layout:
// <base>/<first 4 hex>/<hex>.cacnk. It retries transient failures itself,
// and asks for a chunk again when its bytes fail verification (the scheduler
// does that through the Refetcher interface), since a response may be
// damaged on the way.
type HTTPStore struct {
	base  string // without query and fragment
	query string // the base URL's query, sent with every chunk request
	g     *httpGetter
}

// NewHTTPStore returns a store for the base URL (http:// or https://). A
// query in the URL (a signed or tokenised CDN URL) is sent with every
// chunk request, as desync does: <base>/<4 hex>/<hex>.cacnk?<query>.
func NewHTTPStore(base string, o HTTPOptions) (*HTTPStore, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("chunk store %s: %s", location.Redact(base), location.RedactText(err.Error()))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("chunk store %s: not an http or https URL", location.Redact(base))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("chunk store %s: no host", location.Redact(base))
	}
	g, err := newHTTPGetter(o)
	if err != nil {
		return nil, err
	}
	s := &HTTPStore{query: u.RawQuery, g: g}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	s.base = strings.TrimSuffix(u.String(), "/")
	return s, nil
}

// String names the store with its password redacted.
// String names the store with its password redacted and without its
// query (which may hold a signature).
func (s *HTTPStore) String() string { return location.Redact(s.base) }

// URL returns where a chunk lives.
func (s *HTTPStore) URL(id chunker.ID) string {
	h := id.String()
	u := s.base + "/" + h[:4] + "/" + h + ChunkSuffix
	if s.query != "" {
		u += "?" + s.query
	}
	return u
}

// Get fetches <id>.cacnk. The body is bounded by what a chunk of the size
// the index gives can take when stored (see withStoredLimit), else by
// MaxChunkSize: an endless or oversized answer costs no more memory.
func (s *HTTPStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	return s.g.get(ctx, s.URL(id), storedLimit(ctx))
}

type storedLimitKey struct{}

// withStoredLimit tells network stores the chunk's size: its stored form
// (compressed, or not) cannot be much larger, so a body beyond that is
// refused as it arrives instead of being read up to MaxChunkSize (128 MiB,
// times every concurrent fetch).
func withStoredLimit(ctx context.Context, size uint64) context.Context {
	// Worst-case growth of incompressible data: zstd, xz and gzip add
	// well under 1/64 plus a frame header.
	return context.WithValue(ctx, storedLimitKey{}, int64(size+size/64+64<<10))
}

func storedLimit(ctx context.Context) int64 {
	if n, ok := ctx.Value(storedLimitKey{}).(int64); ok && n > 0 && n < MaxChunkSize {
		return n
	}
	return MaxChunkSize
}

// Retries implements RetryCounter: requests sent again after a transient failure.
func (s *HTTPStore) Retries() int64 { return s.g.retries.Load() }

// RefetchCorrupt implements Refetcher: a chunk that does not verify is
// asked for once more before it counts as corrupt in this store.
func (s *HTTPStore) RefetchCorrupt() int { return 1 }

// Refetcher is implemented by stores whose bytes can be damaged in transit
// (network stores). The scheduler asks such a store for a chunk that failed
// verification up to RefetchCorrupt more times before taking it as corrupt
// there and moving to the next store. Verification stays in DecodeChunk.
type Refetcher interface {
	RefetchCorrupt() int
}

// MaxIndexSize bounds index files fetched over HTTP (about 27 million chunks).
const MaxIndexSize = 1 << 30

// FetchURL fetches a whole file (an index) over HTTP(S) with the retries and
// TLS settings of o.
func FetchURL(ctx context.Context, u string, o HTTPOptions) ([]byte, error) {
	g, err := newHTTPGetter(o)
	if err != nil {
		return nil, err
	}
	return g.get(ctx, u, MaxIndexSize)
}

// IsURL reports whether s is an http:// or https:// URL.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// DefaultStoreURL derives the store of an index URL as casync does: the
// last path component replaced by default.castr (query and fragment dropped).
func DefaultStoreURL(index string) (string, error) {
	u, err := url.Parse(index)
	if err != nil {
		return "", fmt.Errorf("%s: %w", index, err)
	}
	u.RawQuery, u.Fragment = "", ""
	p := u.Path
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[:i+1]
	} else {
		p = "/"
	}
	u.Path = p + "default.castr"
	u.RawPath = ""
	return u.String(), nil
}
