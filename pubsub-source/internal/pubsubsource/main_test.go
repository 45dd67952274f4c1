package pubsubsource

import (
	"os"
	"testing"

	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

func TestMain(m *testing.M) { os.Exit(pubsubtest.Main(m)) }
