package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
)

// S3 access goes through github.com/minio/minio-go/v7: one module (the AWS
// SDK is dozens), request signing (v4), path-style and virtual-hosted
// addressing and the AWS credential files handled by a well-kept library,
// and the client desync uses, so both read the same URLs the same way.

// S3Options configure S3 stores and index locations. Zero values are the
// documented defaults.
type S3Options struct {
	// HTTP gives the transport settings (CA file, client certificate,
	// connection bound), the per-request timeout and the retry policy, as
	// for HTTP stores. Its Client, if set, lends its Transport; its
	// Authorization is not used (S3 requests are signed instead).
	HTTP HTTPOptions
	// Region is the bucket's region. "" means the URL's ?region=, else
	// $AWS_REGION, $AWS_DEFAULT_REGION or $S3_REGION, else asking the server
	// (GetBucketLocation, once per bucket).
	Region string
	// AccessKey, SecretKey and SessionToken are explicit credentials; when
	// AccessKey is "" the standard chain is used (s3Credentials): the AWS
	// variables, the profile of the shared credentials file, desync's S3_*
	// variables, then a role of the machine, task or pod. With none,
	// requests are anonymous (public buckets).
	AccessKey, SecretKey, SessionToken string
}

// S3Location is a parsed s3+http:// or s3+https:// URL:
// s3+https://HOST[:PORT]/BUCKET[/KEY-OR-PREFIX][?lookup=auto|dns|path&region=R].
type S3Location struct {
	Endpoint string // host[:port]
	Secure   bool   // https
	Bucket   string
	Key      string // object key or key prefix, without a leading or trailing '/'
	Lookup   minio.BucketLookupType
	Region   string // from ?region=
	raw      string
	shown    string // location.Redact(raw), made once: every request's error text and log name it
}

func (l S3Location) String() string { // no password shown
	if l.shown != "" {
		return l.shown
	}
	return location.Redact(l.raw)
}

// IsS3URL reports whether s is an s3+http:// or s3+https:// URL.
func IsS3URL(s string) bool {
	return strings.HasPrefix(s, "s3+http://") || strings.HasPrefix(s, "s3+https://")
}

// ParseS3Location parses an S3 URL as desync writes them: the scheme says
// whether to use TLS, the first path element is the bucket, the rest a key
// (an index) or a key prefix (a store). ?lookup= selects the addressing:
// path (https://host/bucket/key, what most self-hosted servers want), dns
// (virtual-hosted, https://bucket.host/key) or auto (the default: dns for
// Amazon and Google endpoints, path otherwise).
func ParseS3Location(s string) (S3Location, error) {
	u, err := url.Parse(s)
	if err != nil {
		return S3Location{}, fmt.Errorf("S3 location %s: %w", s, err)
	}
	if u.User != nil {
		return S3Location{}, fmt.Errorf("S3 location %s: credentials do not belong in the URL (use $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, $AWS_PROFILE or ~/.aws/credentials)", u.Redacted())
	}
	l := S3Location{raw: s, shown: location.Redact(s), Endpoint: u.Host}
	switch u.Scheme {
	case "s3+http":
	case "s3+https":
		l.Secure = true
	default:
		return S3Location{}, fmt.Errorf("S3 location %s: scheme %q is not s3+http or s3+https", s, u.Scheme)
	}
	if u.Host == "" {
		return S3Location{}, fmt.Errorf("S3 location %s: no host", s)
	}
	p := strings.Trim(u.Path, "/")
	if p == "" {
		return S3Location{}, fmt.Errorf("S3 location %s: no bucket (want s3+https://HOST/BUCKET[/PREFIX])", s)
	}
	l.Bucket, l.Key, _ = strings.Cut(p, "/")
	q := u.Query()
	for k := range q {
		if k != "lookup" && k != "region" {
			return S3Location{}, fmt.Errorf("S3 location %s: unknown parameter %q (want lookup or region)", s, k)
		}
	}
	switch q.Get("lookup") {
	case "", "auto":
		l.Lookup = minio.BucketLookupAuto
	case "dns", "virtual", "virtual-host":
		l.Lookup = minio.BucketLookupDNS
	case "path":
		l.Lookup = minio.BucketLookupPath
	default:
		return S3Location{}, fmt.Errorf("S3 location %s: lookup=%q: want auto, dns or path", s, q.Get("lookup"))
	}
	l.Region = q.Get("region")
	return l, nil
}

