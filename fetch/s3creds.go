package fetch

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// A fleet's readers usually run on cloud machines whose credentials are
// not in a file but given by the platform: an EC2 instance's role through
// the instance metadata service (IMDS), an ECS task's or EKS pod's through
// a container credentials endpoint, an EKS service account's as a web
// identity token traded with STS. minio-go's IAM provider speaks all of
// them; s3Credentials puts it last in camount's chain, as the AWS tools
// do, with the bounds and switches those tools have.

// Metadata service timeouts. On an EC2 instance the service answers in
// milliseconds; elsewhere its link-local address may swallow packets, and
// a machine reading a public bucket anonymously then pays this, once per
// anonymousRecheck, before its first request.
const (
	imdsTimeout = time.Second
	// roleTimeout bounds one request of the container endpoint or of STS
	// (over the network, unlike the metadata service).
	roleTimeout = 10 * time.Second
	// anonymousRecheck is how long a finding of no credentials at all
	// stands before the chain is asked again. minio's chain counts
	// "anonymous" as expired, so without this every chunk request would
	// read the credentials file again and ask the metadata service.
	anonymousRecheck = time.Minute
)

// s3Credentials is the standard chain, first found:
//  1. $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, $AWS_SESSION_TOKEN;
//  2. the profile $AWS_PROFILE (else default) of
//     $AWS_SHARED_CREDENTIALS_FILE (else ~/.aws/credentials);
//  3. desync's $S3_ACCESS_KEY, $S3_SECRET_KEY, $S3_SESSION_TOKEN;
//  4. a role: a web identity ($AWS_WEB_IDENTITY_TOKEN_FILE with
//     $AWS_ROLE_ARN, traded with STS), container credentials
//     ($AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI, with
//     $AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]), else the instance's role
//     from the metadata service (IMDSv2, then v1) at
//     $AWS_EC2_METADATA_SERVICE_ENDPOINT (else 169.254.169.254), unless
//     $AWS_EC2_METADATA_DISABLED is true.
//
// With none, requests are anonymous (public buckets).
func s3Credentials() (*credentials.Credentials, *heldChain) {
	h := &heldChain{cur: -1}
	h.add("$AWS_ACCESS_KEY_ID", &credentials.EnvAWS{})
	h.add(profileSource(), &credentials.FileAWSCredentials{})
	h.add("$S3_ACCESS_KEY", &desyncEnv{})
	if p, name := roleProvider(); p != nil {
		h.add(name, p)
	}
	return credentials.New(h), h
}

// profileSource names the profile and file FileAWSCredentials reads.
func profileSource() string {
	profile, file := os.Getenv("AWS_PROFILE"), os.Getenv("AWS_SHARED_CREDENTIALS_FILE")
	if profile == "" {
		profile = "default"
	}
	if file == "" {
		file = "~/.aws/credentials"
	}
	return fmt.Sprintf("profile %s of %s", profile, file)
}

// roleProvider returns minio's IAM provider set up for the role source the
// environment names, and that source's name; nil when there is none to ask.
func roleProvider() (credentials.Provider, string) {
	for _, k := range []string{"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		if os.Getenv(k) != "" {
			// STS and a container endpoint may be reached through a proxy.
			tr := http.DefaultTransport.(*http.Transport).Clone()
			name := "the role of $" + k
			if k != "AWS_WEB_IDENTITY_TOKEN_FILE" {
				name = "the task's role ($" + k + ")"
			}
			return &credentials.IAM{Client: &http.Client{Transport: tr, Timeout: roleTimeout}}, name
		}
	}
	if strings.EqualFold(strings.TrimSpace(os.Getenv("AWS_EC2_METADATA_DISABLED")), "true") {
		return nil, ""
	}
	// The metadata service is link-local: never through a proxy.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return &credentials.IAM{
		Client:   &http.Client{Transport: tr, Timeout: imdsTimeout},
		Endpoint: strings.TrimRight(os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"), "/"),
	}, "the instance's role (metadata service)"
}

// heldChain is a credentials chain (as minio's: the first provider that
// finds credentials gives them) whose finding of none stands for
// anonymousRecheck (see there); found credentials expire as their
// provider says (a role's before its expiry time, then are asked anew).
// It also tells which source gave the credentials, for error messages.
type heldChain struct {
	providers []credentials.Provider
	names     []string

	mu        sync.Mutex
	cur       int       // guarded by mu: index of the provider that gave the credentials, -1 none
	anonUntil time.Time // guarded by mu: the chain found none; ask again after this
}

func (h *heldChain) add(name string, p credentials.Provider) {
	h.providers = append(h.providers, p)
	h.names = append(h.names, name)
}

func (h *heldChain) Retrieve() (credentials.Value, error) { return h.RetrieveWithCredContext(nil) }

func (h *heldChain) RetrieveWithCredContext(cc *credentials.CredContext) (credentials.Value, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.anonUntil = time.Time{}
	for i, p := range h.providers {
		v, err := p.RetrieveWithCredContext(cc)
		if err != nil || (v.AccessKeyID == "" && v.SecretAccessKey == "") {
			continue
		}
		h.cur = i
		return v, nil
	}
	h.cur = -1
	h.anonUntil = time.Now().Add(anonymousRecheck)
	return credentials.Value{SignerType: credentials.SignatureAnonymous}, nil
}

func (h *heldChain) IsExpired() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.anonUntil.IsZero() {
		return time.Now().After(h.anonUntil)
	}
	if h.cur < 0 || h.cur >= len(h.providers) {
		return true
	}
	return h.providers[h.cur].IsExpired()
}

// source names where the credentials in use came from: "" before any
// request, anonymousSource when none were found.
func (h *heldChain) source() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.anonUntil.IsZero():
		return anonymousSource
	case h.cur >= 0 && h.cur < len(h.names):
		return h.names[h.cur]
	}
	return ""
}

// anonymousSource is heldChain.source when no credentials were found.
const anonymousSource = "none found"
