package badinput

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// unset removes a variable of the base environment in a configCase.
const unset = "\x00unset"

// configCase is one bad configuration: changes to the connector's valid base environment (and
// optional command-line arguments) and the variables the error output must name.
type configCase struct {
	name string
	set  map[string]string
	args []string
	want []string
}

// baseEnv is a valid configuration of connector c whose every broker address is the counting
// listener at addr, with the sentinel in every secret the connector reads.
func baseEnv(t *testing.T, c, addr, dir string) map[string]string {
	t.Helper()
	env := map[string]string{
		"LOG_LEVEL":               "debug",
		"METRICS_ADDR":            "127.0.0.1:0",
		"SOURCE_SOCKET":           filepath.Join(dir, "s.sock"),
		"SOURCE_SERVER_INFO_FILE": filepath.Join(dir, "info"),
	}
	switch c {
	case sqsSource:
		env["SQS_QUEUE_URL"] = "http://" + addr + "/000000000000/badinput"
		env["AWS_REGION"] = "us-east-1"
		env["AWS_ACCESS_KEY_ID"] = "AKIDBADINPUT"
		env["AWS_SECRET_ACCESS_KEY"] = sentinel // read by the SDK, never by our config: it must not be printed either
		env["AWS_ENDPOINT_URL_SQS"] = "http://" + addr
		env["AWS_ENDPOINT_URL_STS"] = "http://" + addr
		env["AWS_EC2_METADATA_DISABLED"] = "true"
	case pubsubSource:
		env["PUBSUB_EMULATOR_HOST"] = addr
		env["PUBSUB_PROJECT"] = "test-project"
		env["PUBSUB_SUBSCRIPTION"] = "badinput-sub"
		// pubsub-source has no Secret-typed variable; its only secret input is the credentials file,
		// which the client library reads (and, with PUBSUB_EMULATOR_HOST set, ignores).
		env["GOOGLE_APPLICATION_CREDENTIALS"] = writeFile(t, dir, "sa.json", `{"type":"service_account","project_id":"test-project",`+
			`"private_key_id":"k1","private_key":"`+sentinel+`","client_email":"x@test-project.iam.gserviceaccount.com"}`)
	case redisSource:
		env["REDIS_URL"] = "redis://:" + sentinel + "@" + addr + "/0"
		env["REDIS_STREAM"] = "badinput"
		env["REDIS_GROUP"] = "badinput"
		env["REDIS_SENTINEL_PASSWORD"] = sentinel
	case mqttSource:
		env["MQTT_URL"] = "mqtt://" + addr
		env["MQTT_TOPICS"] = "badinput/#"
		env["MQTT_USERNAME"] = "badinput"
		env["MQTT_PASSWORD"] = sentinel
	case rabbitSource:
		env["RABBITMQ_URL"] = "amqp://user:" + sentinel + "@" + addr + "/%2F"
		env["RABBITMQ_QUEUE"] = "badinput"
	}
	return env
}

