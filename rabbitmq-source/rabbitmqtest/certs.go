package rabbitmqtest

import "github.com/numaflow-connectors/sources/common/proctest"

// Certs is proctest.Certs: a CA made for one node, a server certificate for 127.0.0.1 and localhost,
// and a client certificate.
type Certs = proctest.Certs

func newCerts(dir string) (*Certs, error) { return proctest.NewCerts(dir) }
