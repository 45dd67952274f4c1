package server

import (
	"bytes"
	"testing"

	sourcepb "github.com/numaproj/numaflow-go/pkg/apis/proto/source/v1"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

func TestBuffersSizeClasses(t *testing.T) {
	p := &sizeClasses{}
	for _, tt := range []struct{ length, wantCap int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {110 << 10, 128 << 10}, {1 << 20, 1 << 20},
		{1<<20 + 1, 2 << 20}, {64 << 20, 64 << 20}, {64<<20 + 1, 64<<20 + 1},
	} {
		b := p.Get(tt.length)
		if len(*b) != tt.length || cap(*b) != tt.wantCap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tt.length, len(*b), cap(*b), tt.length, tt.wantCap)
		}
	}
	// A returned buffer serves any length of its class, including a prefix returned shorter.
	b := p.Get(3000)
	(*b)[0] = 'x'
	*b = (*b)[:10]
	p.Put(b)
	if again := p.Get(4096); cap(*again) != 4096 || len(*again) != 4096 {
		t.Errorf("Get(4096) after Put: len %d cap %d", len(*again), cap(*again))
	}
	// Buffers that are not a class's size are not kept (a later Get could not use them in full).
	for _, c := range []int{0, 100, 128 << 20, 300} {
		odd := make([]byte, c)
		p.Put(&odd)
		if got := p.Get(256); cap(*got) != 256 {
			t.Errorf("Get(256) after a Put of a buffer of %d: cap %d", c, cap(*got))
		}
	}
}

// ProtoCodec must encode as grpc-go's codec does and decode what it encodes, from one frame or
// several, whatever a reused buffer held before.
func TestProtoCodecMatchesGRPC(t *testing.T) {
	grpcCodec := encoding.GetCodecV2("proto")
	c := ProtoCodec()
	if c.Name() != grpcCodec.Name() {
		t.Fatalf("name %q, want %q", c.Name(), grpcCodec.Name())
	}
	offsets := func(n int) *sourcepb.AckRequest {
		r := &sourcepb.AckRequest{Request: &sourcepb.AckRequest_Request{}}
		for i := range n {
			r.Request.Offsets = append(r.Request.Offsets, &sourcepb.Offset{Offset: bytes.Repeat([]byte{byte('a' + i%26)}, 40), PartitionId: int32(i)})
		}
		return r
	}
	// Dirty buffers of every class the messages below use: decoding must not see their bytes.
	for _, n := range []int{512, 4096, 65536, 131072} {
		b := buffers.Get(n)
		for i := range *b {
			(*b)[i] = 0xff
		}
		buffers.Put(b)
	}
	for _, n := range []int{0, 3, 500, 2000} {
		msg := offsets(n)
		want, err := grpcCodec.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want.Materialize()) {
			t.Fatalf("%d offsets: encoding differs from grpc-go's", n)
		}
		wire := got.Materialize()
		got.Free()
		want.Free()
		// As one frame and as frames of 1000 bytes (a message that spans HTTP/2 frames).
		for _, split := range []int{len(wire) + 1, 1000} {
			var data mem.BufferSlice
			for lo := 0; lo < len(wire); lo += split {
				data = append(data, mem.SliceBuffer(wire[lo:min(lo+split, len(wire))]))
			}
			var back sourcepb.AckRequest
			if err := c.Unmarshal(data, &back); err != nil {
				t.Fatalf("%d offsets in frames of %d: %v", n, split, err)
			}
			if !proto.Equal(&back, msg) {
				t.Fatalf("%d offsets in frames of %d: decoded message differs", n, split)
			}
		}
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff, 0xff})}, &sourcepb.AckRequest{}); err == nil {
		t.Error("garbage decoded without an error")
	}
}
