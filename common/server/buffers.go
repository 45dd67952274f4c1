package server

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// buffers is a gRPC buffer pool (mem.BufferPool) for buffers that are written in full before they are
// read: it neither clears a buffer it hands out again nor rounds a size up by more than twice.
// grpc-go's default pool does both: it zeroes every reused buffer, and has no size between 32 KiB and
// 1 MiB, so a 110 KiB reply took a 1 MiB buffer and cleared all of it (a Pub/Sub Pull of a hundred
// 1 KiB messages; a 100 KiB message sent to numa). Only the codecs here use it, where every byte of a
// buffer is written before any is read.
var buffers mem.BufferPool = &sizeClasses{}

// Sizes 2^minClass to 2^maxClass bytes are pooled, each in a class of its own; others are allocated.
const (
	minClass = 8  // 256 B
	maxClass = 26 // 64 MiB, maxMessageSize
)

// sizeClasses pools buffers by capacity, one sync.Pool per power of two.
type sizeClasses struct {
	pools [maxClass + 1]sync.Pool
}

// class is the smallest class whose buffers hold n bytes (n > 0).
func class(n int) int {
	return max(bits.Len(uint(n-1)), minClass)
}

func (p *sizeClasses) Get(length int) *[]byte {
	c := class(max(length, 1))
	if c > maxClass {
		b := make([]byte, length)
		return &b
	}
	if b, ok := p.pools[c].Get().(*[]byte); ok {
		*b = (*b)[:length]
		return b
	}
	b := make([]byte, length, 1<<c)
	return &b
}

func (p *sizeClasses) Put(b *[]byte) {
	n := cap(*b)
	c := bits.Len(uint(n)) - 1 // the class a buffer of this capacity can serve in full
	if n == 0 || c < minClass || c > maxClass || n != 1<<c {
		return // not one of ours: let the garbage collector have it
	}
	p.pools[c].Put(b)
}

// encode returns a message of size bytes that fill appends to an empty buffer: a buffer of the pool when
// the message is big enough for pooling (grpc-go frees it once written).
func encode(size int, fill func([]byte) ([]byte, error)) (mem.BufferSlice, error) {
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := fill(make([]byte, 0, size))
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := buffers.Get(size)
	b, err := fill((*buf)[:0])
	if err != nil {
		buffers.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, buffers)}, nil
}

// ProtoCodec is grpc-go's proto codec with its buffers from our pool (see buffers): grpc-go's own
// codec takes them from its default pool, whatever pool the connection has. A connector's own gRPC
// client can use it: grpc.WithDefaultCallOptions(grpc.ForceCodecV2(server.ProtoCodec())).
func ProtoCodec() encoding.CodecV2 { return protoCodec{encoding.GetCodecV2("proto")} }

type protoCodec struct {
	encoding.CodecV2 // Name, and messages that are not proto.Message (grpc-go's codec adapts them)
}

func (c protoCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	opts := proto.MarshalOptions{UseCachedSize: true} // Size below caches every size
	data, err := encode(proto.Size(m), func(b []byte) ([]byte, error) { return opts.MarshalAppend(b, m) })
	if err != nil {
		return nil, fmt.Errorf("failed to marshal, message is %T: %w", v, err)
	}
	return data, nil
}

func (c protoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(buffers) // one frame is used as it is; several are copied in full
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), m); err != nil {
		return fmt.Errorf("failed to unmarshal, message is %T: %w", v, err)
	}
	return nil
}
