package sqssource

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// Open builds the SQS driver. Credentials, region and endpoint come from the AWS SDK's default chain
// (IRSA, EKS Pod Identity, env keys, shared profiles; AWS_REGION, AWS_ENDPOINT_URL_SQS), optionally
// with SQS_ASSUME_ROLE_ARN assumed on top; without a region there, the queue URL's host gives it. It
// makes no call to SQS: a missing queue or an outage shows in Check and in the adapter's readiness,
// never as a failed start. It fails when no region can be found and no endpoint is set, since every
// call would fail.
func Open(ctx context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	return open(ctx, cfg, env, nil, nil)
}

// open builds the driver; counter (nil: a new one) counts its HTTP requests, and load adds options to
// config.LoadDefaultConfig (tests point it at fauxqs).
func open(ctx context.Context, cfg *Config, env *server.Env, counter *requestCounter, load []func(*awsconfig.LoadOptions) error) (*driver, error) {
	if counter == nil {
		counter = &requestCounter{}
	}
	// The SDK's own buildable client, tuned, so that settings it applies while loading (such as
	// AWS_CA_BUNDLE) apply; its transport is then wrapped to count requests.
	tuned := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = 2 * (maxReceiveConcurrency + ackConcurrency)
		tr.MaxIdleConnsPerHost = maxReceiveConcurrency + ackConcurrency
		// A long poll answers within SQS_WAIT_TIME; a connection silent much longer is dead.
		tr.ResponseHeaderTimeout = cfg.WaitTime + 30*time.Second
	})
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, append([]func(*awsconfig.LoadOptions) error{awsconfig.WithHTTPClient(tuned)}, load...)...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient)
	if !ok {
		return nil, fmt.Errorf("loading AWS configuration: unexpected HTTP client %T", awsCfg.HTTPClient)
	}
	transport := bc.GetTransport()
	awsCfg.HTTPClient = &http.Client{Transport: &countingTransport{base: transport, counter: counter}}
	if awsCfg.Region == "" {
		// No AWS_REGION, AWS_DEFAULT_REGION or profile region: take it from the queue URL's host.
		awsCfg.Region = regionFromURL(cfg.QueueURL)
	}
	if cfg.AssumeRoleARN != "" {
		stsClient := sts.NewFromConfig(awsCfg)
		provider := stscreds.NewAssumeRoleProvider(stsClient, cfg.AssumeRoleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = cfg.AssumeRoleSession
			if cfg.AssumeRoleExternal != "" {
				o.ExternalID = aws.String(cfg.AssumeRoleExternal)
			}
		})
		awsCfg.Credentials = aws.NewCredentialsCache(provider)
	}
	client := sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		// The adapter retries with backoff and classifies errors itself; SDK retries would hide errors
		// and stack a second backoff under the adapter's.
		o.RetryMaxAttempts = 1
	})
	if o := client.Options(); o.Region == "" && o.BaseEndpoint == nil {
		// Every call would fail to resolve an endpoint; say so now rather than run and never read.
		return nil, fmt.Errorf("no AWS region for queue %s: set AWS_REGION (or a region in the AWS profile), "+
			"or use a queue URL whose host names it (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)", cfg.QueueURL)
	}

	log := env.Log
	d := newDriver(*cfg, client, log)
	if n := env.Platform.ReadBatchSize; n > 0 {
		d.receives = min(max((n+maxBatch-1)/maxBatch, 1), maxReceiveConcurrency)
	}
	d.requests = counter
	d.closeFn = transport.CloseIdleConnections
	return d, nil
}

// newDriver wires a driver over api; it makes no call.
func newDriver(cfg Config, api sqsAPI, log *slog.Logger) *driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &driver{
		cfg:      cfg,
		api:      api,
		log:      log,
		fifo:     isFIFO(cfg.QueueURL),
		dlqFIFO:  cfg.DeadLetterQueueURL != "" && isFIFO(cfg.DeadLetterQueueURL),
		receives: defaultReceiveConcurrency,
		attempts: newAttempts(),
	}
}

// regionHostRE matches the hosts of AWS SQS queue URLs that name their region (submatch 1 or 2):
// sqs.REGION.amazonaws.com (and sqs-fips.), the legacy REGION.queue.amazonaws.com, and VPC endpoints
// (vpce-ID.sqs.REGION.vpce.amazonaws.com, also with an availability zone in the first label); each
// also under amazonaws.com.cn (China).
var regionHostRE = regexp.MustCompile(`^(?:vpce-[a-z0-9-]+\.)?sqs(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$` +
	`|^([a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?$`)

// legacyUSEast1Host is the legacy host of queues in us-east-1, which names no region.
const legacyUSEast1Host = "queue.amazonaws.com"

// regionFromURL returns the region in an AWS SQS queue URL's host, or "".
func regionFromURL(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	host := strings.ToLower(u.Hostname())
	if host == legacyUSEast1Host {
		return "us-east-1"
	}
	if m := regionHostRE.FindStringSubmatch(host); m != nil {
		return m[1] + m[2]
	}
	return ""
}

// requestCounter counts the HTTP requests (every attempt) a driver sends, by SQS operation.
type requestCounter struct {
	count atomic.Int64
	mu    sync.Mutex
	byOp  map[string]int64
}

// total is the number of requests so far.
func (c *requestCounter) total() int64 { return c.count.Load() }

// snapshot returns the requests so far by operation ("ReceiveMessage", "DeleteMessageBatch", ...;
// requests that are not SQS calls, such as STS, under their service's target or "other").
func (c *requestCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.byOp))
	for k, v := range c.byOp {
		out[k] = v
	}
	return out
}

func (c *requestCounter) add(op string) {
	c.count.Add(1)
	c.mu.Lock()
	if c.byOp == nil {
		c.byOp = map[string]int64{}
	}
	c.byOp[op]++
	c.mu.Unlock()
}

// countingTransport counts each request before passing it on.
type countingTransport struct {
	base    http.RoundTripper
	counter *requestCounter
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.counter.add(operation(req))
	return t.base.RoundTrip(req)
}

// operation names the SQS operation of a request from its X-Amz-Target header (AWS JSON protocol).
func operation(req *http.Request) string {
	target := req.Header.Get("X-Amz-Target")
	if op, ok := strings.CutPrefix(target, "AmazonSQS."); ok {
		return op
	}
	if target != "" {
		return target
	}
	return "other"
}
