package redisstreams

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/configtest"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

func validConfig() Config {
	return Config{
		URL: "redis://127.0.0.1:6390", Mode: ModeStandalone, Stream: "orders", Group: "g", StartFrom: StartOldest,
		CreateGroup: true, ClaimMinIdle: time.Minute, MaxExtension: time.Hour, ReadCount: 500,
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	certs, err := redistest.NewCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // "VAR: substring" of each problem, in any order
	}{
		{"defaults are valid", func(c *Config) {}, nil},
		{"rediss url with user and db", func(c *Config) { c.URL = "rediss://reader:s3cret@redis.example.com:6380/2" }, nil},
		{"unix socket", func(c *Config) { c.URL = "unix:///run/redis.sock" }, nil},
		{"cluster addrs with hash-tagged streams", func(c *Config) {
			c.URL, c.Addrs, c.Mode, c.Stream = "", "10.0.0.1:6379, 10.0.0.2:6379", ModeCluster, "{orders}:eu,{orders}:us"
		}, nil},
		{"sentinel", func(c *Config) {
			c.URL, c.Addrs, c.Mode, c.SentinelMaster, c.DB = "", "s1:26379,s2:26379,s3:26379", ModeSentinel, "mymaster", 3
		}, nil},
		{"start from an id", func(c *Config) { c.StartFrom = "1700000000000-5" }, nil},
		{"start from ms", func(c *Config) { c.StartFrom = "1700000000000" }, nil},
		{"latest", func(c *Config) { c.StartFrom = StartLatest }, nil},
		{"several streams", func(c *Config) { c.Stream = "a, b ,c"; c.DeadLetterStream = "dlq" }, nil},
		{"tls files", func(c *Config) {
			c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile, c.TLSServerName = certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile, "redis"
		}, nil},

		{"neither url nor addrs", func(c *Config) { c.URL = "" }, []string{"REDIS_URL: set REDIS_URL or REDIS_ADDRS"}},
		{"both url and addrs", func(c *Config) { c.Addrs = "h:1" }, []string{"REDIS_ADDRS: set only one"}},
		{"bad mode", func(c *Config) { c.Mode = "ring" }, []string{"REDIS_MODE: must be standalone, cluster or sentinel"}},
		{"sentinel without master", func(c *Config) { c.URL, c.Addrs, c.Mode = "", "s:26379", ModeSentinel },
			[]string{"REDIS_SENTINEL_MASTER: must be set in sentinel mode"}},
		{"sentinel with a url", func(c *Config) { c.Mode, c.SentinelMaster = ModeSentinel, "m" },
			[]string{"REDIS_URL: sentinel mode needs REDIS_ADDRS"}},
		{"master without sentinel mode", func(c *Config) { c.SentinelMaster = "m" }, []string{"REDIS_SENTINEL_MASTER: is only used with REDIS_MODE=sentinel"}},
		{"sentinel user and password", func(c *Config) {
			c.URL, c.Addrs, c.Mode, c.SentinelMaster, c.SentinelUsername, c.SentinelPassword = "", "s:26379", ModeSentinel, "m", "watcher", "pw"
		}, nil},
		{"sentinel user without its password", func(c *Config) {
			c.URL, c.Addrs, c.Mode, c.SentinelMaster, c.SentinelUsername = "", "s:26379", ModeSentinel, "m", "watcher"
		}, []string{"REDIS_SENTINEL_USERNAME: needs REDIS_SENTINEL_PASSWORD"}},
		{"sentinel user outside sentinel mode", func(c *Config) { c.SentinelUsername, c.SentinelPassword = "watcher", "pw" },
			[]string{"REDIS_SENTINEL_USERNAME: is only used with REDIS_MODE=sentinel"}},
		{"sentinel user with a space", func(c *Config) {
			c.URL, c.Addrs, c.Mode, c.SentinelMaster, c.SentinelUsername, c.SentinelPassword = "", "s:26379", ModeSentinel, "m", "a b", "pw"
		}, []string{"REDIS_SENTINEL_USERNAME: must not contain white space"}},
		{"url scheme", func(c *Config) { c.URL = "http://h:1" }, []string{"REDIS_URL: must start with redis://, rediss:// or unix://"}},
		{"url password is never echoed", func(c *Config) { c.URL = "redis://u:hunter2@h:1/notadb" }, []string{"REDIS_URL: is not a valid redis:// URL"}},
		{"addr without port", func(c *Config) { c.URL, c.Addrs = "", "redis" }, []string{"REDIS_ADDRS: each address must be host:port"}},
		{"standalone with two addrs", func(c *Config) { c.URL, c.Addrs = "", "a:1,b:2" }, []string{"REDIS_ADDRS: standalone mode takes one address"}},
		{"negative db", func(c *Config) { c.URL, c.Addrs, c.DB = "", "a:1", -1 }, []string{"REDIS_DB: must be 0 or more"}},
		{"db in cluster", func(c *Config) { c.URL, c.Addrs, c.Mode, c.DB = "", "a:1", ModeCluster, 1 }, []string{"REDIS_DB: must be 0 in cluster mode"}},
		{"db with a url", func(c *Config) { c.DB = 1 }, []string{"REDIS_DB: is only used with REDIS_ADDRS"}},
		{"cert without key", func(c *Config) { c.TLSCertFile = certs.ClientCertFile }, []string{"REDIS_TLS_KEY_FILE: must be set with REDIS_TLS_CERT_FILE"}},
		{"key without cert", func(c *Config) { c.TLSKeyFile = certs.ClientKeyFile }, []string{"REDIS_TLS_CERT_FILE: must be set with REDIS_TLS_KEY_FILE"}},
		{"missing ca file", func(c *Config) { c.TLSCAFile = filepath.Join(dir, "nope.pem") }, []string{"REDIS_TLS_CA_FILE: reading the CA file"}},
		{"ca file not pem", func(c *Config) { c.TLSCAFile = notPEM }, []string{"REDIS_TLS_CA_FILE: no PEM certificate found"}},
		{"cert and key do not load", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = notPEM, notPEM }, []string{"REDIS_TLS_CERT_FILE: loading the client certificate"}},
		{"empty stream in list", func(c *Config) { c.Stream = "a,,b" }, []string{"REDIS_STREAM: has an empty stream name"}},
		{"stream twice", func(c *Config) { c.Stream = "a,b,a" }, []string{`REDIS_STREAM: names stream "a" twice`}},
		{"cluster streams without a shared tag", func(c *Config) { c.URL, c.Addrs, c.Mode, c.Stream = "", "a:1", ModeCluster, "a,b" },
			[]string{"REDIS_STREAM: in cluster mode several streams must share a hash tag"}},
		{"cluster streams with different tags", func(c *Config) { c.URL, c.Addrs, c.Mode, c.Stream = "", "a:1", ModeCluster, "{a}x,{b}x" },
			[]string{"REDIS_STREAM: in cluster mode several streams must share a hash tag"}},
		{"group with a space", func(c *Config) { c.Group = "my group" }, []string{"REDIS_GROUP: must not contain white space"}},
		{"consumer with a space", func(c *Config) { c.Consumer = "a b" }, []string{"REDIS_CONSUMER: must not contain white space"}},
		{"bad start", func(c *Config) { c.StartFrom = "newest" }, []string{"REDIS_START_FROM: must be oldest, latest or an entry ID"}},
		{"bad start id", func(c *Config) { c.StartFrom = "12-x" }, []string{"REDIS_START_FROM: must be oldest, latest or an entry ID"}},
		{"claim idle too small", func(c *Config) { c.ClaimMinIdle = 500 * time.Millisecond; c.Block = 100 * time.Millisecond },
			[]string{"REDIS_CLAIM_MIN_IDLE: must be at least 1s"}},
		{"max extension zero", func(c *Config) { c.MaxExtension = 0 }, []string{"REDIS_MAX_EXTENSION: must be more than 0s"}},
		{"block too long", func(c *Config) { c.Block = time.Minute }, []string{"REDIS_BLOCK: must be between 10ms and 10s"}},
		{"block not under half the claim idle", func(c *Config) { c.ClaimMinIdle = 2 * time.Second; c.Block = time.Second },
			[]string{"REDIS_BLOCK: must be less than half of REDIS_CLAIM_MIN_IDLE"}},
		{"read count zero", func(c *Config) { c.ReadCount = 0 }, []string{"REDIS_READ_COUNT: must be between 1 and 10000"}},
		{"dead letters to the source stream", func(c *Config) { c.Stream = "a,b"; c.DeadLetterStream = "b" },
			[]string{"REDIS_DEAD_LETTER_STREAM: must not be one of the streams read"}},
		{"negative dlq maxlen", func(c *Config) { c.DeadLetterMaxLen = -1 }, []string{"REDIS_DEAD_LETTER_MAXLEN: must be 0 (no cap) or more"}},
		{"every problem at once", func(c *Config) {
			c.Mode, c.StartFrom, c.ClaimMinIdle, c.ReadCount, c.TLSCertFile = "x", "y", 0, -1, certs.ClientCertFile
		}, []string{"REDIS_MODE:", "REDIS_START_FROM:", "REDIS_CLAIM_MIN_IDLE:", "REDIS_READ_COUNT:", "REDIS_TLS_KEY_FILE:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			got := problems(c.Validate())
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for _, w := range tt.want {
				name, text, _ := strings.Cut(w, ":")
				found := false
				for _, g := range got {
					found = found || strings.HasPrefix(g, name+":") && strings.Contains(g, strings.TrimSpace(text))
				}
				if !found {
					t.Errorf("no problem %q in:\n%s", w, strings.Join(got, "\n"))
				}
			}
			for _, g := range got {
				if strings.Contains(g, "hunter2") {
					t.Errorf("a problem shows the password: %s", g)
				}
			}
		})
	}
}

