package source_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the adapter starts must be gone after Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
