// Command udsource-run plays Numaflow's numa container against a user-defined source, so a
// developer can see a connector work without Kubernetes.
//
//	udsource-run [flags] -- /path/to/connector [args]     start the connector and drive it
//	udsource-run [flags] --socket S --server-info F       drive a source that is already running
//
// It reads, acks and nacks exactly as numa v1.8 does (see common/numatest), prints or counts the
// messages, shows a live progress line on stderr and ends with a summary on stdout. Ctrl-C stops
// reading, finishes the acks of the batch in progress, stops the connector with SIGTERM and prints
// the summary. Exit status: 0 on success, 1 when the connector exits early or fails, 2 for bad
// usage.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