// join returns the key of name under l's key prefix.
func (l S3Location) join(name string) string {
	if l.Key == "" {
		return name
	}
	return l.Key + "/" + name
}

// s3Client wraps a minio client with camount's retry policy and error
// reporting. minio's own retries are off, so one policy governs them all.
type s3Client struct {
	c      *minio.Client
	direct *s3Direct // chunk GETs
	loc    S3Location
	r      *retrier
	// credSource names where the credentials in use came from (for
	// S3Error.Creds).
	credSource func() string

	mu       sync.Mutex
	fatal    error // a permanent failure (bucket missing, access denied), guarded by mu
	fatalAt  time.Time
	fatalFor time.Duration
}

// fatalHold is how long a permanent failure (no bucket, access denied) is
// returned for every request without asking the server again, so that a
// mount reading thousands of chunks does not send thousands of doomed
// requests (and log as many errors).
const fatalHold = 10 * time.Second

func newS3Client(loc S3Location, o S3Options) (*s3Client, error) {
	var tr http.RoundTripper
	if o.HTTP.Client != nil && o.HTTP.Client.Transport != nil {
		tr = o.HTTP.Client.Transport
	} else {
		hc, err := NewHTTPClient(o.HTTP)
		if err != nil {
			return nil, err
		}
		tr = hc.Transport
	}
	region := o.Region
	for _, v := range []string{loc.Region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"), os.Getenv("S3_REGION")} {
		if region == "" {
			region = v
		}
	}
	var creds *credentials.Credentials
	credSource := func() string { return "the keys given to camount" }
	if o.AccessKey != "" {
		creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, o.SessionToken)
	} else {
		if err := checkProfile(loc); err != nil {
			return nil, err
		}
		var chain *heldChain
		creds, chain = s3Credentials()
		credSource = chain.source
	}
	c, err := minio.New(loc.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       loc.Secure,
		Transport:    tr,
		Region:       region,
		BucketLookup: loc.Lookup,
		MaxRetries:   1, // camount's retrier retries
	})
	if err != nil {
		return nil, fmt.Errorf("S3 location %s: %w", loc, err)
	}
	c.SetAppInfo("camount", "")
	return &s3Client{c: c, direct: newS3Direct(loc, tr, creds), loc: loc, r: newRetrier(o.HTTP), fatalFor: fatalHold, credSource: credSource}, nil
}

// checkProfile fails when $AWS_PROFILE names a profile that cannot be
// read and no $AWS_ACCESS_KEY_ID takes precedence over it: a misspelt
// profile is one clear error, not requests sent anonymously and refused.
func checkProfile(loc S3Location) error {
	profile := os.Getenv("AWS_PROFILE")
	if profile == "" || (os.Getenv("AWS_ACCESS_KEY_ID") != "" || os.Getenv("AWS_ACCESS_KEY") != "") {
		return nil
	}
	if _, err := (&credentials.FileAWSCredentials{}).Retrieve(); err != nil {
		file := os.Getenv("AWS_SHARED_CREDENTIALS_FILE")
		if file == "" {
			file = "~/.aws/credentials"
		}
		return fmt.Errorf("S3 location %s: credentials profile %q ($AWS_PROFILE) of %s (or $AWS_CONFIG_FILE, ~/.aws/config): %v", loc, profile, file, err)
	}
	return nil
}

// desyncEnv reads desync's S3_ACCESS_KEY, S3_SECRET_KEY, S3_SESSION_TOKEN.
type desyncEnv struct{ credentials.Static }

func (d *desyncEnv) Retrieve() (credentials.Value, error) {
	return d.RetrieveWithCredContext(nil)
}

func (d *desyncEnv) RetrieveWithCredContext(*credentials.CredContext) (credentials.Value, error) {
	v := credentials.Value{
		AccessKeyID:     os.Getenv("S3_ACCESS_KEY"),
		SecretAccessKey: os.Getenv("S3_SECRET_KEY"),
		SessionToken:    os.Getenv("S3_SESSION_TOKEN"),
		SignerType:      credentials.SignatureV4,
	}
	if v.AccessKeyID == "" || v.SecretAccessKey == "" {
		v.SignerType = credentials.SignatureAnonymous
	}
	return v, nil
}

func (d *desyncEnv) IsExpired() bool { return false }

