package redisstreams

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/numaflow-connectors/sources/common/source"
)

// Headers the driver adds to every message.
const (
	HeaderStream              = "x-redis-stream"
	HeaderID                  = "x-redis-id"
	HeaderMissingPayloadField = "x-redis-missing-payload-field"
)

// Fields the driver adds to an entry it copies to the dead-letter stream.
const (
	FieldDeadLetterReason     = "dead-letter-reason"
	FieldDeadLetterStream     = "dead-letter-stream"
	FieldDeadLetterID         = "dead-letter-id"
	FieldDeadLetterDeliveries = "dead-letter-deliveries"
)

// handle is the driver's ack handle: the stream and the entry ID.
type handle struct {
	stream string
	id     string
}

// entry is one stream entry as Redis returned it: its fields as name, value pairs in stream order.
// deleted marks an ID still in a pending list whose entry was trimmed or deleted from the stream.
type entry struct {
	id      string
	fields  []string
	deleted bool
}

// streamEntries is one stream's part of an XREADGROUP reply.
type streamEntries struct {
	stream  string
	entries []entry
}

// messageID is the message ID (the Numaflow offset): unique across replicas and stable across
// redeliveries.
func messageID(stream, id string) string { return stream + ":" + id }

// splitMessageID is the inverse of messageID. Stream keys may contain ':'; entry IDs never do.
func splitMessageID(s string) (stream, id string, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	stream, id = s[:i], s[i+1:]
	if _, ok := entryTime(id); !ok || !strings.Contains(id, "-") {
		return "", "", false
	}
	return stream, id, true
}

// entryTime is the time in an entry ID (<milliseconds>-<sequence>).
func entryTime(id string) (time.Time, bool) {
	ms, seq, found := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, false
	}
	if found {
		if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
			return time.Time{}, false
		}
	}
	return time.UnixMilli(n), true
}

// mapper turns entries into messages.
type mapper struct {
	payloadField string
	keyField     string
}

// message maps one entry of stream to a message; deliveries is the pending list's delivery count
// (0 when unknown).
func (m mapper) message(stream string, e entry, deliveries int) *source.Message {
	msg := &source.Message{
		ID:         messageID(stream, e.id),
		Handle:     handle{stream: stream, id: e.id},
		Deliveries: deliveries,
	}
	if t, ok := entryTime(e.id); ok && t.UnixMilli() > 0 {
		msg.EventTime = t
	} else {
		msg.EventTime = time.Now()
	}
	n := len(e.fields) / 2
	if m.payloadField == "" {
		msg.Payload = fieldsJSON(e.fields)
		msg.Headers = make(map[string]string, 2)
	} else {
		msg.Headers = make(map[string]string, n+2)
		found := false
		for i := 0; i+1 < len(e.fields); i += 2 {
			k, v := e.fields[i], e.fields[i+1]
			if k == m.payloadField && !found {
				msg.Payload = stringBytes(v)
				found = true
				continue
			}
			msg.Headers[k] = v
		}
		if !found {
			msg.Payload = []byte{}
			msg.Headers[HeaderMissingPayloadField] = m.payloadField
		}
	}
	if m.keyField != "" {
		for i := 0; i+1 < len(e.fields); i += 2 {
			if e.fields[i] == m.keyField {
				msg.Keys = []string{e.fields[i+1]}
				break
			}
		}
	}
	msg.Headers[HeaderStream] = stream
	msg.Headers[HeaderID] = e.id
	return msg
}

