package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/alicebob/miniredis/v2"
)

// embeddedRedis is a Redis server inside the runner (miniredis, on 127.0.0.1), seeded with sample
// stream entries, so `make run` shows the Redis Streams connector working with nothing installed.
type embeddedRedis struct {
	srv *miniredis.Miniredis
}

const (
	embeddedStream = "demo"
	embeddedGroup  = "demo"
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
	set := map[string]string{
		"REDIS_URL": "redis://" + srv.Addr(), "REDIS_STREAM": embeddedStream, "REDIS_GROUP": embeddedGroup,
		"REDIS_PAYLOAD_FIELD": "payload", "REDIS_KEY_FIELD": "key",
	}
	out := append([]string(nil), env...)
	for k, v := range set {
		if _, ok := lookup(env, k); !ok {
			out = append(out, k+"="+v)
		}
	}
	return &embeddedRedis{srv: srv}, out, nil
}

func (e *embeddedRedis) close() {
	if e != nil {
		e.srv.Close()
	}
}

func lookup(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