// S3Error is a request the S3 server refused for good: a missing bucket,
// denied access, rejected credentials. It is not retried.
type S3Error struct {
	Location string // the store or object URL
	Op       string // GET, HEAD, PUT, LIST, DELETE
	Key      string
	Code     string // S3 error code (NoSuchBucket, AccessDenied, …)
	Status   int    // HTTP status
	Msg      string // the server's message
	// Creds names where the request's credentials came from
	// ("$AWS_ACCESS_KEY_ID", "profile default of ~/.aws/credentials", "the
	// instance's role (metadata service)", …); anonymousSource when none
	// were found; "" unknown.
	Creds string
}

func (e *S3Error) Error() string {
	what := fmt.Sprintf("%s %s", e.Op, location.Redact(e.Location))
	if e.Key != "" {
		what += " (key " + e.Key + ")"
	}
	switch e.Code {
	case "NoSuchBucket":
		return fmt.Sprintf("%s: the bucket does not exist (%d %s)", what, e.Status, e.Code)
	case "AccessDenied", "AllAccessDisabled":
		if e.Creds == anonymousSource {
			return fmt.Sprintf("%s: access denied (%d %s): no credentials were found (%s), so the request was anonymous, and the bucket is not public", what, e.Status, e.Code, credSources)
		}
		// A HEAD response has no body: a wrong secret shows as this too.
		return fmt.Sprintf("%s: access denied (%d %s): the credentials (%s) are wrong or may not use this bucket", what, e.Status, e.Code, e.credsOr())
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity", "XAdminUserNotFound":
		return fmt.Sprintf("%s: the server rejected the credentials (%d %s): check %s", what, e.Status, e.Code, e.credsOr())
	}
	if e.Msg != "" {
		return fmt.Sprintf("%s: %d %s: %s", what, e.Status, e.Code, e.Msg)
	}
	return fmt.Sprintf("%s: %d %s", what, e.Status, e.Code)
}

// credSources names every source of credentials, for errors that cannot
// name the one used.
const credSources = "$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, $AWS_PROFILE or ~/.aws/credentials, or the role of this machine"

// credsOr names the credentials' source, or all the sources if unknown.
func (e *S3Error) credsOr() string {
	if e.Creds == "" || e.Creds == anonymousSource {
		return credSources
	}
	return e.Creds
}

// storeWide reports whether the error holds for every request to the
// store (a missing bucket, refused credentials), not just this object.
func (e *S3Error) storeWide() bool {
	switch e.Code {
	case "NoSuchBucket", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
		"InvalidToken", "ExpiredToken", "InvalidSecurity", "XAdminUserNotFound":
		return true
	}
	return e.Status == http.StatusForbidden
}

// classify turns a minio error into ErrNotFound, an *S3Error (permanent) or
// a *NetworkError / transient *HTTPStatusError (retried).
func (c *s3Client) classify(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var er minio.ErrorResponse
	if !errors.As(err, &er) || (er.StatusCode == 0 && er.Code == "") {
		return &NetworkError{URL: c.loc.String(), Attempts: 1, Msg: fmt.Sprintf("%s %s (key %s): %v", op, c.loc, key, err)}
	}
	switch {
	case er.Code == "NoSuchKey" || er.Code == "NotFound" || (er.StatusCode == http.StatusNotFound && er.Code == ""):
		return fmt.Errorf("%s %s (key %s): %w", op, c.loc, key, ErrNotFound)
	case er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests || er.StatusCode == http.StatusRequestTimeout ||
		er.Code == "SlowDown" || er.Code == "InternalError" || er.Code == "RequestTimeout":
		return &HTTPStatusError{URL: fmt.Sprintf("%s (key %s)", c.loc, key), Status: fmt.Sprintf("%d %s", er.StatusCode, er.Code), Code: max(er.StatusCode, 500)}
	}
	return &S3Error{Location: c.loc.String(), Op: op, Key: key, Code: er.Code, Status: er.StatusCode, Msg: er.Message, Creds: c.credSource()}
}

func s3Transient(err error) bool {
	var se *S3Error
	if errors.As(err, &se) || errors.Is(err, ErrNotFound) {
		return false
	}
	return true // network errors, 5xx, 429, timeouts, truncated bodies
}

