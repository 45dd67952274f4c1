package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sampleTLS struct {
	CAFile   string `env:"CA_FILE" desc:"CA bundle path."`
	Insecure bool   `env:"INSECURE" envDefault:"false" desc:"Skip certificate verification."`
}

type sample struct {
	URL      string        `env:"S_URL,required" desc:"Broker URL."`
	Wait     time.Duration `env:"S_WAIT" envDefault:"20s" desc:"Long-poll wait."`
	Batch    int           `env:"S_BATCH" envDefault:"10" min:"1" max:"10" desc:"Batch size, 1 to 10."`
	Password Secret        `env:"S_PASSWORD" desc:"Password."`
	Token    Secret        `env:"S_TOKEN,required" desc:"API token."`
	Streams  []string      `env:"S_STREAMS" envDefault:"a,b" desc:"Streams to read."`
	TLS      sampleTLS     `envPrefix:"S_TLS_"`
}

func (s *sample) Validate() error {
	var errs []error
	if s.Batch < 1 || s.Batch > 10 {
		errs = append(errs, Problem("S_BATCH", "must be between 1 and 10, got %d", s.Batch))
	}
	if s.TLS.Insecure && s.TLS.CAFile != "" {
		errs = append(errs, Problem("S_TLS_INSECURE", "must be false when S_TLS_CA_FILE is set"))
	}
	return errors.Join(errs...)
}

const hunter = "hunter2-very-secret"

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func problems(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	var es *Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, want *Errors: %v", err, err)
	}
	return es.Problems
}

