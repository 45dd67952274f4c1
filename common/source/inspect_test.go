package source

import "slices"

// snapshot is what the model test checks between steps. Counts follow the ledger's budgets: a
// delayed message read again stays in the delayed pool (Delayed, DelayedBytes), so Buffered+InFlight
// and HeldBytes are exactly what PREFETCH and PREFETCH_BYTES bound.
type snapshot struct {
	Buffered, InFlight, Delayed, Committing int      // records per pool (see above)
	HeldBytes                               int64    // payload bytes of the receive pool
	DelayedBytes                            int64    // payload bytes of the delayed pool
	InFlightIDs                             []string // message IDs handed to numa and not yet answered
}

// snapshot reads the adapter's ledger. It is the only test code that knows the adapter's internals:
// re-implement it (and nothing else) when they change.
func (s *Source) snapshot() snapshot {
	l := s.led
	l.mu.Lock()
	defer l.mu.Unlock()
	var out snapshot
	for _, r := range l.recs {
		if r.state == inFlight {
			out.InFlightIDs = append(out.InFlightIDs, r.msg.ID)
		}
		switch {
		case r.pool == delayPool:
			out.Delayed++
		case r.state == buffered:
			out.Buffered++
		case r.state == inFlight:
			out.InFlight++
		case r.state == committing:
			out.Committing++
		}
	}
	out.HeldBytes = l.pools[receivePool].bytes
	out.DelayedBytes = l.pools[delayPool].bytes
	slices.Sort(out.InFlightIDs)
	return out
}

// Snapshot and SnapshotOf export the hook to the external tests of this folder (package source_test:
// they use memsource, which imports this package, so they cannot be internal tests).
type Snapshot = snapshot

// SnapshotOf returns s.snapshot().
func SnapshotOf(s *Source) Snapshot { return s.snapshot() }
