package numatest

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"time"
)

// Drained is what Drain measured.
type Drained struct {
	Messages    int       // distinct offsets read
	First, Last time.Time // the first read that returned messages; the last ack
}

// Rate is the steady rate in messages per second, from the first message to the last ack.
func (d Drained) Rate() float64 {
	if d.Messages < 2 || !d.Last.After(d.First) {
		return 0
	}
	return float64(d.Messages-1) / d.Last.Sub(d.First).Seconds()
}

// Drain plays numa's loop until n distinct offsets were read: read up to batch messages (1 s timeout),
// ack them all, repeat. onFirst, when not nil, runs as soon as the first messages arrive (to sample the
// source's CPU time, for example).
func (c *Client) Drain(ctx context.Context, n int, batch uint64, onFirst func()) (Drained, error) {
	// The distinct offsets, by a 64-bit hash of partition and value: a map without pointers, which the
	// garbage collector need not scan (one with a string per offset made numatest's collections scan
	// it again and again as it grew, CPU the connector then did not get). Two offsets sharing a hash
	// would count once; at a million offsets the odds are below one in ten million.
	seen := make(map[uint64]struct{}, n)
	seed := maphash.MakeSeed()
	var d Drained
	for len(seen) < n {
		msgs, err := c.Read(ctx, batch, time.Second)
		if err != nil {
			return d, err
		}
		if len(msgs) == 0 {
			continue
		}
		if d.First.IsZero() {
			d.First = time.Now()
			if onFirst != nil {
				onFirst()
			}
		}
		offs := make([]Offset, len(msgs))
		for i, m := range msgs {
			offs[i] = m.Offset
			seen[offsetHash(seed, m.Offset)] = struct{}{}
		}
		if err := c.Ack(ctx, offs); err != nil {
			return d, err
		}
		d.Last = time.Now()
		d.Messages = len(seen)
	}
	return d, nil
}

func offsetHash(seed maphash.Seed, o Offset) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var p [4]byte
	binary.LittleEndian.PutUint32(p[:], uint32(o.Partition))
	_, _ = h.Write(p[:])
	_, _ = h.Write(o.Value)
	return h.Sum64()
}

// maxISBWindow bounds the offsets isbWindow remembers (about 40 MiB): past it, the oldest are
// forgotten before the window ends, so a fast run does not hold a minute of offsets.
const maxISBWindow = 1 << 20

// isbWindow is a pipeline's ISB as numa meets it: the offsets written within the duplicate window,
// by a 64-bit hash (see Drain), oldest first.
type isbWindow struct {
	seed  maphash.Seed
	at    map[uint64]time.Time
	order []isbWrite
}

type isbWrite struct {
	h  uint64
	at time.Time
}

// has reports whether o was written within window before now.
func (w *isbWindow) has(o Offset, now time.Time, window time.Duration) bool {
	if w.at == nil {
		return false
	}
	at, ok := w.at[offsetHash(w.seed, o)]
	return ok && now.Sub(at) < window
}

// add records offsets written at now and forgets those older than window. A duplicate write does
// not renew an offset (JetStream's window runs from the first).
func (w *isbWindow) add(offs []Offset, now time.Time, window time.Duration) {
	if w.at == nil {
		w.seed, w.at = maphash.MakeSeed(), map[uint64]time.Time{}
	}
	for _, o := range offs {
		h := offsetHash(w.seed, o)
		if at, ok := w.at[h]; ok && now.Sub(at) < window {
			continue
		}
		w.at[h] = now
		w.order = append(w.order, isbWrite{h, now})
	}
	drop := 0
	for drop < len(w.order) && (now.Sub(w.order[drop].at) >= window || len(w.order)-drop > maxISBWindow) {
		if e := w.order[drop]; w.at[e.h] == e.at {
			delete(w.at, e.h)
		}
		drop++
	}
	if drop > 0 {
		w.order = append(w.order[:0:0], w.order[drop:]...)
	}
}
