package sqssource

import (
	"errors"
	"slices"
	"testing"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/configtest"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
)

func TestREADME(t *testing.T) {
	configtest.Documented(t, Config{})
	configtest.README(t, "../../README.md", envdoc.Groups("sqs-source", Config{})...)
}

func TestLoadDefaults(t *testing.T) {
	var c Config
	if err := config.Load(&c, []string{"SQS_QUEUE_URL=" + stdURL}); err != nil {
		t.Fatalf("loading: %v", err)
	}
	want := validConfig()
	if c != want {
		t.Fatalf("loaded %+v, want %+v", c, want)
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	var c Config
	err := config.Load(&c, []string{"SQS_WAIT_TIME=30s", "SQS_VISIBILITY_TIMEOUT=soon", "SQS_ASSUME_ROLE_EXTERNAL_ID=x1"})
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v, want *config.Errors", err)
	}
	named := configtest.Vars(t, err)
	for _, v := range []string{"SQS_QUEUE_URL", "SQS_WAIT_TIME", "SQS_VISIBILITY_TIMEOUT", "SQS_ASSUME_ROLE_EXTERNAL_ID"} {
		if !slices.Contains(named, v) {
			t.Errorf("no problem named %s in:\n%v", v, err)
		}
	}
}