// stringBytes returns the bytes of s without copying them (go-redis returns bulk strings, and a copy
// of each payload is a second allocation of its size). Sharing is safe because nothing writes to a
// message's payload: the adapter and the wire encoder only read it.
func stringBytes(s string) []byte {
	if s == "" {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// fieldsJSON renders the fields as one JSON object with string values, in stream order. Bytes that
// are not valid UTF-8 become U+FFFD (set REDIS_PAYLOAD_FIELD to pass binary values through).
func fieldsJSON(fields []string) []byte {
	size := 2
	for _, f := range fields {
		size += len(f) + 4
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	for i := 0; i+1 < len(fields); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(fields[i])
		v, _ := json.Marshal(fields[i+1])
		b = append(b, k...)
		b = append(b, ':')
		b = append(b, v...)
	}
	return append(b, '}')
}

// ---- raw replies (Do keeps field order; go-redis's typed stream replies do not) ----

// parseStreams reads an XREADGROUP reply: an array of [stream, entries] pairs (RESP2) or a map of
// stream to entries (RESP3).
func parseStreams(v any) ([]streamEntries, error) {
	switch r := v.(type) {
	case nil:
		return nil, nil
	case []any:
		out := make([]streamEntries, 0, len(r))
		for _, item := range r {
			pair, ok := item.([]any)
			if !ok || len(pair) != 2 {
				return nil, fmt.Errorf("unexpected XREADGROUP reply element %T", item)
			}
			name, ok := pair[0].(string)
			if !ok {
				return nil, fmt.Errorf("unexpected stream name %T in XREADGROUP reply", pair[0])
			}
			es, err := parseEntries(pair[1])
			if err != nil {
				return nil, err
			}
			out = append(out, streamEntries{stream: name, entries: es})
		}
		return out, nil
	case map[any]any:
		out := make([]streamEntries, 0, len(r))
		for k, val := range r {
			name, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("unexpected stream name %T in XREADGROUP reply", k)
			}
			es, err := parseEntries(val)
			if err != nil {
				return nil, err
			}
			out = append(out, streamEntries{stream: name, entries: es})
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected XREADGROUP reply %T", v)
}

// parseEntries reads an array of entries [id, [field, value, ...]]; an entry whose fields are nil was
// deleted from the stream while it was pending.
func parseEntries(v any) ([]entry, error) {
	if v == nil {
		return nil, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("unexpected entry list %T", v)
	}
	out := make([]entry, 0, len(arr))
	for _, item := range arr {
		if item == nil {
			continue
		}
		pair, ok := item.([]any)
		if !ok || len(pair) != 2 {
			return nil, fmt.Errorf("unexpected entry %T", item)
		}
		id, ok := pair[0].(string)
		if !ok {
			return nil, fmt.Errorf("unexpected entry id %T", pair[0])
		}
		e := entry{id: id}
		switch fs := pair[1].(type) {
		case nil:
			e.deleted = true
		case []any:
			e.fields = make([]string, 0, len(fs))
			for _, f := range fs {
				e.fields = append(e.fields, toString(f))
			}
		case map[any]any:
			for k, val := range fs {
				e.fields = append(e.fields, toString(k), toString(val))
			}
		default:
			return nil, fmt.Errorf("unexpected fields %T of entry %s", pair[1], id)
		}
		out = append(out, e)
	}
	return out, nil
}

// parseAutoClaim reads an XAUTOCLAIM reply: [next cursor, entries, deleted IDs (Redis 7+)].
func parseAutoClaim(v any) (next string, es []entry, deleted []string, err error) {
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return "", nil, nil, fmt.Errorf("unexpected XAUTOCLAIM reply %T", v)
	}
	next, ok = arr[0].(string)
	if !ok {
		return "", nil, nil, fmt.Errorf("unexpected XAUTOCLAIM cursor %T", arr[0])
	}
	if es, err = parseEntries(arr[1]); err != nil {
		return "", nil, nil, err
	}
	if len(arr) > 2 {
		ids, _ := arr[2].([]any)
		for _, id := range ids {
			deleted = append(deleted, toString(id))
		}
	}
	return next, es, deleted, nil
}

// parseIDs reads an array of entry IDs (XCLAIM ... JUSTID).
func parseIDs(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, x := range arr {
		out = append(out, toString(x))
	}
	return out
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return ""
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return fmt.Sprint(v)
}
