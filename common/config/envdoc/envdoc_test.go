package envdoc

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
)

type sampleTLS struct {
	CAFile   string `env:"CA_FILE" desc:"CA bundle path."`
	Insecure bool   `env:"INSECURE" envDefault:"false" desc:"Skip certificate verification."`
}

type sample struct {
	URL      string        `env:"S_URL,required" desc:"Broker URL."`
	Wait     time.Duration `env:"S_WAIT" envDefault:"20s" desc:"Long-poll wait."`
	Batch    int           `env:"S_BATCH" envDefault:"10" desc:"Batch size, 1 to 10."`
	Password config.Secret `env:"S_PASSWORD" desc:"Password."`
	Token    config.Secret `env:"S_TOKEN,required" desc:"API token."`
	Streams  []string      `env:"S_STREAMS" envDefault:"a,b" desc:"Streams to read."`
	TLS      sampleTLS     `envPrefix:"S_TLS_"`
}

func TestLint(t *testing.T) {
	if err := Lint(sample{}, config.Common{}); err != nil {
		t.Errorf("Lint of documented structs: %v", err)
	}
	type bad struct {
		A string `env:"A"`
		B string `env:"B,required" envDefault:"x" desc:"b"`
		C string `env:"S_URL" desc:"c"`
	}
	err := Lint(sample{}, bad{})
	if err == nil {
		t.Fatal("Lint found nothing")
	}
	for _, s := range []string{"A (bad.A): missing desc tag", "B (bad.B): required with a default", "S_URL: declared by both sample.URL and bad.C"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Lint error %q lacks %q", err, s)
		}
	}
}

func TestMarkdown(t *testing.T) {
	type small struct {
		Addr  string        `env:"ADDR" envDefault:":9090" desc:"Listen address; a|b."`
		Token config.Secret `env:"TOKEN,required" desc:"Token."`
	}
	got := Markdown(Group{Title: "Demo", Vars: config.Vars(small{})}, Group{Title: "More", Vars: config.Vars(small{})[:1]})
	want := "**Demo**\n\n" +
		"| Variable | Default | Required | Description |\n" +
		"| --- | --- | --- | --- |\n" +
		"| `ADDR` | `:9090` | no | Listen address; a\\|b. |\n" +
		"| `TOKEN` |  | yes | Token. (secret; or `TOKEN_FILE`) |\n" +
		"\n**More**\n\n" +
		"| Variable | Default | Required | Description |\n" +
		"| --- | --- | --- | --- |\n" +
		"| `ADDR` | `:9090` | no | Listen address; a\\|b. |\n"
	if got != want {
		t.Errorf("Markdown =\n%s\nwant\n%s", got, want)
	}
}

func TestWriteHelp(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHelp(&b, "demo-source", "Reads demo messages.", Groups("demo-source", sample{})...); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{"Usage: demo-source", "Reads demo messages.", "demo-source:", "Common to every connector:",
		"S_URL", "S_TLS_INSECURE", "(secret; or S_TOKEN_FILE)", "LOG_LEVEL", "NUMAFLOW_REPLICA", "METRICS_ADDR", ":9090"} {
		if !strings.Contains(out, s) {
			t.Errorf("help lacks %q:\n%s", s, out)
		}
	}
	// The row of a required variable says so.
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "S_URL ") && !strings.Contains(l, " yes ") {
			t.Errorf("S_URL row does not say required: %q", l)
		}
	}
}

func TestCheckMarkdown(t *testing.T) {
	table := Markdown(Group{Title: "Demo", Vars: config.Vars(sample{})})
	readme := func(section string) string {
		return "# Demo\n\nIntro.\n\n" + TableStart + "\n\n" + section + "\n\n" + TableEnd + "\n\nAfter.\n"
	}
	write := func(t *testing.T, content string) string {
		p := filepath.Join(t.TempDir(), "README.md")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("up to date", func(t *testing.T) {
		if err := checkMarkdown(write(t, readme(table)), table, false); err != nil {
			t.Error(err)
		}
	})
	t.Run("drift is reported with a diff", func(t *testing.T) {
		old := strings.Replace(table, "Long-poll wait.", "Old text.", 1)
		err := checkMarkdown(write(t, readme(old)), table, false)
		if err == nil {
			t.Fatal("no error for a drifted table")
		}
		for _, s := range []string{"make docs", "- | `S_WAIT` | `20s` | no | Old text. |", "+ | `S_WAIT` | `20s` | no | Long-poll wait. |"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error lacks %q:\n%v", s, err)
			}
		}
	})
	t.Run("missing markers", func(t *testing.T) {
		if err := checkMarkdown(write(t, "# Demo\n"), table, true); err == nil {
			t.Error("no error without markers")
		}
	})
	t.Run("UPDATE_DOCS=1 rewrites the section only", func(t *testing.T) {
		t.Setenv(UpdateDocsVar, "1")
		p := write(t, readme("| stale |"))
		if err := CheckMarkdown(p, table); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		if string(got) != readme(strings.TrimSuffix(table, "\n")) {
			t.Errorf("rewritten README:\n%s", got)
		}
		if err := checkMarkdown(p, table, false); err != nil {
			t.Errorf("after the rewrite: %v", err)
		}
	})
}
