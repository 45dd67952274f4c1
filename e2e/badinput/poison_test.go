package badinput

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
)

// Poison messages and messages over MAX_MESSAGE_BYTES, the same for every connector.

const (
	// smallLimit is MAX_MESSAGE_BYTES in the oversize runs.
	smallLimit = "1000"
	// drainTimeout bounds each wait for the message that follows the poison ones.
	drainTimeout = 30 * time.Second
)

var (
	// bigPayload is over smallLimit.
	bigPayload = strings.Repeat("b", 2000)
	// largeBody is a 1000 KiB payload, just under the default MAX_MESSAGE_BYTES (1008 KiB: the
	// inter-step buffer's default 1 MiB, less what numa adds).
	largeBody = strings.Repeat("m", 1000<<10)
	// nonUTF8 is not valid UTF-8 (a lone continuation byte, an invalid start byte, a NUL).
	nonUTF8 = "\x80\xff\xfe\x00poison"
)

// reasonTooLarge is what the adapter says about a message over the limit.
const reasonTooLarge = "exceeds MAX_MESSAGE_BYTES"

// nackedOverLimit is the adapter's warning when a message over the limit is nacked back to the broker
// (no dead-letter target, DEAD_LETTER_FALLBACK=nack, the default).
const nackedOverLimit = "message over its limit nacked"

// maxRenacks bounds how often a message over the limit may come back and be nacked again within
// renackWindow: it stays at the broker (whose own redrive policy applies), but must not spin. A hot
// loop on loopback would be hundreds a second; measured here: SQS 1-7, Redis 0 (its nacked entries
// wait in the pending list), Pub/Sub about 27 (every pull brings it back at once: the adapter nacks
// it with no delay).
const (
	renackWindow = 5 * time.Second
	maxRenacks   = 50
)

// assertNoNackSpin reads and acks for renackWindow and fails t when the oversize message was nacked
// more than maxRenacks times meanwhile.
func (c *conn) assertNoNackSpin(t *testing.T) {
	t.Helper()
	c.waitOutput(t, 5*time.Second, nackedOverLimit, reasonTooLarge)
	before := strings.Count(c.proc.Output(), nackedOverLimit)
	assertOversizeNotDelivered(t, c.readFor(t, renackWindow))
	n := strings.Count(c.proc.Output(), nackedOverLimit) - before
	t.Logf("the oversize message was nacked %d times in %s", n, renackWindow)
	if n > maxRenacks {
		t.Errorf("the oversize message was nacked %d times in %s: a hot loop", n, renackWindow)
	}
}

// seenAll is a drainUntil predicate that is true once every payload in want has arrived.
func seenAll(want ...string) func(numatest.Message) bool {
	preds := make([]func(numatest.Message) bool, len(want))
	for i, w := range want {
		preds[i] = payloadIs(w)
	}
	return seenEach(preds...)
}

// seenEach is a drainUntil predicate that is true once each of preds has matched some message.
func seenEach(preds ...func(numatest.Message) bool) func(numatest.Message) bool {
	left := map[int]bool{}
	for i := range preds {
		left[i] = true
	}
	return func(m numatest.Message) bool {
		for i := range left {
			if preds[i](m) {
				delete(left, i)
			}
		}
		return len(left) == 0
	}
}

// assertOversizeNotDelivered checks that no message of bigPayload's size reached numa.
func assertOversizeNotDelivered(t *testing.T, msgs []numatest.Message) {
	t.Helper()
	for _, m := range msgs {
		if len(m.Payload) > 1000 {
			t.Errorf("a message of %d bytes over MAX_MESSAGE_BYTES=%s was delivered", len(m.Payload), smallLimit)
		}
	}
}

// finish checks what every broker run ends with: the process is still up (no crash loop) and never
// printed the secret, neither in its output nor in its metrics.
func (c *conn) finish(t *testing.T) {
	t.Helper()
	c.assertAlive(t)
	assertNoSentinel(t, c.name+"'s output at LOG_LEVEL=debug", c.proc.Output())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.metrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("getting /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(body), "numaflow_source_build_info") {
		t.Fatalf("/metrics answered %s without build info (%v)", resp.Status, err)
	}
	assertNoSentinel(t, c.name+"'s /metrics", string(body))
}
