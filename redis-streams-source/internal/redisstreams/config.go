// Package redisstreams is the Redis Streams driver behind the redis-streams-source connector: one
// consumer group shared by every replica, XREADGROUP reads, pipelined XACKs, recovery of crashed
// replicas' entries with XAUTOCLAIM, optional dead-letter stream; standalone, cluster and sentinel
// deployments, with TLS. The portable adapter in common/source does batching, retries, leases,
// local redelivery of nacked entries and shutdown.
package redisstreams

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/config"
)

// Modes of REDIS_MODE.
const (
	ModeStandalone = "standalone"
	ModeCluster    = "cluster"
	ModeSentinel   = "sentinel"
)

// Values of REDIS_START_FROM besides an entry ID.
const (
	StartOldest = "oldest"
	StartLatest = "latest"
)

// Limits the configuration is checked against.
const (
	minClaimIdle = time.Second
	minBlock     = 10 * time.Millisecond
	maxBlock     = 10 * time.Second
	maxReadCount = 10000
)

// Config is the redis-streams-source configuration, read from environment variables.
type Config struct {
	URL              config.Secret `env:"REDIS_URL" desc:"Redis URL, redis://[user:password@]host:port[/db] or rediss:// for TLS (unix:///path.sock also works). Required unless REDIS_ADDRS is set."`
	Addrs            string        `env:"REDIS_ADDRS" desc:"Comma-separated host:port list instead of REDIS_URL: the server (standalone), seed nodes (cluster) or the sentinels (sentinel)."`
	Mode             string        `env:"REDIS_MODE" envDefault:"standalone" desc:"Deployment: standalone, cluster or sentinel (sentinel needs REDIS_ADDRS and REDIS_SENTINEL_MASTER)."`
	SentinelMaster   string        `env:"REDIS_SENTINEL_MASTER" desc:"Sentinel mode: the master name the sentinels monitor."`
	SentinelUsername string        `env:"REDIS_SENTINEL_USERNAME" desc:"Sentinel mode: ACL user name on the sentinels themselves (Redis 6.2+ sentinels with ACL users), with REDIS_SENTINEL_PASSWORD."`
	SentinelPassword config.Secret `env:"REDIS_SENTINEL_PASSWORD" desc:"Sentinel mode: password of the sentinels themselves, when they require one (requirepass on the sentinels, or the password of REDIS_SENTINEL_USERNAME)."`
	Username         string        `env:"REDIS_USERNAME" desc:"ACL user name (Redis 6+). Overrides the user in REDIS_URL."`
	Password         config.Secret `env:"REDIS_PASSWORD" desc:"Password (of REDIS_USERNAME, or requirepass). Overrides the password in REDIS_URL."`
	DB               int           `env:"REDIS_DB" envDefault:"0" desc:"Database number with REDIS_ADDRS (standalone and sentinel; cluster has only 0). With REDIS_URL the URL's path sets it."`
	TLS              bool          `env:"REDIS_TLS_ENABLED" envDefault:"false" desc:"Use TLS with REDIS_ADDRS and the system's CA pool. Implied by a rediss:// URL and by any REDIS_TLS_* file or setting."`
	TLSCAFile        string        `env:"REDIS_TLS_CA_FILE" desc:"PEM file of the CA(s) that sign the server certificate, instead of the system's pool."`
	TLSCertFile      string        `env:"REDIS_TLS_CERT_FILE" desc:"PEM client certificate for mutual TLS (with REDIS_TLS_KEY_FILE). Read again for each new connection when the files have changed (a rotated secret); the CA file is read once."`
	TLSKeyFile       string        `env:"REDIS_TLS_KEY_FILE" desc:"PEM private key of REDIS_TLS_CERT_FILE."`
	TLSServerName    string        `env:"REDIS_TLS_SERVER_NAME" desc:"Name the server certificate must carry, when it differs from the host connected to."`
	TLSInsecure      bool          `env:"REDIS_TLS_INSECURE_SKIP_VERIFY" envDefault:"false" desc:"Accept any server certificate (testing only: it allows a man in the middle)."`

	Stream       string        `env:"REDIS_STREAM,required" desc:"Stream key to read; several comma-separated keys are read together (in cluster mode they must share a hash tag, e.g. {orders}:eu,{orders}:us)."`
	Group        string        `env:"REDIS_GROUP,required" desc:"Consumer group shared by every replica of the vertex."`
	Consumer     string        `env:"REDIS_CONSUMER" desc:"Consumer name of this replica; <replica> is replaced by NUMAFLOW_REPLICA (without it every replica of the vertex shares the name: warned at start). Default: <namespace>-<pipeline>-<vertex>-<replica> from the NUMAFLOW_* variables (a MonoVertex: <namespace>-<name>-<replica>), stable across restarts so a restarted replica replays its own pending entries at once, and distinct for every source that shares the group."`
	StartFrom    string        `env:"REDIS_START_FROM" envDefault:"oldest" desc:"Where a group created by this source starts: oldest (the whole stream), latest (only new entries) or an entry ID such as 1700000000000-0."`
	CreateGroup  bool          `env:"REDIS_CREATE_GROUP" envDefault:"true" desc:"Create the group (and the stream) when missing, also when it is deleted while running. false: a missing group is a not_found error until someone creates it."`
	ClaimMinIdle time.Duration `env:"REDIS_CLAIM_MIN_IDLE" envDefault:"60s" desc:"Entries idle longer than this in any consumer's pending list are claimed (XAUTOCLAIM): how the work of crashed or scaled-down replicas is recovered. Entries this source holds are kept from going idle that long. At least 1s."`
	MaxExtension time.Duration `env:"REDIS_MAX_EXTENSION" envDefault:"1h" desc:"Longest total time a held entry is kept from being claimed by other replicas; after it another replica may claim it."`
	Block        time.Duration `env:"REDIS_BLOCK" envDefault:"0s" desc:"Longest wait of one XREADGROUP for new entries (10ms to 10s, less than half of REDIS_CLAIM_MIN_IDLE). 0s: 2s, or a quarter of REDIS_CLAIM_MIN_IDLE when that is shorter. Reads run ahead of numa's, so this bounds only how fast shutdown interrupts an idle read."`
	ReadCount    int           `env:"REDIS_READ_COUNT" envDefault:"500" desc:"Most entries fetched by one XREADGROUP or XAUTOCLAIM (1 to 10000)."`

	PayloadField     string `env:"REDIS_PAYLOAD_FIELD" desc:"Field whose value is the payload; the other fields become headers. Empty: the payload is every field as a JSON object, in stream order. An entry without the field is delivered with an empty payload and the header x-redis-missing-payload-field."`
	KeyField         string `env:"REDIS_KEY_FIELD" desc:"Field whose value becomes the message key. Empty: no keys."`
	DeadLetterStream string `env:"REDIS_DEAD_LETTER_STREAM" desc:"Stream that receives entries nacked more often than numa's max deliveries: their fields plus dead-letter-reason, dead-letter-stream, dead-letter-id and dead-letter-deliveries; then they are acked. Empty: DEAD_LETTER_FALLBACK applies."`
	DeadLetterMaxLen int64  `env:"REDIS_DEAD_LETTER_MAXLEN" envDefault:"0" desc:"Approximate cap (XADD MAXLEN ~) of REDIS_DEAD_LETTER_STREAM; 0: no cap."`
	DeleteOnAck      bool   `env:"REDIS_DELETE_ON_ACK" envDefault:"false" desc:"XDEL each entry after XACK, for streams used as work queues. Do not use when other groups read the same stream."`
}

