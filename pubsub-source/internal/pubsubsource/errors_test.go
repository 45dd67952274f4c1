package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
)

func TestErrorCode(t *testing.T) {
	api := func(c codes.Code) error {
		ae, ok := apierror.FromError(status.Error(c, "x"))
		if !ok {
			t.Fatalf("apierror.FromError failed")
		}
		return ae
	}
	tests := []struct {
		err  error
		want source.Code
	}{
		{status.Error(codes.NotFound, "Subscription does not exist"), source.NotFound},
		{status.Error(codes.PermissionDenied, "x"), source.PermissionDenied},
		{status.Error(codes.Unauthenticated, "x"), source.PermissionDenied},
		{status.Error(codes.InvalidArgument, "x"), source.InvalidArgument},
		{status.Error(codes.Unavailable, "x"), source.Unavailable},
		{status.Error(codes.ResourceExhausted, "x"), source.Throttled},
		{status.Error(codes.DeadlineExceeded, "x"), source.DeadlineExceeded},
		{status.Error(codes.FailedPrecondition, "x"), source.FailedPrecondition},
		{status.Error(codes.Aborted, "x"), source.Unavailable},
		{status.Error(codes.Internal, "x"), source.Unavailable},
		{status.Error(codes.Canceled, "x"), source.Canceled},
		{status.Error(codes.Unknown, "x"), source.Unknown},
		{fmt.Errorf("pulling from subscription s: %w", api(codes.NotFound)), source.NotFound},
		{fmt.Errorf("pulling from subscription s: %w", status.Error(codes.ResourceExhausted, "x")), source.Throttled},
		{errors.New("plain"), source.Unknown},
		{context.Canceled, source.Unknown}, // the adapter maps context errors before asking the driver
		{nil, source.Unknown},
	}
	d := &driver{}
	for _, tt := range tests {
		if got := d.ErrorCode(tt.err); got != tt.want {
			t.Errorf("ErrorCode(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}
