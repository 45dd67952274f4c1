package mqttsource

import (
	"encoding/base64"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/source"
)

// Headers every message carries (besides its user properties, under their own names).
const (
	HeaderTopic           = "x-mqtt-topic"
	HeaderQoS             = "x-mqtt-qos"
	HeaderRetain          = "x-mqtt-retain"
	HeaderDup             = "x-mqtt-dup"
	HeaderContentType     = "x-mqtt-content-type"
	HeaderResponseTopic   = "x-mqtt-response-topic"
	HeaderCorrelationData = "x-mqtt-correlation-data" // base64 (standard, padded): it may be binary
)

// mapper turns MQTT messages into source messages.
type mapper struct {
	idProperty   string
	timeProperty string
	prefix       string // of delivery ids: client id and a per-process nonce
	seq          *atomic.Uint64
}

// id is the offset of a message: the publisher's id property when set, else an id unique to this
// delivery.
func (m *mapper) id(p *paho.Publish) string {
	if m.idProperty != "" && p.Properties != nil {
		if v := p.Properties.User.Get(m.idProperty); v != "" {
			return v
		}
	}
	return m.prefix + strconv.FormatUint(m.seq.Add(1), 36)
}

// message maps one delivery, received at now, to a fresh source message (the adapter may change the
// one it is given, and a handed-back delivery is returned again).
func (m *mapper) message(x *delivery, now time.Time) *source.Message {
	p := x.pub
	h := map[string]string{
		HeaderTopic:  p.Topic,
		HeaderQoS:    strconv.Itoa(int(p.QoS)),
		HeaderRetain: strconv.FormatBool(p.Retain),
		HeaderDup:    strconv.FormatBool(p.Duplicate()),
	}
	eventTime := now
	if pp := p.Properties; pp != nil {
		for _, u := range pp.User {
			if strings.HasPrefix(u.Key, "x-mqtt-") {
				continue // ours: a publisher cannot forge them
			}
			if v, ok := h[u.Key]; ok {
				h[u.Key] = v + "," + u.Value // a repeated property: every value, in order
			} else {
				h[u.Key] = u.Value
			}
		}
		if pp.ContentType != "" {
			h[HeaderContentType] = pp.ContentType
		}
		if pp.ResponseTopic != "" {
			h[HeaderResponseTopic] = pp.ResponseTopic
		}
		if len(pp.CorrelationData) > 0 {
			h[HeaderCorrelationData] = base64.StdEncoding.EncodeToString(pp.CorrelationData)
		}
		if m.timeProperty != "" {
			if t, ok := parseEventTime(pp.User.Get(m.timeProperty)); ok {
				eventTime = t
			}
		}
	}
	// Invalid UTF-8 in a property (MQTT requires UTF-8, but not every broker checks) is replaced by the
	// adapter, for every connector.
	return &source.Message{
		ID:        x.id,
		Handle:    x,
		Payload:   p.Payload,
		EventTime: eventTime,
		Keys:      []string{p.Topic},
		Headers:   h,
	}
}

// parseEventTime reads RFC 3339 or unix milliseconds; ok is false for anything else, and for times
// before 1970 or more than a day ahead (a clock that wrong would hold the watermark).
func parseEventTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false
	}
	var t time.Time
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		t = time.UnixMilli(ms)
	} else if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
		return time.Time{}, false
	}
	if t.UnixMilli() <= 0 || t.After(time.Now().Add(24*time.Hour)) {
		return time.Time{}, false
	}
	return t, true
}
