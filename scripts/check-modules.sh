#!/usr/bin/env bash
# Module hygiene: every go.mod is in go.work and the reverse; common imports no broker SDK; common/config
# imports nothing else of ours; connectors never import each other; numaflow-go is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
mods=$(git ls-files '*go.mod' | xargs -n1 dirname | sed 's|^\.$|.|' | sort)
work=$(sed -n '/^use (/,/^)/p' go.work | grep -v '^use (\|^)' | tr -d '\t ' | sed 's|^\./||; s|^$|.|' | sort)
for m in $mods; do echo "$work" | grep -qx "$m" || { echo "module $m is not in go.work"; fail=1; }; done
for w in $work; do echo "$mods" | grep -qx "$w" || { echo "go.work lists $w, which has no committed go.mod"; fail=1; }; done
if grep -rn --include='*.go' -E '"(github.com/aws/|cloud.google.com/|github.com/redis/|github.com/alicebob/)' common >/dev/null; then
	echo "common imports a broker SDK:"; grep -rn --include='*.go' -E '"(github.com/aws/|cloud.google.com/|github.com/redis/|github.com/alicebob/)' common; fail=1
fi
# config is a leaf: loading configuration needs nothing else of ours (envdoc and configtest build on it).
leaf=$(cd common && GOWORK=off go list -deps ./config | grep '^github.com/numaflow-connectors/' | grep -vx 'github.com/numaflow-connectors/sources/common/config' || true)
if [ -n "$leaf" ]; then
	echo "common/config imports packages of this repository (it must be a leaf):"; echo "$leaf"; fail=1
fi
for c in redis-streams-source sqs-source pubsub-source; do
	for o in redis-streams-source sqs-source pubsub-source; do
		[ "$c" = "$o" ] && continue
		if [ -d "$c" ] && grep -rn --include='*.go' "numaflow-connectors/sources/$o" "$c" >/dev/null; then
			echo "$c imports $o"; fail=1
		fi
	done
done
# mqtt-source: common never imports paho; mqtt-source imports no other connector, and none imports it
# (the root module's fault tests use its test kit, mqtttest).
grep -rn --include='*.go' '"github.com/eclipse/paho' common && { echo "common imports the MQTT SDK"; fail=1; }
grep -rn --include='*.go' -E 'numaflow-connectors/sources/(redis-streams|sqs|pubsub|rabbitmq)-source' mqtt-source && { echo "mqtt-source imports another connector"; fail=1; }
grep -rn --include='*.go' 'numaflow-connectors/sources/mqtt-source' common redis-streams-source sqs-source pubsub-source rabbitmq-source && { echo "another module imports mqtt-source"; fail=1; }
grep -rqn --include='*.go' '"github.com/rabbitmq/' common && { echo "common imports the RabbitMQ SDK"; fail=1; }
grep -rqnE --include='*.go' 'numaflow-connectors/sources/(redis-streams|sqs|pubsub|mqtt)-source' rabbitmq-source && { echo "rabbitmq-source imports another connector"; fail=1; }
grep -rqn --include='*.go' 'numaflow-connectors/sources/rabbitmq-source' common redis-streams-source sqs-source pubsub-source mqtt-source && { echo "something imports rabbitmq-source"; fail=1; }
if grep -n 'replace.*numaflow-go' $(git ls-files '*go.mod') >/dev/null; then
	echo "numaflow-go is replaced somewhere: numa gates nacks on its version in build info"; fail=1
fi
exit $fail
