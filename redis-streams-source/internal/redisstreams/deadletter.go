package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// deadLetter copies the entry (its fields as they are in the stream, plus the reason, the source
// stream, the entry ID and the delivery count) to REDIS_DEAD_LETTER_STREAM, then acks it. The copy is
// added before the ack, so a crash in between leaves a duplicate copy at worst, never a loss. When
// only the ack failed, the adapter calls again: the entry is then acked without a second copy.
func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.dlq == "" {
		return source.ErrNoDeadLetter
	}
	h, ok := msg.Handle.(handle)
	if !ok {
		return d.entryError("dead-lettering", "", "", fmt.Sprintf("not a redis-streams handle: %T", msg.Handle))
	}
	if !d.dlAdded.has(msg.ID) {
		if err := d.addDeadLetter(ctx, h, msg, reason); err != nil {
			return err
		}
		d.dlAdded.put(msg.ID)
	}
	if err := d.Ack(ctx, []source.Handle{h}); err != nil {
		return fmt.Errorf("acking dead-lettered entry: %w", err)
	}
	d.dlAdded.del(msg.ID)
	return nil
}

// addDeadLetter adds the copy of the entry to the dead-letter stream.
func (d *driver) addDeadLetter(ctx context.Context, h handle, msg *source.Message, reason string) error {
	fields, err := d.entryFields(ctx, h, msg)
	if err != nil {
		return err
	}
	values := make([]any, 0, len(fields)+8)
	for _, f := range fields {
		values = append(values, f)
	}
	values = append(values, FieldDeadLetterReason, reason, FieldDeadLetterStream, h.stream, FieldDeadLetterID, h.id,
		FieldDeadLetterDeliveries, strconv.Itoa(msg.Deliveries))
	args := &redis.XAddArgs{Stream: d.dlq, Values: values}
	if d.dlqMaxLen > 0 {
		args.MaxLen, args.Approx = d.dlqMaxLen, true
	}
	if err := d.api.XAdd(ctx, args).Err(); err != nil {
		return fmt.Errorf("adding entry %s of stream %s to dead-letter stream %s: %w", h.id, h.stream, d.dlq, err)
	}
	return nil
}

// maxDeadLettersUnacked bounds deadLettered: when full it starts over, which at worst adds a copy
// again.
const maxDeadLettersUnacked = 10_000

// deadLettered is the set of message IDs copied to the dead-letter stream whose ack has not landed
// yet, so a retry acks them without adding another copy.
type deadLettered struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (s *deadLettered) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

func (s *deadLettered) put(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil || len(s.ids) >= maxDeadLettersUnacked {
		s.ids = make(map[string]struct{})
	}
	s.ids[id] = struct{}{}
}

func (s *deadLettered) del(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ids, id)
}

// entryFields reads the entry's fields from the stream (XRANGE id id, in order). An entry trimmed
// meanwhile is rebuilt from the message.
func (d *driver) entryFields(ctx context.Context, h handle, msg *source.Message) ([]string, error) {
	v, err := d.api.Do(ctx, "XRANGE", h.stream, h.id, h.id).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading entry %s of stream %s: %w", h.id, h.stream, err)
	}
	if es, err := parseEntries(v); err == nil && len(es) == 1 && !es[0].deleted {
		return es[0].fields, nil
	}
	field := d.mapper.payloadField
	if field == "" {
		field = "payload"
	}
	fields := []string{field, string(msg.Payload)}
	for k, v := range msg.Headers {
		if !strings.HasPrefix(k, "x-redis-") {
			fields = append(fields, k, v)
		}
	}
	return fields, nil
}
