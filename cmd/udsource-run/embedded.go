package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// embeddedRedis is a Redis server inside the runner (miniredis, on 127.0.0.1), seeded with sample
// stream entries, so `make run` shows the Redis Streams connector working with nothing installed.
type embeddedRedis struct {
	srv *miniredis.Miniredis
	// pendingRefresh is how long the connector reuses a backlog reading (PENDING_REFRESH): the
	// summary waits that long, so its pending figure is read from the broker after the last ack.
	pendingRefresh time.Duration
}

const (
	embeddedStream = "demo"
	embeddedGroup  = "demo"
	// embeddedPendingRefresh is the connector's PENDING_REFRESH against the embedded broker: miniredis
	// reports no group lag of its own (its lag is the stream's length), so a reading taken while
	// entries are in flight is only an upper bound, and the final figure must be read afresh.
	embeddedPendingRefresh = 200 * time.Millisecond
)

// startEmbedded starts the embedded broker named by --embedded and returns the env the connector
// needs to use it. When the environment already points the connector at a real broker (REDIS_URL or
// REDIS_ADDRS), nothing is started and env is returned as it is.
func startEmbedded(c *config, env []string, stderr io.Writer) (*embeddedRedis, []string, error) {
	switch c.embedded {
	case "":
		return nil, env, nil
	case "redis":
	default:
		return nil, nil, fmt.Errorf("--embedded %q: only redis is supported", c.embedded)
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "REDIS_URL=") || strings.HasPrefix(kv, "REDIS_ADDRS=") {
			fmt.Fprintf(stderr, "udsource-run: %s is set: using that Redis, not an embedded one\n", strings.SplitN(kv, "=", 2)[0])
			return nil, env, nil
		}
	}
	srv, err := miniredis.Run() // listens on 127.0.0.1 only
	if err != nil {
		return nil, nil, fmt.Errorf("starting the embedded redis: %w", err)
	}
	payload := strings.Repeat(".", max(c.embeddedBytes, 16))
	for i := 0; i < c.embeddedCount; i++ {
		p := fmt.Sprintf("message %d ", i)
		p += payload[:max(0, len(payload)-len(p))]
		if _, err := srv.XAdd(embeddedStream, "*", []string{"payload", p, "key", "k" + strconv.Itoa(i%8), "seq", strconv.Itoa(i)}); err != nil {
			srv.Close()
			return nil, nil, fmt.Errorf("seeding the embedded redis: %w", err)
		}
	}
	fmt.Fprintf(stderr, "udsource-run: embedded redis on %s, stream %q seeded with %d entries\n", srv.Addr(), embeddedStream, c.embeddedCount)
	fmt.Fprintf(stderr, "udsource-run: miniredis keeps no consumer-group lag, so until the group has read the last entry the connector's pending is an upper bound: the stream's length plus the entries in flight (Redis 7 reports it exactly)\n")
	set := map[string]string{
		"REDIS_URL": "redis://" + srv.Addr(), "REDIS_STREAM": embeddedStream, "REDIS_GROUP": embeddedGroup,
		"REDIS_PAYLOAD_FIELD": "payload", "REDIS_KEY_FIELD": "key", "PENDING_REFRESH": embeddedPendingRefresh.String(),
	}
	out := append([]string(nil), env...)
	for k, v := range set {
		if _, ok := lookup(env, k); !ok {
			out = append(out, k+"="+v)
		}
	}
	e := &embeddedRedis{srv: srv, pendingRefresh: embeddedPendingRefresh}
	if v, ok := lookup(env, "PENDING_REFRESH"); ok {
		// The user's own value (an invalid one is the connector's to refuse: no wait then).
		d, _ := time.ParseDuration(v)
		e.pendingRefresh = min(max(d, 0), maxSummaryWait)
	}
	return e, out, nil
}

// maxSummaryWait bounds how long the summary waits for a fresh backlog reading.
const maxSummaryWait = 5 * time.Second

func (e *embeddedRedis) close() {
	if e != nil {
		e.srv.Close()
	}
}

// summaryWait is how long to wait before the summary's pending figure, so the connector reads its
// backlog from the broker afresh rather than answering from a reading taken mid-run.
func (e *embeddedRedis) summaryWait() time.Duration {
	if e == nil {
		return 0
	}
	return e.pendingRefresh
}

func lookup(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
