package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

func TestMain(m *testing.M) { mqtttest.Main(m) }

// connector is one run of the connector binary and the numa client driving it over its socket.
type connector struct {
	p *proctest.Process
	c *numatest.Client
}

func startConnector(ctx context.Context, t *testing.T, bin string, env []string) *connector {
	t.Helper()
	dir, err := os.MkdirTemp("", "mq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	p := proctest.Start(t, bin, nil, proctest.Options{Env: append([]string{
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=50", "NUMAFLOW_PIPELINE_NAME=p", "NUMAFLOW_VERTEX_NAME=in",
	}, env...)})
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		t.Fatalf("dialing the connector: %v\n%s", err, p.Output())
	}
	t.Cleanup(func() { _ = c.Close() })
	return &connector{p: p, c: c}
}

// kill -9 of the connector while it holds messages (some acked by numa, some in flight): the restarted
// process resumes its session and every message arrives, at QoS 1 and at QoS 2.
func TestKilledProcessResumesSession(t *testing.T) {
	if testing.Short() {
		t.Skip("process test skipped in -short mode")
	}
	srv := mqtttest.Shared(t)
	bin := proctest.Build(t, ".", "mqtt-source")
	for _, qos := range []byte{1, 2} {
		t.Run("qos"+strconv.Itoa(int(qos)), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			name := mqtttest.Name(t)
			env := []string{"MQTT_URL=" + srv.URL(), "MQTT_TOPICS=" + name, "MQTT_QOS=" + strconv.Itoa(int(qos)),
				"MQTT_USERNAME=" + mqtttest.User, "MQTT_PASSWORD=" + srv.Password, "NUMAFLOW_REPLICA=0"}
			// The default client id and group: p-in-0 in group p-in, made unique per test by the topic.
			env = append(env, "MQTT_CLIENT_ID="+name+"-<replica>", "MQTT_SHARE_GROUP="+name)
			srv.Session(t, name+"-0", time.Hour, qos, "$share/"+name+"/"+name)
			const n = 300
			payloads := make([][]byte, n)
			for i := range payloads {
				payloads[i] = fmt.Appendf(nil, "k-%03d", i)
			}
			if err := srv.Connect(t, "").Publish(ctx, name, qos, nil, payloads...); err != nil {
				t.Fatal(err)
			}

			first := startConnector(ctx, t, bin, env)
			seen := map[string]int{}
			for batches := 0; batches < 3 && ctx.Err() == nil; {
				msgs, err := first.c.Read(ctx, 50, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if len(msgs) == 0 {
					continue
				}
				batches++
				if batches == 3 {
					break // the third batch stays in flight
				}
				offs := make([]numatest.Offset, len(msgs))
				for i, m := range msgs {
					offs[i] = m.Offset
					seen[string(m.Payload)]++
				}
				if err := first.c.Ack(ctx, offs); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(100 * time.Millisecond) // some acknowledgements reach the broker, maybe not all
			first.p.Kill()

			second := startConnector(ctx, t, bin, env)
			stats, err := second.c.Run(ctx, numatest.LoopOptions{BatchSize: 50, Idle: 3,
				OnBatch: func(batch []numatest.Message) {
					for _, m := range batch {
						seen[string(m.Payload)]++
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			missing := 0
			dups := 0
			for _, p := range payloads {
				switch c := seen[string(p)]; {
				case c == 0:
					missing++
				case c > 1:
					dups += c - 1
				}
			}
			if missing > 0 {
				t.Fatalf("%d of %d messages lost after kill -9 and restart (read %d after the restart)", missing, n, stats.Read)
			}
			t.Logf("qos %d: all %d arrived; %d acked before the kill were read again", qos, n, dups)

			// Everything acked: a graceful stop, and a third run gets nothing.
			_ = second.p.Signal(syscall.SIGTERM)
			if code, ok := second.p.Wait(15 * time.Second); !ok || code != 0 {
				t.Fatalf("SIGTERM: exit %d (exited %v)\n%s", code, ok, second.p.Output())
			}
			third := startConnector(ctx, t, bin, env)
			if msgs, err := third.c.Read(ctx, 50, 2*time.Second); err != nil || len(msgs) > 0 {
				t.Fatalf("acked messages came back after a graceful restart: %d (%v)", len(msgs), err)
			}
		})
	}
}
