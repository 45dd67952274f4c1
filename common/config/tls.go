package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"sync"
	"time"
)

// TLSFiles are a client's TLS settings as every connector reads them: <PREFIX>TLS_CA_FILE,
// <PREFIX>TLS_CERT_FILE and <PREFIX>TLS_KEY_FILE (PEM files, e.g. a mounted secret),
// <PREFIX>TLS_SERVER_NAME and <PREFIX>TLS_INSECURE_SKIP_VERIFY.
type TLSFiles struct {
	Prefix     string // e.g. "REDIS_": names the variables in errors
	CAFile     string // trusted CAs; "" for the system's pool
	CertFile   string // client certificate, with KeyFile
	KeyFile    string
	ServerName string // "" for the host dialled
	Insecure   bool   // skip verification: for tests only
}

// Config builds the client TLS configuration (TLS 1.2 or newer). Its errors are *FieldError naming the
// variable, all at once. The client certificate is read again for a new connection when its files
// have changed (see clientCert); the CA file is read once.
func (f TLSFiles) Config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName, InsecureSkipVerify: f.Insecure} //nolint:gosec // opt-in, documented as testing only
	var errs []error
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		switch {
		case err != nil:
			errs = append(errs, Problem(f.Prefix+"TLS_CA_FILE", "reading the CA file: %v", err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, Problem(f.Prefix+"TLS_CA_FILE", "no PEM certificate found in %s", f.CAFile))
			}
			tc.RootCAs = pool
		}
	}
	if f.CertFile != "" && f.KeyFile != "" {
		cc := &clientCert{certFile: f.CertFile, keyFile: f.KeyFile}
		if err := cc.load(); err != nil {
			errs = append(errs, Problem(f.Prefix+"TLS_CERT_FILE", "loading the client certificate and key: %v", err))
		} else {
			tc.GetClientCertificate = cc.get
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return tc, nil
}

// clientCert is a client certificate read from its files again when they change: rotators such as
// cert-manager rewrite a mounted secret in place, and a certificate read once at start would be
// presented on every reconnect until it expired, after which the connector could not connect again
// until restarted. A connection made after a rotation presents the new certificate; files that do not
// load (a rotation half written) leave the last good one in use.
type clientCert struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp [2]fileStamp // the files as they were when cert was read
	cert  *tls.Certificate
}

// fileStamp tells a rewritten file from the one read before.
type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path) // follows the symlinks of a mounted secret
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.Size(), fi.ModTime()}, nil
}

// load reads the files when they differ from the last read (always the first time).
func (c *clientCert) load() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st [2]fileStamp
	var err error
	for i, p := range []string{c.certFile, c.keyFile} {
		if st[i], err = stampOf(p); err != nil {
			return err
		}
	}
	if c.cert != nil && st == c.stamp {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.cert, c.stamp = &cert, st
	return nil
}

// get is tls.Config.GetClientCertificate: the newest certificate that loads.
func (c *clientCert) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	_ = c.load() // on failure the last good certificate stays
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert, nil
}
