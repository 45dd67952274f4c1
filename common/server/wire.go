package server

import (
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the proto codec ProtoCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/numaflow-connectors/sources/common/source"
)

// readResult is one source.v1 ReadResponse carrying a message, as numaflow-go sends it: the result
// (payload, offset, event time, keys, headers, an empty metadata) and a status that is neither
// end-of-transmission nor a failure. wireCodec encodes it straight from the adapter's message: protobuf's
// reflection-driven Size and Marshal of a freshly built response cost more than the rest of the
// path. TestWireMatchesProto checks the bytes decode to the response numaflow-go would build.
type readResult struct {
	m       *source.WireMessage
	resSize int // resultSize, kept by size for appendTo (0: not computed yet)
}

// Field numbers of source.v1 and google.protobuf.Timestamp.
const (
	respResult = 1 // ReadResponse.result
	respStatus = 2 // ReadResponse.status

	resPayload   = 1 // ReadResponse.Result.payload
	resOffset    = 2 // .offset
	resEventTime = 3 // .event_time
	resKeys      = 4 // .keys
	resHeaders   = 5 // .headers (map entries: key 1, value 2)
	resMetadata  = 6 // .metadata

	offValue     = 1 // Offset.offset
	offPartition = 2 // Offset.partition_id

	tsSeconds = 1
	tsNanos   = 2
)

func (r *readResult) offsetSize() int {
	m := r.m
	n := 0
	if len(m.ID) > 0 {
		n += protowire.SizeTag(offValue) + protowire.SizeBytes(len(m.ID))
	}
	if m.Partition != 0 {
		n += protowire.SizeTag(offPartition) + protowire.SizeVarint(uint64(m.Partition))
	}
	return n
}

func (r *readResult) timeSize() int {
	sec, nanos := r.m.EventTime.Unix(), r.m.EventTime.Nanosecond()
	n := 0
	if sec != 0 {
		n += protowire.SizeTag(tsSeconds) + protowire.SizeVarint(uint64(sec))
	}
	if nanos != 0 {
		n += protowire.SizeTag(tsNanos) + protowire.SizeVarint(uint64(nanos))
	}
	return n
}

func entrySize(k, v string) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(k)) + protowire.SizeTag(2) + protowire.SizeBytes(len(v))
}

func (r *readResult) resultSize() int {
	m := r.m
	n := 0
	if len(m.Payload) > 0 {
		n += protowire.SizeTag(resPayload) + protowire.SizeBytes(len(m.Payload))
	}
	n += protowire.SizeTag(resOffset) + protowire.SizeBytes(r.offsetSize())
	n += protowire.SizeTag(resEventTime) + protowire.SizeBytes(r.timeSize())
	for _, k := range m.Keys {
		n += protowire.SizeTag(resKeys) + protowire.SizeBytes(len(k))
	}
	for k, v := range m.Headers {
		n += protowire.SizeTag(resHeaders) + protowire.SizeBytes(entrySize(k, v))
	}
	n += protowire.SizeTag(resMetadata) + protowire.SizeBytes(0)
	return n
}

func (r *readResult) size() int {
	r.resSize = r.resultSize()
	return protowire.SizeTag(respResult) + protowire.SizeBytes(r.resSize) +
		protowire.SizeTag(respStatus) + protowire.SizeBytes(0)
}

func (r *readResult) appendTo(b []byte) []byte {
	m := r.m
	if r.resSize == 0 {
		r.resSize = r.resultSize()
	}
	b = protowire.AppendTag(b, respResult, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(r.resSize))
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, resPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	b = protowire.AppendTag(b, resOffset, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(r.offsetSize()))
	if len(m.ID) > 0 {
		b = protowire.AppendTag(b, offValue, protowire.BytesType)
		b = protowire.AppendString(b, m.ID)
	}
	if m.Partition != 0 {
		b = protowire.AppendTag(b, offPartition, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Partition))
	}
	b = protowire.AppendTag(b, resEventTime, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(r.timeSize()))
	if sec := m.EventTime.Unix(); sec != 0 {
		b = protowire.AppendTag(b, tsSeconds, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(sec))
	}
	if nanos := m.EventTime.Nanosecond(); nanos != 0 {
		b = protowire.AppendTag(b, tsNanos, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(nanos))
	}
	for _, k := range m.Keys {
		b = protowire.AppendTag(b, resKeys, protowire.BytesType)
		b = protowire.AppendString(b, k)
	}
	for k, v := range m.Headers {
		b = protowire.AppendTag(b, resHeaders, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(k, v)))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, v)
	}
	b = protowire.AppendTag(b, resMetadata, protowire.BytesType)
	b = protowire.AppendVarint(b, 0)
	b = protowire.AppendTag(b, respStatus, protowire.BytesType)
	return protowire.AppendVarint(b, 0)
}

// wireCodec is ProtoCodec plus readResult.
type wireCodec struct {
	proto encoding.CodecV2
}

func newWireCodec() wireCodec { return wireCodec{proto: ProtoCodec()} }

// Marshal encodes a readResult straight from the message (into a buffer of our pool, see encode), and
// anything else as protobuf.
func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*readResult)
	if !ok {
		return c.proto.Marshal(v)
	}
	return encode(r.size(), func(b []byte) ([]byte, error) { return r.appendTo(b), nil })
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is the proto codec's: the content type numa sends and expects.
func (c wireCodec) Name() string { return c.proto.Name() }
