// Command mqtt-source is a Numaflow user-defined source reading MQTT 5 topics through shared
// subscriptions and persistent sessions, acknowledging each message only when numa acks it.
package main

import (
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/mqtt-source/internal/mqttsource"
)

func main() {
	server.Main(server.App[mqttsource.Config]{
		Name:        "mqtt-source",
		Description: "Numaflow source for MQTT 5 brokers (shared subscriptions, persistent sessions, QoS 1 and 2; TLS, WebSockets).",
		Open:        mqttsource.Open,
		Preflight:   mqttsource.Preflight,
	})
}
