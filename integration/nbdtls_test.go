package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsDirs are X.509 credentials in nbdkit's / libnbd's / qemu's directory
// layout: the server's (ca-cert.pem, server-cert.pem, server-key.pem), a
// client's signed by the same CA (ca-cert.pem, client-cert.pem,
// client-key.pem), and a client's signed by another CA.
type tlsDirs struct{ server, client, stranger string }

func makeNBDTLSDirs(t *testing.T) tlsDirs {
	t.Helper()
	base := t.TempDir()
	d := tlsDirs{filepath.Join(base, "server"), filepath.Join(base, "client"), filepath.Join(base, "stranger")}
	for _, dir := range []string{d.server, d.client, d.stranger} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ca, caKey, caDER := tlsCA(t, "camount test CA")
	other, otherKey, _ := tlsCA(t, "another CA")
	writePEM(t, filepath.Join(d.server, "ca-cert.pem"), "CERTIFICATE", caDER)
	writePEM(t, filepath.Join(d.client, "ca-cert.pem"), "CERTIFICATE", caDER)
	writePEM(t, filepath.Join(d.stranger, "ca-cert.pem"), "CERTIFICATE", caDER)
	tlsLeaf(t, d.server, "server", ca, caKey, false)
	tlsLeaf(t, d.client, "client", ca, caKey, true)
	tlsLeaf(t, d.stranger, "client", other, otherKey, true)
	return d
}

func tlsCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key, der
}

// tlsLeaf writes ROLE-cert.pem and ROLE-key.pem (PKCS#8) into dir.
func tlsLeaf(t *testing.T, dir, role string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, client bool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "camount test " + role},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, role+"-cert.pem"), "CERTIFICATE", der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	writePEM(t, filepath.Join(dir, role+"-key.pem"), "PRIVATE KEY", kder)
}

// TestNBDTLS serves an image with --tls=require over TCP on loopback and
// reads it with real TLS clients: nbdinfo and nbdcopy (libnbd, GnuTLS,
// nbds:// URIs) and qemu-img (tls-creds-x509). A client without TLS gets
// a clear refusal, and one whose certificate another CA signed is refused.
func TestNBDTLS(t *testing.T) {
	needCmd(t, "nbdinfo", "nbdcopy", "qemu-img")
	f := nbdFixtureFor(t)
	d := makeNBDTLSDirs(t)
	srv := startNBD(t, "tcp", []string{"--store=" + f.store, "--tls=require", "--tls-certificates=" + d.server}, f.diskIdx)
	uri := srv.uris[0]
	if !strings.HasPrefix(uri, "nbds://127.0.0.1:") {
		t.Fatalf("URI %q: want nbds://127.0.0.1:PORT/…", uri)
	}
	hostPort := strings.TrimPrefix(uri, "nbds://")
	hostPort, export, _ := strings.Cut(hostPort, "/")
	_, port, _ := net.SplitHostPort(hostPort)
	withCerts := uri + "?tls-certificates=" + d.client

	out := runCmd(t, "nbdinfo", "--size", withCerts)
	if strings.TrimSpace(out) != "67108864" {
		t.Fatalf("nbdinfo --size over TLS: %q", out)
	}
	copyOut := filepath.Join(t.TempDir(), "copy.img")
	runCmd(t, "nbdcopy", withCerts, copyOut)
	cmpFiles(t, f.disk, copyOut)

	qemuOut := filepath.Join(t.TempDir(), "qemu.img")
	runCmd(t, "qemu-img", "convert", "-O", "raw",
		"--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+d.client,
		"--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port="+port+",export="+export+",tls-creds=tls0",
		qemuOut)
	cmpFiles(t, f.disk, qemuOut)

	// A plain client: refused, clearly, on both sides.
	plain := "nbd://" + hostPort + "/" + export
	_, err := tryCmd("nbdinfo", "--size", plain)
	if err == nil {
		t.Fatal("a client without TLS was served under --tls=require")
	}
	if !strings.Contains(err.Error(), "TLS") {
		t.Errorf("the plain client's error does not mention TLS: %v", err)
	}
	if !strings.Contains(srv.stderr.String(), "refusing a client without TLS") {
		t.Errorf("the server did not log the refusal:\n%s", srv.stderr)
	}
	// qemu-img without TLS (NBD_OPT_GO first, or EXPORT_NAME): refused too.
	if _, err := tryCmd("qemu-img", "info", "--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port="+port+",export="+export); err == nil {
		t.Error("qemu-img without TLS was served under --tls=require")
	}
	// A certificate from another CA: the TLS handshake fails.
	if _, err := tryCmd("nbdinfo", "--size", uri+"?tls-certificates="+d.stranger); err == nil {
		t.Error("a client certificate signed by another CA was accepted")
	}
	srv.alive(t)
}

