#!/usr/bin/env bash
# Build into $1 either `prometheus` (prometheus and promtool) or `actionlint`.
# Called by mk/monitoring.mk only when the hash of the pins changed.
#
# Prometheus is built without its web UI assets (no `builtinassets` tag, which
# needs the npm build of web/ui): the API the tests query is all there; the UI
# pages answer that the assets are missing.
set -euo pipefail
out=${1:?usage: build.sh OUT_DIR prometheus|actionlint}
what=${2:?usage: build.sh OUT_DIR prometheus|actionlint}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/pins.env"
export GOTOOLCHAIN=local GOBIN="$out"
mkdir -p "$out"
stamp() { printf '%s %s\n' "$(date -u +%T)" "$*"; }

# Prometheus' own version string (prometheus --version): 0.316.0 -> 3.16.0.
release=$(echo "${PROMETHEUS_VERSION#v0.}" | sed -E 's/^([0-9])([0-9]+)\.([0-9]+)$/\1.\2.\3/')
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
ldflags+=" -X github.com/prometheus/common/version.Branch=$PROMETHEUS_VERSION"
ldflags+=" -X github.com/prometheus/common/version.BuildUser=w5xde"

if [ "$what" = actionlint ]; then
  stamp "actionlint $ACTIONLINT_VERSION"
  CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X main.version=$ACTIONLINT_VERSION" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  stamp done
  exit 0
fi
stamp "prometheus, promtool $PROMETHEUS_VERSION ($release)"
# Plain `go install` settings (no -trimpath, cgo as the toolchain has it): the same
# compile actions as `go install ...promtool@v0.316.0` by hand, so the Go build
# cache of either serves the other (the compile is most of the ~10 min cold build).
go install -ldflags "$ldflags" \
  "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
stamp done
