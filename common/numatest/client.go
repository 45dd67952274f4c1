// Package numatest drives a user-defined source over its unix socket exactly as Numaflow's numa
// container (v1.8.x) does: it waits for the server-info file, polls IsReady, opens one ReadFn and one
// AckFn stream (each with a start-of-transmission handshake) and then calls Read, Ack, Nack, Pending
// and Partitions strictly one at a time. It is built on numaflow-go's generated gRPC client, so it
// exercises the real SDK server, and it is what the conformance suite and the local runner use in
// place of numa.
package numatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/numaproj/numaflow-go/pkg/apis/proto/common"
	sourcepb "github.com/numaproj/numaflow-go/pkg/apis/proto/source/v1"
	"github.com/numaproj/numaflow-go/pkg/info"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Default paths used by Numaflow inside a pipeline pod.
const (
	DefaultSocket         = "/var/run/numaflow/source.sock"
	DefaultServerInfoFile = "/var/run/numaflow/sourcer-server-info"
	// DefaultMaxMessageSize is the gRPC message size limit of the SDK server (64 MiB).
	DefaultMaxMessageSize = 64 << 20
)

// NumaVersion is the Numaflow version this client plays. Dial refuses a server info numa would refuse
// (see numaRefuses): a minimum_numaflow_version numa cannot read or newer than this, or an SDK version
// numa cannot read or older than it runs.
const NumaVersion = "1.8.3"

var numaVersion = semver{1, 8, 3, ""}

// nackMinSDKVersion is the first SDK version numa sends nacks to, by the server info's language. numa
// sends none to a language it does not know (or an empty one).
var nackMinSDKVersion = map[info.Language]semver{
	info.Go:  {0, 11, 0, ""},
	"java":   {0, 11, 0, ""},
	"python": {0, 11, 0, ""},
	"rust":   {0, 4, 0, ""},
}

// minSDKVersion is the oldest SDK numa runs as a user-defined source, by the server info's language:
// it refuses an older one, or a version it cannot read, at start. It checks no other language.
var minSDKVersion = map[info.Language]semver{
	info.Go:  {0, 9, 0, ""},
	"java":   {0, 9, 0, ""},
	"python": {0, 9, 0, ""},
	"rust":   {0, 2, 0, ""},
}

// numaRefuses says why numa would not start with this server info (version stands in for its SDK
// version): a minimum_numaflow_version it cannot read or above its own, or, for a language it knows,
// an SDK version it cannot read or below that language's oldest. An empty minimum or version, or an
// empty or unknown language, skips that check, as numa does. numa reads Python versions as PEP 440,
// which is not played: one that is not also a semantic version is not checked.
func numaRefuses(si *info.ServerInfo, version string) error {
	if m := si.MinimumNumaflowVersion; m != "" {
		min, err := parseMinVersion(m)
		if err != nil {
			return fmt.Errorf("numa cannot read minimum_numaflow_version %q and refuses the source: %w", m, err)
		}
		if numaVersion.compare(min) < 0 {
			return fmt.Errorf("the source needs numaflow >= %s, this client plays %s", m, NumaVersion)
		}
	}
	first, known := minSDKVersion[si.Language]
	if version == "" || !known {
		return nil
	}
	v, err := parseSemver(version)
	switch {
	case err != nil && si.Language == "python":
		return nil
	case err != nil:
		return fmt.Errorf("numa cannot read the %s SDK's version and refuses the source (numaflow-go takes it from the "+
			"binary's build info: a replace to a local path makes it (devel)): %w", si.Language, err)
	case !v.atLeastStable(first):
		return fmt.Errorf("numa refuses %s SDK %s: it needs %d.%d.%d or later", si.Language, version, first.major, first.minor, first.patch)
	}
	return nil
}

// closeWait bounds how long Close waits for the server to end the streams.
const closeWait = 2 * time.Second

// pollInterval is how often Dial looks at the server-info file and IsReady.
const pollInterval = 50 * time.Millisecond

// Options for Dial.
type Options struct {
	Socket         string // default DefaultSocket
	ServerInfoFile string // default DefaultServerInfoFile
	MaxMessageSize int    // default DefaultMaxMessageSize, for both directions
	// SDKVersion stands in for the server info's version when that is empty. numaflow-go fills it
	// from the binary's build info, which Go does not record in test binaries, so a source served
	// from inside a test says "" and numa would never nack it. Leave empty to behave like numa.
	SDKVersion string
}

// Offset identifies a message; Value is never empty for a well-behaved source.
type Offset struct {
	Value     []byte
	Partition int32
}

func (o Offset) key() string { return fmt.Sprintf("%d/%s", o.Partition, o.Value) }

// Message is one message read from the source.
type Message struct {
	Payload   []byte
	Offset    Offset
	EventTime time.Time
	Keys      []string
	Headers   map[string]string
}

