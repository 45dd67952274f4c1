package configtest

import (
	"os"
	"path/filepath"
	"testing"

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
