#!/usr/bin/env bash
# Build the test bed's control plane and nodes into $1 (helm first: the chart work waits on it).
# Called by `make testbed-bin` only when the hash of the pins changed.
set -euo pipefail
out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/pins.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$out"
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
stamp() { printf '%s %s\n' "$(date -u +%T)" "$*"; }

stamp "helm $HELM_VERSION"
(cd "$here/helm" && go build -trimpath -o "$out/helm" \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  helm.sh/helm/v3/cmd/helm)

stamp "etcd $ETCD_VERSION"
(cd "$here/etcd" && go build -trimpath -o "$out/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3)

minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=$KUBERNETES_VERSION"
done
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  stamp "$cmd $KUBERNETES_VERSION"
  (cd "$here/kube" && go build -trimpath -o "$out/$cmd" -ldflags "$ldflags" "k8s.io/kubernetes/cmd/$cmd")
done

# containerd without the snapshotters that need cgo or kernel modules we never use.
stamp "containerd $CONTAINERD_VERSION"
ctrd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
for cmd in containerd containerd-shim-runc-v2 ctr; do
  (cd "$here/containerd" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" \
    -o "$out/$cmd" -ldflags "$ctrd_ldflags" "github.com/containerd/containerd/v2/cmd/$cmd")
done

stamp "CNI plugins $CNI_PLUGINS_VERSION"
mkdir -p "$out/cni"
for plugin in main/bridge main/loopback ipam/host-local meta/portmap; do
  (cd "$here/cni" && go build -trimpath -o "$out/cni/$(basename "$plugin")" \
    -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/$plugin")
done

stamp "coredns $COREDNS_VERSION"
(cd "$here/coredns" && go build -trimpath -o "$out/coredns" -ldflags "-s -w" .)

# The sandbox ("pause") image's one binary, from the Kubernetes release's own source:
# nothing can be pulled here, so the nodes get an image built from it.
stamp "pause $KUBERNETES_VERSION"
kube_src=$(cd "$here/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" -o "$out/pause" "$kube_src/build/pause/linux/pause.c"
strip "$out/pause"
stamp done