// NackOptions are the optional per-offset redelivery options numa v1.8.2+ sends.
type NackOptions struct {
	Delay         *uint64 // milliseconds
	MaxDeliveries *uint32
	Reason        *string
}

// NackItem is one offset to nack with its options (nil for none).
type NackItem struct {
	Offset  Offset
	Options *NackOptions
}

// Client is a connection to one source. Its methods may be called from several goroutines but run
// one at a time, like numa's single actor.
//
// numa sets no deadline on its calls; neither does Client. If ctx ends while a Read or Ack is in
// progress, the streams are torn down (the source sees the client go away) and every later call
// fails: Close the Client and Dial again, as numa would restart.
type Client struct {
	mu         sync.Mutex
	conn       *grpc.ClientConn
	api        sourcepb.SourceClient
	info       *info.ServerInfo
	nack       bool
	cancel     context.CancelFunc // ends both streams
	readStream sourcepb.Source_ReadFnClient
	ackStream  sourcepb.Source_AckFnClient
	broken     error
	closed     bool
	isb        isbWindow // offsets Run wrote to the ISB lately
}

// Dial waits (bounded by ctx) until the server-info file is complete, connects to the socket, waits
// until IsReady answers true and opens the ReadFn and AckFn streams with their handshakes. The
// streams outlive ctx and end with Close.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.Socket == "" {
		opts.Socket = DefaultSocket
	}
	if opts.ServerInfoFile == "" {
		opts.ServerInfoFile = DefaultServerInfoFile
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	si, err := waitServerInfo(ctx, opts.ServerInfoFile)
	if err != nil {
		return nil, err
	}
	version := si.Version
	if version == "" {
		version = opts.SDKVersion
	}
	if err := numaRefuses(si, version); err != nil {
		return nil, fmt.Errorf("checking server info %s: %w", opts.ServerInfoFile, err)
	}
	nack := false
	if first, ok := nackMinSDKVersion[si.Language]; ok {
		if v, err := parseSemver(version); err == nil && v.compare(first) >= 0 {
			nack = true
		}
	}

	abs, err := filepath.Abs(opts.Socket)
	if err != nil {
		return nil, fmt.Errorf("resolving socket path %s: %w", opts.Socket, err)
	}
	conn, err := grpc.NewClient("unix://"+abs,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(opts.MaxMessageSize),
			grpc.MaxCallSendMsgSize(opts.MaxMessageSize),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to socket %s: %w", abs, err)
	}
	c := &Client{conn: conn, api: sourcepb.NewSourceClient(conn), info: si, nack: nack}
	if err := c.waitReady(ctx, abs); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := c.openStreams(ctx); err != nil {
		c.cancel()
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

// waitServerInfo polls path until it holds JSON followed by the end marker, then parses it.
func waitServerInfo(ctx context.Context, path string) (*info.ServerInfo, error) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var last error
	for {
		b, err := os.ReadFile(path)
		switch {
		case err != nil:
			last = err
		case !strings.HasSuffix(string(b), info.END):
			last = errors.New("no end marker yet")
		default:
			si := &info.ServerInfo{}
			if err := json.Unmarshal(b[:len(b)-len(info.END)], si); err != nil {
				return nil, fmt.Errorf("parsing server info %s: %w", path, err)
			}
			return si, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for server info %s: %w (last: %v)", path, ctx.Err(), last)
		case <-t.C:
		}
	}
}

func (c *Client) waitReady(ctx context.Context, socket string) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := c.api.IsReady(cctx, &emptypb.Empty{})
		cancel()
		switch {
		case err != nil:
			last = err
		case resp.GetReady():
			return nil
		default:
			last = errors.New("IsReady answered false")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for source %s to be ready: %w (last: %v)", socket, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// openStreams opens ReadFn and AckFn and does both handshakes. The streams' context keeps ctx's
// values but not its cancellation: they live until Close.
func (c *Client) openStreams(ctx context.Context) error {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	// Dial's ctx bounds the handshakes.
	stop := context.AfterFunc(ctx, cancel)
	defer stop()

	rs, err := c.api.ReadFn(sctx)
	if err != nil {
		return fmt.Errorf("opening read stream: %w", withCtx(ctx, err))
	}
	if err := rs.Send(&sourcepb.ReadRequest{Handshake: &sourcepb.Handshake{Sot: true}}); err != nil {
		return fmt.Errorf("sending read handshake: %w", withCtx(ctx, err))
	}
	rr, err := rs.Recv()
	if err != nil {
		return fmt.Errorf("receiving read handshake: %w", withCtx(ctx, err))
	}
	if !rr.GetHandshake().GetSot() {
		return errors.New("receiving read handshake: response has no handshake")
	}

	as, err := c.api.AckFn(sctx)
	if err != nil {
		return fmt.Errorf("opening ack stream: %w", withCtx(ctx, err))
	}
	if err := as.Send(&sourcepb.AckRequest{Handshake: &sourcepb.Handshake{Sot: true}}); err != nil {
		return fmt.Errorf("sending ack handshake: %w", withCtx(ctx, err))
	}
	ar, err := as.Recv()
	if err != nil {
		return fmt.Errorf("receiving ack handshake: %w", withCtx(ctx, err))
	}
	if !ar.GetHandshake().GetSot() {
		return errors.New("receiving ack handshake: response has no handshake")
	}
	c.readStream, c.ackStream = rs, as
	return nil
}

// withCtx prefers ctx's error when ctx has ended (the stream error is then only its consequence).
func withCtx(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// NackSupported reports whether numa would send nacks to this source: only when the server info's
// language is one numa knows and its version parses as semver at least that language's first SDK with
// nacks (0.11.0; Rust 0.4.0).
func (c *Client) NackSupported() bool { return c.nack }

// ServerInfo returns the parsed server-info file.
func (c *Client) ServerInfo() info.ServerInfo { return *c.info }

// lock takes the actor lock and checks the client is usable.
func (c *Client) lock() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("client is closed")
	}
	if c.broken != nil {
		err := c.broken
		c.mu.Unlock()
		return fmt.Errorf("client is unusable after an earlier failure: %w", err)
	}
	return nil
}

// guard tears the streams down if ctx ends during a streaming call. Call the returned func when the
// call is over; it reports whether ctx ended during the call.
func (c *Client) guard(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, c.cancel)
}

