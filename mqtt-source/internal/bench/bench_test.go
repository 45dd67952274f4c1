package bench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

var (
	benchMessages = flag.Int("mqtt.messages", 50_000, "messages per throughput run")
	benchPayload  = flag.Int("mqtt.payload", 1024, "payload bytes per message")
)

const batch = 500 // numa's default readBatchSize

func TestMain(m *testing.M) { mqtttest.Main(m) }

// BenchmarkThroughput: 50,000 messages of 1 KiB at QoS 1, queued in a persistent session, drained
// through the connector binary over the real socket with numatest (batch 500, timeout 1 s), against a
// raw paho loop with manual acks (each message acked as it arrives) draining the same backlog of its
// own session on the same broker in the same run. Reports both rates, the ratio and the connector's
// peak RSS (VmHWM).
func BenchmarkThroughput(b *testing.B) {
	srv := mqtttest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "mqtt-source")
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		name := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		srv.Session(b, name+"-src-0", time.Hour, 1, "$share/"+name+"/"+name)
		srv.Session(b, name+"-raw", time.Hour, 1, name)
		fill(ctx, b, srv, name, *benchMessages, *benchPayload)
		src, rss := runSource(ctx, b, bin, srv, name, *benchMessages, nil)
		raw := runRaw(ctx, b, srv, name+"-raw", *benchMessages)
		cancel()

		b.ReportMetric(src, "source_msg/s")
		b.ReportMetric(raw, "raw_msg/s")
		b.ReportMetric(100*src/raw, "ratio_%")
		b.ReportMetric(float64(rss)/(1<<20), "peak_rss_MiB")
		b.Logf("%d messages of %d bytes: source %.0f msg/s, raw paho loop %.0f msg/s, ratio %.0f%%, source peak RSS %.1f MiB",
			*benchMessages, *benchPayload, src, raw, 100*src/raw, float64(rss)/(1<<20))
	}
}

// fill publishes n messages of size bytes to topic at QoS 1 from 4 connections at once, each message
// starting with its index.
func fill(ctx context.Context, b *testing.B, srv *mqtttest.Server, topic string, n, size int) {
	b.Helper()
	const publishers = 4
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, publishers)
	for range publishers {
		c := srv.Connect(b, "")
		wg.Go(func() {
			for {
				j := next.Add(1) - 1
				if j >= int64(n) {
					return
				}
				p := make([]byte, size)
				copy(p, fmt.Sprintf("%08d", j))
				if err := c.Publish(ctx, topic, 1, nil, p); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("filling %s: %v", topic, err)
	}
}

// runSource drains n messages through the connector binary (client id <topic>-src-0, group <topic>)
// and returns the steady rate (first to last message) and the process's peak resident set size.
func runSource(ctx context.Context, b *testing.B, bin string, srv *mqtttest.Server, topic string, n int, env []string) (float64, int64) {
	b.Helper()
	dir, err := os.MkdirTemp("", "mb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	p, err := proctest.StartE(bin, nil, proctest.Options{Env: append([]string{
		"MQTT_URL=" + srv.URL(), "MQTT_TOPICS=" + topic, "MQTT_CLIENT_ID=" + topic + "-src-<replica>",
		"MQTT_SHARE_GROUP=" + topic, "MQTT_USERNAME=" + mqtttest.User, "MQTT_PASSWORD=" + srv.Password,
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000",
	}, env...)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Kill()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		b.Fatalf("dialing the connector: %v\n%s", err, p.Output())
	}
	defer c.Close()
	seen := make(map[string]struct{}, n)
	var first, last time.Time
	for len(seen) < n {
		msgs, err := c.Read(ctx, batch, time.Second)
		if err != nil {
			b.Fatalf("read: %v (%d of %d)\n%s", err, len(seen), n, p.Output())
		}
		if len(msgs) == 0 {
			continue
		}
		if first.IsZero() {
			first = time.Now()
		}
		offs := make([]numatest.Offset, len(msgs))
		for i, m := range msgs {
			offs[i] = m.Offset
			seen[string(m.Payload[:8])] = struct{}{}
		}
		if err := c.Ack(ctx, offs); err != nil {
			b.Fatalf("ack: %v", err)
		}
		last = time.Now()
	}
	rss := proctest.PeakRSS(p.Cmd.Process.Pid)
	_ = p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	return float64(n-1) / last.Sub(first).Seconds(), rss
}

// runRaw drains n messages queued for clientID's session with a plain paho client in manual-ack mode
// (Receive Maximum 1000, the connector's default budget), acking each as it arrives.
func runRaw(ctx context.Context, b *testing.B, srv *mqtttest.Server, clientID string, n int) float64 {
	b.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	var first, last atomic.Int64
	done := make(chan struct{})
	cli := paho.NewClient(paho.ClientConfig{
		Conn: conn, ClientID: clientID, EnableManualAcknowledgment: true, SendAcksInterval: 10 * time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			now := time.Now().UnixNano()
			first.CompareAndSwap(0, now)
			last.Store(now)
			_ = pr.Client.Ack(pr.Packet)
			if got.Add(1) == int64(n) {
				close(done)
			}
			return true, nil
		}},
	})
	rm, exp := uint16(1000), uint32(3600)
	if _, err := cli.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30,
		UsernameFlag: true, Username: mqtttest.User, PasswordFlag: true, Password: []byte(srv.Password),
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm, SessionExpiryInterval: &exp}}); err != nil {
		b.Fatal(err)
	}
	defer cli.Disconnect(&paho.Disconnect{})
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("raw loop: %d of %d messages", got.Load(), n)
	}
	return float64(n-1) / time.Duration(last.Load()-first.Load()).Seconds()
}
