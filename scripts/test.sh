#!/usr/bin/env bash
# Runs the full test suite: static checks, every package's tests (real
# namespaces, cgroups and mounts: run as root), and a short fuzz run.
#
#   scripts/test.sh          the suite
#   scripts/test.sh --busy   the suite with a CPU hog on every core, as on a
#                            busy production host (HEARTH_HOG_NICE sets the
#                            hog's nice value, default 0: it competes as an
#                            equal)
set -euo pipefail
case $0 in */*) . "${0%/*}/asroot.sh" ;; *) . ./asroot.sh ;; esac
cd "$(dirname "$0")/.."
busy=0
for a in "$@"; do
  case "$a" in
    --busy) busy=1 ;;
    *) echo "test.sh: unknown argument $a (use --busy)" >&2; exit 2 ;;
  esac
done
scripts/setup.sh
if [ "$busy" = 1 ]; then
  hogs=()
  for _ in $(seq "$(nproc)"); do
    nice -n "${HEARTH_HOG_NICE:-0}" sh -c 'while :; do :; done' &
    hogs+=($!)
  done
  trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
  echo "test: busy mode: ${#hogs[@]} CPU hogs (nice ${HEARTH_HOG_NICE:-0}) running: ${hogs[*]}"
fi
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
export HEARTH_TEST_BASE="${HEARTH_DATA_DIR:-/var/lib/hearth}/base"

echo "test: gofmt, go vet, staticcheck"
bad=$(gofmt -l api cmd e2e internal)
[ -z "$bad" ] || { echo "gofmt would change: $bad" >&2; exit 1; }
go vet ./...
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.6.1
staticcheck ./...

echo "test: fuzzing the archive extractor"
# A count, not a duration: Go before 1.27 can report a duration's end as a
# failure ("context deadline exceeded", go.dev/issue/75804). 15000 inputs
# take about 20 s here.
go test -run='^$' -fuzz=FuzzExtract -fuzztime="${FUZZTIME:-15000x}" -fuzzminimizetime=100x ./internal/archive

echo "test: go test"
go test -count=1 -timeout 25m ./...

echo "test: race detector on the worker's and zygote manager's unit tests"
go test -race -count=1 ./internal/worker ./internal/zygote ./internal/pool/... ./internal/reserve
