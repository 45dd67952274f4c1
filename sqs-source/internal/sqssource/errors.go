package sqssource

import (
	"errors"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/numaflow-connectors/sources/common/source"
)

// codes classifies SQS (and STS) error codes. SQS's JSON protocol reports the short code
// (QueueDoesNotExist); the query-compatible code (AWS.SimpleQueueService.NonExistentQueue) is looked up
// both whole and without its prefix.
var codes = map[string]source.Code{
	// not found
	"QueueDoesNotExist":         source.NotFound,
	"NonExistentQueue":          source.NotFound,
	"QueueDeletedRecently":      source.NotFound,
	"ResourceNotFoundException": source.NotFound,

	// permission
	"AccessDenied":                source.PermissionDenied,
	"AccessDeniedException":       source.PermissionDenied,
	"InvalidClientTokenId":        source.PermissionDenied,
	"UnrecognizedClientException": source.PermissionDenied,
	"SignatureDoesNotMatch":       source.PermissionDenied,
	"IncompleteSignature":         source.PermissionDenied,
	"MissingAuthenticationToken":  source.PermissionDenied,
	"InvalidSecurity":             source.PermissionDenied,
	"ExpiredToken":                source.PermissionDenied,
	"ExpiredTokenException":       source.PermissionDenied,
	"RequestExpired":              source.PermissionDenied,
	"KmsAccessDenied":             source.PermissionDenied,
	"KMS.AccessDeniedException":   source.PermissionDenied,
	"OptInRequired":               source.PermissionDenied,

	// invalid request or handle
	"ReceiptHandleIsInvalid":       source.InvalidArgument,
	"InvalidParameterValue":        source.InvalidArgument,
	"InvalidParameterValues":       source.InvalidArgument,
	"InvalidParameterCombination":  source.InvalidArgument,
	"MissingParameter":             source.InvalidArgument,
	"InvalidAttributeName":         source.InvalidArgument,
	"InvalidAttributeValue":        source.InvalidArgument,
	"InvalidIdFormat":              source.InvalidArgument,
	"InvalidMessageContents":       source.InvalidArgument,
	"InvalidAddress":               source.InvalidArgument,
	"InvalidBatchEntryId":          source.InvalidArgument,
	"BatchEntryIdsNotDistinct":     source.InvalidArgument,
	"EmptyBatchRequest":            source.InvalidArgument,
	"TooManyEntriesInBatchRequest": source.InvalidArgument,
	"UnsupportedOperation":         source.InvalidArgument,
	"ValidationError":              source.InvalidArgument,
	"InvalidAction":                source.InvalidArgument,

	// refused in the current state
	"MessageNotInflight":  source.FailedPrecondition,
	"MessageTooLong":      source.FailedPrecondition,
	"BatchRequestTooLong": source.FailedPrecondition,
	"KmsDisabled":         source.FailedPrecondition,
	"KmsInvalidKeyUsage":  source.FailedPrecondition,
	"KmsInvalidState":     source.FailedPrecondition,
	"KmsNotFound":         source.FailedPrecondition,
	"KmsOptInRequired":    source.FailedPrecondition,
	// the same as real SQS names them (X-Amzn-Query-Error), which the SDK reports as the error's code
	"KMS.DisabledException":        source.FailedPrecondition,
	"KMS.InvalidKeyUsageException": source.FailedPrecondition,
	"KMS.InvalidStateException":    source.FailedPrecondition,
	"KMS.NotFoundException":        source.FailedPrecondition,
	"KMS.OptInRequired":            source.FailedPrecondition,
	"PurgeQueueInProgress":         source.FailedPrecondition,

	// rate and quota
	"RequestThrottled":         source.Throttled,
	"ThrottlingException":      source.Throttled,
	"Throttling":               source.Throttled,
	"ThrottledException":       source.Throttled,
	"TooManyRequestsException": source.Throttled,
	"RequestLimitExceeded":     source.Throttled,
	"OverLimit":                source.Throttled,
	"KmsThrottled":             source.Throttled,
	"KMS.ThrottlingException":  source.Throttled, // the query-compatible codes real SQS sends (X-Amzn-Query-Error)

	// service side
	"InternalError":               source.Unavailable,
	"InternalFailure":             source.Unavailable,
	"ServiceUnavailable":          source.Unavailable,
	"ServiceUnavailableException": source.Unavailable,
	"RequestTimeout":              source.DeadlineExceeded,
	"RequestTimeoutException":     source.DeadlineExceeded,
}

// statusCode classifies an HTTP status when the error code is not in codes.
func statusCode(status int) (source.Code, bool) {
	switch {
	case status == 400:
		return source.InvalidArgument, true
	case status == 401 || status == 403:
		return source.PermissionDenied, true
	case status == 404:
		return source.NotFound, true
	case status == 408:
		return source.DeadlineExceeded, true
	case status == 413:
		return source.FailedPrecondition, true
	case status == 429:
		return source.Throttled, true
	case status >= 500:
		return source.Unavailable, true
	}
	return source.Unknown, false
}

// codeOf looks an SQS error code up in the table.
func codeOf(apiCode string) (source.Code, bool) {
	if c, ok := codes[apiCode]; ok {
		return c, true
	}
	c, ok := codes[shortCode(apiCode)]
	return c, ok
}

// shortCode is an SQS error code without the query-compatible prefix: AWS.SimpleQueueService.X is X.
func shortCode(apiCode string) string {
	short, _ := strings.CutPrefix(apiCode, "AWS.SimpleQueueService.")
	return short
}

// entryError builds the classified error of one entry of a batch call (DeleteMessageBatch,
// ChangeMessageVisibilityBatch) from SQS's code for it: by the table, else by who was at fault.
func (d *driver) entryError(op, code, message string, senderFault bool) *source.EntryError {
	c, ok := codeOf(code)
	switch {
	case ok:
	case senderFault:
		c = source.InvalidArgument
	default:
		c = source.Unavailable
	}
	e := &source.EntryError{Op: op, Resource: d.cfg.QueueURL, Reason: code, Code: c}
	if message != "" {
		e.Err = errors.New(message)
	}
	return e
}

// errorCode classifies err by the SQS error code, then the HTTP status. Transport failures (TLS,
// network) are left Unknown: the adapter classifies those with source.NetworkCode.
func errorCode(err error) source.Code {
	if err == nil {
		return source.Unknown
	}
	var canceled *smithy.CanceledError
	if errors.As(err, &canceled) {
		return source.Canceled
	}
	if isEndpointError(err) {
		return source.FailedPrecondition
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		if c, ok := codeOf(api.ErrorCode()); ok {
			return c
		}
	}
	var resp *smithyhttp.ResponseError
	if errors.As(err, &resp) {
		if c, ok := statusCode(resp.HTTPStatusCode()); ok {
			return c
		}
	}
	if api != nil && api.ErrorFault() == smithy.FaultServer {
		return source.Unavailable
	}
	return source.Unknown
}

// isEndpointError reports whether err is the SDK's failure to resolve an endpoint (no region, or
// endpoint settings it refuses): a configuration problem, found before any request is sent, that no
// retry fixes. The SDK gives it no type of its own (aws.MissingRegionError is the older resolver's).
func isEndpointError(err error) bool {
	var missing *aws.MissingRegionError
	return errors.As(err, &missing) || strings.Contains(err.Error(), "failed to resolve service endpoint")
}
