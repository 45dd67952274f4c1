#!/usr/bin/env bash
# Issue 16's first target, measured on this machine: builds the memsource demo connector of the code
# the issue was filed against (the commit before c7062b5, where common/server began serving numa's
# source protocol itself) and runs BenchmarkSocketAgainstBaseline three times, which drains it and
# today's memsource in turn and prints both CPU costs per message and their ratio.
#
#   scripts/baseline.sh              build and measure (about a minute)
#   scripts/baseline.sh --build DIR  only build; prints the binary's path (make bench uses it)
#
# Needs the git history (a full clone) and write access to /var/run/numaflow (the baseline's fixed
# socket path). Never part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
base=${BASELINE_COMMIT:-c7062b5^}

# build DIR: the baseline's memsource at DIR/baseline-memsource, from a temporary worktree.
build() {
	local tree
	tree=$(mktemp -d "${TMPDIR:-/tmp}/baseline.XXXXXX")
	git worktree add --detach "$tree" "$base" >/dev/null 2>&1 || { rm -rf "$tree"; return 1; }
	(cd "$tree" && GOWORK=off "$GO" build -o "$1/baseline-memsource" ./cmd/memsource)
	local status=$?
	git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"
	[ $status -eq 0 ] && echo "$1/baseline-memsource"
}

if [ "${1:-}" = --build ]; then
	build "$2"
	exit
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/baseline.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bin=$(build "$dir")
cd common/cmd/memsource
BASELINE_MEMSOURCE=$bin GOWORK=off "$GO" test -run '^$' -bench SocketAgainstBaseline -benchtime 1x -count 3 -timeout 20m -v .
