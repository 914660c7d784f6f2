#!/usr/bin/env bash
# Runs Hearth end to end on embedded defaults: builds everything, starts a
# worker, deploys the examples, invokes them (cold, then warm), stops it.
set -euo pipefail
case $0 in */*) . "${0%/*}/asroot.sh" ;; *) . ./asroot.sh ;; esac
cd "$(dirname "$0")/.."
scripts/setup.sh

data="${HEARTH_DATA_DIR:-/var/lib/hearth}"
# The CLI reads the token the worker makes in its data dir.
export HEARTH_TOKEN_FILE="$data/api-token"
log="$(mktemp -t hearth-demo.XXXXXX.log)"
bin/hearth up --data-dir "$data" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  bin/hearth status >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done

set -x
bin/hearth deploy examples/hello
bin/hearth deploy examples/lambda-style
bin/hearth deploy examples/numpy-stats
bin/hearth ls
bin/hearth invoke -v hello --data '{"name": "hearth"}'
bin/hearth invoke -v hello --data '{"name": "again"}'
bin/hearth invoke -v lambda-style --data '{"x": 1}'
bin/hearth invoke -v numpy-stats --data '{"values": [1, 2, 3, 4, 10]}'
bin/hearth invoke -v numpy-stats --data '{"values": [5, 5, 5]}'
bin/hearth logs lambda-style
bin/hearth status
set +x
echo "demo: ok (worker log: $log)"
