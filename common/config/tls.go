package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
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
// variable, all at once.
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
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			errs = append(errs, Problem(f.Prefix+"TLS_CERT_FILE", "loading the client certificate and key: %v", err))
		} else {
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return tc, nil
}