// call runs op with retries, failing fast while a permanent failure holds.
func (c *s3Client) call(ctx context.Context, op, key string, fn func(context.Context) error) error {
	c.mu.Lock()
	if c.fatal != nil && time.Since(c.fatalAt) < c.fatalFor {
		err := c.fatal
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	err := c.r.do(ctx, op+" "+c.loc.String()+" (key "+key+")", s3Transient, func(ctx context.Context) error {
		return c.classify(op, key, fn(ctx))
	})
	var se *S3Error
	if errors.As(err, &se) && se.storeWide() {
		// Not about this object: every request gets it, and the same
		// text lets the scheduler log it once.
		se.Key = ""
		c.mu.Lock()
		c.fatal, c.fatalAt = err, time.Now()
		c.mu.Unlock()
	} else if err == nil {
		c.mu.Lock()
		c.fatal = nil
		c.mu.Unlock()
	}
	return err
}

// get reads a whole object of at most limit bytes.
func (c *s3Client) get(ctx context.Context, key string, limit int64) ([]byte, error) {
	b, _, _, err := c.getChanged(ctx, key, limit, "")
	return b, err
}

// getChunk reads a chunk object of at most limit bytes through s3Direct,
// into a buffer of the stored-bytes pool (storedBuf) that the caller may
// hand back with putStoredBuf.
func (c *s3Client) getChunk(ctx context.Context, key string, limit int64) ([]byte, error) {
	var b []byte
	err := c.call(ctx, "GET", key, func(ctx context.Context) error {
		var err error
		b, err = c.direct.get(ctx, c.c, key, limit)
		return err
	})
	return b, err
}

// getChanged is get that also returns the object's ETag; with etag != ""
// the request is conditional (If-None-Match), and notModified reports a
// 304 answer (b is then nil).
func (c *s3Client) getChanged(ctx context.Context, key string, limit int64, etag string) (b []byte, newETag string, notModified bool, err error) {
	err = c.call(ctx, "GET", key, func(ctx context.Context) error {
		var opts minio.GetObjectOptions
		if etag != "" {
			if err := opts.SetMatchETagExcept(etag); err != nil {
				return err
			}
		}
		// minio.Core's GetObject is one request whose body is read
		// straight into a buffer of the announced size (Client.GetObject
		// adds a goroutine and channels per object). Chunks take
		// getChunk instead.
		body, info, _, err := minio.Core{Client: c.c}.GetObject(ctx, c.loc.Bucket, key, opts)
		var er minio.ErrorResponse
		if etag != "" && errors.As(err, &er) && er.StatusCode == http.StatusNotModified {
			notModified = true
			return nil
		}
		if err != nil {
			return err
		}
		newETag = info.ETag
		defer body.Close()
		if info.Size > limit {
			return &S3Error{Location: c.loc.String(), Op: "GET", Key: key, Code: "TooLarge", Msg: fmt.Sprintf("%d bytes is more than %d", info.Size, limit)}
		}
		n := info.Size
		if n < 0 {
			n = 64 << 10
		}
		buf, err := readAllLimit(body, make([]byte, 0, n+1), limit)
		if err != nil {
			return fmt.Errorf("reading body: %w", err)
		}
		if info.Size >= 0 && int64(len(buf)) != info.Size {
			return fmt.Errorf("got %d bytes of %d: %w", len(buf), info.Size, io.ErrUnexpectedEOF)
		}
		b = buf
		return nil
	})
	return b, newETag, notModified, err
}

func (c *s3Client) has(ctx context.Context, key string) (bool, error) {
	err := c.call(ctx, "HEAD", key, func(ctx context.Context) error {
		_, err := c.c.StatObject(ctx, c.loc.Bucket, key, minio.StatObjectOptions{})
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// put stores data as one object in one request, signed with the SHA-256
// of the payload (minio.Core.PutObject): the server checks the body
// against the signature. minio's PutObject would stream-sign the body over
// plain HTTP instead (aws-chunked framing, a signature per 64 KiB): more
// work on both sides for chunks of tens of KiB, and some servers
// (versitygw) then keep "Content-Encoding: aws-chunked" on the object and
// send it with every GET.
func (c *s3Client) put(ctx context.Context, key string, data []byte, contentType string) error {
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	return c.call(ctx, "PUT", key, func(ctx context.Context) error {
		_, err := minio.Core{Client: c.c}.PutObject(ctx, c.loc.Bucket, key, bytes.NewReader(data), int64(len(data)), "", sha,
			minio.PutObjectOptions{ContentType: contentType, DisableContentSha256: true})
		return err
	})
}

// S3Store is a .castr store in an S3 bucket, in casync's layout under the
// URL's prefix: PREFIX/<first 4 hex>/<hex>.cacnk (as desync writes it).
// Reads retry transient failures like HTTPStore; a missing bucket or denied
// access is reported once and not retried.
type S3Store struct {
	c *s3Client
}

// NewS3Store returns a store for s3+http(s)://HOST[:PORT]/BUCKET[/PREFIX].
// It sends no request until used.
func NewS3Store(location string, o S3Options) (*S3Store, error) {
	loc, err := ParseS3Location(location)
	if err != nil {
		return nil, err
	}
	c, err := newS3Client(loc, o)
	if err != nil {
		return nil, err
	}
	return &S3Store{c: c}, nil
}

func (s *S3Store) String() string { return s.c.loc.String() }

func (s *S3Store) key(id chunker.ID) string { return s.c.loc.join(chunkName(id)) }

// Get implements Store.
func (s *S3Store) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	return s.c.getChunk(ctx, s.key(id), storedLimit(ctx))
}

// getPooled is Get reading into a buffer of the stored-bytes pool, handed
// back with putStoredBuf (the scheduler does, once the chunk is decoded).
func (s *S3Store) getPooled(ctx context.Context, id chunker.ID) ([]byte, error) {
	return s.c.getChunk(ctx, s.key(id), storedLimit(ctx))
}

// HasChunk implements WriteStore (a HEAD request).
func (s *S3Store) HasChunk(ctx context.Context, id chunker.ID) (bool, error) {
	return s.c.has(ctx, s.key(id))
}

// StoreChunk implements WriteStore: one PUT (S3 replaces objects atomically).
func (s *S3Store) StoreChunk(ctx context.Context, id chunker.ID, stored []byte) error {
	return s.c.put(ctx, s.key(id), stored, "application/octet-stream")
}

// ListChunks implements ListStore.
func (s *S3Store) ListChunks(ctx context.Context, fn func(ChunkInfo) error) error {
	prefix := ""
	if s.c.loc.Key != "" {
		prefix = s.c.loc.Key + "/"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range s.c.c.ListObjects(ctx, s.c.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return s.c.classify("LIST", prefix, obj.Err)
		}
		id, ok := chunkIDFromName(strings.TrimPrefix(obj.Key, prefix))
		if !ok {
			continue
		}
		if err := fn(ChunkInfo{ID: id, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// RemoveChunk implements ListStore.
func (s *S3Store) RemoveChunk(ctx context.Context, id chunker.ID) error {
	key := s.key(id)
	return s.c.call(ctx, "DELETE", key, func(ctx context.Context) error {
		return s.c.c.RemoveObject(ctx, s.c.loc.Bucket, key, minio.RemoveObjectOptions{})
	})
}

// Retries implements RetryCounter.
func (s *S3Store) Retries() int64 { return s.c.r.retries.Load() }

// RefetchCorrupt implements Refetcher: bytes that fail verification are
// asked for once more before counting as corrupt in this store.
func (s *S3Store) RefetchCorrupt() int { return 1 }

// S3Object is one object (an index file) at an S3 URL.
type S3Object struct {
	c *s3Client
}

// NewS3Object returns the object at s3+http(s)://HOST/BUCKET/KEY.
func NewS3Object(location string, o S3Options) (*S3Object, error) {
	loc, err := ParseS3Location(location)
	if err != nil {
		return nil, err
	}
	if loc.Key == "" || strings.HasSuffix(loc.Key, "/") {
		return nil, fmt.Errorf("S3 location %s: no object key after the bucket", location)
	}
	c, err := newS3Client(loc, o)
	if err != nil {
		return nil, err
	}
	return &S3Object{c: c}, nil
}

func (o *S3Object) String() string { return o.c.loc.String() }

// Read returns the object's bytes (at most limit).
func (o *S3Object) Read(ctx context.Context, limit int64) ([]byte, error) {
	return o.c.get(ctx, o.c.loc.Key, limit)
}

// readChanged implements RemoteFile (the tag is the object's ETag).
func (o *S3Object) readChanged(ctx context.Context, limit int64, tag string) ([]byte, string, bool, error) {
	return o.c.getChanged(ctx, o.c.loc.Key, limit, tag)
}

// Write replaces the object.
func (o *S3Object) Write(ctx context.Context, data []byte) error {
	return o.c.put(ctx, o.c.loc.Key, data, "application/octet-stream")
}

// Exists reports whether the object exists.
func (o *S3Object) Exists(ctx context.Context) (bool, error) {
	return o.c.has(ctx, o.c.loc.Key)
}

// Retries returns the requests sent again after transient failures.
func (o *S3Object) Retries() int64 { return o.c.r.retries.Load() }
