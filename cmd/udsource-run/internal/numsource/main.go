// Command numsource is a test fixture for udsource-run: a tiny numaflow-go source serving -n
// numbered messages on the socket the runner names in SOURCE_SOCKET and SOURCE_SERVER_INFO_FILE.
// Nacked messages come back (after their delay); acked ones never do. It logs the environment it
// was given and, when it stops, what it served, so tests can check both from its log.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
)

type source struct {
	mu       sync.Mutex
	next     int          // next fresh message number
	total    int          // how many fresh messages exist
	redo     []int        // nacked numbers ready again
	inflight map[int]bool // read, neither acked nor nacked
	acked    map[int]bool // acked numbers
	served   int          // messages sent, redeliveries included
	nacked   int
	exitAt   int // exit with status 3 once this many were served (0: never)
	wake     chan struct{}
	payload  int // payload size in bytes; 0: "message-N"
}

func (s *source) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take removes up to n ready message numbers.
func (s *source) take(n int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for len(out) < n && len(s.redo) > 0 {
		out = append(out, s.redo[0])
		s.redo = s.redo[1:]
	}
	for len(out) < n && s.next < s.total {
		out = append(out, s.next)
		s.next++
	}
	for _, i := range out {
		s.inflight[i] = true
	}
	return out
}

func (s *source) message(i int) sourcer.Message {
	payload := []byte("message-" + strconv.Itoa(i))
	if s.payload > 0 {
		payload = make([]byte, s.payload)
		for j := range payload {
			payload[j] = byte(i + j)
		}
	}
	return sourcer.NewMessage(payload, sourcer.NewOffsetWithDefaultPartitionId([]byte(strconv.Itoa(i))),
		time.UnixMilli(1_700_000_000_000+int64(i))).
		WithKeys([]string{"key-" + strconv.Itoa(i%3)}).
		WithHeaders(map[string]string{"n": strconv.Itoa(i)})
}

func (s *source) Read(ctx context.Context, req sourcer.ReadRequest, ch chan<- sourcer.Message) {
	deadline := time.NewTimer(req.TimeOut())
	defer deadline.Stop()
	for {
		batch := s.take(int(req.Count()))
		if len(batch) > 0 {
			for _, i := range batch {
				select {
				case ch <- s.message(i):
				case <-ctx.Done():
					return
				}
				s.mu.Lock()
				s.served++
				stop := s.exitAt > 0 && s.served >= s.exitAt
				s.mu.Unlock()
				if stop {
					log.Printf("numsource: exiting early after %d messages", s.exitAt)
					os.Exit(3)
				}
			}
			return
		}
		select {
		case <-s.wake:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (s *source) Ack(_ context.Context, req sourcer.AckRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range req.Offsets() {
		i, _ := strconv.Atoi(string(o.Value()))
		delete(s.inflight, i)
		s.acked[i] = true
	}
}

func (s *source) Nack(_ context.Context, req sourcer.NackRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range req.Offsets() {
		i, _ := strconv.Atoi(string(n.Offset.Value()))
		if !s.inflight[i] {
			continue
		}
		s.nacked++
		var delay time.Duration
		if o := n.NackOptions; o != nil && o.Delay != nil {
			delay = time.Duration(*o.Delay) * time.Millisecond
		}
		// It stays in flight until it is ready again.
		time.AfterFunc(delay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.inflight, i)
			s.redo = append(s.redo, i)
			s.signal()
		})
	}
}

func (s *source) Pending(context.Context) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.total - s.next + len(s.redo) + len(s.inflight))
}

func (s *source) ActivePartitions(context.Context) []int32 { return sourcer.DefaultPartitions() }
func (s *source) TotalPartitions(context.Context) *int32   { return nil }

func main() {
	n := flag.Int("n", 1000, "number of messages to serve")
	exitAt := flag.Int("exit-after", 0, "exit with status 3 after serving this many messages (0: never)")
	payload := flag.Int("payload", 0, "payload size in bytes (binary); 0: text \"message-N\"")
	flag.Parse()

	// This fixture plays a connector: it reads what Numaflow (here, the runner) sets.
	for _, k := range []string{"NUMAFLOW_REPLICA", "NUMAFLOW_PIPELINE_NAME", "NUMAFLOW_VERTEX_NAME",
		"NUMAFLOW_READ_BATCH_SIZE", "NUMAFLOW_READ_TIMEOUT_MS", "METRICS_ADDR"} {
		v, ok := os.LookupEnv(k)
		log.Printf("numsource: env %s=%q set=%v", k, v, ok)
	}
	sock, info := os.Getenv("SOURCE_SOCKET"), os.Getenv("SOURCE_SERVER_INFO_FILE")
	if sock == "" || info == "" {
		log.Print("numsource: SOURCE_SOCKET and SOURCE_SERVER_INFO_FILE are required")
		os.Exit(2)
	}
	s := &source{total: *n, exitAt: *exitAt, payload: *payload, inflight: map[int]bool{}, acked: map[int]bool{},
		wake: make(chan struct{}, 1)}
	err := sourcer.NewServer(s, sourcer.WithSockAddr(sock), sourcer.WithServerInfoFilePath(info)).Start(context.Background())
	s.mu.Lock()
	fmt.Fprintf(os.Stderr, "numsource: stopped served=%d acked=%d nacked=%d\n", s.served, len(s.acked), s.nacked)
	s.mu.Unlock()
	if err != nil {
		log.Printf("numsource: %v", err)
		os.Exit(1)
	}
}
