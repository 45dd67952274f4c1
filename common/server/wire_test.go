package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/apis/proto/common"
	sourcepb "github.com/numaproj/numaflow-go/pkg/apis/proto/source/v1"
	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
)

// numaflowGoResponse is the ReadResponse numaflow-go v0.12.0's server builds for a message.
func numaflowGoResponse(m *source.WireMessage) *sourcepb.ReadResponse {
	return &sourcepb.ReadResponse{
		Result: &sourcepb.ReadResponse_Result{
			Payload:   m.Payload,
			Offset:    &sourcepb.Offset{Offset: []byte(m.ID), PartitionId: m.Partition},
			EventTime: timestamppb.New(m.EventTime),
			Keys:      m.Keys,
			Headers:   m.Headers,
			Metadata:  &common.Metadata{SysMetadata: map[string]*common.KeyValueGroup{}, UserMetadata: map[string]*common.KeyValueGroup{}},
		},
		Status: &sourcepb.ReadResponse_Status{},
	}
}

func randomWireMessage(r *rand.Rand) *source.WireMessage {
	str := func(max int) string {
		b := make([]byte, r.IntN(max+1))
		for i := range b {
			b[i] = byte('a' + r.IntN(26))
		}
		if len(b) > 0 && r.IntN(4) == 0 {
			return string(b) + "é€" // multi-byte UTF-8
		}
		return string(b)
	}
	m := &source.WireMessage{ID: str(40), Partition: int32(r.IntN(3)) - 1} // -1, 0 or 1
	if r.IntN(5) > 0 {
		m.Payload = make([]byte, r.IntN(3000))
		for i := range m.Payload {
			m.Payload[i] = byte(r.Uint32())
		}
	}
	switch r.IntN(4) {
	case 0: // the zero time: negative seconds since the epoch
	case 1:
		m.EventTime = time.Unix(int64(r.Uint32()), 0)
	case 2:
		m.EventTime = time.Unix(0, int64(r.IntN(1e9)))
	default:
		m.EventTime = time.Unix(int64(r.Uint32()), int64(r.IntN(1e9)))
	}
	for range r.IntN(3) {
		m.Keys = append(m.Keys, str(10))
	}
	if n := r.IntN(4); n > 0 {
		m.Headers = map[string]string{}
		for range n {
			m.Headers[str(8)] = str(200)
		}
	}
	return m
}

// The hand-written encoding of a read result decodes to exactly the response numaflow-go builds for
// the same message, and its size is what it writes.
func TestWireMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	codec := newWireCodec()
	for i := range 2000 {
		m := randomWireMessage(r)
		rr := &readResult{m: m}
		b := rr.appendTo(nil)
		if len(b) != rr.size() {
			t.Fatalf("message %d: size() %d, wrote %d bytes", i, rr.size(), len(b))
		}
		got := &sourcepb.ReadResponse{}
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatalf("message %d %+v: does not decode: %v", i, m, err)
		}
		if want := numaflowGoResponse(m); !proto.Equal(got, want) {
			t.Fatalf("message %d decodes to\n%v\nwant (numaflow-go)\n%v", i, got, want)
		}
		// Through the codec grpc-go calls: the same message (header order varies with map iteration).
		data, err := codec.Marshal(rr)
		if err != nil {
			t.Fatal(err)
		}
		viaCodec := &sourcepb.ReadResponse{}
		if err := proto.Unmarshal(data.Materialize(), viaCodec); err != nil || !proto.Equal(viaCodec, got) || data.Len() != len(b) {
			t.Fatalf("message %d: the codec wrote other bytes than appendTo (%v)", i, err)
		}
		data.Free()
	}
	// Anything else goes through protobuf.
	data, err := codec.Marshal(&sourcepb.ReadResponse{Status: &sourcepb.ReadResponse_Status{Eot: true}})
	if err != nil {
		t.Fatal(err)
	}
	eot := &sourcepb.ReadResponse{}
	if err := proto.Unmarshal(data.Materialize(), eot); err != nil || !eot.GetStatus().GetEot() {
		t.Fatalf("end of transmission through the codec: %v, %v", eot, err)
	}
	if codec.Name() != "proto" {
		t.Fatalf("codec name %q: numa sends and expects proto", codec.Name())
	}
}

