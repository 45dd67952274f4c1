package bench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

var (
	benchMessages = flag.Int("mqtt.messages", 100_000, "messages per throughput run")
	benchPayload  = flag.Int("mqtt.payload", 1024, "payload bytes per message")
)

func TestMain(m *testing.M) { mqtttest.Main(m) }

// BenchmarkThroughput: 100,000 messages of 1 KiB at QoS 1, queued in a persistent session, drained
// through the connector binary over the real socket (benchkit: numatest playing numa, batches of 500),
// against a raw paho loop with manual acks (each message acked as it arrives, no gRPC) draining the
// same backlog from a session of its own on the same broker, and the memsource connector (the protocol
// ceiling), in the same run. Reports the rates, the ratios, the connector's CPU per message and peak
// RSS, and the machine's and mosquitto's CPU per message in both phases; the connector's CPU profile
// is written to BENCH_PROFILE_DIR.
func BenchmarkThroughput(b *testing.B) {
	srv := mqtttest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "mqtt-source")
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		name := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		srv.Session(b, name+"-src-0", time.Hour, 1, "$share/"+name+"/"+name)
		srv.Session(b, name+"-raw", time.Hour, 1, name)
		fill(ctx, b, srv, name, *benchMessages, *benchPayload)
		src := benchkit.DrainWatching(ctx, b, bin, "mqtt-source", connectorEnv(srv, name), *benchMessages, srv.CPUTime)
		raw, rawUse := runRaw(ctx, b, srv, name+"-raw", *benchMessages)
		ceiling := benchkit.Ceiling(ctx, b, *benchMessages, *benchPayload)
		cancel()

		src.Report(b, "source_")
		b.ReportMetric(raw, "raw_msg/s")
		rawUse.Report(b, "raw_")
		b.ReportMetric(100*src.Rate/raw, "ratio_%")
		b.ReportMetric(ceiling.Rate, "ceiling_msg/s")
		b.ReportMetric(100*src.Rate/ceiling.Rate, "ceiling_ratio_%")
		b.Logf("%d messages of %d bytes: source %s; raw paho loop %.0f msg/s (ratio %.0f%%), %s; memsource ceiling %s (ratio %.0f%%)",
			*benchMessages, *benchPayload, src, raw, 100*src.Rate/raw, rawUse, ceiling, 100*src.Rate/ceiling.Rate)
	}
}

// connectorEnv configures the connector for topic: client id <topic>-src-0 in share group <topic>.
func connectorEnv(srv *mqtttest.Server, topic string) []string {
	return []string{"MQTT_URL=" + srv.URL(), "MQTT_TOPICS=" + topic, "MQTT_CLIENT_ID=" + topic + "-src-<replica>",
		"MQTT_SHARE_GROUP=" + topic, "MQTT_USERNAME=" + mqtttest.User, "MQTT_PASSWORD=" + srv.Password}
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

// runRaw drains n messages queued for clientID's session with a plain paho client in manual-ack mode
// (Receive Maximum 1000, the connector's default budget), acking each as it arrives. The rate and the
// machine's and mosquitto's CPU run from the first message to the last.
func runRaw(ctx context.Context, b *testing.B, srv *mqtttest.Server, clientID string, n int) (float64, benchkit.Usage) {
	b.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	var first, last atomic.Int64
	done := make(chan struct{})
	meter := benchkit.Meter{Broker: srv.CPUTime}
	cli := paho.NewClient(paho.ClientConfig{
		Conn: conn, ClientID: clientID, EnableManualAcknowledgment: true, SendAcksInterval: 10 * time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			now := time.Now().UnixNano()
			if first.CompareAndSwap(0, now) {
				meter.Start()
			}
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
	use := meter.Stop(n)
	return float64(n-1) / time.Duration(last.Load()-first.Load()).Seconds(), use
}
