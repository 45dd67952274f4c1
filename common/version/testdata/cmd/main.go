// Command cmd prints version.String; the version tests build it with -ldflags -X.
package main

import (
	"fmt"

	"github.com/numaflow-connectors/sources/common/version"
	_ "github.com/numaproj/numaflow-go/pkg/sourcer" // linked, as in a connector
)

func main() { fmt.Print(version.String("x")) }