var (
	entryIDRE = regexp.MustCompile(`^[0-9]+(-[0-9]+)?$`)
	nameRE    = regexp.MustCompile(`^[^\s]+$`)
)

// Validate reports every problem in the configuration at once, each naming its variable. It reads the
// TLS files but makes no network call.
func (c *Config) Validate() error {
	var errs []error
	add := func(name, format string, args ...any) { errs = append(errs, config.Problem(name, format, args...)) }

	// Where Redis is.
	switch c.Mode {
	case ModeStandalone, ModeCluster, ModeSentinel:
	default:
		add("REDIS_MODE", "must be standalone, cluster or sentinel, got %q", c.Mode)
	}
	url, addrs := c.URL.Reveal(), c.addrs()
	switch {
	case url == "" && c.Addrs == "":
		add("REDIS_URL", "set REDIS_URL or REDIS_ADDRS")
	case url != "" && c.Addrs != "":
		add("REDIS_ADDRS", "set only one of REDIS_URL and REDIS_ADDRS")
	case url != "":
		if p := checkURL(url, c.Mode == ModeCluster); p != "" {
			add("REDIS_URL", "%s", p)
		}
		if c.Mode == ModeSentinel {
			add("REDIS_URL", "sentinel mode needs REDIS_ADDRS (the sentinels' addresses) instead of REDIS_URL")
		}
	default:
		for _, a := range addrs {
			if host, port, err := net.SplitHostPort(a); err != nil || host == "" || !validPort(port) {
				add("REDIS_ADDRS", "each address must be host:port, got %q", a)
			}
		}
		if len(addrs) == 0 {
			add("REDIS_ADDRS", "has no address")
		}
		if c.Mode == ModeStandalone && len(addrs) > 1 {
			add("REDIS_ADDRS", "standalone mode takes one address, got %d (use REDIS_MODE=cluster or sentinel)", len(addrs))
		}
	}
	switch {
	case c.Mode == ModeSentinel && c.SentinelMaster == "":
		add("REDIS_SENTINEL_MASTER", "must be set in sentinel mode")
	case c.Mode != ModeSentinel && c.SentinelMaster != "":
		add("REDIS_SENTINEL_MASTER", "is only used with REDIS_MODE=sentinel")
	}
	switch {
	case c.SentinelUsername == "":
	case c.Mode != ModeSentinel:
		add("REDIS_SENTINEL_USERNAME", "is only used with REDIS_MODE=sentinel")
	case c.SentinelPassword == "":
		// Without a password go-redis sends no AUTH at all: the user name would be silently ignored.
		add("REDIS_SENTINEL_USERNAME", "needs REDIS_SENTINEL_PASSWORD (the sentinels authenticate a user with its password)")
	}
	if c.SentinelUsername != "" && !nameRE.MatchString(c.SentinelUsername) {
		add("REDIS_SENTINEL_USERNAME", "must not contain white space, got %q", c.SentinelUsername)
	}
	if c.DB < 0 {
		add("REDIS_DB", "must be 0 or more, got %d", c.DB)
	}
	if c.Mode == ModeCluster && c.DB != 0 {
		add("REDIS_DB", "must be 0 in cluster mode, got %d", c.DB)
	}
	if url != "" && c.DB != 0 {
		add("REDIS_DB", "is only used with REDIS_ADDRS; put the database in REDIS_URL's path")
	}

	// TLS.
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		add("REDIS_TLS_KEY_FILE", "must be set with REDIS_TLS_CERT_FILE")
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		add("REDIS_TLS_CERT_FILE", "must be set with REDIS_TLS_KEY_FILE")
	}
	if _, err := c.tlsConfig(); err != nil {
		errs = append(errs, err) // problems naming REDIS_TLS_* variables
	}

	// What to read.
	streams := c.streams()
	if c.Stream != "" {
		seen := map[string]bool{}
		for _, s := range strings.Split(c.Stream, ",") {
			s = strings.TrimSpace(s)
			switch {
			case s == "":
				add("REDIS_STREAM", "has an empty stream name in %q", c.Stream)
			case seen[s]:
				add("REDIS_STREAM", "names stream %q twice", s)
			}
			seen[s] = true
		}
		if c.Mode == ModeCluster && len(streams) > 1 {
			tag := hashTag(streams[0])
			for _, s := range streams[1:] {
				if hashTag(s) != tag || tag == streams[0] && s != streams[0] {
					add("REDIS_STREAM", "in cluster mode several streams must share a hash tag so one XREADGROUP reads them all (e.g. {orders}:a,{orders}:b), got %q", c.Stream)
					break
				}
			}
		}
	}
	if c.Group != "" && !nameRE.MatchString(c.Group) {
		add("REDIS_GROUP", "must not contain white space, got %q", c.Group)
	}
	if c.Consumer != "" && !nameRE.MatchString(c.Consumer) {
		add("REDIS_CONSUMER", "must not contain white space, got %q", c.Consumer)
	}
	switch {
	case c.StartFrom == StartOldest, c.StartFrom == StartLatest:
	case entryIDRE.MatchString(c.StartFrom) && validEntryID(c.StartFrom):
	default:
		add("REDIS_START_FROM", "must be oldest, latest or an entry ID such as 1700000000000-0, got %q", c.StartFrom)
	}
	if c.ClaimMinIdle < minClaimIdle {
		add("REDIS_CLAIM_MIN_IDLE", "must be at least %s, got %s", minClaimIdle, c.ClaimMinIdle)
	}
	if c.MaxExtension <= 0 {
		add("REDIS_MAX_EXTENSION", "must be more than 0s, got %s", c.MaxExtension)
	}
	switch {
	case c.Block == 0: // the default follows REDIS_CLAIM_MIN_IDLE (BlockOrDefault)
	case c.Block < minBlock || c.Block > maxBlock:
		add("REDIS_BLOCK", "must be between %s and %s (or 0s for the default), got %s", minBlock, maxBlock, c.Block)
	case c.ClaimMinIdle >= minClaimIdle && c.Block >= c.ClaimMinIdle/2:
		add("REDIS_BLOCK", "must be less than half of REDIS_CLAIM_MIN_IDLE (%s), got %s", c.ClaimMinIdle, c.Block)
	}
	if c.ReadCount < 1 || c.ReadCount > maxReadCount {
		add("REDIS_READ_COUNT", "must be between 1 and %d, got %d", maxReadCount, c.ReadCount)
	}
	if c.DeadLetterStream != "" && slices.Contains(streams, c.DeadLetterStream) {
		add("REDIS_DEAD_LETTER_STREAM", "must not be one of the streams read (REDIS_STREAM)")
	}
	if c.DeadLetterMaxLen < 0 {
		add("REDIS_DEAD_LETTER_MAXLEN", "must be 0 (no cap) or more, got %d", c.DeadLetterMaxLen)
	}
	return errors.Join(errs...)
}

