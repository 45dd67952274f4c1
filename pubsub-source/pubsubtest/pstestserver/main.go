// Command pstestserver serves the Pub/Sub fake from cloud.google.com/go/pubsub/v2/pstest over gRPC on
// a loopback address, for tests on machines without Google's Java emulator. It prints
// "listening on HOST:PORT" once it accepts connections and stops on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8085", "loopback address to listen on")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "pstestserver: -addr must be a loopback host:port, got %q\n", *addr)
		os.Exit(2)
	}
	srv := pstest.NewServerWithAddress(*addr)
	fmt.Printf("listening on %s\n", srv.Addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	_ = srv.Close()
}