// commonCases are bad values of the variables every connector shares.
var commonCases = []configCase{
	{name: "log level loud", set: map[string]string{"LOG_LEVEL": "loud"}, want: []string{"LOG_LEVEL"}},
	{name: "log format xml", set: map[string]string{"LOG_FORMAT": "xml"}, want: []string{"LOG_FORMAT"}},
	{name: "metrics addr without port", set: map[string]string{"METRICS_ADDR": "localhost"}, want: []string{"METRICS_ADDR"}},
	{name: "prefetch negative", set: map[string]string{"PREFETCH": "-1"}, want: []string{"PREFETCH"}},
	{name: "prefetch not a number", set: map[string]string{"PREFETCH": "lots"}, want: []string{"PREFETCH"}},
	{name: "prefetch bytes negative", set: map[string]string{"PREFETCH_BYTES": "-64Mi"}, want: []string{"PREFETCH_BYTES"}},
	{name: "prefetch bytes unknown unit", set: map[string]string{"PREFETCH_BYTES": "64MB"}, want: []string{"PREFETCH_BYTES"}},
	{name: "prefetch bytes not a number", set: map[string]string{"PREFETCH_BYTES": "lots"}, want: []string{"PREFETCH_BYTES"}},
	{name: "prefetch bytes too large", set: map[string]string{"PREFETCH_BYTES": "9000000Ti"}, want: []string{"PREFETCH_BYTES"}},
	{name: "prefetch bytes fractional with another", set: map[string]string{"PREFETCH_BYTES": "1.5Gi", "MAX_MESSAGE_BYTES": "0"}, want: []string{"PREFETCH_BYTES", "MAX_MESSAGE_BYTES"}},
	{name: "max message bytes zero", set: map[string]string{"MAX_MESSAGE_BYTES": "0"}, want: []string{"MAX_MESSAGE_BYTES"}},
	{name: "dead letter fallback unknown", set: map[string]string{"DEAD_LETTER_FALLBACK": "explode"}, want: []string{"DEAD_LETTER_FALLBACK"}},
	{name: "ack retry timeout malformed", set: map[string]string{"ACK_RETRY_TIMEOUT": "soon"}, want: []string{"ACK_RETRY_TIMEOUT"}},
	{name: "shutdown timeout past the grace period", set: map[string]string{"SHUTDOWN_TIMEOUT": "45s"}, want: []string{"SHUTDOWN_TIMEOUT"}},
	{name: "release wait not below shutdown timeout", set: map[string]string{"RELEASE_WAIT": "20s", "SHUTDOWN_TIMEOUT": "10s"}, want: []string{"RELEASE_WAIT"}},
	{name: "replica out of range", set: map[string]string{"NUMAFLOW_REPLICA": "70000"}, want: []string{"NUMAFLOW_REPLICA"}},
	{name: "read batch size zero", set: map[string]string{"NUMAFLOW_READ_BATCH_SIZE": "0"}, want: []string{"NUMAFLOW_READ_BATCH_SIZE"}},
	{name: "unknown flag", args: []string{"--bogus"}, want: []string{"bogus"}},
	{name: "positional argument", args: []string{"serve"}, want: []string{"serve"}},
}

