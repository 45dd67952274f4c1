package mqtttest

import "github.com/numaflow-connectors/sources/common/proctest"

// Certs is proctest.Certs: a CA made for one server, a server certificate for 127.0.0.1 and localhost,
// and a client certificate.
type Certs = proctest.Certs

// NewCerts generates a fresh CA and its certificates under dir.
func NewCerts(dir string) (*Certs, error) { return proctest.NewCerts(dir) }
