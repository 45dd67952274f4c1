// Command memsource is a source connector over an in-memory broker that publishes as it is consumed:
// the in-memory demo (`bin/udsource-run -- bin/memsource`), the protocol ceiling of the benchmarks,
// and the smallest complete example of a connector built on common.
package main

import (
	"github.com/numaflow-connectors/sources/common/server"

	"github.com/numaflow-connectors/sources/common/cmd/memsource/internal/demo"
)

func main() {
	server.Main(server.App[demo.Config]{
		Name:        "memsource",
		Description: "Demo source over an in-memory broker that publishes MEM_MESSAGES messages as they are consumed.",
		Open:        demo.Open,
	})
}
