#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine: Redis, Mosquitto and RabbitMQ from apt, the
# SQS emulator from npm (pinned by tools/fauxqs/package-lock.json), and every module's Go dependencies.
# Idempotent and quick
# when everything is already there. Google's Pub/Sub emulator cannot be installed from the registries:
# the Pub/Sub tests use it when the machine has it and fall back to a pstest server of ours.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server) # policy-rc.d below keeps apt from starting a system node
if ((${#need[@]})); then
	echo "deps: installing ${need[*]} with apt"
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	# policy-rc.d keeps apt from starting the packages' services; only for this install, and only when
	# the machine has none of its own.
	policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod +x "$policy"
		trap '$SUDO rm -f "$policy"' EXIT
	fi
	epmd_before=" $(pgrep -x epmd 2>/dev/null | tr '\n' ' ' || true)"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	[ -z "$policy" ] || { $SUDO rm -f "$policy"; trap - EXIT; }
	# Erlang's package starts an epmd daemon (user epmd or rabbitmq, every interface, port 4369) despite
	# policy-rc.d. The tests run their own epmd on loopback; stop the one the install started, by PID
	# (an epmd that ran before is not ours).
	for pid in $(pgrep -x epmd 2>/dev/null || true); do
		case "$epmd_before" in *" $pid "*) continue ;; esac
		echo "deps: stopping epmd $pid started by apt"
		$SUDO kill "$pid" 2>/dev/null || true
	done
fi
# apt starts nothing for us on Debian 12 in containers; if a service did start, it is not ours and we
# never use its port (tests pick free ports).

if [ -f tools/fauxqs/package-lock.json ]; then
	if [ ! -f tools/fauxqs/node_modules/.package-lock.json ] || [ tools/fauxqs/package-lock.json -nt tools/fauxqs/node_modules/.package-lock.json ]; then
		echo "deps: npm ci in tools/fauxqs"
		npm ci --prefix tools/fauxqs --no-audit --no-fund --loglevel=error
	fi
fi

for m in $(git ls-files '*go.mod' 2>/dev/null || find . -name go.mod -not -path './tools/*'); do
	(cd "$(dirname "$m")" && GOWORK=off go mod download)
done
echo "deps: ready"
