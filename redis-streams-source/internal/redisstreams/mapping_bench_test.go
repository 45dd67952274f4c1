package redisstreams

import (
	"strconv"
	"strings"
	"testing"
)

// benchReply is an XREADGROUP reply as go-redis returns it (RESP2 shape): one stream of n entries with
// a payload field of size bytes and one more field, the shape of `make bench`'s entries.
func benchReply(n, size int) any {
	payload := strings.Repeat("x", size)
	es := make([]any, n)
	for i := range es {
		es[i] = []any{"1700000000000-" + strconv.Itoa(i), []any{"payload", payload, "n", strconv.Itoa(i)}}
	}
	return []any{[]any{"bench", es}}
}

// BenchmarkReplyToMessages is the driver's own work per entry on the read path: parsing go-redis's
// generic reply and mapping each entry to a message (per op: one reply of 500 entries).
func BenchmarkReplyToMessages(b *testing.B) {
	v := benchReply(500, 1024)
	m := mapper{payloadField: "payload"}
	b.ReportAllocs()
	for b.Loop() {
		res, err := parseStreams(v)
		if err != nil {
			b.Fatal(err)
		}
		for _, se := range res {
			for _, e := range se.entries {
				_ = m.message(se.stream, e, 1)
			}
		}
	}
}
