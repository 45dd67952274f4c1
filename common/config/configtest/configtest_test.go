package configtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
)

type demo struct {
	Queue string        `env:"DEMO_QUEUE,required" desc:"Queue to read."`
	Token config.Secret `env:"DEMO_TOKEN" desc:"Token."`
}

// recorder is a testing.TB that records failures instead of failing the test.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()                           {}
func (r *recorder) Error(args ...any)                 { r.failed = true }
func (r *recorder) Errorf(format string, args ...any) { r.failed = true }

func TestDocumented(t *testing.T) {
	Documented(t, demo{}, config.Common{})
	type undocumented struct {
		X string `env:"X"`
	}
	r := &recorder{TB: t}
	Documented(r, undocumented{})
	if !r.failed {
		t.Error("Documented passed a variable without desc")
	}
}

func TestREADME(t *testing.T) {
	t.Setenv(envdoc.UpdateDocsVar, "")
	groups := envdoc.Groups("demo", demo{})
	p := filepath.Join(t.TempDir(), "README.md")
	content := "# demo\n\n" + envdoc.TableStart + "\n\n" + envdoc.Markdown(groups...) + "\n" + envdoc.TableEnd + "\n"
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	README(t, p, groups...)

	r := &recorder{TB: t}
	README(r, p, envdoc.Groups("demo", struct {
		Y string `env:"Y" desc:"y"`
	}{})...)
	if !r.failed {
		t.Error("README passed a drifted table")
	}
}

// coupled has the mistake AloneAtBounds exists for: WAIT's fixed default conflicts with IDLE's
// documented minimum.
type coupled struct {
	Idle time.Duration `env:"IDLE" envDefault:"60s" min:"1s" max:"24h" desc:"Idle time, 1s to 24h."`
	Wait time.Duration `env:"WAIT" envDefault:"2s" desc:"Wait, less than half of IDLE."`
}

func (c *coupled) Validate() error {
	if c.Wait >= c.Idle/2 {
		return config.Problem("WAIT", "must be less than half of IDLE")
	}
	return nil
}

func TestAloneAtBounds(t *testing.T) {
	AloneAtBounds(t, config.Common{})

	r := &recorder{TB: t}
	AloneAtBounds(r, coupled{})
	if !r.failed {
		t.Error("AloneAtBounds passed IDLE=1s refused because of WAIT's default")
	}
	r = &recorder{TB: t}
	AloneAtBounds(r, demo{}, "DEMO_QUEUE=q")
	if !r.failed {
		t.Error("AloneAtBounds passed a struct that documents no bound")
	}
}
