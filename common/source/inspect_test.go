package source

import "slices"

// snapshot is what the model test checks between steps.
type snapshot struct {
	Buffered, InFlight, Delayed, Committing int      // records per state
	HeldBytes                               int64    // payload bytes of buffered + in-flight records
	DelayedBytes                            int64    // payload bytes of locally delayed records
	InFlightIDs                             []string // message IDs handed to numa and not yet answered
}

// snapshot reads the adapter's ledger. It is the only test code that knows the adapter's internals:
// re-implement it (and nothing else) when they change.
func (s *Source) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out snapshot
	for _, r := range s.recs {
		n := int64(len(r.msg.Payload))
		switch r.state {
		case buffered:
			out.Buffered++
			out.HeldBytes += n
		case inFlight:
			out.InFlight++
			out.HeldBytes += n
			out.InFlightIDs = append(out.InFlightIDs, r.msg.ID)
		case delayed:
			out.Delayed++
			out.DelayedBytes += n
		case committing:
			out.Committing++
		}
	}
	slices.Sort(out.InFlightIDs)
	return out
}

// Snapshot and SnapshotOf export the hook to the external tests of this folder (package source_test:
// they use memsource, which imports this package, so they cannot be internal tests).
type Snapshot = snapshot

// SnapshotOf returns s.snapshot().
func SnapshotOf(s *Source) Snapshot { return s.snapshot() }
