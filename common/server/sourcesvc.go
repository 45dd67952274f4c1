package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/numaproj/numaflow-go/pkg/apis/proto/common"
	sourcepb "github.com/numaproj/numaflow-go/pkg/apis/proto/source/v1"
	"github.com/numaproj/numaflow-go/pkg/info"
	"github.com/numaproj/numaflow-go/pkg/sourcer"
	epb "google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/numaflow-connectors/sources/common/source"
)

// numa's source protocol (source.v1) served over the adapter directly. numaflow-go's server hands every
// message through an unbuffered channel to a goroutine that builds a new response (and a new offset and
// timestamp) for it, which protobuf then sizes and marshals by reflection; this service sends each
// message from the reading goroutine, encoded straight from the adapter's message (wire.go). The wire
// is the same: numaflow-go's
// generated types, its handshake, and its server-info file (whose version fields numa gates features
// on), so numaflow-go stays the versioned dependency numa sees. numatest and the conformance suite
// drive this server.

// maxMessageSize is numaflow-go's limit for a gRPC message in either direction.
const maxMessageSize = 64 << 20

// sourceService implements sourcepb.SourceServer over the adapter.
type sourceService struct {
	sourcepb.UnimplementedSourceServer
	src           *source.Source
	containerType string      // NUMAFLOW_UD_CONTAINER_TYPE, named in a handler's error as numaflow-go does
	fatal         func(error) // a handler panicked: the server must stop (numaflow-go does the same)
}

// Listen is where ServeSource serves numa, and as what.
type Listen struct {
	Socket         string // the unix socket numa connects to (SOURCE_SOCKET)
	ServerInfoFile string // the file numa reads first (SOURCE_SERVER_INFO_FILE)
	ContainerType  string // named in a handler's error (NUMAFLOW_UD_CONTAINER_TYPE); "" for unknown-container
}

// ServeSource writes the server-info file, listens on the unix socket and serves src until ctx ends
// (then stops at once: the source is closed by then) or a handler panics (the error is returned).
func ServeSource(ctx context.Context, src *source.Source, l Listen) error {
	socket, infoFile, containerType := l.Socket, l.ServerInfoFile, l.ContainerType
	if containerType == "" {
		containerType = "unknown-container"
	}
	si := info.GetDefaultServerInfo()
	si.MinimumNumaflowVersion = info.MinimumNumaflowVersion[info.Sourcer]
	if err := info.Write(si, info.WithServerInfoFilePath(infoFile)); err != nil {
		return fmt.Errorf("writing the server info file: %w", err)
	}
	if err := os.RemoveAll(socket); err != nil {
		return fmt.Errorf("removing an old socket: %w", err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socket, err)
	}
	defer lis.Close()

	g := grpc.NewServer(grpc.MaxRecvMsgSize(maxMessageSize), grpc.MaxSendMsgSize(maxMessageSize), grpc.WriteBufferSize(256<<10),
		grpc.ForceServerCodecV2(newWireCodec()))
	fatal := make(chan error, 1)
	sourcepb.RegisterSourceServer(g, &sourceService{src: src, containerType: containerType, fatal: func(err error) {
		select {
		case fatal <- err:
		default:
		}
	}})
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	select {
	case <-ctx.Done():
		g.Stop()
		<-served
		return nil
	case err := <-fatal:
		g.Stop()
		<-served
		return err
	case err := <-served:
		return err
	}
}

// recovered turns a panic in a handler into the error numa expects (codes.Internal,
// UDF_EXECUTION_ERROR) and stops the server. Use as: defer s.recovered(&err).
func (s *sourceService) recovered(err *error) {
	r := recover()
	if r == nil {
		return
	}
	stack := string(debug.Stack())
	st, _ := status.Newf(codes.Internal, "UDF_EXECUTION_ERROR(%s): %v", s.containerType, r).WithDetails(&epb.DebugInfo{Detail: stack})
	*err = st.Err()
	s.fatal(fmt.Errorf("panic in a source handler: %v\n%s", r, stack))
}