// A numa client sees the same messages, server info, pending and partitions from ServeSource as from
// numaflow-go's own server over the same source.
func TestServeSourceMatchesNumaflowGo(t *testing.T) {
	msgs := func() []*source.Message {
		var out []*source.Message
		base := time.Date(2026, 11, 30, 6, 0, 0, 123456789, time.UTC)
		for i := range 8 {
			m := &source.Message{ID: "id-" + strconv.Itoa(i), Handle: i, Payload: []byte(strings.Repeat("p", i*100)),
				EventTime: base.Add(time.Duration(i) * time.Second)}
			if i%2 == 0 {
				m.Keys = []string{"k" + strconv.Itoa(i), "second"}
			}
			if i%3 == 0 {
				m.Headers = map[string]string{"h": strconv.Itoa(i), "bad\xff": "value\xfe"} // invalid UTF-8 is repaired
			}
			out = append(out, m)
		}
		return out
	}
	read := func(t *testing.T, serve func(ctx context.Context, src *source.Source, sock, info string) error) ([]numatest.Message, int64, []int32, string) {
		src, err := source.New(&fakeDriver{msgs: msgs()}, source.Options{Partition: 7}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		dir, err := os.MkdirTemp("", "wire")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		served := make(chan error, 1)
		sctx, stop := context.WithCancel(ctx)
		go func() { served <- serve(sctx, src, sock, info) }()
		c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
		if err != nil {
			t.Fatal(err)
		}
		var got []numatest.Message
		for len(got) < 8 && ctx.Err() == nil {
			batch, err := c.Read(ctx, 3, 500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, batch...)
			offs := make([]numatest.Offset, len(batch))
			for i, m := range batch {
				offs[i] = m.Offset
			}
			if len(offs) > 0 {
				if err := c.Ack(ctx, offs); err != nil {
					t.Fatal(err)
				}
			}
		}
		pending, err := c.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		parts, _, err := c.Partitions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		si := c.ServerInfo()
		c.Close()
		src.Close(ctx)
		stop()
		if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("server: %v", err)
		}
		return got, pending, parts, fmt.Sprintf("%s %s %s %s %v", si.Protocol, si.Language, si.MinimumNumaflowVersion, si.Version, si.Metadata)
	}
	theirs, theirPending, theirParts, theirInfo := read(t, func(ctx context.Context, src *source.Source, sock, info string) error {
		return sourcer.NewServer(src, sourcer.WithSockAddr(sock), sourcer.WithServerInfoFilePath(info)).Start(ctx)
	})
	ours, ourPending, ourParts, ourInfo := read(t, func(ctx context.Context, src *source.Source, sock, info string) error {
		return ServeSource(ctx, src, Listen{Socket: sock, ServerInfoFile: info})
	})
	if len(ours) != len(theirs) {
		t.Fatalf("read %d messages, numaflow-go's server %d", len(ours), len(theirs))
	}
	for i := range ours {
		a, b := ours[i], theirs[i]
		if string(a.Payload) != string(b.Payload) || string(a.Offset.Value) != string(b.Offset.Value) ||
			a.Offset.Partition != b.Offset.Partition || !a.EventTime.Equal(b.EventTime) ||
			strings.Join(a.Keys, "\x00") != strings.Join(b.Keys, "\x00") || len(a.Headers) != len(b.Headers) {
			t.Fatalf("message %d:\n ours   %+v\n theirs %+v", i, a, b)
		}
		for k, v := range b.Headers {
			if a.Headers[k] != v {
				t.Fatalf("message %d header %q: ours %q, theirs %q", i, k, a.Headers[k], v)
			}
		}
	}
	if ourPending != theirPending || len(ourParts) != 1 || len(theirParts) != 1 || ourParts[0] != theirParts[0] || ourParts[0] != 7 {
		t.Fatalf("pending %d / %d, partitions %v / %v (ours / numaflow-go's)", ourPending, theirPending, ourParts, theirParts)
	}
	if ourInfo != theirInfo {
		t.Fatalf("server info %q, numaflow-go writes %q", ourInfo, theirInfo)
	}
}

// A panic in a handler becomes numa's UDF_EXECUTION_ERROR and stops the server, as with numaflow-go.
func TestServeSourcePanicIsFatal(t *testing.T) {
	var fatal error
	svc := &sourceService{fatal: func(err error) { fatal = err }} // no source: every call panics
	_, err := svc.PendingFn(context.Background(), nil)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "UDF_EXECUTION_ERROR") {
		t.Fatalf("error %v, want codes.Internal with UDF_EXECUTION_ERROR", err)
	}
	if fatal == nil {
		t.Fatal("the panic did not stop the server")
	}
}

// A message whose payload is within MAX_MESSAGE_BYTES but whose ReadResponse (with its offset and
// headers) is over the 64 MiB gRPC limit must not reach SendMsg: it would fail numa's read stream, go
// back to the front of the buffer and fail every new stream the same way, so nothing behind it would
// ever be read. The adapter counts the whole message against MAX_MESSAGE_BYTES and sets it aside as
// too large; the message after it is read.
func TestMessageOverTheGRPCLimitDoesNotStopTheStream(t *testing.T) {
	big := &source.Message{ID: "big", Handle: 1, Payload: make([]byte, maxMessageSize-10), EventTime: time.Now(),
		Headers: map[string]string{"content-type": "application/octet-stream"}}
	small := &source.Message{ID: "small", Handle: 2, Payload: []byte("x"), EventTime: time.Now()}
	d := &fakeDriver{msgs: []*source.Message{big, small}}
	src, err := source.New(d, source.Options{MaxMessageBytes: maxMessageSize, PrefetchBytes: 256 << 20}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- ServeSource(sctx, src, Listen{Socket: sock, ServerInfoFile: info}) }()
	defer func() { src.Close(ctx); stop(); <-served }()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	for range 3 {
		batch, err := c.Read(ctx, 10, 300*time.Millisecond)
		if err != nil {
			t.Fatalf("read failed after %v: %v", got, err)
		}
		for _, m := range batch {
			got = append(got, string(m.Offset.Value))
		}
	}
	if len(got) != 1 || got[0] != "small" {
		t.Errorf("read %q, want only the small message (the big one set aside as too large)", got)
	}
}