func TestLoad(t *testing.T) {
	tokenFile := writeFile(t, hunter+"\n")
	emptyFile := writeFile(t, "\n")
	base := []string{"S_URL=https://broker", "S_TOKEN=tok"}
	tests := []struct {
		name     string
		environ  []string
		wantVars []string // the problems' variables, in order
		wantText []string // substrings of the error
		check    func(t *testing.T, c *sample)
	}{
		{
			name:    "defaults and nested prefix",
			environ: append(base, "S_TLS_CA_FILE=/ca.pem", "IGNORED=1"),
			check: func(t *testing.T, c *sample) {
				if c.URL != "https://broker" || c.Wait != 20*time.Second || c.Batch != 10 || c.Token.Reveal() != "tok" ||
					c.TLS.CAFile != "/ca.pem" || strings.Join(c.Streams, ",") != "a,b" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name:     "missing required var is named",
			environ:  []string{"S_TOKEN=tok"},
			wantVars: []string{"S_URL"},
			wantText: []string{"S_URL: is required but not set"},
		},
		{
			name:     "missing required secret mentions its _FILE",
			environ:  []string{"S_URL=u"},
			wantVars: []string{"S_TOKEN"},
			wantText: []string{"S_TOKEN_FILE"},
		},
		{
			name:     "required but empty",
			environ:  []string{"S_URL=", "S_TOKEN=tok"},
			wantVars: []string{"S_URL"},
			wantText: []string{"S_URL: is required but empty"},
		},
		{
			name:     "bad duration names var and value",
			environ:  append(base, "S_WAIT=3x"),
			wantVars: []string{"S_WAIT"},
			wantText: []string{`S_WAIT: invalid value "3x"`, "30s"},
		},
		{
			name:     "several problems at once, in field order, no consequential validation problem",
			environ:  []string{"S_BATCH=abc", "S_WAIT=soon", "S_TLS_INSECURE=maybe"},
			wantVars: []string{"S_URL", "S_WAIT", "S_BATCH", "S_TOKEN", "S_TLS_INSECURE"},
			wantText: []string{`S_BATCH: invalid value "abc": want an integer`, `S_TLS_INSECURE: invalid value "maybe": want true or false`},
		},
		{
			name:     "validation problems",
			environ:  append(base, "S_BATCH=11", "S_TLS_INSECURE=true", "S_TLS_CA_FILE=/ca"),
			wantVars: []string{"S_BATCH", "S_TLS_INSECURE"},
			wantText: []string{"S_BATCH: must be between 1 and 10, got 11"},
		},
		{
			name:    "secret from _FILE, trailing newline trimmed",
			environ: []string{"S_URL=u", "S_TOKEN_FILE=" + tokenFile},
			check: func(t *testing.T, c *sample) {
				if c.Token.Reveal() != hunter {
					t.Errorf("token %q, want the file's content", c.Token.Reveal())
				}
			},
		},
		{
			name:     "secret and its _FILE both set",
			environ:  []string{"S_URL=u", "S_TOKEN=" + hunter, "S_TOKEN_FILE=" + tokenFile},
			wantVars: []string{"S_TOKEN"},
			wantText: []string{"S_TOKEN and S_TOKEN_FILE"},
		},
		{
			name:     "unreadable secret file names the _FILE var",
			environ:  []string{"S_URL=u", "S_TOKEN_FILE=/nonexistent/token"},
			wantVars: []string{"S_TOKEN_FILE"},
			wantText: []string{"S_TOKEN_FILE: reading secret file", "/nonexistent/token"},
		},
		{
			name:     "empty secret file",
			environ:  []string{"S_URL=u", "S_TOKEN_FILE=" + emptyFile},
			wantVars: []string{"S_TOKEN_FILE"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c sample
			err := Load(&c, tc.environ)
			got := problems(t, err)
			var vars []string
			for _, p := range got {
				vars = append(vars, p.Var)
			}
			if strings.Join(vars, ",") != strings.Join(tc.wantVars, ",") {
				t.Fatalf("problems for %v, want %v; error:\n%v", vars, tc.wantVars, err)
			}
			for _, p := range got {
				if strings.Count(p.Error(), p.Var+": ") != 1 {
					t.Errorf("problem names its variable more than once: %v", p)
				}
			}
			for _, s := range tc.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if err != nil && strings.Contains(err.Error(), hunter) {
				t.Errorf("error reveals the secret: %v", err)
			}
			if tc.check != nil {
				tc.check(t, &c)
			}
		})
	}
}

func TestLoadRejectsNonStructPointer(t *testing.T) {
	var c sample
	for _, dst := range []any{c, nil, new(int)} {
		if err := Load(dst, nil); err == nil {
			t.Errorf("Load(%T) = nil, want an error", dst)
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	c := sample{URL: "u", Token: Secret(hunter), Password: Secret(hunter)}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "config", c, "token", c.Token, "ptr", &c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "config", c, "token", c.Token, "ptr", &c)
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", c),
		"%+v":  fmt.Sprintf("%+v", c),
		"%#v":  fmt.Sprintf("%#v", c),
		"%s":   fmt.Sprintf("%s", c.Token), //lint:ignore S1025 the %s verb on a Secret is what is checked
		"%q":   fmt.Sprintf("%q", c.Token),
		"%x":   fmt.Sprintf("%x", c.Token),
		"&%+v": fmt.Sprintf("%+v", &c),
		"slog": logs.String(),
	}
	for verb, out := range outputs {
		if strings.Contains(out, hunter) || strings.Contains(out, fmt.Sprintf("%x", hunter)) {
			t.Errorf("%s reveals the secret: %s", verb, out)
		}
		if verb != "%x" && !strings.Contains(out, "redacted") {
			t.Errorf("%s does not show [redacted]: %s", verb, out)
		}
	}
	if Secret("").String() != "" {
		t.Errorf("an empty secret should print empty")
	}
}

// A bad value in a secret variable must not appear in the error either.
func TestSecretParseErrorHidesValue(t *testing.T) {
	type cfg struct {
		N Secret   `env:"N" desc:"d"`
		L []Secret `env:"L" desc:"d"`
	}
	var c cfg
	if err := Load(&c, []string{"N=" + hunter, "L=" + hunter + ",x"}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.N.Reveal() != hunter || len(c.L) != 2 {
		t.Errorf("got %#v", c)
	}
	p := parserFor(secretType, new(string))
	if _, err := p(hunter); err != nil {
		t.Fatalf("a secret string always parses: %v", err)
	}
}

func TestCommon(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		var c Common
		if err := Load(&c, []string{"NUMAFLOW_REPLICA=3", "NUMAFLOW_READ_BATCH_SIZE=100"}); err != nil {
			t.Fatal(err)
		}
		want := Common{LogLevel: "info", LogFormat: "json", MetricsAddr: ":9090",
			SourceSocket: "/var/run/numaflow/source.sock", SourceServerInfoFile: "/var/run/numaflow/sourcer-server-info",
			Prefetch: 0, PrefetchBytes: 0, MaxMessageBytes: 1<<20 - 16<<10, DeadLetterFallback: "",
			AckRetryTimeout: 30 * time.Second, PendingRefresh: 5 * time.Second, ReleaseWait: 0, ShutdownTimeout: 25 * time.Second,
			Platform: Platform{Replica: 3, ReadBatchSize: 100, ReadTimeoutMS: 1000, ContainerType: "unknown-container"}}
		if c != want {
			t.Errorf("defaults:\n%+v\nwant\n%+v", c, want)
		}
	})
	t.Run("RELEASE_WAIT's default follows SHUTDOWN_TIMEOUT", func(t *testing.T) {
		for _, tc := range []struct {
			env  []string
			want time.Duration
		}{
			{nil, 2 * time.Second},
			{[]string{"SHUTDOWN_TIMEOUT=1s"}, 500 * time.Millisecond},
			{[]string{"SHUTDOWN_TIMEOUT=4s"}, 2 * time.Second},
			{[]string{"SHUTDOWN_TIMEOUT=10s", "RELEASE_WAIT=9s"}, 9 * time.Second},
		} {
			var c Common
			if err := Load(&c, tc.env); err != nil {
				t.Errorf("%v: %v", tc.env, err)
			} else if got := c.ReleaseWaitOrDefault(); got != tc.want {
				t.Errorf("%v: release wait %s, want %s", tc.env, got, tc.want)
			}
		}
	})
	t.Run("PREFETCH_BYTES in bytes or with a unit", func(t *testing.T) {
		for in, want := range map[string]Bytes{"": 0, "0": 0, "1048576": 1 << 20, " 512Ki ": 512 << 10, "64Mi": 64 << 20, "1Gi": 1 << 30, "2Ti": 2 << 40} {
			var c Common
			if err := Load(&c, []string{"PREFETCH_BYTES=" + in}); err != nil {
				t.Errorf("PREFETCH_BYTES=%q: %v", in, err)
			} else if c.PrefetchBytes != want {
				t.Errorf("PREFETCH_BYTES=%q = %d, want %d", in, c.PrefetchBytes, want)
			}
		}
		var c Common
		err := Load(&c, []string{"PREFETCH_BYTES=64MiB"})
		if want := `PREFETCH_BYTES: invalid value "64MiB": want a whole number of bytes, or one with a unit Ki, Mi, Gi or Ti, such as 64Mi`; err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
		err = Load(&c, []string{"PREFETCH_BYTES=-1"})
		if want := "PREFETCH_BYTES: must be 0 (derived from the container's memory limit) or more, got -1"; err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
	})
	t.Run("METRICS_ADDR forms", func(t *testing.T) {
		for _, v := range []string{":9090", ":0", "0.0.0.0:9090", "127.0.0.1:65535", "[::1]:9090", "localhost:9090"} {
			var c Common
			if err := Load(&c, []string{"METRICS_ADDR=" + v}); err != nil {
				t.Errorf("METRICS_ADDR=%q: %v", v, err)
			}
		}
	})
	t.Run("empty METRICS_ADDR disables", func(t *testing.T) {
		var c Common
		if err := Load(&c, []string{"METRICS_ADDR="}); err != nil {
			t.Fatal(err)
		}
		if c.MetricsAddr != "" {
			t.Errorf("MetricsAddr = %q, want empty", c.MetricsAddr)
		}
	})
	bad := []struct {
		env  string
		vars []string
	}{
		{"LOG_LEVEL=verbose", []string{"LOG_LEVEL"}},
		{"LOG_FORMAT=xml", []string{"LOG_FORMAT"}},
		{"METRICS_ADDR=nonsense", []string{"METRICS_ADDR"}},
		{"METRICS_ADDR=:99999", []string{"METRICS_ADDR"}}, // net.Listen refuses it: exit 1 after start, not 2
		{"METRICS_ADDR=:-1", []string{"METRICS_ADDR"}},
		{"METRICS_ADDR=:metrics", []string{"METRICS_ADDR"}},
		{"METRICS_ADDR=:9090 ", []string{"METRICS_ADDR"}},
		{"SOURCE_SOCKET=/tmp/" + strings.Repeat("s", 103), []string{"SOURCE_SOCKET"}}, // 108 bytes: bind refuses it
		{"PREFETCH=-1", []string{"PREFETCH"}},
		{"PREFETCH_BYTES=-1", []string{"PREFETCH_BYTES"}},
		{"PREFETCH_BYTES=-64Mi", []string{"PREFETCH_BYTES"}},
		{"PREFETCH_BYTES=64MiB", []string{"PREFETCH_BYTES"}},
		{"PREFETCH_BYTES=64M", []string{"PREFETCH_BYTES"}},
		{"PREFETCH_BYTES=1.5Gi", []string{"PREFETCH_BYTES"}},
		{"PREFETCH_BYTES=Mi", []string{"PREFETCH_BYTES"}},
		{"PREFETCH_BYTES=lots", []string{"PREFETCH_BYTES"}},
		{"PREFETCH_BYTES=9000000Ti", []string{"PREFETCH_BYTES"}},
		{"MAX_MESSAGE_BYTES=0", []string{"MAX_MESSAGE_BYTES"}},
		{"MAX_MESSAGE_BYTES=67108865", []string{"MAX_MESSAGE_BYTES"}}, // over numa's gRPC limit: the read stream would fail
		{"DEAD_LETTER_FALLBACK=keep", []string{"DEAD_LETTER_FALLBACK"}},
		{"ACK_RETRY_TIMEOUT=0s", []string{"ACK_RETRY_TIMEOUT"}},
		{"SHUTDOWN_TIMEOUT=30s", []string{"SHUTDOWN_TIMEOUT"}},
		{"RELEASE_WAIT=25s", []string{"RELEASE_WAIT"}},
		{"RELEASE_WAIT=-1s", []string{"RELEASE_WAIT"}},
		{"NUMAFLOW_REPLICA=70000", []string{"NUMAFLOW_REPLICA"}},
		{"NUMAFLOW_READ_BATCH_SIZE=0", []string{"NUMAFLOW_READ_BATCH_SIZE"}},
		{"PENDING_REFRESH=5", []string{"PENDING_REFRESH"}},
	}
	for _, tc := range bad {
		t.Run(tc.env, func(t *testing.T) {
			var c Common
			got := problems(t, Load(&c, []string{tc.env}))
			var vars []string
			for _, p := range got {
				vars = append(vars, p.Var)
			}
			if strings.Join(vars, ",") != strings.Join(tc.vars, ",") {
				t.Errorf("problems %v, want %v", got, tc.vars)
			}
		})
	}
}