// TestNBDTLSOptional: with --tls=on both kinds of client are served.
func TestNBDTLSOptional(t *testing.T) {
	needCmd(t, "nbdinfo")
	f := nbdFixtureFor(t)
	d := makeNBDTLSDirs(t)
	srv := startNBD(t, "tcp", []string{"--store=" + f.store, "--tls=on", "--tls-certificates=" + d.server}, f.smallIdx)
	uri := srv.uris[0]
	if out := runCmd(t, "nbdinfo", "--size", uri+"?tls-certificates="+d.client); strings.TrimSpace(out) != "1049600" {
		t.Fatalf("TLS client: %q", out)
	}
	if out := runCmd(t, "nbdinfo", "--size", "nbd"+strings.TrimPrefix(uri, "nbds")); strings.TrimSpace(out) != "1049600" {
		t.Fatalf("plain client: %q", out)
	}
	// The flags are checked before anything is served.
	if _, err := tryCamount("nbd", "--tls=require", f.smallIdx); err == nil || !strings.Contains(err.Error(), "--tls-certificates") {
		t.Errorf("--tls=require without certificates: %v", err)
	}
}

// TestNBDTLSPSK serves an image with --tls=require --tls-psk (a key file
// made by GnuTLS's psktool, nbdkit's format) and reads it with real
// TLS-PSK clients: nbdinfo and nbdcopy (nbds://USER@…?tls-psk-file=) and
// qemu-img (tls-creds-psk). A client without TLS, a wrong key and an
// unknown username are refused.
func TestNBDTLSPSK(t *testing.T) {
	needCmd(t, "nbdinfo", "nbdcopy", "qemu-img", "psktool")
	if !gnutlsHeaders() {
		t.Skip("GnuTLS's headers (libgnutls28-dev) are not installed: camount is built without TLS-PSK")
	}
	f := nbdFixtureFor(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.psk") // qemu's tls-creds-psk reads DIR/keys.psk
	runCmd(t, "psktool", "-u", "alice", "-p", keys)
	wrongDir := t.TempDir()
	wrong := filepath.Join(wrongDir, "keys.psk")
	runCmd(t, "psktool", "-u", "alice", "-p", wrong) // same name, another key

	srv := startNBD(t, "tcp", []string{"--store=" + f.store, "--tls=require", "--tls-psk=" + keys}, f.diskIdx)
	uri := srv.uris[0]
	if !strings.HasPrefix(uri, "nbds://127.0.0.1:") {
		t.Fatalf("URI %q: want nbds://127.0.0.1:PORT/…", uri)
	}
	hostPort, export, _ := strings.Cut(strings.TrimPrefix(uri, "nbds://"), "/")
	_, port, _ := net.SplitHostPort(hostPort)
	withKey := "nbds://alice@" + hostPort + "/" + export + "?tls-psk-file=" + keys

	if out := runCmd(t, "nbdinfo", "--size", withKey); strings.TrimSpace(out) != "67108864" {
		t.Fatalf("nbdinfo --size over TLS-PSK: %q", out)
	}
	copyOut := filepath.Join(t.TempDir(), "copy.img")
	runCmd(t, "nbdcopy", "--connections=4", withKey, copyOut)
	cmpFiles(t, f.disk, copyOut)

	qemuOut := filepath.Join(t.TempDir(), "qemu.img")
	runCmd(t, "qemu-img", "convert", "-O", "raw",
		"--object", "tls-creds-psk,id=tls0,endpoint=client,username=alice,dir="+dir,
		"--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port="+port+",export="+export+",tls-creds=tls0",
		qemuOut)
	cmpFiles(t, f.disk, qemuOut)

	if _, err := tryCmd("nbdinfo", "--size", "nbd://"+hostPort+"/"+export); err == nil {
		t.Error("a client without TLS was served under --tls=require")
	}
	if _, err := tryCmd("nbdinfo", "--size", "nbds://alice@"+hostPort+"/"+export+"?tls-psk-file="+wrong); err == nil {
		t.Error("a client with the wrong key was served")
	}
	other := filepath.Join(t.TempDir(), "bob.psk")
	runCmd(t, "psktool", "-u", "bob", "-p", other)
	if _, err := tryCmd("nbdinfo", "--size", "nbds://bob@"+hostPort+"/"+export+"?tls-psk-file="+other); err == nil {
		t.Error("a client with an unknown username was served")
	}
	if !strings.Contains(srv.stderr.String(), "TLS handshake failed") {
		t.Errorf("the server did not log the failed handshakes:\n%s", srv.stderr)
	}
	srv.alive(t)

	// A bad key file is refused at start, naming the line.
	bad := filepath.Join(t.TempDir(), "bad.psk")
	os.WriteFile(bad, []byte("alice:00ff\nbob 1234\n"), 0o600)
	if _, err := tryCamount("nbd", "--tls-psk="+bad, f.smallIdx); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a malformed key file: %v", err)
	}
}
