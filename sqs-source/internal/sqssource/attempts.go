package sqssource

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// A FIFO receive whose answer is lost (a network cut, a timeout, a server error after SQS handed the
// messages out) leaves those messages invisible for a whole visibility timeout, and with them every
// later message of their groups. SQS's remedy is ReceiveRequestAttemptId: a retry with the same id
// within five minutes returns the same messages with the same receipt handles. The driver sends one
// per FIFO receive and, after a failure that may have lost an answer, makes the next receive a retry of
// it (same id, same message count).

// attemptReuse is how long a lost attempt is retried: SQS deduplicates attempts for 5 minutes; the
// margin covers a retry that is itself slow.
const attemptReuse = 4 * time.Minute

// attempts hands out receive attempt ids and keeps the lost ones for a retry.
type attempts struct {
	prefix string // random per driver: ids of two replicas never collide

	mu   sync.Mutex
	seq  uint64
	lost []attempt
}

// attempt is one receive attempt: its id, how many messages it asked for, and when it was first made.
type attempt struct {
	id    string
	n     int
	since time.Time
}

func newAttempts() *attempts {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return &attempts{prefix: hex.EncodeToString(b)}
}

// next returns the attempt to make for a receive of at most max messages: the oldest lost attempt
// that asked for no more than max and is still within attemptReuse, else a new one for max.
func (a *attempts) next(max int, now time.Time) attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	keep := a.lost[:0]
	var found *attempt
	for _, l := range a.lost {
		switch {
		case now.Sub(l.since) >= attemptReuse: // expired at SQS: its messages reappear by themselves
		case found == nil && l.n <= max:
			found = &attempt{l.id, l.n, l.since}
		default:
			keep = append(keep, l)
		}
	}
	clear(a.lost[len(keep):])
	a.lost = keep
	if found != nil {
		return *found
	}
	a.seq++
	return attempt{id: a.prefix + "-" + strconv.FormatUint(a.seq, 10), n: max, since: now}
}

// failed records that at ended in err: an error after which SQS may have handed out messages (the
// connection broke, the answer timed out, a server error) keeps the attempt for a retry. A refusal
// (throttled, bad request, no permission, no queue) delivered nothing.
func (a *attempts) failed(at attempt, err error) {
	switch errorCode(err) {
	case source.Throttled, source.NotFound, source.PermissionDenied, source.InvalidArgument, source.FailedPrecondition:
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lost = append(a.lost, at)
}

// pending reports how many lost attempts wait for a retry (for tests).
func (a *attempts) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lost)
}