// fail marks the client unusable (the streams are out of step) and returns err. Called with mu held.
func (c *Client) fail(ctx context.Context, err error) error {
	err = withCtx(ctx, err)
	c.broken = err
	c.cancel()
	return err
}

// Read sends one ReadFn request and collects messages until the end-of-transmission status.
func (c *Client) Read(ctx context.Context, count uint64, timeout time.Duration) ([]Message, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	stop := c.guard(ctx)
	defer stop()

	ms := timeout.Milliseconds()
	if ms < 0 {
		ms = 0
	}
	if ms > int64(^uint32(0)) {
		ms = int64(^uint32(0))
	}
	req := &sourcepb.ReadRequest{Request: &sourcepb.ReadRequest_Request{NumRecords: count, TimeoutInMs: uint32(ms)}}
	if err := c.readStream.Send(req); err != nil {
		return nil, c.fail(ctx, fmt.Errorf("sending read request: %w", err))
	}
	out := make([]Message, 0, min(count, 1<<12)) // numa reads batches of a few hundred
	for {
		resp, err := c.readStream.Recv()
		if err != nil {
			return nil, c.fail(ctx, fmt.Errorf("receiving read response: %w", err))
		}
		st := resp.GetStatus()
		if st.GetCode() != sourcepb.ReadResponse_Status_SUCCESS {
			return nil, c.fail(ctx, fmt.Errorf("reading: source answered %s (%s): %s", st.GetCode(), st.GetError(), st.GetMsg()))
		}
		if st.GetEot() {
			return out, nil
		}
		r := resp.GetResult()
		if r == nil {
			return nil, c.fail(ctx, errors.New("reading: response has neither result nor end of transmission"))
		}
		if err := numaTakes(r); err != nil {
			return nil, c.fail(ctx, fmt.Errorf("reading message %d of the batch: %w", len(out), err))
		}
		m := Message{
			Payload: r.GetPayload(),
			Offset:  Offset{Value: r.GetOffset().GetOffset(), Partition: r.GetOffset().GetPartitionId()},
			Keys:    r.GetKeys(),
			Headers: r.GetHeaders(),
		}
		if r.GetEventTime() != nil {
			m.EventTime = r.GetEventTime().AsTime()
		}
		out = append(out, m)
	}
}

// numaTakes reports why numa would not take a result as a message: it fails the whole read (a "user
// code error", and v1.8 restarts) for a result without an offset or with an empty one, and panics on
// one without an event time.
func numaTakes(r *sourcepb.ReadResponse_Result) error {
	switch {
	case r.GetOffset() == nil:
		return errors.New("result has no offset (numa fails the read)")
	case len(r.GetOffset().GetOffset()) == 0:
		return errors.New("result has an empty offset (numa fails the read)")
	case r.GetEventTime() == nil:
		return errors.New("result has no event time (numa panics)")
	}
	return partitionFits(r.GetOffset().GetPartitionId())
}

// maxPartition is the largest partition id numa keeps: it holds them as 16 bits.
const maxPartition = 1<<16 - 1

