package fetch

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestParseS3Location(t *testing.T) {
	for _, c := range []struct {
		in                    string
		endpoint, bucket, key string
		secure                bool
		lookup                minio.BucketLookupType
		region, err           string
	}{
		{in: "s3+https://s3.eu-west-3.amazonaws.com/b", endpoint: "s3.eu-west-3.amazonaws.com", bucket: "b", secure: true},
		{in: "s3+http://127.0.0.1:9000/b/pre/fix/?lookup=path", endpoint: "127.0.0.1:9000", bucket: "b", key: "pre/fix", lookup: minio.BucketLookupPath},
		{in: "s3+https://h/b/x.caibx?lookup=dns&region=eu-1", endpoint: "h", bucket: "b", key: "x.caibx", secure: true, lookup: minio.BucketLookupDNS, region: "eu-1"},
		{in: "s3+http://h/", err: "no bucket"},
		{in: "s3+http:///b", err: "no host"},
		{in: "s3+http://k:s@h/b", err: "credentials do not belong in the URL"},
		{in: "s3+http://h/b?lookup=x", err: "want auto, dns or path"},
		{in: "s3+http://h/b?foo=1", err: "unknown parameter"},
		{in: "http://h/b", err: "not s3+http"},
	} {
		l, err := ParseS3Location(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want error with %q", c.in, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), ":s@") {
				t.Errorf("%s: error shows the secret: %v", c.in, err)
			}
			continue
		}
		if err != nil || l.Endpoint != c.endpoint || l.Bucket != c.bucket || l.Key != c.key || l.Secure != c.secure || l.Lookup != c.lookup || l.Region != c.region {
			t.Errorf("%s: %+v %v", c.in, l, err)
		}
	}
	if l, _ := ParseS3Location("s3+http://h/b/p"); l.join("ab/cd.cacnk") != "p/ab/cd.cacnk" {
		t.Errorf("join: %q", l.join("ab/cd.cacnk"))
	}
}

// A non-200 answer becomes the minio.ErrorResponse classify expects: the
// XML body's code, else one from the status.
func TestS3ResponseError(t *testing.T) {
	for _, c := range []struct {
		status int
		body   string
		code   string
	}{
		{404, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchBucket</Code><Message>no bucket</Message></Error>`, "NoSuchBucket"},
		{404, "", "NoSuchKey"},
		{403, "", "AccessDenied"},
		{503, `<Error><Code>SlowDown</Code></Error>`, "SlowDown"},
		{502, "bad gateway", "502 Bad Gateway"},
	} {
		resp := &http.Response{StatusCode: c.status, Status: fmt.Sprintf("%d %s", c.status, http.StatusText(c.status)), Body: io.NopCloser(strings.NewReader(c.body))}
		var er minio.ErrorResponse
		if err := s3ResponseError(resp, "k"); !errors.As(err, &er) || er.Code != c.code || er.StatusCode != c.status {
			t.Errorf("%d %q: %#v, want code %s", c.status, c.body, err, c.code)
		}
	}
}
