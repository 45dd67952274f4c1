package sqssource

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

// BenchmarkBigMessages measures the connector binary's peak RSS (VmHWM) while a backpressured numa
// drains 400 messages of 1 MiB from fauxqs over the unix socket, with and without the byte bound
// (benchkit's big message scenario), and fails unless every message is delivered and acked.
func BenchmarkBigMessages(b *testing.B) {
	srv := sqstest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "sqs-source")
	benchkit.BigMessages(b, bin, "messages", func(ctx context.Context, c benchkit.BigCase, run int) []string {
		url := srv.CreateQueue(b, fmt.Sprintf("bench-big-%s-%d-%d", c.Name, time.Now().UnixNano(), run), nil)
		fillBig(ctx, b, srv, url)
		return append(srv.Env(), "SQS_QUEUE_URL="+url, "SQS_VISIBILITY_TIMEOUT="+strconv.Itoa(int(benchVisibility/time.Second))+"s")
	})
}

// fillBig sends benchkit.BigCount messages of benchkit.BigPayload. One
// SendMessage per message (a batch may not exceed 1 MiB in all), 8 at a time.
func fillBig(ctx context.Context, b *testing.B, srv *sqstest.Server, url string) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := int(next.Add(1)) - 1; j < benchkit.BigCount; j = int(next.Add(1)) - 1 {
				body := benchkit.BigPayload(j)
				if _, err := srv.Client().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(body)}); err != nil {
					errs <- fmt.Errorf("message %d: %w", j, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("filling %s: %v", url, err)
	}
}
