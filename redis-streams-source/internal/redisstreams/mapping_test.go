package redisstreams

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestMessageMapping(t *testing.T) {
	e := entry{id: "1700000000123-7", fields: []string{"z", "last?", "data", "\x00\xffbin", "key", "k1", "a", "1"}}
	tests := []struct {
		name        string
		m           mapper
		e           entry
		wantPayload []byte
		wantKeys    []string
		wantHeaders map[string]string
	}{
		{"payload field set: others become headers", mapper{payloadField: "data", keyField: "key"}, e,
			[]byte("\x00\xffbin"), []string{"k1"},
			map[string]string{"z": "last?", "key": "k1", "a": "1", HeaderStream: "s:1", HeaderID: e.id}},
		{"no payload field: JSON object in stream order", mapper{}, entry{id: e.id, fields: []string{"z", "1", "a", "\"q\"", "m", "ü"}},
			[]byte(`{"z":"1","a":"\"q\"","m":"ü"}`), nil,
			map[string]string{HeaderStream: "s:1", HeaderID: e.id}},
		{"missing payload field: empty payload and a header", mapper{payloadField: "body"}, e,
			[]byte{}, nil,
			map[string]string{"z": "last?", "data": "\x00\xffbin", "key": "k1", "a": "1", HeaderMissingPayloadField: "body", HeaderStream: "s:1", HeaderID: e.id}},
		{"key field missing: no keys", mapper{keyField: "nokey"}, entry{id: "5-0", fields: []string{"a", "b"}},
			[]byte(`{"a":"b"}`), nil, map[string]string{HeaderStream: "s:1", HeaderID: "5-0"}},
		{"empty entry", mapper{}, entry{id: "5-0"}, []byte(`{}`), nil, map[string]string{HeaderStream: "s:1", HeaderID: "5-0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.m.message("s:1", tt.e, 3)
			if msg.ID != "s:1:"+tt.e.id {
				t.Errorf("ID %q", msg.ID)
			}
			if msg.Handle != (handle{stream: "s:1", id: tt.e.id}) {
				t.Errorf("handle %#v", msg.Handle)
			}
			if !bytes.Equal(msg.Payload, tt.wantPayload) || msg.Payload == nil {
				t.Errorf("payload %q, want %q", msg.Payload, tt.wantPayload)
			}
			if !reflect.DeepEqual(msg.Keys, tt.wantKeys) {
				t.Errorf("keys %q, want %q", msg.Keys, tt.wantKeys)
			}
			if !reflect.DeepEqual(msg.Headers, tt.wantHeaders) {
				t.Errorf("headers %q, want %q", msg.Headers, tt.wantHeaders)
			}
			if msg.Deliveries != 3 {
				t.Errorf("deliveries %d", msg.Deliveries)
			}
			if want, _ := entryTime(tt.e.id); !msg.EventTime.Equal(want) {
				t.Errorf("event time %s, want %s", msg.EventTime, want)
			}
		})
	}
	if got := (mapper{}).message("s", entry{id: "1700000000123-7"}, 1).EventTime; !got.Equal(time.UnixMilli(1700000000123)) {
		t.Errorf("event time %s, want the ID's milliseconds", got)
	}
}

func TestFieldsJSONIsValidJSON(t *testing.T) {
	b := fieldsJSON([]string{"a", "x\ny", "b\t", "\x00\xff"})
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s is not JSON: %v", b, err)
	}
	if m["a"] != "x\ny" || m["b\t"] != "\x00\ufffd" {
		t.Errorf("decoded %q", m)
	}
}

func TestSplitMessageID(t *testing.T) {
	for _, tt := range []struct {
		in, stream, id string
		ok             bool
	}{
		{"orders:1-0", "orders", "1-0", true},
		{"a:b:c:1700000000000-12", "a:b:c", "1700000000000-12", true},
		{"{tag}:x:5-5", "{tag}:x", "5-5", true},
		{"orders", "", "", false},
		{":1-0", "", "", false},
		{"orders:", "", "", false},
		{"orders:abc", "", "", false},
		{"orders:12", "", "", false},
		{"orders:1-x", "", "", false},
	} {
		s, id, ok := splitMessageID(tt.in)
		if s != tt.stream || id != tt.id || ok != tt.ok {
			t.Errorf("splitMessageID(%q) = %q, %q, %v; want %q, %q, %v", tt.in, s, id, ok, tt.stream, tt.id, tt.ok)
		}
	}
}

func TestParseReplies(t *testing.T) {
	// RESP2 XREADGROUP: [[stream, [[id, [f, v]], [id, nil]]]]
	resp2 := []any{[]any{"s1", []any{[]any{"1-0", []any{"f", "v", "g", "w"}}, []any{"2-0", nil}}}}
	got, err := parseStreams(resp2)
	if err != nil {
		t.Fatal(err)
	}
	want := []streamEntries{{stream: "s1", entries: []entry{{id: "1-0", fields: []string{"f", "v", "g", "w"}}, {id: "2-0", deleted: true}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RESP2: got %+v, want %+v", got, want)
	}
	// RESP3: a map of stream to entries.
	got, err = parseStreams(map[any]any{"s1": []any{[]any{"1-0", []any{"f", "v", "g", "w"}}, []any{"2-0", nil}}})
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("RESP3: got %+v, %v; want %+v", got, err, want)
	}
	if got, err := parseStreams(nil); got != nil || err != nil {
		t.Errorf("nil reply: %v, %v", got, err)
	}
	if _, err := parseStreams("junk"); err == nil {
		t.Errorf("junk reply parsed")
	}
	next, es, deleted, err := parseAutoClaim([]any{"0-0", []any{[]any{"3-0", []any{"a", "b"}}}, []any{"4-0", "5-0"}})
	if err != nil || next != "0-0" || len(es) != 1 || es[0].id != "3-0" || !reflect.DeepEqual(deleted, []string{"4-0", "5-0"}) {
		t.Errorf("XAUTOCLAIM: %q %+v %q %v", next, es, deleted, err)
	}
	if got := parseIDs([]any{"1-0", "2-0"}); !reflect.DeepEqual(got, []string{"1-0", "2-0"}) {
		t.Errorf("ids %q", got)
	}
}
