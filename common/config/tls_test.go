package config

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// A client certificate rotated in place (cert-manager rewriting a mounted secret) is presented on the
// next connection; it was read once at start, so a connector kept presenting the old one until it
// expired and then could not reconnect until restarted. Files that do not load leave the last good
// certificate in use.
func TestClientCertificateFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	first, err := proctest.NewCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	second, err := proctest.NewCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	install := func(c *proctest.Certs) {
		t.Helper()
		for src, dst := range map[string]string{c.ClientCertFile: certFile, c.ClientKeyFile: keyFile} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	presented := func(tc *tls.Config) []byte {
		t.Helper()
		if tc.GetClientCertificate == nil {
			t.Fatal("no client certificate configured")
		}
		c, err := tc.GetClientCertificate(&tls.CertificateRequestInfo{})
		if err != nil || c == nil || len(c.Certificate) == 0 {
			t.Fatalf("client certificate: %v, %v", c, err)
		}
		return c.Certificate[0]
	}
	der := func(c *proctest.Certs) []byte {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		return pair.Certificate[0]
	}

	install(first)
	tc, err := TLSFiles{Prefix: "X_", CertFile: certFile, KeyFile: keyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(presented(tc), der(first)) {
		t.Fatal("the first certificate is not the one presented")
	}
	later := time.Now().Add(time.Minute) // a rotation is a later write, whatever the file system's clock grain
	install(second)
	for _, p := range []string{certFile, keyFile} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(presented(tc), der(second)) {
		t.Fatal("after the files were rotated the old certificate is still presented")
	}
	if err := os.WriteFile(keyFile, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(presented(tc), der(second)) {
		t.Fatal("a key file that does not load replaced the last good certificate")
	}
}
