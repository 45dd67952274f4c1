package proctest

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Shared is one value, typically a broker process, that the tests of one test binary share: Get starts
// it on first use and Main stops it once the tests have run.
type Shared[T any] struct {
	// Name is the helper package, for messages (e.g. "redistest").
	Name string
	// Start starts the value; it is called at most once.
	Start func() (T, error)
	// Stop stops a started value; failed tells whether the tests failed.
	Stop func(v T, failed bool)

	mu      sync.Mutex
	inMain  bool
	started bool
	v       T
	err     error
}

// Main runs the tests through m (a *testing.M, or anything else that runs them) and then stops the
// value if Get started it. It returns the tests' exit code.
func (s *Shared[T]) Main(m interface{ Run() int }) int {
	s.mu.Lock()
	s.inMain = true
	s.mu.Unlock()
	code := m.Run()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started && s.err == nil {
		s.Stop(s.v, code != 0)
	}
	return code
}

// Get returns the value, starting it on first use. It fails t when the start failed (now or for an
// earlier test), and when the tests do not run through Main (nothing would stop the value).
func (s *Shared[T]) Get(t testing.TB) T {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.inMain {
		t.Fatalf("%s.Shared needs %s.Main(m) in the package's TestMain", s.Name, s.Name)
	}
	if !s.started {
		s.started = true
		s.v, s.err = s.Start()
	}
	if s.err != nil {
		t.Fatalf("%s: starting the shared broker: %v", s.Name, s.err)
	}
	return s.v
}

var unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// Name returns a resource name unique to this test run, derived from the test's name (its last max
// characters, only letters, digits, - and _) and a random suffix: for queues, streams, topics and
// client ids that tests sharing one broker must not share.
func Name(t testing.TB, max int) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := unsafeNameChars.ReplaceAllString(t.Name(), "-")
	if len(n) > max {
		n = n[len(n)-max:]
	}
	return strings.Trim(n, "-_") + "-" + hex.EncodeToString(b[:])
}
