package sqssource

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// isolateAWSEnv clears every source of a region or an endpoint the SDK reads, for one test.
func isolateAWSEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_STS"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// Without a region from the environment, a profile or the queue URL, and without an endpoint, Open
// fails with an error naming AWS_REGION and sends nothing; any of them is enough to open.
func TestOpenNeedsARegion(t *testing.T) {
	const unknownHost = "https://sqs.example.internal/123456789012/orders"
	profile := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(profile, []byte("[default]\nregion = ap-south-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		url        string
		env        map[string]string
		wantRegion string // "": Open fails
	}{
		{"no region anywhere", unknownHost, nil, ""},
		{"legacy host", "https://us-west-2.queue.amazonaws.com/123456789012/orders", nil, "us-west-2"},
		{"vpc endpoint host", "https://vpce-0a1b2c3d4e5f6a7b8-abcdefgh.sqs.eu-west-1.vpce.amazonaws.com/123456789012/orders", nil, "eu-west-1"},
		{"AWS_REGION", unknownHost, map[string]string{"AWS_REGION": "eu-west-1"}, "eu-west-1"},
		{"AWS_DEFAULT_REGION", unknownHost, map[string]string{"AWS_DEFAULT_REGION": "eu-west-3"}, "eu-west-3"},
		{"profile", unknownHost, map[string]string{"AWS_CONFIG_FILE": profile}, "ap-south-1"},
		{"AWS_REGION over the URL", "https://us-west-2.queue.amazonaws.com/123456789012/orders", map[string]string{"AWS_REGION": "eu-west-1"}, "eu-west-1"},
		{"endpoint without region", unknownHost, map[string]string{"AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:1"}, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateAWSEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cfg := testConfig(tt.url, "")
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			counter := &requestCounter{}
			d, err := open(ctx, &cfg, serverEnvFor(t), counter, []func(*awsconfig.LoadOptions) error{
				awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("a", "b", "")),
			})
			if counter.total() != 0 {
				t.Errorf("open sent %d requests", counter.total())
			}
			if tt.wantRegion == "" {
				if err == nil || !strings.Contains(err.Error(), "AWS_REGION") || !strings.Contains(err.Error(), tt.url) {
					t.Fatalf("open: %v, want an error naming AWS_REGION and the queue", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer func() { _ = d.Close(ctx) }()
			o := d.api.(*sqs.Client).Options()
			switch {
			case tt.wantRegion == "-" && o.BaseEndpoint == nil:
				t.Errorf("no endpoint, want AWS_ENDPOINT_URL_SQS")
			case tt.wantRegion != "-" && o.Region != tt.wantRegion:
				t.Errorf("region %q, want %q", o.Region, tt.wantRegion)
			}
		})
	}
}

// A call whose endpoint the SDK cannot resolve (no region) fails before any request, classified
// failed_precondition: a configuration problem, not a transient one.
func TestEndpointErrorIsFailedPrecondition(t *testing.T) {
	client := sqs.New(sqs.Options{
		Credentials:      credentials.NewStaticCredentialsProvider("a", "b", ""),
		RetryMaxAttempts: 1,
		HTTPClient: &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
			t.Error("a request was sent")
			return nil, errors.New("no request expected")
		})},
	})
	d := newTestDriver(t, func(c *Config) { c.QueueURL = "https://sqs.example.internal/123456789012/orders" }, &fakeSQS{})
	d.api = client
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := d.Receive(ctx, 10)
	if err == nil {
		t.Fatal("receive without a region succeeded")
	}
	if got := d.ErrorCode(err); got != source.FailedPrecondition || got.Transient() {
		t.Fatalf("%v classified %v, want failed_precondition", err, got)
	}
	if got := errorCode(&aws.MissingRegionError{}); got != source.FailedPrecondition {
		t.Fatalf("aws.MissingRegionError classified %v, want failed_precondition", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func serverEnvFor(t *testing.T) *server.Env {
	return &server.Env{Log: slog.New(slog.NewTextHandler(testLogWriter{t}, nil)), Platform: config.Platform{ReadBatchSize: 10}}
}