// problems flattens a Validate error into "VAR: problem" lines.
func problems(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	var walk func(error)
	walk = func(e error) {
		if u, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range u.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *config.FieldError
		if errors.As(e, &fe) {
			out = append(out, fe.Error())
		} else {
			out = append(out, "?: "+e.Error())
		}
	}
	walk(err)
	return out
}

func TestLoadDefaults(t *testing.T) {
	var c Config
	if err := config.Load(&c, []string{"REDIS_URL=redis://127.0.0.1:6390", "REDIS_STREAM=orders", "REDIS_GROUP=g"}); err != nil {
		t.Fatalf("loading: %v", err)
	}
	if want := validConfig(); c != want {
		t.Fatalf("loaded %+v, want %+v", c, want)
	}
}

// A documented value set alone is never refused because of a default that depends on it: REDIS_BLOCK's
// default follows REDIS_CLAIM_MIN_IDLE (a fixed 2s default made any claim idle under about 4s invalid).
func TestClaimMinIdleAloneAtItsDocumentedBounds(t *testing.T) {
	for _, tc := range []struct {
		idle      string
		wantBlock time.Duration
	}{
		{"1s", 250 * time.Millisecond}, // the documented minimum
		{"2s", 500 * time.Millisecond},
		{"4s", time.Second},
		{"60s", 2 * time.Second}, // the default
		{"24h", 2 * time.Second},
	} {
		var c Config
		err := config.Load(&c, []string{"REDIS_URL=redis://127.0.0.1:6390", "REDIS_STREAM=orders", "REDIS_GROUP=g",
			"REDIS_CLAIM_MIN_IDLE=" + tc.idle})
		if err == nil {
			err = c.Validate()
		}
		if err != nil {
			t.Errorf("REDIS_CLAIM_MIN_IDLE=%s alone: %v", tc.idle, err)
			continue
		}
		if got := c.BlockOrDefault(); got != tc.wantBlock {
			t.Errorf("REDIS_CLAIM_MIN_IDLE=%s: REDIS_BLOCK defaults to %s, want %s", tc.idle, got, tc.wantBlock)
		}
	}
	// A REDIS_BLOCK set explicitly still has to fit.
	var c Config
	err := config.Load(&c, []string{"REDIS_URL=redis://127.0.0.1:6390", "REDIS_STREAM=orders", "REDIS_GROUP=g",
		"REDIS_CLAIM_MIN_IDLE=2s", "REDIS_BLOCK=1s"})
	if err == nil {
		err = c.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "REDIS_BLOCK: must be less than half of REDIS_CLAIM_MIN_IDLE") {
		t.Errorf("REDIS_BLOCK=1s with REDIS_CLAIM_MIN_IDLE=2s: got %v, want a REDIS_BLOCK error", err)
	}
}

