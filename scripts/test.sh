#!/usr/bin/env bash
# Runs the full test suite: static checks, every package's tests (real
# namespaces, cgroups and mounts: run as root), and a short fuzz run.
set -euo pipefail
case $0 in */*) . "${0%/*}/asroot.sh" ;; *) . ./asroot.sh ;; esac
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
export HEARTH_TEST_BASE="${HEARTH_DATA_DIR:-/var/lib/hearth}/base"

echo "test: gofmt, go vet, staticcheck"
bad=$(gofmt -l cmd internal)
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
