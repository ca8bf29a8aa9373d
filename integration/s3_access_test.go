package integration

// Issue 16: how camount reaches an S3 bucket: virtual-hosted addressing
// (?lookup=dns) and every source of credentials and region, against
// versitygw on loopback.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hostRecorder is a forward HTTP proxy ($HTTP_PROXY) that sends every
// request, whatever its host, to one upstream (host:port), with its Host
// header unchanged (S3 signs it), and records the Host headers it saw.
type hostRecorder struct {
	upstream string
	tr       http.Transport // no proxy of its own (Proxy nil), whatever $HTTP_PROXY says
	mu       sync.Mutex
	hosts    map[string]int
}

func (p *hostRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Host == "" {
		http.Error(w, "not a proxy request", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.hosts[r.Host]++
	p.mu.Unlock()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	req.ContentLength = r.ContentLength
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestS3VirtualHosted: with ?lookup=dns, minio-go addresses the bucket as
// BUCKET.HOST (virtual-hosted style, as AWS wants). The test's host name is
// under .test (RFC 2606: it never resolves), so every request must reach
// versitygw (--virtual-domain) through $HTTP_PROXY, a feature camount has
// anyway; the proxy records the Host headers. versitygw still takes
// path-style requests, so the recorded hosts are what proves the style.
// make, push, extract and mount go through it byte-exact.
func TestS3VirtualHosted(t *testing.T) {
	s3 := startS3(t, "--virtual-domain", "s3.test")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &hostRecorder{upstream: s3.Endpoint, hosts: map[string]int{}}
	srv := &http.Server{Handler: px}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close(); px.tr.CloseIdleConnections() })
	proxy := "http://" + l.Addr().String()
	for _, kv := range [][2]string{{"HTTP_PROXY", proxy}, {"http_proxy", proxy}, {"NO_PROXY", ""}, {"no_proxy", ""}} {
		t.Setenv(kv[0], kv[1])
	}
	_, port, _ := net.SplitHostPort(s3.Endpoint)
	host := "s3.test:" + port
	base := "s3+http://" + host + "/bucket/vh/"
	im := makeS3Image(t, 2<<20, 91)

	// make publishes chunks, push an index, through virtual-hosted URLs.
	made := filepath.Join(t.TempDir(), "made.caibx")
	camount(t, "make", "--store="+base+"made?lookup=dns", made, im.raw)
	x := readIndex(t, made)
	for _, c := range x.Chunks {
		if _, err := os.Stat(chunkFile(filepath.Join(s3.Root, "bucket", "vh", "made"), c)); err != nil {
			t.Fatalf("chunk %s not in the bucket: %v", c.ID, err)
		}
	}
	camount(t, "push", "--from="+im.store, "--to="+base+"default.castr?lookup=dns", "--index-to="+base+"?lookup=dns", im.index)
	if _, err := os.Stat(filepath.Join(s3.Root, "bucket", "vh", "img.caibx")); err != nil {
		t.Fatalf("push did not publish the index in the bucket: %v", err)
	}
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--store="+base+"made?lookup=dns", made, out)
	checkFile(t, out, im.src)
	// The index URL; its derived store keeps ?lookup=dns.
	index := base + "img.caibx?lookup=dns"
	out = filepath.Join(t.TempDir(), "out")
	camount(t, "extract", index, out)
	checkFile(t, out, im.src)
	// push back to a local store.
	d := t.TempDir()
	camount(t, "push", "--from="+base+"default.castr?lookup=dns", "--to="+filepath.Join(d, "s"), "--index-to="+d, index)
	camount(t, "extract", "--store="+filepath.Join(d, "s"), filepath.Join(d, "img.caibx"), filepath.Join(d, "out"))
	checkFile(t, filepath.Join(d, "out"), im.src)

	px.mu.Lock()
	hosts := fmt.Sprint(px.hosts)
	virtual, other := 0, 0
	for h, n := range px.hosts {
		if h == "bucket."+host {
			virtual += n
		} else {
			other += n
		}
	}
	px.mu.Unlock()
	if virtual < len(x.Chunks) || other > 0 {
		t.Fatalf("requests by Host: %s; want every one to bucket.%s", hosts, host)
	}
	needRoot(t)
	needCmd(t, "fusermount3")
	mnt := remoteMount(t, index)
	checkFile(t, filepath.Join(mnt, "img"), im.src)
}

// roleEndpoint serves the test's keys as a role's credentials in the two
// ways a cloud machine gets them: the EC2 metadata service (IMDSv2: a token
// first) at /, and a container credentials endpoint at /task (with its
// authorization token). It counts the requests. A real role's credentials
// carry a session token issued by STS, which versitygw (no STS) refuses;
// these carry none (fetch's unit tests check the token is passed on).
type roleEndpoint struct{ n atomic.Int64 }

func (e *roleEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.n.Add(1)
	creds := func() {
		json.NewEncoder(w).Encode(map[string]string{"Code": "Success", "AccessKeyId": s3Access, "SecretAccessKey": s3Secret,
			"Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	}
	switch {
	case r.URL.Path == "/task" && r.Header.Get("Authorization") == "task-auth":
		creds()
	case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
		io.WriteString(w, "imds-token")
	case r.Header.Get("X-aws-ec2-metadata-token") != "imds-token":
		http.Error(w, "no token", http.StatusUnauthorized)
	case r.URL.Path == "/latest/meta-data/iam/security-credentials/":
		io.WriteString(w, "fleet-reader\n")
	case r.URL.Path == "/latest/meta-data/iam/security-credentials/fleet-reader":
		creds()
	default:
		http.NotFound(w, r)
	}
}

// TestS3Credentials: the credentials come from the AWS variables, the
// profile $AWS_PROFILE (else default) of ~/.aws/credentials or
// $AWS_SHARED_CREDENTIALS_FILE, desync's S3_* variables, or a role (the
// instance's from the metadata service, a task's from its container
// endpoint), in that order; without a region one is asked from the server.
// A profile that does not exist is one clear error.
func TestS3Credentials(t *testing.T) {
	s3 := startS3(t)
	role := &roleEndpoint{}
	roleSrv := httptest.NewServer(role)
	defer roleSrv.Close()
	im := makeS3Image(t, 1<<20, 92)
	camount(t, "push", "--from="+im.store, "--to="+s3.url("bucket", "cred"), im.index)
	store := "--store=" + s3.url("bucket", "cred")
	home := t.TempDir()
	os.Mkdir(filepath.Join(home, ".aws"), 0o700)
	creds := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n[other]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n[bad]\naws_access_key_id = %s\naws_secret_access_key = wrong\n",
		s3Access, s3Secret, s3Access, s3Secret, s3Access)
	if err := os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	// Only the named profile holds the right secret.
	onlyOther := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(onlyOther, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = wrong\n\n[other]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3Access, s3Access, s3Secret)), 0o600)
	noEnv := []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_SHARED_CREDENTIALS_FILE=",
		"S3_ACCESS_KEY=", "S3_SECRET_KEY=", "HOME=" + home}
	for _, tc := range []struct {
		name string
		env  []string
		want string // "" means success
	}{
		{"default-profile", nil, ""},
		{"named-profile", []string{"AWS_PROFILE=other", "AWS_SHARED_CREDENTIALS_FILE=" + onlyOther}, ""},
		{"shared-credentials-file", []string{"HOME=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=" + onlyOther, "AWS_PROFILE=other"}, ""},
		{"profile-wrong-secret", []string{"AWS_PROFILE=bad"}, "check profile bad of ~/.aws/credentials"},
		{"missing-profile", []string{"AWS_PROFILE=nosuch"}, "nosuch"},
		{"env-before-profile", []string{"AWS_ACCESS_KEY_ID=" + s3Access, "AWS_SECRET_ACCESS_KEY=wrong"}, "credentials"},
		{"desync-variables", []string{"HOME=/nonexistent", "S3_ACCESS_KEY=" + s3Access, "S3_SECRET_KEY=" + s3Secret}, ""},
		{"region-from-server", []string{"AWS_REGION=", "AWS_DEFAULT_REGION=", "S3_REGION="}, ""},
		{"instance-role", []string{"HOME=/nonexistent", "AWS_EC2_METADATA_DISABLED=", "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + roleSrv.URL}, ""},
		{"instance-role-disabled", []string{"HOME=/nonexistent", "AWS_EC2_METADATA_DISABLED=true", "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + roleSrv.URL}, "no credentials were found"},
		{"task-role", []string{"HOME=/nonexistent", "AWS_CONTAINER_CREDENTIALS_FULL_URI=" + roleSrv.URL + "/task", "AWS_CONTAINER_AUTHORIZATION_TOKEN=task-auth"}, ""},
		{"profile-before-role", []string{"AWS_EC2_METADATA_DISABLED=", "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + roleSrv.URL, "AWS_PROFILE=bad"}, "credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			env := append(append([]string(nil), noEnv...), tc.env...)
			role.n.Store(0)
			_, stderr, code := camountIn(t, d, env, "extract", store, im.index, "out")
			// The role's credentials are asked for once, not for each of
			// the image's chunks.
			if n := role.n.Load(); n > 3 {
				t.Errorf("%d requests for the role's credentials, want at most 3 (IMDSv2: token, role name, credentials)", n)
			}
			if tc.want == "" {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				checkFile(t, filepath.Join(d, "out"), im.src)
				return
			}
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want an error naming %q", code, stderr, tc.want)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n") + 1; n > 3 {
				t.Errorf("%d lines of errors, want one clear one: %s", n, stderr)
			}
		})
	}
}