// Every variable with a documented minimum or maximum, set alone (with only the required variables) at
// that bound, loads and validates: no default of another variable may make a documented value invalid.
// A variable whose description documents a bound must be listed here.
func TestEveryDocumentedBoundAlone(t *testing.T) {
	required := []string{"REDIS_URL=redis://127.0.0.1:6390", "REDIS_STREAM=orders", "REDIS_GROUP=g"}
	bounds := []struct{ name, value string }{
		{"REDIS_CLAIM_MIN_IDLE", "1s"}, // "At least 1s"
		{"REDIS_BLOCK", "10ms"},        // "10ms to 10s"
		{"REDIS_BLOCK", "10s"},
		{"REDIS_READ_COUNT", "1"}, // "1 to 10000"
		{"REDIS_READ_COUNT", "10000"},
		{"REDIS_DEAD_LETTER_MAXLEN", "0"}, // "0: no cap"
		{"REDIS_DB", "0"},                 // "must be 0 or more"
	}
	for _, b := range bounds {
		var c Config
		err := config.Load(&c, append(append([]string(nil), required...), b.name+"="+b.value))
		if err == nil {
			err = c.Validate()
		}
		if err != nil {
			t.Errorf("%s=%s alone: %v", b.name, b.value, err)
		}
	}
	// Together at their bounds, the values that depend on each other still fit.
	var c Config
	err := config.Load(&c, append(append([]string(nil), required...), "REDIS_CLAIM_MIN_IDLE=1s", "REDIS_BLOCK=10ms"))
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		t.Errorf("REDIS_CLAIM_MIN_IDLE=1s with REDIS_BLOCK=10ms: %v", err)
	}

	// Every description that documents a bound has its variable in the table above.
	documented := regexp.MustCompile(`(?i)\bat least\b|\d\S* to \d|\bor more\b|\bat most\b|\bbetween\b|0: no cap`)
	for _, v := range config.Vars(Config{}) {
		if !documented.MatchString(v.Description) {
			continue
		}
		if !slices.ContainsFunc(bounds, func(b struct{ name, value string }) bool { return b.name == v.Name }) {
			t.Errorf("%s documents a bound (%q) but is not set alone at it here", v.Name, v.Description)
		}
	}
}

func TestLoadPasswordFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c Config
	err := config.Load(&c, []string{"REDIS_ADDRS=127.0.0.1:6390", "REDIS_STREAM=s", "REDIS_GROUP=g", "REDIS_PASSWORD_FILE=" + f})
	if err != nil {
		t.Fatalf("loading: %v", err)
	}
	if c.Password.Reveal() != "s3cret" {
		t.Fatalf("password %q, want it from REDIS_PASSWORD_FILE", c.Password.Reveal())
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	var c Config
	err := config.Load(&c, []string{"REDIS_MODE=ring", "REDIS_CLAIM_MIN_IDLE=soon", "REDIS_START_FROM=newest"})
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v, want *config.Errors", err)
	}
	named := configtest.Vars(t, err)
	for _, v := range []string{"REDIS_URL", "REDIS_STREAM", "REDIS_GROUP", "REDIS_MODE", "REDIS_CLAIM_MIN_IDLE", "REDIS_START_FROM"} {
		if !slices.Contains(named, v) {
			t.Errorf("no problem named %s in:\n%v", v, err)
		}
	}
}

func TestConsumerName(t *testing.T) {
	for _, tt := range []struct {
		consumer, namespace, pipeline, vertex, mono string
		replica                                     int
		want                                        string
	}{
		{"", "prod", "orders", "in", "", 3, "prod-orders-in-3"},
		{"", "", "orders", "in", "", 3, "orders-in-3"},
		{"", "prod", "", "", "alarms", 1, "prod-alarms-1"}, // a MonoVertex
		{"fixed", "prod", "orders", "in", "", 3, "fixed"},
		{"src-<replica>", "prod", "orders", "in", "", 3, "src-3"},
		{"", "", "", "", "", 0, "redis-streams-source-0"},
	} {
		c := Config{Consumer: tt.consumer}
		env := &server.Env{Platform: config.Platform{Namespace: tt.namespace, Pipeline: tt.pipeline, Vertex: tt.vertex,
			MonoVertex: tt.mono, Replica: tt.replica}}
		if got := consumerName(&c, env); got != tt.want {
			t.Errorf("consumerName(%+v) = %q, want %q", tt, got, tt.want)
		}
	}
}

