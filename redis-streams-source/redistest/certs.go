package redistest

import "github.com/numaflow-connectors/sources/common/proctest"

// Certs is proctest.Certs: a CA made for one test, a server certificate and a client certificate.
type Certs = proctest.Certs

// NewCerts generates a fresh CA and certificates under dir.
func NewCerts(dir string) (*Certs, error) { return proctest.NewCerts(dir) }

// serverArgs are the redis-server (and redis-sentinel) TLS arguments: serve the server certificate,
// trust the CA, and present the client certificate on the connections the server opens itself
// (replication, the cluster bus, a sentinel's connections to the servers it watches), which then use
// TLS too.
func serverArgs(c *Certs, requireClientCert bool) []string {
	auth := "no"
	if requireClientCert {
		auth = "yes"
	}
	return []string{
		"--tls-cert-file", c.ServerCertFile, "--tls-key-file", c.ServerKeyFile, "--tls-ca-cert-file", c.CAFile,
		"--tls-client-cert-file", c.ClientCertFile, "--tls-client-key-file", c.ClientKeyFile,
		"--tls-auth-clients", auth, "--tls-replication", "yes",
	}
}

// cliArgs are redis-cli's TLS arguments.
func cliArgs(c *Certs) []string {
	return []string{"--tls", "--cacert", c.CAFile, "--cert", c.ClientCertFile, "--key", c.ClientKeyFile}
}
