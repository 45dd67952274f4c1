package faults

import (
	"context"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// mqttKit: one mosquitto shared by the package, a broker of its own for a restart; a fresh topic, share
// group and client ids per resource. MQTT has no lease, and a message belongs to the session the
// broker queued it in when it was published: what one replica holds is never given to another, it
// waits in that replica's session until the replica (the same client id) is back. So the replica-0
// session is created before anything is published, and the tests that hand messages from one replica to
// another restart the same replica instead (handOff) or do not apply. The keep-alive is 1 s, so a silent
// network is noticed within about 2 s.
func mqttKit() *kit {
	return &kit{
		name:  "mqtt-source",
		lease: 4 * time.Second, // no lease: a restarted replica resumes its session at once
		newResource: func(t *testing.T, o resOptions) resource {
			srv := mqtttest.Shared(t)
			if o.persistent {
				srv = mqtttest.Start(t, mqtttest.Options{})
			}
			r := &mqttResource{srv: srv, topic: mqtttest.Name(t)}
			// Replica 0's session exists before the first publish: the broker queues into it what is
			// published while the replica is not connected yet.
			srv.Session(t, r.topic+"-0", time.Hour, 1, "$share/"+r.topic+"/"+r.topic)
			return r
		},
		handOff: "MQTT queues a message in one replica's session when it is published: another replica never gets what a stopped, " +
			"slow or killed replica holds; the same replica restarted with its client id does (mqtt-source README, Scale-down strands messages)",
		releaseWithin: func(time.Duration) time.Duration { return 5 * time.Second },
		known:         knownIssues(nil),
	}
}

type mqttResource struct {
	srv   *mqtttest.Server
	topic string
}

func (r *mqttResource) upstream() string { return r.srv.Addr() }

func (r *mqttResource) env(addr string) []string {
	return []string{"MQTT_URL=mqtt://" + addr, "MQTT_TOPICS=" + r.topic, "MQTT_USERNAME=" + mqtttest.User,
		"MQTT_PASSWORD=" + r.srv.Password, "MQTT_CLIENT_ID=" + r.topic + "-<replica>", "MQTT_SHARE_GROUP=" + r.topic,
		"MQTT_KEEP_ALIVE=1s", "MQTT_RECONNECT_MAX_BACKOFF=1s"}
}

func (r *mqttResource) publish(t *testing.T, payloads [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pub := r.srv.Connect(t, "")
	defer pub.Close()
	if err := pub.Publish(ctx, r.topic, 1, nil, payloads...); err != nil {
		t.Fatal(err)
	}
}

// restartBroker stops mosquitto gracefully, not with kill -9: mosquitto writes its persistence file only
// when it stops (or every autosave_interval), so a kill -9 loses what it queued since. It starts it again on the same ports and directory after down has run. The restarted broker has the
// sessions and their messages but not the shared subscriptions: the connector subscribes again.
func (r *mqttResource) restartBroker(t *testing.T, down func()) {
	t.Helper()
	r.srv.Stop(t)
	down()
	r.srv.Restart(t)
}
