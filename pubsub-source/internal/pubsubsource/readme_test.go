package pubsubsource

import (
	"testing"

	"github.com/numaflow-connectors/sources/common/config/configtest"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
)

// The README's env table is generated from Config (make docs) and must not drift from it.
func TestREADME(t *testing.T) {
	configtest.Documented(t, Config{})
	configtest.README(t, "../../README.md", envdoc.Groups("pubsub-source", Config{})...)
}