// streams returns the stream keys in configuration order.
func (c *Config) streams() []string {
	var out []string
	for _, s := range strings.Split(c.Stream, ",") {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (c *Config) addrs() []string {
	var out []string
	for _, a := range strings.Split(c.Addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// startID is the ID XGROUP CREATE starts the group at.
func (c *Config) startID() string {
	switch c.StartFrom {
	case StartOldest:
		return "0"
	case StartLatest:
		return "$"
	}
	return c.StartFrom
}

// checkURL returns what is wrong with a Redis URL without echoing it (it may hold a password). It
// parses the URL as Open will: with go-redis's cluster parser in cluster mode, which takes other
// options (addr=, no db=) and no unix socket.
func checkURL(raw string, cluster bool) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a valid URL"
	}
	switch {
	case cluster && (u.Scheme == "redis" || u.Scheme == "rediss"):
		if _, err := redis.ParseClusterURL(raw); err != nil {
			return "is not a valid redis:// URL for cluster mode: " + redactURLError(err, raw)
		}
	case cluster && u.Scheme == "unix":
		return "cluster mode needs redis:// or rediss:// (a cluster is not reached over a unix socket)"
	case u.Scheme == "unix" && u.Path == "":
		return "unix URL has no socket path"
	case u.Scheme == "redis" || u.Scheme == "rediss" || u.Scheme == "unix":
		if _, err := redis.ParseURL(raw); err != nil {
			return "is not a valid " + u.Scheme + ":// URL: " + redactURLError(err, raw)
		}
	default:
		return fmt.Sprintf("must start with redis://, rediss:// or unix://, got scheme %q", u.Scheme)
	}
	return ""
}

// redactURLError keeps a password out of a URL parsing error.
func redactURLError(err error, raw string) string {
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "[redacted]")
		}
	}
	return msg
}