// ReadFn answers numa's read requests on one stream, one at a time: each message in its own response,
// then an end-of-transmission status.
func (s *sourceService) ReadFn(stream sourcepb.Source_ReadFnServer) (err error) {
	defer s.recovered(&err)
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	if !req.GetHandshake().GetSot() {
		return errors.New("expected handshake message")
	}
	if err := stream.Send(&sourcepb.ReadResponse{Status: &sourcepb.ReadResponse_Status{}, Handshake: &sourcepb.Handshake{Sot: true}}); err != nil {
		return err
	}
	ctx := stream.Context() // the adapter tells numa's streams apart by it
	eot := &sourcepb.ReadResponse{Status: &sourcepb.ReadResponse_Status{Eot: true}}
	var one readResult // encoded by wireCodec (wire.go)
	emit := func(m *source.WireMessage) error {
		one = readResult{m: m}
		return stream.SendMsg(&one)
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return streamEnd(err)
		}
		r := req.GetRequest()
		timeout := time.Duration(r.GetTimeoutInMs()) * time.Millisecond
		if err := s.src.ReadEach(ctx, r.GetNumRecords(), timeout, emit); err != nil {
			return err
		}
		if err := stream.Send(eot); err != nil {
			return err
		}
	}
}

// streamEnd is a stream's outcome after Recv failed with err: numa closing or cancelling it is a normal
// end.
func streamEnd(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// offsets reuses one slice of offsets per stream for the adapter's requests.
type offsets struct {
	list []sourcer.Offset
}

func (o *offsets) Offsets() []sourcer.Offset { return o.list }

func (o *offsets) fill(pb []*sourcepb.Offset) *offsets {
	o.list = o.list[:0]
	for _, x := range pb {
		o.list = append(o.list, sourcer.NewOffset(x.GetOffset(), x.GetPartitionId()))
	}
	return o
}

// AckFn answers every ack request on one stream once the adapter has taken the offsets (it commits
// them in the background).
func (s *sourceService) AckFn(stream sourcepb.Source_AckFnServer) (err error) {
	defer s.recovered(&err)
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	if !req.GetHandshake().GetSot() {
		return errors.New("expected handshake message")
	}
	ok := &sourcepb.AckResponse{Result: &sourcepb.AckResponse_Result{Success: &emptypb.Empty{}}}
	if err := stream.Send(&sourcepb.AckResponse{Result: ok.Result, Handshake: &sourcepb.Handshake{Sot: true}}); err != nil {
		return err
	}
	ctx := stream.Context()
	var offs offsets
	for {
		req, err := stream.Recv()
		if err != nil {
			return streamEnd(err)
		}
		s.src.Ack(ctx, offs.fill(req.GetRequest().GetOffsets()))
		if err := stream.Send(ok); err != nil {
			return err
		}
	}
}

// nacks is a sourcer.NackRequest.
type nacks []sourcer.NackOffset

func (n nacks) Offsets() []sourcer.NackOffset { return n }

// NackFn hands numa's nacks, each offset with its options, to the adapter.
func (s *sourceService) NackFn(ctx context.Context, req *sourcepb.NackRequest) (_ *sourcepb.NackResponse, err error) {
	defer s.recovered(&err)
	var list nacks
	for _, r := range req.GetRequest() {
		opts := nackOptions(r.GetNackOptions())
		for _, o := range r.GetOffsets() {
			list = append(list, sourcer.NackOffset{Offset: sourcer.NewOffset(o.GetOffset(), o.GetPartitionId()), NackOptions: opts})
		}
	}
	s.src.Nack(ctx, list)
	return &sourcepb.NackResponse{Result: &sourcepb.NackResponse_Result{Success: &emptypb.Empty{}}}, nil
}

func nackOptions(p *common.NackOptions) *sourcer.NackOptions {
	if p == nil {
		return nil
	}
	return &sourcer.NackOptions{Delay: p.Delay, MaxDeliveries: p.MaxDeliveries, Reason: p.Reason}
}

// PendingFn reports the adapter's backlog (-1 when unknown).
func (s *sourceService) PendingFn(ctx context.Context, _ *emptypb.Empty) (_ *sourcepb.PendingResponse, err error) {
	defer s.recovered(&err)
	return &sourcepb.PendingResponse{Result: &sourcepb.PendingResponse_Result{Count: s.src.Pending(ctx)}}, nil
}

// PartitionsFn reports this replica's partition.
func (s *sourceService) PartitionsFn(ctx context.Context, _ *emptypb.Empty) (_ *sourcepb.PartitionsResponse, err error) {
	defer s.recovered(&err)
	return &sourcepb.PartitionsResponse{Result: &sourcepb.PartitionsResponse_Result{
		Partitions: s.src.ActivePartitions(ctx), TotalPartitions: s.src.TotalPartitions(ctx)}}, nil
}

// IsReady answers numa's readiness probe of the socket.
func (s *sourceService) IsReady(context.Context, *emptypb.Empty) (*sourcepb.ReadyResponse, error) {
	return &sourcepb.ReadyResponse{Ready: true}, nil
}