// connectorCases are each connector's own bad configurations.
func connectorCases(t *testing.T, c, addr, dir string) []configCase {
	switch c {
	case sqsSource:
		q := "http://" + addr + "/000000000000/"
		return []configCase{
			{name: "queue url missing", set: map[string]string{"SQS_QUEUE_URL": unset}, want: []string{"SQS_QUEUE_URL"}},
			{name: "queue url empty", set: map[string]string{"SQS_QUEUE_URL": ""}, want: []string{"SQS_QUEUE_URL"}},
			{name: "queue url bad scheme", set: map[string]string{"SQS_QUEUE_URL": "ftp://" + addr + "/000000000000/q"}, want: []string{"SQS_QUEUE_URL"}},
			{name: "queue url not a url", set: map[string]string{"SQS_QUEUE_URL": "http://%zz/1/q"}, want: []string{"SQS_QUEUE_URL"}},
			{name: "queue url bad path", set: map[string]string{"SQS_QUEUE_URL": "http://" + addr + "/q"}, want: []string{"SQS_QUEUE_URL"}},
			{name: "visibility malformed", set: map[string]string{"SQS_VISIBILITY_TIMEOUT": "soon"}, want: []string{"SQS_VISIBILITY_TIMEOUT"}},
			{name: "visibility out of range", set: map[string]string{"SQS_VISIBILITY_TIMEOUT": "13h"}, want: []string{"SQS_VISIBILITY_TIMEOUT"}},
			{name: "visibility not whole seconds", set: map[string]string{"SQS_VISIBILITY_TIMEOUT": "1500ms"}, want: []string{"SQS_VISIBILITY_TIMEOUT"}},
			{name: "wait time out of range", set: map[string]string{"SQS_WAIT_TIME": "21s"}, want: []string{"SQS_WAIT_TIME"}},
			{name: "max extension zero", set: map[string]string{"SQS_MAX_EXTENSION": "0s"}, want: []string{"SQS_MAX_EXTENSION"}},
			{name: "dead letter queue is the source queue", set: map[string]string{"SQS_DEAD_LETTER_QUEUE_URL": q + "badinput"}, want: []string{"SQS_DEAD_LETTER_QUEUE_URL"}},
			{name: "fifo dead letter queue for a standard queue", set: map[string]string{"SQS_DEAD_LETTER_QUEUE_URL": q + "dlq.fifo"}, want: []string{"SQS_DEAD_LETTER_QUEUE_URL"}},
			{name: "external id without role", set: map[string]string{"SQS_ASSUME_ROLE_EXTERNAL_ID": "ext-id"}, want: []string{"SQS_ASSUME_ROLE_EXTERNAL_ID"}},
			{name: "role arn malformed", set: map[string]string{"SQS_ASSUME_ROLE_ARN": "role/reader"}, want: []string{"SQS_ASSUME_ROLE_ARN"}},
			{name: "unwrap sns not a bool", set: map[string]string{"SQS_UNWRAP_SNS": "maybe"}, want: []string{"SQS_UNWRAP_SNS"}},
			{name: "several at once", set: map[string]string{"SQS_QUEUE_URL": unset, "SQS_WAIT_TIME": "1m", "LOG_LEVEL": "loud"},
				want: []string{"SQS_QUEUE_URL", "SQS_WAIT_TIME", "LOG_LEVEL"}},
		}
	case pubsubSource:
		return []configCase{
			{name: "subscription missing", set: map[string]string{"PUBSUB_SUBSCRIPTION": unset}, want: []string{"PUBSUB_SUBSCRIPTION"}},
			{name: "subscription malformed", set: map[string]string{"PUBSUB_SUBSCRIPTION": "projects/test-project"}, want: []string{"PUBSUB_SUBSCRIPTION"}},
			{name: "subscription id invalid", set: map[string]string{"PUBSUB_SUBSCRIPTION": "goog-sub"}, want: []string{"PUBSUB_SUBSCRIPTION"}},
			{name: "project missing for a short subscription", set: map[string]string{"PUBSUB_PROJECT": unset}, want: []string{"PUBSUB_PROJECT"}},
			{name: "project malformed", set: map[string]string{"PUBSUB_PROJECT": "Bad_Project"}, want: []string{"PUBSUB_PROJECT"}},
			{name: "project conflicts with the subscription's", set: map[string]string{"PUBSUB_SUBSCRIPTION": "projects/other-project/subscriptions/sub"},
				want: []string{"PUBSUB_PROJECT"}},
			{name: "ack deadline malformed", set: map[string]string{"PUBSUB_ACK_DEADLINE": "soon"}, want: []string{"PUBSUB_ACK_DEADLINE"}},
			{name: "ack deadline out of range", set: map[string]string{"PUBSUB_ACK_DEADLINE": "5s"}, want: []string{"PUBSUB_ACK_DEADLINE"}},
			{name: "ack deadline not whole seconds", set: map[string]string{"PUBSUB_ACK_DEADLINE": "10500ms"}, want: []string{"PUBSUB_ACK_DEADLINE"}},
			{name: "max extension below ack deadline", set: map[string]string{"PUBSUB_ACK_DEADLINE": "30s", "PUBSUB_MAX_EXTENSION": "20s"},
				want: []string{"PUBSUB_MAX_EXTENSION"}},
			{name: "pending unknown", set: map[string]string{"PUBSUB_PENDING": "always"}, want: []string{"PUBSUB_PENDING"}},
			{name: "dead letter topic malformed", set: map[string]string{"PUBSUB_DEAD_LETTER_TOPIC": "projects/test-project"}, want: []string{"PUBSUB_DEAD_LETTER_TOPIC"}},
			{name: "several at once", set: map[string]string{"PUBSUB_SUBSCRIPTION": unset, "PUBSUB_PENDING": "x", "SHUTDOWN_TIMEOUT": "0s"},
				want: []string{"PUBSUB_SUBSCRIPTION", "PUBSUB_PENDING", "SHUTDOWN_TIMEOUT"}},
		}
	case redisSource:
		certOnly := writeFile(t, dir, "client.pem", "not a certificate")
		pwFile := writeFile(t, dir, "password", sentinel+"\n")
		emptyFile := writeFile(t, dir, "empty", "")
		return []configCase{
			{name: "stream missing", set: map[string]string{"REDIS_STREAM": unset}, want: []string{"REDIS_STREAM"}},
			{name: "group missing", set: map[string]string{"REDIS_GROUP": unset}, want: []string{"REDIS_GROUP"}},
			{name: "neither url nor addrs", set: map[string]string{"REDIS_URL": unset}, want: []string{"REDIS_URL", "REDIS_ADDRS"}},
			{name: "both url and addrs", set: map[string]string{"REDIS_ADDRS": addr}, want: []string{"REDIS_URL", "REDIS_ADDRS"}},
			{name: "url bad scheme", set: map[string]string{"REDIS_URL": "http://" + addr}, want: []string{"REDIS_URL"}},
			{name: "url bad port with a password", set: map[string]string{"REDIS_URL": "redis://:" + sentinel + "@127.0.0.1:notaport"}, want: []string{"REDIS_URL"}},
			{name: "url bad db", set: map[string]string{"REDIS_URL": "redis://:" + sentinel + "@" + addr + "/abc"}, want: []string{"REDIS_URL"}},
			{name: "mode unknown", set: map[string]string{"REDIS_MODE": "ring"}, want: []string{"REDIS_MODE"}},
			{name: "sentinel mode without master", set: map[string]string{"REDIS_URL": unset, "REDIS_ADDRS": addr, "REDIS_MODE": "sentinel"},
				want: []string{"REDIS_SENTINEL_MASTER"}},
			{name: "sentinel master in standalone mode", set: map[string]string{"REDIS_SENTINEL_MASTER": "mymaster"}, want: []string{"REDIS_SENTINEL_MASTER"}},
			{name: "two addresses in standalone mode", set: map[string]string{"REDIS_URL": unset, "REDIS_ADDRS": addr + "," + addr}, want: []string{"REDIS_ADDRS"}},
			{name: "address without port", set: map[string]string{"REDIS_URL": unset, "REDIS_ADDRS": "127.0.0.1"}, want: []string{"REDIS_ADDRS"}},
			{name: "db with url", set: map[string]string{"REDIS_DB": "1"}, want: []string{"REDIS_DB"}},
			{name: "db malformed", set: map[string]string{"REDIS_DB": "one"}, want: []string{"REDIS_DB"}},
			{name: "claim min idle out of range", set: map[string]string{"REDIS_CLAIM_MIN_IDLE": "500ms"}, want: []string{"REDIS_CLAIM_MIN_IDLE"}},
			{name: "block malformed", set: map[string]string{"REDIS_BLOCK": "soon"}, want: []string{"REDIS_BLOCK"}},
			{name: "block not below half the claim idle", set: map[string]string{"REDIS_BLOCK": "5s", "REDIS_CLAIM_MIN_IDLE": "8s"}, want: []string{"REDIS_BLOCK"}},
			{name: "read count out of range", set: map[string]string{"REDIS_READ_COUNT": "20000"}, want: []string{"REDIS_READ_COUNT"}},
			{name: "start from unknown", set: map[string]string{"REDIS_START_FROM": "yesterday"}, want: []string{"REDIS_START_FROM"}},
			{name: "create group not a bool", set: map[string]string{"REDIS_CREATE_GROUP": "sometimes"}, want: []string{"REDIS_CREATE_GROUP"}},
			{name: "tls cert without key", set: map[string]string{"REDIS_TLS_CERT_FILE": certOnly}, want: []string{"REDIS_TLS_KEY_FILE"}},
			{name: "tls ca file missing", set: map[string]string{"REDIS_TLS_CA_FILE": filepath.Join(dir, "no-such-ca.pem")}, want: []string{"REDIS_TLS_CA_FILE"}},
			{name: "tls ca file not pem", set: map[string]string{"REDIS_TLS_CA_FILE": certOnly}, want: []string{"REDIS_TLS_CA_FILE"}},
			{name: "password as variable and file", set: map[string]string{"REDIS_PASSWORD": sentinel, "REDIS_PASSWORD_FILE": pwFile},
				want: []string{"REDIS_PASSWORD", "REDIS_PASSWORD_FILE"}},
			{name: "url as variable and file", set: map[string]string{"REDIS_URL_FILE": writeFile(t, dir, "url", "redis://:"+sentinel+"@"+addr)},
				want: []string{"REDIS_URL", "REDIS_URL_FILE"}},
			{name: "sentinel password as variable and file", set: map[string]string{"REDIS_SENTINEL_PASSWORD_FILE": pwFile},
				want: []string{"REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_PASSWORD_FILE"}},
			{name: "password file missing", set: map[string]string{"REDIS_PASSWORD_FILE": filepath.Join(dir, "no-such-password")}, want: []string{"REDIS_PASSWORD_FILE"}},
			{name: "password file empty", set: map[string]string{"REDIS_PASSWORD_FILE": emptyFile}, want: []string{"REDIS_PASSWORD_FILE"}},
			{name: "password file with another bad variable", set: map[string]string{"REDIS_PASSWORD_FILE": pwFile, "REDIS_READ_COUNT": "0"},
				want: []string{"REDIS_READ_COUNT"}},
			{name: "dead letter stream is the stream", set: map[string]string{"REDIS_DEAD_LETTER_STREAM": "badinput"}, want: []string{"REDIS_DEAD_LETTER_STREAM"}},
			{name: "dead letter maxlen negative", set: map[string]string{"REDIS_DEAD_LETTER_MAXLEN": "-1"}, want: []string{"REDIS_DEAD_LETTER_MAXLEN"}},
			{name: "several at once", set: map[string]string{"REDIS_STREAM": unset, "REDIS_MODE": "ring", "PREFETCH": "-5"},
				want: []string{"REDIS_STREAM", "REDIS_MODE", "PREFETCH"}},
		}
	case rabbitSource:
		notPEM := writeFile(t, dir, "client.pem", "not a certificate")
		return []configCase{
			{name: "queue missing", set: map[string]string{"RABBITMQ_QUEUE": unset}, want: []string{"RABBITMQ_QUEUE"}},
			{name: "url missing", set: map[string]string{"RABBITMQ_URL": unset}, want: []string{"RABBITMQ_URL"}},
			{name: "url bad scheme", set: map[string]string{"RABBITMQ_URL": "http://user:" + sentinel + "@" + addr + "/"}, want: []string{"RABBITMQ_URL"}},
			{name: "url bad port with a password", set: map[string]string{"RABBITMQ_URL": "amqp://user:" + sentinel + "@127.0.0.1:notaport/"}, want: []string{"RABBITMQ_URL"}},
			{name: "url as variable and file", set: map[string]string{"RABBITMQ_URL_FILE": writeFile(t, dir, "url", "amqp://user:"+sentinel+"@"+addr+"/")},
				want: []string{"RABBITMQ_URL", "RABBITMQ_URL_FILE"}},
			{name: "tls settings with amqp://", set: map[string]string{"RABBITMQ_TLS_SERVER_NAME": "broker"}, want: []string{"RABBITMQ_URL"}},
			{name: "tls cert without key", set: map[string]string{"RABBITMQ_URL": "amqps://user:" + sentinel + "@" + addr + "/", "RABBITMQ_TLS_CERT_FILE": notPEM},
				want: []string{"RABBITMQ_TLS_KEY_FILE"}},
			{name: "tls ca file not pem", set: map[string]string{"RABBITMQ_URL": "amqps://user:" + sentinel + "@" + addr + "/", "RABBITMQ_TLS_CA_FILE": notPEM},
				want: []string{"RABBITMQ_TLS_CA_FILE"}},
			{name: "consumer timeout too short", set: map[string]string{"RABBITMQ_CONSUMER_TIMEOUT": "1s"}, want: []string{"RABBITMQ_CONSUMER_TIMEOUT"}},
			{name: "consumer timeout malformed", set: map[string]string{"RABBITMQ_CONSUMER_TIMEOUT": "half an hour"}, want: []string{"RABBITMQ_CONSUMER_TIMEOUT"}},
			{name: "heartbeat below a second", set: map[string]string{"RABBITMQ_HEARTBEAT": "100ms"}, want: []string{"RABBITMQ_HEARTBEAT"}},
			{name: "dead letter routing key without exchange", set: map[string]string{"RABBITMQ_DEAD_LETTER_ROUTING_KEY": "dead"}, want: []string{"RABBITMQ_DEAD_LETTER_ROUTING_KEY"}},
			{name: "dead letter exchange and reject", set: map[string]string{"RABBITMQ_DEAD_LETTER_EXCHANGE": "dlx", "RABBITMQ_DEAD_LETTER_REJECT": "true"},
				want: []string{"RABBITMQ_DEAD_LETTER_REJECT"}},
			{name: "several at once", set: map[string]string{"RABBITMQ_QUEUE": unset, "RABBITMQ_RECONNECT_MAX": "1ms", "PREFETCH": "-5"},
				want: []string{"RABBITMQ_QUEUE", "RABBITMQ_RECONNECT_MAX", "PREFETCH"}},
		}
	}
	if c == mqttSource {
		pwFile := writeFile(t, dir, "mqtt-password", sentinel+"\n")
		return []configCase{
			{name: "url missing", set: map[string]string{"MQTT_URL": unset}, want: []string{"MQTT_URL"}},
			{name: "url bad scheme", set: map[string]string{"MQTT_URL": "tcp://" + addr}, want: []string{"MQTT_URL"}},
			{name: "url with credentials", set: map[string]string{"MQTT_URL": "mqtt://u:" + sentinel + "@" + addr}, want: []string{"MQTT_URL"}},
			{name: "topics missing", set: map[string]string{"MQTT_TOPICS": unset}, want: []string{"MQTT_TOPICS"}},
			{name: "topic filter malformed", set: map[string]string{"MQTT_TOPICS": "a/#/b"}, want: []string{"MQTT_TOPICS"}},
			{name: "qos 0", set: map[string]string{"MQTT_QOS": "0"}, want: []string{"MQTT_QOS"}},
			{name: "session expiry not whole seconds", set: map[string]string{"MQTT_SESSION_EXPIRY": "1500ms"}, want: []string{"MQTT_SESSION_EXPIRY"}},
			{name: "share group with a slash", set: map[string]string{"MQTT_SHARE_GROUP": "a/b"}, want: []string{"MQTT_SHARE_GROUP"}},
			{name: "password without user", set: map[string]string{"MQTT_USERNAME": unset}, want: []string{"MQTT_USERNAME"}},
			{name: "password as variable and file", set: map[string]string{"MQTT_PASSWORD_FILE": pwFile}, want: []string{"MQTT_PASSWORD", "MQTT_PASSWORD_FILE"}},
			{name: "tls settings on a plain url", set: map[string]string{"MQTT_TLS_INSECURE_SKIP_VERIFY": "true"}, want: []string{"MQTT_URL"}},
			{name: "dead letter topic read again", set: map[string]string{"MQTT_DEAD_LETTER_TOPIC": "badinput/dlq"}, want: []string{"MQTT_DEAD_LETTER_TOPIC"}},
			{name: "several at once", set: map[string]string{"MQTT_TOPICS": unset, "MQTT_QOS": "3", "PREFETCH": "-5"},
				want: []string{"MQTT_TOPICS", "MQTT_QOS", "PREFETCH"}},
		}
	}
	t.Fatalf("unknown connector %s", c)
	return nil
}

