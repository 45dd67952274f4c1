// Package metrics holds the Prometheus metrics every source exposes. The adapter updates them; the
// server serves them with the health endpoints.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "numaflow_source"

// Source is the set of metrics one adapter updates.
type Source struct {
	Read         prometheus.Counter
	Acked        prometheus.Counter
	AckFailed    prometheus.Counter
	Nacked       prometheus.Counter
	DeadLettered *prometheus.CounterVec // reason: max_deliveries | too_large
	Dropped      *prometheus.CounterVec // reason
	Redelivered  prometheus.Counter
	Duplicates   prometheus.Counter
	UnknownAcks  prometheus.Counter
	ReadLatency  prometheus.Histogram
	AckLatency   prometheus.Histogram
	ReceiveBatch prometheus.Histogram
	InFlight     prometheus.Gauge
	Buffered     prometheus.Gauge
	Delayed      prometheus.Gauge
	HeldBytes    prometheus.Gauge
	Extensions   prometheus.Counter
	LeaseExpired prometheus.Counter
	// ExpiredUnread counts held messages forgotten because their lease ran out before numa read them.
	ExpiredUnread prometheus.Counter
	BrokerErrors  *prometheus.CounterVec // op, kind
	Pending       prometheus.Gauge
	Ready         prometheus.Gauge
}

// New creates the metrics and registers them with reg (nil: not registered, for tests).
func New(reg prometheus.Registerer) *Source {
	m := &Source{
		Read:         counter("read_total", "Messages handed to numa, redeliveries included."),
		Acked:        counter("acked_total", "Messages committed at the broker after numa acked them."),
		AckFailed:    counter("ack_failed_total", "Acks given up after retries or refused by the broker; the broker may redeliver these."),
		Nacked:       counter("nacked_total", "Messages numa nacked."),
		DeadLettered: counterVec("dead_lettered_total", "Messages moved to the dead-letter target.", "reason"),
		Dropped:      counterVec("dropped_total", "Messages acked without delivery because they could not be dead-lettered (fallback drop).", "reason"),
		Redelivered:  counter("redelivered_total", "Messages handed to numa again after a nack, a lease expiry or a restart."),
		Duplicates:   counter("duplicate_receives_total", "Broker redeliveries of a message still held here, not handed to numa again."),
		UnknownAcks:  counter("unknown_acks_total", "Acks for offsets this process does not hold (e.g. re-sent after a restart)."),
		ReadLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "read_duration_seconds",
			Help: "Duration of numa's Read calls.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 12)}),
		AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "ack_duration_seconds",
			Help: "Time from numa's ack to the broker's commit.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		ReceiveBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "receive_batch_size",
			Help: "Messages per broker receive call.", Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		InFlight:      gauge("in_flight", "Messages handed to numa and not yet acked or nacked."),
		Buffered:      gauge("buffered", "Messages received from the broker and not yet handed to numa."),
		Delayed:       gauge("delayed", "Nacked messages held here until their nack delay ends (brokers without a nack)."),
		HeldBytes:     gauge("held_bytes", "Payload bytes of the messages buffered or in flight at numa (bounded by PREFETCH_BYTES)."),
		Extensions:    counter("lease_extensions_total", "Lease extensions of held messages."),
		LeaseExpired:  counter("lease_max_extension_reached_total", "Held messages whose lease was not extended further because the maximum extension was reached."),
		ExpiredUnread: counter("lease_expired_unread_total", "Messages whose lease ran out (failed extensions, or the maximum extension) before numa read them: released to the broker instead of handed to numa with a handle that may be dead."),
		BrokerErrors:  counterVec("broker_errors_total", "Broker call errors by operation and kind.", "op", "kind"),
		Pending:       gauge("pending", "Last backlog reported to numa (-1: unknown)."),
		Ready:         gauge("ready", "1 while the broker is reachable."),
	}
	if reg != nil {
		reg.MustRegister(m.Read, m.Acked, m.AckFailed, m.Nacked, m.DeadLettered, m.Dropped, m.Redelivered,
			m.Duplicates, m.UnknownAcks, m.ReadLatency, m.AckLatency, m.ReceiveBatch, m.InFlight, m.Buffered, m.Delayed, m.HeldBytes,
			m.Extensions, m.LeaseExpired, m.ExpiredUnread, m.BrokerErrors, m.Pending, m.Ready)
	}
	return m
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
}