// A fixed REDIS_CONSUMER inside Numaflow is every replica's name: warned about unless it has <replica>.
func TestSharedConsumer(t *testing.T) {
	for _, tt := range []struct {
		consumer, pod string
		want          bool
	}{
		{"fixed", "p-in-0", true}, {"src-<replica>", "p-in-0", false}, {"", "p-in-0", false}, {"fixed", "", false},
	} {
		env := &server.Env{Platform: config.Platform{Pod: tt.pod}}
		if got := sharedConsumer(&Config{Consumer: tt.consumer}, env); got != tt.want {
			t.Errorf("sharedConsumer(REDIS_CONSUMER=%q, NUMAFLOW_POD=%q) = %v, want %v", tt.consumer, tt.pod, got, tt.want)
		}
	}
}

func TestREADME(t *testing.T) {
	configtest.Documented(t, Config{})
	configtest.README(t, "../../README.md", envdoc.Groups("redis-streams-source", Config{})...)
}

// validURLConfig is a valid configuration with url in mode.
func validURLConfig(mode, url string) Config {
	return Config{URL: config.Secret(url), Mode: mode, Stream: "{s}", Group: "g", StartFrom: StartOldest,
		CreateGroup: true, ClaimMinIdle: time.Minute, MaxExtension: time.Hour, ReadCount: 500}
}

// A REDIS_URL that Validate accepts must not make Open fail (exit 1 and a crash loop instead of exit 2
// naming the variable), and one Open takes must be accepted: Validate parses it as Open will, with
// go-redis's cluster parser in cluster mode.
func TestURLValidatedAsOpenParsesIt(t *testing.T) {
	for _, tc := range []struct {
		mode, url string
		valid     bool
	}{
		{ModeCluster, "unix:///tmp/redis.sock", false},
		{ModeCluster, "redis://127.0.0.1:7000?db=0", false},
		{ModeCluster, "redis://127.0.0.1:7000?addr=127.0.0.1:7001", true},
		{ModeCluster, "redis://127.0.0.1:7000/3", true}, // go-redis ignores the path in cluster mode
		{ModeStandalone, "unix:///tmp/redis.sock?db=x", false},
		{ModeStandalone, "unix:///tmp/redis.sock?db=2", true},
		{ModeStandalone, "redis://127.0.0.1:7000/3", true},
	} {
		cfg := validURLConfig(tc.mode, tc.url)
		verr := cfg.Validate()
		_, oerr := newClient(&cfg)
		if (verr == nil) != tc.valid || (oerr == nil) != tc.valid {
			t.Errorf("mode %s, REDIS_URL %s: Validate says %v, Open says %v; want both to say valid=%t", tc.mode, tc.url, verr, oerr, tc.valid)
		}
	}
}

// skip_verify=true in a rediss:// URL is honoured, as REDIS_TLS_INSECURE_SKIP_VERIFY would be.
func TestURLSkipVerifyIsKept(t *testing.T) {
	cfg := validURLConfig(ModeStandalone, "rediss://127.0.0.1:6380?skip_verify=true")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := newClient(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o := c.(interface{ Options() *redis.Options }).Options(); !o.TLSConfig.InsecureSkipVerify {
		t.Errorf("REDIS_URL asks skip_verify=true, but the client verifies certificates")
	}
}

// An entry ID whose parts do not fit Redis's 64-bit numbers is refused by Redis on every receive: it
// must fail validation, naming REDIS_START_FROM.
func TestStartFromOutOfRange(t *testing.T) {
	for _, id := range []string{"99999999999999999999999-0", "1-99999999999999999999999"} {
		cfg := validURLConfig(ModeStandalone, "redis://127.0.0.1:6380")
		cfg.StartFrom = id
		var fe *config.FieldError
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Var != "REDIS_START_FROM" {
			t.Errorf("REDIS_START_FROM=%s: %v, want a problem naming REDIS_START_FROM", id, err)
		}
	}
}