// partitionFits reports a partition id numa would cut to 16 bits: an offset of partition -1 would be
// acked as partition 65535, and a reported partition would be another watermark processor's.
func partitionFits(p int32) error {
	if p < 0 || p > maxPartition {
		return fmt.Errorf("partition id %d is outside 0..%d (numa takes it as %d)", p, maxPartition, uint16(p))
	}
	return nil
}

func toProtoOffsets(offsets []Offset) []*sourcepb.Offset {
	out := make([]*sourcepb.Offset, len(offsets))
	for i, o := range offsets {
		out[i] = &sourcepb.Offset{Offset: o.Value, PartitionId: o.Partition}
	}
	return out
}

// Ack sends one AckFn request with offsets (in the given order) and waits for its response.
func (c *Client) Ack(ctx context.Context, offsets []Offset) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	stop := c.guard(ctx)
	defer stop()

	req := &sourcepb.AckRequest{Request: &sourcepb.AckRequest_Request{Offsets: toProtoOffsets(offsets)}}
	if err := c.ackStream.Send(req); err != nil {
		return c.fail(ctx, fmt.Errorf("sending ack request: %w", err))
	}
	resp, err := c.ackStream.Recv()
	if err != nil {
		return c.fail(ctx, fmt.Errorf("receiving ack response: %w", err))
	}
	if resp.GetResult().GetSuccess() == nil {
		return c.fail(ctx, errors.New("acking: response is not a success"))
	}
	return nil
}

// Nack sends one NackFn request with one entry per offset, each with its own options (numa v1.8.2+).
// It does not check NackSupported: the caller decides whether numa would send it.
func (c *Client) Nack(ctx context.Context, items []NackItem) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	req := &sourcepb.NackRequest{Request: make([]*sourcepb.NackRequest_Request, len(items))}
	for i, it := range items {
		r := &sourcepb.NackRequest_Request{Offsets: toProtoOffsets([]Offset{it.Offset})}
		if o := it.Options; o != nil {
			r.NackOptions = &common.NackOptions{Delay: o.Delay, MaxDeliveries: o.MaxDeliveries, Reason: o.Reason}
		}
		req.Request[i] = r
	}
	resp, err := c.api.NackFn(ctx, req)
	if err != nil {
		return fmt.Errorf("nacking %d offsets: %w", len(items), err)
	}
	if resp.GetResult().GetSuccess() == nil {
		return fmt.Errorf("nacking %d offsets: response is not a success", len(items))
	}
	return nil
}

// Pending calls PendingFn. A negative count means the source does not know.
func (c *Client) Pending(ctx context.Context) (int64, error) {
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	resp, err := c.api.PendingFn(ctx, &emptypb.Empty{})
	if err != nil {
		return 0, fmt.Errorf("getting pending count: %w", err)
	}
	if resp.GetResult() == nil {
		return 0, errors.New("getting pending count: response has no result")
	}
	return resp.GetResult().GetCount(), nil
}

// Partitions calls PartitionsFn and returns the active partitions and the total (nil when the
// source does not know it).
func (c *Client) Partitions(ctx context.Context) ([]int32, *int32, error) {
	if err := c.lock(); err != nil {
		return nil, nil, err
	}
	defer c.mu.Unlock()
	resp, err := c.api.PartitionsFn(ctx, &emptypb.Empty{})
	if err != nil {
		return nil, nil, fmt.Errorf("getting partitions: %w", err)
	}
	r := resp.GetResult()
	if r == nil {
		return nil, nil, errors.New("getting partitions: response has no result")
	}
	for _, p := range r.GetPartitions() {
		if err := partitionFits(p); err != nil {
			return nil, nil, fmt.Errorf("getting partitions: %w", err)
		}
	}
	return r.GetPartitions(), r.TotalPartitions, nil
}

// Ready calls IsReady. Like numa's probes, it does not wait for the actor: it may run concurrently
// with the other calls.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	resp, err := c.api.IsReady(ctx, &emptypb.Empty{})
	if err != nil {
		return false, fmt.Errorf("checking readiness: %w", err)
	}
	return resp.GetReady(), nil
}

// Close half-closes both streams (the server sees end of stream), then closes the connection. It
// waits for a call in progress to finish. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.broken == nil {
		// Half-close and let the server end both streams by itself (it then sees a clean end of
		// stream rather than a cancellation), but do not wait for long.
		done := make(chan struct{}, 2)
		drain := func(close func() error, recv func() error) {
			_ = close()
			for recv() == nil {
			}
			done <- struct{}{}
		}
		go drain(c.readStream.CloseSend, func() error { _, err := c.readStream.Recv(); return err })
		go drain(c.ackStream.CloseSend, func() error { _, err := c.ackStream.Recv(); return err })
		t := time.NewTimer(closeWait)
		for range 2 {
			select {
			case <-done:
			case <-t.C:
			}
		}
		t.Stop()
	}
	c.cancel()
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("closing connection: %w", err)
	}
	return nil
}