// configExitBound is how fast a bad configuration must end the process.
const configExitBound = time.Second

// Every bad configuration exits with status 2 within a second, names the variable(s) on stderr, makes
// no broker call (every broker address points at a listener that counts connections), never creates
// the socket or the server-info file, and never prints the secret. A valid configuration on the same
// listener does connect (so the listener would have seen a call) and does create the server-info file.
func TestBadConfigExitsTwoWithoutBrokerCalls(t *testing.T) {
	for _, c := range connectors {
		t.Run(c, func(t *testing.T) {
			ln := newCountingListener(t)
			cases := append(connectorCases(t, c, ln.addr, shortDir(t)), commonCases...)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					dir := shortDir(t)
					env := baseEnv(t, c, ln.addr, dir)
					for k, v := range tc.set {
						if v == unset {
							delete(env, k)
						} else {
							env[k] = v
						}
					}
					before := ln.Count()
					code, stdout, stderr, took := runConfig(t, c, env, tc.args)
					if code != 2 {
						t.Fatalf("exit status %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
					}
					if took > configExitBound {
						t.Errorf("took %s to exit, want at most %s", took, configExitBound)
					}
					for _, v := range tc.want {
						if !strings.Contains(stderr, v) {
							t.Errorf("stderr does not name %s:\n%s", v, stderr)
						}
					}
					if n := ln.Count() - before; n != 0 {
						t.Errorf("%d connection(s) to the broker address before exiting on bad configuration", n)
					}
					for _, f := range []string{env["SOURCE_SOCKET"], env["SOURCE_SERVER_INFO_FILE"]} {
						if _, err := os.Stat(f); err == nil {
							t.Errorf("%s was created despite the bad configuration", f)
						}
					}
					assertNoSentinel(t, "the output of a config error", stdout+stderr)
				})
			}

			// The control: the base configuration is valid, so the same process does reach the
			// listener (any broker call would have been counted above) and starts serving.
			t.Run("valid base configuration reaches the broker", func(t *testing.T) {
				dir := shortDir(t)
				env := baseEnv(t, c, ln.addr, dir)
				before := ln.Count()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				cmd := command(ctx, c, env, nil)
				var out proctest.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				defer func() {
					_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-done
				}()
				eventually(t, 20*time.Second, func(context.Context) error {
					select {
					case err := <-done:
						done <- err
						t.Fatalf("a valid configuration exited: %v\n%s", err, out.String())
					default:
					}
					if ln.Count() == before {
						return errors.New("no connection to the broker address yet")
					}
					if _, err := os.Stat(env["SOURCE_SERVER_INFO_FILE"]); err != nil {
						return err
					}
					return nil
				})
				assertNoSentinel(t, "the output of a valid run", out.String())
			})
		})
	}
}

// command is the connector binary with exactly env (nothing inherited but PATH and HOME), in its own
// process group.
func command(ctx context.Context, c string, env map[string]string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binaries[c], args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// runConfig runs the connector with env and returns its exit status, output and run time. A process
// still running after 10 s is killed (status -1).
func runConfig(t *testing.T, c string, env map[string]string, args []string) (int, string, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := command(ctx, c, env, args)
	var stdout, stderr proctest.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String(), took
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String(), took
	}
	t.Fatalf("running %s: %v", c, err)
	return 0, "", "", 0
}
