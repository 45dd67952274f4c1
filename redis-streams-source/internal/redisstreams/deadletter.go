package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// deadLetter copies the entry (its fields as they are in the stream, plus the reason, the source
// stream, the entry ID and the delivery count) to REDIS_DEAD_LETTER_STREAM, then acks it. The copy is
// added before the ack, so a failure in between leaves a duplicate copy at worst, never a loss.
func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.dlq == "" {
		return source.ErrNoDeadLetter
	}
	h, ok := msg.Handle.(handle)
	if !ok {
		return d.entryError("dead-lettering", "", "", fmt.Sprintf("not a redis-streams handle: %T", msg.Handle))
	}
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
	if err := d.Ack(ctx, []source.Handle{h}); err != nil {
		return fmt.Errorf("acking dead-lettered entry: %w", err)
	}
	return nil
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