// validEntryID reports whether both parts of an entry ID fit Redis's 64-bit numbers.
func validEntryID(id string) bool {
	ms, seq, found := strings.Cut(id, "-")
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return false
	}
	if found {
		if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}

// hashTag returns the part of a key Redis Cluster hashes: the text inside the first {...} when it is
// not empty, else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// tlsWanted reports whether connections use TLS.
func (c *Config) tlsWanted() bool {
	return c.TLS || strings.HasPrefix(c.URL.Reveal(), "rediss://") || c.TLSCAFile != "" || c.TLSCertFile != "" ||
		c.TLSServerName != "" || c.TLSInsecure
}

// tlsConfig builds the TLS configuration from the REDIS_TLS_* settings; nil when TLS is off. Its
// errors are *config.FieldError naming the variable.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.tlsWanted() {
		return nil, nil
	}
	return config.TLSFiles{Prefix: "REDIS_", CAFile: c.TLSCAFile, CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile,
		ServerName: c.TLSServerName, Insecure: c.TLSInsecure}.Config()
}

// defaultBlock is REDIS_BLOCK's default when REDIS_CLAIM_MIN_IDLE is long enough.
const defaultBlock = 2 * time.Second

// BlockOrDefault is REDIS_BLOCK, or when it is 0s defaultBlock or a quarter of REDIS_CLAIM_MIN_IDLE,
// whichever is shorter: the default never conflicts with a valid REDIS_CLAIM_MIN_IDLE.
func (c *Config) BlockOrDefault() time.Duration {
	if c.Block > 0 {
		return c.Block
	}
	return max(min(defaultBlock, c.ClaimMinIdle/4), minBlock)
}
