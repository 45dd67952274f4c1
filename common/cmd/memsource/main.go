// Command memsource is a source connector over an in-memory broker seeded at start: the demo that
// `make run` drives, and the smallest complete example of a connector built on common.
package main

import (
	"github.com/numaflow-connectors/sources/common/server"

	"github.com/numaflow-connectors/sources/common/cmd/memsource/internal/demo"
)

func main() {
	server.Main(server.App[demo.Config]{
		Name:        "memsource",
		Description: "Demo source over an in-memory broker seeded with MEM_MESSAGES messages.",
		Open:        demo.Open,
	})
}
