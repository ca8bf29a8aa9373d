package fetch

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// noCredsEnv clears every source of s3Credentials but the role's.
func noCredsEnv(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN",
		"AWS_PROFILE", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
		"AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_SERVICE_ENDPOINT"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
	t.Setenv("HOME", t.TempDir())
}

// roleCreds is the JSON body of a role's credentials, as the metadata
// service and the container endpoint send it.
func roleCreds(t *testing.T, w http.ResponseWriter) {
	err := json.NewEncoder(w).Encode(map[string]string{
		"Code": "Success", "Type": "AWS-HMAC",
		"AccessKeyId": "ASIAROLE", "SecretAccessKey": "role-secret", "Token": "role-token",
		"Expiration": time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339),
	})
	if err != nil {
		t.Error(err)
	}
}

// fakeIMDS serves an instance role the way EC2's metadata service does
// (IMDSv2: a token first, required on the other requests) and counts the
// requests.
func fakeIMDS(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
			w.Write([]byte("imds-token"))
			return
		}
		if r.Header.Get("X-aws-ec2-metadata-token") != "imds-token" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/latest/meta-data/iam/security-credentials/":
			w.Write([]byte("fleet-reader\n"))
		case "/latest/meta-data/iam/security-credentials/fleet-reader":
			roleCreds(t, w)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s, &n
}

func TestS3CredentialsInstanceRole(t *testing.T) {
	noCredsEnv(t)
	s, n := fakeIMDS(t)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", s.URL+"/")
	c, h := s3Credentials()
	for range 50 {
		v, err := c.Get()
		if err != nil {
			t.Fatal(err)
		}
		if v.AccessKeyID != "ASIAROLE" || v.SecretAccessKey != "role-secret" || v.SessionToken != "role-token" {
			t.Fatalf("got %+v, want the role's credentials", v)
		}
	}
	// A token, the role's name, its credentials: once, not per request.
	if got := n.Load(); got != 3 {
		t.Errorf("%d requests to the metadata service, want 3", got)
	}
	if got := h.source(); got != "the instance's role (metadata service)" {
		t.Errorf("source %q", got)
	}

	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	before := n.Load()
	c, h = s3Credentials()
	if v, _ := c.Get(); v.SignerType != credentials.SignatureAnonymous || h.source() != anonymousSource {
		t.Errorf("metadata service disabled: got %+v from %q, want anonymous", v, h.source())
	}
	if n.Load() != before {
		t.Error("the metadata service was asked though $AWS_EC2_METADATA_DISABLED is true")
	}

	// The first source found wins: the variables before the role.
	t.Setenv("AWS_EC2_METADATA_DISABLED", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	c, h = s3Credentials()
	if v, _ := c.Get(); v.AccessKeyID != "AKIAENV" || h.source() != "$AWS_ACCESS_KEY_ID" {
		t.Errorf("got %q from %q, want the environment's key before the role's", v.AccessKeyID, h.source())
	}
}

func TestS3CredentialsContainer(t *testing.T) {
	noCredsEnv(t)
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.URL.Path != "/v2/credentials/task" || r.Header.Get("Authorization") != "task-token" {
			http.Error(w, "denied", http.StatusForbidden)
			return
		}
		roleCreds(t, w)
	}))
	defer s.Close()
	imds, imdsN := fakeIMDS(t)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", s.URL+"/v2/credentials/task")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "task-token")
	c, _ := s3Credentials()
	for range 10 {
		v, err := c.Get()
		if err != nil {
			t.Fatal(err)
		}
		if v.AccessKeyID != "ASIAROLE" || v.SessionToken != "role-token" {
			t.Fatalf("got %+v, want the task's credentials", v)
		}
	}
	if n.Load() != 1 || imdsN.Load() != 0 {
		t.Errorf("%d requests to the container endpoint (want 1), %d to the metadata service (want 0)", n.Load(), imdsN.Load())
	}
}

// With no credentials anywhere and no metadata service, requests are
// anonymous, and finding that out is not repeated for every request.
func TestS3CredentialsAnonymousHeld(t *testing.T) {
	noCredsEnv(t)
	// A port nothing listens on: the metadata service is absent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://"+addr)
	var n atomic.Int64
	h := &heldChain{cur: -1}
	h.add("counting", &countingProvider{n: &n})
	role, _ := roleProvider()
	h.add("role", role)
	c := credentials.New(h)
	for range 100 {
		v, err := c.Get()
		if err != nil {
			t.Fatal(err)
		}
		if v.SignerType != credentials.SignatureAnonymous {
			t.Fatalf("got %+v, want anonymous", v)
		}
	}
	if got := n.Load(); got != 1 {
		t.Errorf("the chain was asked %d times for 100 requests, want once", got)
	}
}

// countingProvider finds no credentials and counts how often it is asked.
type countingProvider struct {
	credentials.Static
	n *atomic.Int64
}

func (p *countingProvider) Retrieve() (credentials.Value, error) {
	return p.RetrieveWithCredContext(nil)
}

func (p *countingProvider) RetrieveWithCredContext(*credentials.CredContext) (credentials.Value, error) {
	p.n.Add(1)
	return credentials.Value{SignerType: credentials.SignatureAnonymous}, nil
}

func (p *countingProvider) IsExpired() bool { return true }
