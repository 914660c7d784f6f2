#!/usr/bin/env bash
# Installs what Hearth needs on a Debian 12 machine (as root, or through
# sudo: see asroot.sh), builds the binaries into bin/ and the base image
# into the data dir.
set -euo pipefail
case $0 in */*) . "${0%/*}/asroot.sh" ;; *) . ./asroot.sh ;; esac
cd "$(dirname "$0")/.."

export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
command -v go >/dev/null || { echo "setup: Go >= 1.26 is required (https://go.dev/dl)" >&2; exit 1; }

need=()
# awscli and python3-boto3: the Lambda API's end-to-end tests drive the
# worker with the real clients. util-linux (essential, so normally there):
# doctor's homes probe runs its unshare and nsenter.
for p in debootstrap ca-certificates git python3 awscli python3-boto3 util-linux; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "setup: building bin/hearth and bin/hearth-init"
go build -o bin/ ./cmd/...

data="${HEARTH_DATA_DIR:-/var/lib/hearth}"
bin/hearth image build --data-dir "$data" >/dev/null
echo "setup: base image ready in $data/base"

# Function snapshots need CRIU >= 4.1, installed privately (scripts/criu.sh is
# idempotent). Optional: without it Hearth runs with snapshots disabled.
if ! HEARTH_CRIU_ROOT="${HEARTH_CRIU_ROOT:-$data/criu-root}" scripts/criu.sh; then
  echo "setup: CRIU not installed; snapshots disabled (see: bin/hearth doctor)" >&2
fi

# The tests' S3 server (Apache-2.0), started on loopback by the tests that
# need a remote snapshot store.
command -v versitygw >/dev/null || [ -x "$(go env GOPATH)/bin/versitygw" ] ||
  go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
