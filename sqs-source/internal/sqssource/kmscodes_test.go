package sqssource

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/numaflow-connectors/sources/common/source"
)

// Real SQS (AWS JSON protocol, query-compatible) sends X-Amzn-Query-Error; the SDK then reports
// that code as ErrorCode(). For KMS errors it is KMS.*Exception, per the SDK's own model (the table had
// one wrong KMS code and none of the others, so KMS throttling was invalid_argument).
func TestQueryCompatibleKMSCodes(t *testing.T) {
	tests := []struct {
		typ, query string
		want       source.Code
		status     int
	}{
		{"KmsThrottled", "KMS.ThrottlingException", source.Throttled, 400},
		{"KmsDisabled", "KMS.DisabledException", source.FailedPrecondition, 400},
		{"KmsNotFound", "KMS.NotFoundException", source.FailedPrecondition, 400},
		{"KmsInvalidState", "KMS.InvalidStateException", source.FailedPrecondition, 400},
		{"KmsInvalidKeyUsage", "KMS.InvalidKeyUsageException", source.FailedPrecondition, 400},
		{"KmsOptInRequired", "KMS.OptInRequired", source.FailedPrecondition, 403},
		{"KmsAccessDenied", "KMS.AccessDeniedException", source.PermissionDenied, 400},
		{"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", source.NotFound, 400},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-amz-json-1.0")
				w.Header().Set("X-Amzn-Query-Error", tt.query+";Sender")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(`{"__type":"com.amazonaws.sqs#` + tt.typ + `","message":"boom"}`))
			}))
			defer srv.Close()
			c := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), RetryMaxAttempts: 1,
				Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")})
			d := newDriver(Config{QueueURL: srv.URL + "/000000000000/q", WaitTime: 0}, c, nil)
			_, err := d.api.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(d.cfg.QueueURL)})
			if got := errorCode(err); got != tt.want {
				t.Errorf("%v: code %v, want %v", err, got, tt.want)
			}
		})
	}
}
