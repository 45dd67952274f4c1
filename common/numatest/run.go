package numatest

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Action is what the loop does with a message after reading it.
type Action int

const (
	// ActionAck acks the message (it was written downstream).
	ActionAck Action = iota
	// ActionNack nacks the message with Decision.Options (writing it failed).
	ActionNack
	// ActionHold neither acks nor nacks it, like a numa that crashed after reading: the source must
	// redeliver it by itself (lease expiry). It stays in flight in this client.
	ActionHold
)

func (a Action) String() string {
	switch a {
	case ActionAck:
		return "ack"
	case ActionNack:
		return "nack"
	case ActionHold:
		return "hold"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the fate of one message.
type Decision struct {
	Action  Action
	Options *NackOptions // for ActionNack; nil sends no options
}

// Ack, Hold and Nack build decisions.
var (
	Ack  = Decision{Action: ActionAck}
	Hold = Decision{Action: ActionHold}
)

// Nack returns a nack decision with options (may be nil).
func Nack(o *NackOptions) Decision { return Decision{Action: ActionNack, Options: o} }

// Defaults of LoopOptions, numa's own.
const (
	DefaultBatchSize       = 500
	DefaultTimeout         = time.Second
	DefaultPendingEvery    = 5 * time.Second
	DefaultPartitionsEvery = 10 * time.Second
	// DefaultStopGrace bounds how long the batch in progress may take once Run's ctx has ended.
	DefaultStopGrace = 30 * time.Second
	// DefaultDedupWindow is the ISB's duplicate window (JetStream's, as numa sets it up).
	DefaultDedupWindow = 60 * time.Second
	// DefaultMaxPayload is the ISB's max_payload: JetStream's 1 MiB, unless the ISB service raises it.
	DefaultMaxPayload = 1 << 20
)

// ErrOverMaxPayload: Run read a message larger than the ISB's max_payload (LoopOptions.MaxPayload).
// numa cannot write it to the buffer and retries it forever, never acking it: the vertex stalls.
var ErrOverMaxPayload = errors.New("a message is larger than the ISB's max_payload: numa cannot write it and retries it forever")

// ErrPendingBelowInFlight: with LoopOptions.PendingStrict, a PendingFn answer taken between a Read and
// its Ack was below the messages that Read returned, which the source had handed out and not yet had
// answered. The contract counts read-but-unacked messages in the backlog: numa's lag reader runs on its
// own timer and mostly lands while a batch is written to the ISB, so an answer that leaves them out
// tells the autoscaler a backlog smaller than it is (0 while numa holds a batch scales to zero).
var ErrPendingBelowInFlight = errors.New("PendingFn answered less than the messages read and not yet acked")

// LoopOptions configure Run. Zero values take numa's defaults.
type LoopOptions struct {
	BatchSize uint64        // num_records of each read; default 500
	Timeout   time.Duration // timeout_in_ms of each read; default 1 s
	// Decide chooses each message's fate; nil acks everything.
	Decide func(Message) Decision
	// AckDelay is slept before acking each batch (a slow pipeline). Cut short when ctx ends.
	AckDelay time.Duration
	// Limit stops the loop after this many messages were acked or held (nacked ones come back and
	// are not counted); 0 means no limit. Reads never ask for more than what is left.
	Limit int64
	// Idle stops the loop after this many consecutive empty reads; 0 means never.
	Idle int
	// PendingEvery and PartitionsEvery schedule PendingFn (default 5 s) and PartitionsFn (default
	// 10 s), first before the first read. Negative disables. PartitionsFn is called between batches.
	// PendingFn runs where numa's own timer lands it: numa's lag reader waits for the source's actor,
	// which is free while a batch is written to the ISB, so a call that came due during a non-empty
	// Read (or AckDelay, the ISB write) is made after it, before that batch's Ack
	// (Stats.PendingMidBatch); one that came due during an empty read or an Ack, before the next Read.
	PendingEvery    time.Duration
	PartitionsEvery time.Duration
	// PendingStrict ends Run with ErrPendingBelowInFlight when a known PendingFn answer taken between a
	// Read and its Ack is below the messages that Read returned (they are read but not yet acked, so
	// they are part of the backlog). Without it such answers are only counted (Stats.PendingShort).
	PendingStrict bool
	// StopGrace bounds the batch in progress once ctx has ended (default 30 s): the read returns by
	// its timeout, then the batch is acked and nacked, then Run returns.
	StopGrace time.Duration
	// DedupWindow plays the ISB of a pipeline: numa writes each message under an id made from its
	// offset, JetStream drops an id written within this window (default 60 s) and numa acks the
	// message as written. Such a message is acked without reaching Decide or OnBatch (a source that
	// reuses an offset for another message loses it). Negative turns it off, as in a MonoVertex,
	// which has no ISB.
	DedupWindow time.Duration
	// MaxPayload plays the ISB's max_payload in a pipeline (default DefaultMaxPayload): a message
	// whose payload, keys and headers are larger (numa adds its own header too) cannot be written to
	// the buffer, so Run returns ErrOverMaxPayload where numa would retry it forever. Negative turns
	// it off (a MonoVertex, or an ISB service that raised max_payload).
	MaxPayload int
	// OnBatch gets each non-empty batch as numa would forward it (duplicates removed), before the
	// decisions are made. OnStats gets a snapshot after every read and when Run returns. Both run
	// on Run's goroutine and slow the loop down while they run.
	OnBatch func(batch []Message)
	OnStats func(Stats)
}

// Stats count what Run did.
type Stats struct {
	Read        int64 // messages received, duplicates included
	Acked       int64
	Nacked      int64 // nacks sent
	NackSkipped int64 // messages decided Nack but not sent because the source's SDK is too old for nacks
	Held        int64
	Batches     int64 // non-empty reads
	EmptyReads  int64
	// Duplicates counts messages whose offset was read again while still unacked in this client
	// (read earlier in this batch or held): numa drops them and never acks them twice.
	Duplicates int64
	// Deduplicated counts messages acked but dropped by the ISB (see LoopOptions.DedupWindow): their
	// offset was written within the window. They are counted in Acked too.
	Deduplicated int64
	LastPending  int64 // last PendingFn answer; -1 before the first (or when disabled)
	// PendingMidBatch counts PendingFn calls made between a Read and its Ack. PendingShort counts
	// those whose known answer (not negative) was below the batch read (see PendingStrict).
	PendingMidBatch int64
	PendingShort    int64
	LastPartitions  []int32
	TotalPartitions *int32
	Elapsed         time.Duration
	ReadRate        float64 // Read per second over Elapsed
}

func (o *LoopOptions) defaults() {
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.PendingEvery == 0 {
		o.PendingEvery = DefaultPendingEvery
	}
	if o.PartitionsEvery == 0 {
		o.PartitionsEvery = DefaultPartitionsEvery
	}
	if o.StopGrace <= 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
}

// isbSize is at least how many bytes numa writes to the ISB for m: its payload, keys and headers.
func isbSize(m Message) int {
	n := len(m.Payload)
	for _, k := range m.Keys {
		n += len(k)
	}
	for k, v := range m.Headers {
		n += len(k) + len(v)
	}
	return n
}

// Run plays numa's loop until ctx ends, Limit or Idle is reached, or a call fails: read a batch, ack
// the acked offsets in read order in one AckFn request, nack the nacked ones in one NackFn request
// (when NackSupported), read again. When ctx ends, the batch in progress is finished (bounded by
// StopGrace) and Run returns a nil error: ending ctx is the normal way to stop. Only a failed call
// returns an error, with the stats so far.
func (c *Client) Run(ctx context.Context, opts LoopOptions) (Stats, error) {
	opts.defaults()
	start := time.Now()
	st := Stats{LastPending: -1}
	snapshot := func() Stats {
		s := st
		s.LastPartitions = append([]int32(nil), st.LastPartitions...)
		s.Elapsed = time.Since(start)
		if secs := s.Elapsed.Seconds(); secs > 0 {
			s.ReadRate = float64(s.Read) / secs
		}
		return s
	}
	report := func() {
		if opts.OnStats != nil {
			opts.OnStats(snapshot())
		}
	}

	// Calls of the batch in progress outlive ctx by at most StopGrace.
	opCtx, opCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer opCancel()
	graceDone := make(chan struct{})
	defer close(graceDone)
	go func() {
		select {
		case <-graceDone:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(opts.StopGrace)
		defer t.Stop()
		select {
		case <-graceDone:
		case <-t.C:
			opCancel()
		}
	}()

	inflight := map[string]struct{}{} // offsets read and neither acked nor nacked (held)
	var nextPending, nextPartitions time.Time
	idle := 0
	finish := func(err error) (Stats, error) {
		s := snapshot()
		if opts.OnStats != nil {
			opts.OnStats(s)
		}
		return s, err
	}

	for {
		if ctx.Err() != nil {
			return finish(nil)
		}
		if opts.Limit > 0 && st.Acked+st.Held >= opts.Limit {
			return finish(nil)
		}
		now := time.Now()
		if opts.PendingEvery > 0 && !now.Before(nextPending) {
			p, err := c.Pending(opCtx)
			if err != nil {
				return finish(err)
			}
			st.LastPending = p
			nextPending = now.Add(opts.PendingEvery)
		}
		if opts.PartitionsEvery > 0 && !now.Before(nextPartitions) {
			parts, total, err := c.Partitions(opCtx)
			if err != nil {
				return finish(err)
			}
			st.LastPartitions, st.TotalPartitions = parts, total
			nextPartitions = now.Add(opts.PartitionsEvery)
		}

		count := opts.BatchSize
		if opts.Limit > 0 {
			if left := uint64(opts.Limit - st.Acked - st.Held); left < count {
				count = left
			}
		}
		msgs, err := c.Read(opCtx, count, opts.Timeout)
		if err != nil {
			return finish(err)
		}
		st.Read += int64(len(msgs))
		if len(msgs) == 0 {
			st.EmptyReads++
			idle++
			report()
			if opts.Idle > 0 && idle >= opts.Idle {
				return finish(nil)
			}
			continue
		}
		idle = 0
		st.Batches++

		// Each message's way, in read order: dropped as in flight, acked as an ISB duplicate, or
		// forwarded (then its decision says).
		const dropped, isbDup, forwarded = 0, 1, 2
		way := make([]uint8, len(msgs))
		now = time.Now()
		batch := msgs[:0:0]
		for i, m := range msgs {
			k := m.Offset.key()
			if _, dup := inflight[k]; dup {
				st.Duplicates++
				continue
			}
			if opts.DedupWindow > 0 && c.isb.has(m.Offset, now, opts.DedupWindow) {
				way[i] = isbDup
				st.Deduplicated++
				continue
			}
			if opts.MaxPayload > 0 && isbSize(m) > opts.MaxPayload {
				return finish(fmt.Errorf("%w: offset %q, %d bytes of payload, keys and headers, max_payload %d",
					ErrOverMaxPayload, m.Offset.Value, isbSize(m), opts.MaxPayload))
			}
			inflight[k] = struct{}{}
			way[i] = forwarded
			batch = append(batch, m)
		}
		if opts.OnBatch != nil && len(batch) > 0 {
			opts.OnBatch(batch)
		}

		decisions := make([]Decision, len(batch))
		for i, m := range batch {
			decisions[i] = Ack
			if opts.Decide != nil {
				decisions[i] = opts.Decide(m)
			}
		}
		var acks, written []Offset // written: acked and new to the ISB
		var nacks []NackItem
		next := 0
		for i, m := range msgs {
			switch way[i] {
			case isbDup:
				acks = append(acks, m.Offset)
				continue
			case dropped:
				continue
			}
			d := decisions[next]
			next++
			switch d.Action {
			case ActionNack:
				nacks = append(nacks, NackItem{Offset: m.Offset, Options: d.Options})
			case ActionHold:
				st.Held++
			default:
				acks = append(acks, m.Offset)
				written = append(written, m.Offset)
			}
		}

		if opts.AckDelay > 0 {
			t := time.NewTimer(opts.AckDelay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		// numa's lag reader, due during the read or the ISB write, asks now: every message this batch
		// forwarded is handed out and unanswered at the source, so the backlog holds at least that
		// many. (Held messages of earlier batches are left out: a source may have let their lease run
		// out and count them again only at its next backlog reading.)
		if now := time.Now(); opts.PendingEvery > 0 && !now.Before(nextPending) {
			p, err := c.Pending(opCtx)
			if err != nil {
				return finish(err)
			}
			st.LastPending = p
			st.PendingMidBatch++
			nextPending = now.Add(opts.PendingEvery)
			if unacked := int64(len(batch)); p >= 0 && p < unacked {
				st.PendingShort++
				if opts.PendingStrict {
					return finish(fmt.Errorf("%w: %d, between a Read of %d messages and their Ack", ErrPendingBelowInFlight, p, unacked))
				}
			}
		}
		if len(acks) > 0 {
			if err := c.Ack(opCtx, acks); err != nil {
				return finish(err)
			}
			for _, o := range acks {
				delete(inflight, o.key())
			}
			if opts.DedupWindow > 0 {
				c.isb.add(written, time.Now(), opts.DedupWindow)
			}
			st.Acked += int64(len(acks))
		}
		if len(nacks) > 0 {
			if c.NackSupported() {
				if err := c.Nack(opCtx, nacks); err != nil {
					return finish(err)
				}
				st.Nacked += int64(len(nacks))
			} else {
				st.NackSkipped += int64(len(nacks))
			}
			for _, n := range nacks {
				delete(inflight, n.Offset.key())
			}
		}
		report()
	}
}
