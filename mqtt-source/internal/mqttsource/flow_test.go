package mqttsource

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// chunkReader returns what it holds in reads of 1 to max bytes, sizes drawn from rng.
type chunkReader struct {
	b   []byte
	rng *rand.Rand
	max int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b), 1+r.rng.IntN(r.max))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// packet is one MQTT control packet: first byte, remaining-length varint, body of zeros.
func packet(first byte, bodyLen int) []byte {
	b := []byte{first}
	n := bodyLen
	for {
		digit := byte(n % 128)
		n /= 128
		if n > 0 {
			digit |= 0x80
		}
		b = append(b, digit)
		if n == 0 {
			break
		}
	}
	return append(b, make([]byte, bodyLen)...)
}

// flowConn must count every PUBLISH packet it reads, with its size on the wire (fixed header
// included), and nothing else (other packets, QoS 2 duplicates), however the stream is cut into reads:
// generated streams of packets of every remaining-length width, read in chunks of random size.
func TestFlowConnCountsPublishPackets(t *testing.T) {
	firsts := []byte{
		mqttPublish<<4 | 0<<1, mqttPublish<<4 | 1<<1, mqttPublish<<4 | 2<<1, // QoS 0, 1, 2
		mqttPublish<<4 | 1<<1 | 0x08, mqttPublish<<4 | 2<<1 | 0x08 | 0x01, // DUP QoS 1; DUP QoS 2 (not counted), retained
		4 << 4, 6<<4 | 0x02, 13 << 4, // PUBACK, PUBREL, PINGRESP
	}
	sizes := []int{0, 1, 2, 126, 127, 128, 129, 1000, 16383, 16384, 20000, 2_097_151, 2_097_152}
	for seed := range 60 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		var stream []byte
		var want []int64
		for range 1 + rng.IntN(40) {
			first := firsts[rng.IntN(len(firsts))]
			size := sizes[rng.IntN(len(sizes))]
			if rng.IntN(4) > 0 {
				size = min(size, 2000) // mostly small, so a schedule stays quick
			}
			p := packet(first, size)
			stream = append(stream, p...)
			qos, dup := (first>>1)&3, first&0x08 != 0
			if first>>4 == mqttPublish && !(qos == 2 && dup) {
				want = append(want, int64(len(p)))
			}
		}
		d := &driver{maxBytes: 1 << 62, maxQueue: 1 << 30}
		c := &flowConn{d: d, r: bufio.NewReaderSize(&chunkReader{b: stream, rng: rng, max: []int{1, 7, 4096, 1 << 20}[seed%4]}, readBuffer)}
		var read bytes.Buffer
		buf := make([]byte, 1+rng.IntN(64<<10))
		for {
			n, err := c.Read(buf[:1+rng.IntN(len(buf))])
			read.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(read.Bytes(), stream) {
			t.Fatalf("seed %d: flowConn changed the bytes it passed on", seed)
		}
		var total int64
		for _, s := range want {
			total += s
		}
		if !slices.Equal(d.inPaho, want) || d.inPahoBytes != total {
			t.Fatalf("seed %d: counted %v (%d bytes), want %v (%d bytes)", seed, d.inPaho, d.inPahoBytes, want, total)
		}
		if c.body != 0 || c.inHead {
			t.Fatalf("seed %d: framing left mid-packet (body %d, in header %v)", seed, c.body, c.inHead)
		}
	}
}
