package fetch

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// Chunk GETs are the hot path of reading an S3 store: one request per
// chunk, thousands per image. minio-go spends ~50 µs of CPU on each beyond
// the HTTP exchange (target URL through regular expressions, the SigV4
// signing key derived anew with four HMACs, every response header parsed
// into an ObjectInfo, a retry timer), ~0.5 s of a cold extract of the
// reference corpus from a loopback S3 server. s3Direct sends these GETs
// itself: the bucket's base URL and region are learnt from minio once (so
// the addressing and any GetBucketLocation are minio's; see setup), the
// request is signed by minio's SigV4 signer and carries only the headers
// it needs. Everything else (index objects with their
// conditional GETs, HEAD, PUT, LIST, DELETE) stays with minio.
type s3Direct struct {
	hc    *http.Client
	creds *credentials.Credentials
	loc   S3Location

	mu     sync.Mutex
	ready  bool   // guarded by mu: origin, host, prefix and region are known
	origin string // guarded by mu: scheme://host
	prefix string // guarded by mu: the escaped path of key "" ("/bucket/", or "/" virtual-hosted)
	region string // guarded by mu
}

func newS3Direct(loc S3Location, tr http.RoundTripper, creds *credentials.Credentials) *s3Direct {
	return &s3Direct{
		loc: loc,
		hc: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // as minio: a redirect is the server's answer
		}},
		creds: creds,
	}
}

// setup learns the bucket's region and base URL from minio. The region is
// c's (given, or asked of the server once, as c's own requests would). The
// URL is that of a placeholder key presigned by a client with the same
// endpoint, addressing and region (no request is sent; it has placeholder
// credentials, as minio presigns nothing for anonymous ones). A failure
// is not kept: the next GET asks again.
func (d *s3Direct) setup(ctx context.Context, c *minio.Client) (origin, prefix, region string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ready {
		return d.origin, d.prefix, d.region, nil
	}
	region, err = c.GetBucketLocation(ctx, d.loc.Bucket)
	if err != nil {
		return "", "", "", err
	}
	pc, err := minio.New(d.loc.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4("placeholder", "placeholder", ""),
		Secure:       d.loc.Secure,
		Transport:    d.hc.Transport,
		Region:       region,
		BucketLookup: d.loc.Lookup,
	})
	if err != nil {
		return "", "", "", err
	}
	const probe = "camount-probe"
	u, err := pc.PresignedGetObject(ctx, d.loc.Bucket, probe, time.Minute, nil)
	if err != nil {
		return "", "", "", err
	}
	p, ok := strings.CutSuffix(u.EscapedPath(), probe)
	if !ok {
		return "", "", "", fmt.Errorf("S3 bucket %s: unexpected presigned URL path %q", d.loc.Bucket, u.EscapedPath())
	}
	d.origin, d.prefix, d.region = u.Scheme+"://"+u.Host, p, region
	d.ready = true
	return d.origin, d.prefix, d.region, nil
}

// emptySHA256 is the hex SHA-256 of an empty body (a GET's payload),
// which the signature covers.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// get sends one signed GET of key and reads its body (at most limit
// bytes) into a buffer of the stored-bytes pool (storedBuf). Errors are
// minio's (a minio.ErrorResponse for the server's answers, the transport's
// otherwise), for s3Client.classify.
func (d *s3Direct) get(ctx context.Context, c *minio.Client, key string, limit int64) ([]byte, error) {
	origin, prefix, region, err := d.setup(ctx, c)
	if err != nil {
		return nil, err
	}
	v, err := d.creds.GetWithContext(nil)
	if err != nil {
		return nil, err
	}
	path := prefix + s3utils.EncodePath(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, origin+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header["User-Agent"] = []string{"camount"}
	if v.SignerType != credentials.SignatureAnonymous && v.AccessKeyID != "" {
		// minio's own SigV4 signer: no hand-written signing.
		req.Header["X-Amz-Content-Sha256"] = []string{emptySHA256}
		req = signer.SignV4(*req, v.AccessKeyID, v.SecretAccessKey, v.SessionToken, region)
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, s3ResponseError(resp, key)
	}
	if resp.ContentLength > limit {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &S3Error{Location: d.loc.String(), Op: "GET", Key: key, Code: "TooLarge", Msg: fmt.Sprintf("%d bytes is more than %d", resp.ContentLength, limit)}
	}
	if resp.ContentLength < 0 {
		b, err := readAllLimit(resp.Body, make([]byte, 0, 64<<10), limit)
		if err != nil {
			return nil, fmt.Errorf("reading body: %w", err)
		}
		return b, nil
	}
	buf := storedBuf(int(resp.ContentLength))
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		putStoredBuf(buf)
		return nil, fmt.Errorf("reading body: %w", err)
	}
	var one [1]byte
	if n, _ := resp.Body.Read(one[:]); n > 0 {
		putStoredBuf(buf)
		return nil, fmt.Errorf("reading body: more than the announced %d bytes", resp.ContentLength)
	}
	return buf, nil
}

// s3ResponseError turns a non-200 answer into a minio.ErrorResponse: the
// XML error body's code and message, else (no or no XML body) a code from
// the status as minio gives it.
func s3ResponseError(resp *http.Response, key string) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096)) // keep the connection if it is short
	er := minio.ErrorResponse{StatusCode: resp.StatusCode}
	if err := xml.Unmarshal(body, &er); err != nil || er.Code == "" {
		er = minio.ErrorResponse{StatusCode: resp.StatusCode, Key: key}
		switch resp.StatusCode {
		case http.StatusNotFound:
			er.Code = "NoSuchKey"
		case http.StatusForbidden:
			er.Code = "AccessDenied"
		default:
			er.Code = resp.Status
			er.Message = strings.TrimSpace(string(body[:min(len(body), 1024)]))
		}
	}
	er.StatusCode = resp.StatusCode
	return er
}
