package memsource

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestScanSkipMatchesAFullScan drives one queue through generated schedules of leases, nacks, extensions
// (longer and shorter), acks, publishes and the passing of time, and checks after every step that
// scan, which skips the prefix it has seen gone or invisible, finds exactly the readable entries a walk
// of the whole queue finds, and never wakes a receiver later than the earliest invisible entry.
func TestScanSkipMatchesAFullScan(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		q := &queue{}
		now := time.Unix(1_000_000, 0)
		var seq uint64
		publish := func(n int) {
			for range n {
				seq++
				q.order = append(q.order, &entry{q: q, seq: seq, visibleAt: now})
				q.live++
			}
		}
		pick := func() *entry { // a random entry still in the queue, or nil
			if len(q.order) == 0 {
				return nil
			}
			e := q.order[r.IntN(len(q.order))]
			if e.gone {
				return nil
			}
			return e
		}
		ms := func(n int) time.Duration { return time.Duration(r.IntN(n)) * time.Millisecond }
		publish(1 + r.IntN(40))
		for step := range 300 {
			switch op := r.IntN(10); {
			case op < 3: // receive up to max, leasing what it takes
				max, lease := 1+r.IntN(8), ms(500)+time.Millisecond
				taken := 0
				q.scan(now, false, func(e *entry) bool {
					if taken >= max {
						return false
					}
					taken++
					e.receipt = 1
					e.visibleAt = now.Add(lease)
					return true
				})
			case op == 3: // nack, maybe with a delay
				if e := pick(); e != nil {
					q.setVisible(e, now.Add(ms(3)*100))
					e.receipt = 0
				}
			case op == 4: // extend: longer or shorter than the lease it has
				if e := pick(); e != nil {
					q.setVisible(e, now.Add(ms(600)))
				}
			case op < 7: // ack
				if e := pick(); e != nil {
					q.remove(e)
				}
			case op == 7:
				publish(r.IntN(5))
			default:
				now = now.Add(ms(200))
			}

			var want []uint64
			var wantNext time.Time
			for _, e := range q.order {
				switch {
				case e.gone:
				case e.visibleAt.After(now):
					if wantNext.IsZero() || e.visibleAt.Before(wantNext) {
						wantNext = e.visibleAt
					}
				default:
					want = append(want, e.seq)
				}
			}
			var got []uint64
			next := q.scan(now, false, func(e *entry) bool { got = append(got, e.seq); return true })
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d: scan found %v, the queue has %v readable (skip %d)", seed, step, got, want, q.skip)
			}
			if !wantNext.IsZero() && (next.IsZero() || next.After(wantNext)) {
				t.Fatalf("seed %d step %d: scan wakes at %v, an entry is visible at %v", seed, step, next, wantNext)
			}
		}
	}
}
