#!/usr/bin/env bash
# Build the test bed's NetworkPolicy enforcer (main.go over kube-network-policies) into $1.
# Called by `make netpol-bin` only when the hash of this folder's pins changed.
set -euo pipefail
out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/pins.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$out"
printf '%s %s\n' "$(date -u +%T)" "w5n-netpol (kube-network-policies $KUBE_NETWORK_POLICIES_VERSION)"
(cd "$here" && go build -trimpath -o "$out/w5n-netpol" -ldflags "-s -w" .)
printf '%s %s\n' "$(date -u +%T)" done
