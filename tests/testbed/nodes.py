"""The test bed's nodes: a real kubelet and containerd per node, CNI, kube-proxy, CoreDNS.

Two nodes share this host. Each has its own containerd (root, state, socket), its own
kubelet (root dir, ports, pod log dir, `cgroupRoot`) and its own CNI configuration,
all on the one bridge `w5n-br0` (node a hands out 10.244.1.x, node b 10.244.2.x, one
/16 on one L2 segment, so pods of both nodes talk directly). One kube-proxy serves
both: they share the host's network stack, and two would fight over one nftables
table. CoreDNS runs as a Deployment in kube-system from an image built here.

Settings this kernel needs (cgroup v1 hybrid, no CAP_SYS_RESOURCE, PID 1 is not
systemd) are explained where they are set; docs/testbed.md lists them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed import oci
from testbed.paths import (
    BIN_DIR,
    BRIDGE,
    BRIDGE_IP,
    CLUSTER_DIR,
    CLUSTER_DNS_IP,
    CLUSTER_DOMAIN,
    IMAGES_DIR,
    NODE_NAMES,
    NODES_DIR,
    POD_NETWORK_PREFIXLEN,
    RUN_DIR,
)
from testbed.pki import CertificateAuthority, write_kubeconfig

RUNC = "/usr/sbin/runc"
#: Every node of the bed carries this label (set by its kubelet at registration).
NODE_LABEL = "w5xde.io/testbed-node"
PAUSE_IMAGE = "localhost/w5n-pause:testbed"
COREDNS_IMAGE = "localhost/w5n-coredns:testbed"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Host sysctls the kubelet (and the CNI bridge plugin) change; `down` puts back what
#: the first `up` found (recorded machine-wide, as the bed is).
HOST_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)
SYSCTLS_FILE = Path("/run/w5n-testbed.sysctls")


class NodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Node:
    name: str
    index: int

    @property
    def short(self) -> str:
        return self.name.removeprefix("w5n-")

    @property
    def directory(self) -> Path:
        return NODES_DIR / self.name

    @property
    def run_dir(self) -> Path:
        return RUN_DIR / self.short

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def kubelet_port(self) -> int:
        return 10250 + 10 * self.index

    @property
    def healthz_port(self) -> int:
        return 10248 + 10 * self.index

    @property
    def cgroup_root(self) -> str:
        return f"/{self.name}"

    @property
    def pod_range(self) -> tuple[str, str]:
        return f"10.244.{self.index + 1}.2", f"10.244.{self.index + 1}.254"


NODES = tuple(Node(name, index) for index, name in enumerate(NODE_NAMES))


def node_named(name: str) -> Node:
    for node in NODES:
        if node.name == name:
            return node
    raise NodeError(f"no test bed node {name}")


# --- configuration ----------------------------------------------------------------


def write_node_pki(ca: CertificateAuthority, server: str) -> None:
    """Kubeconfigs and serving certificates of the kubelets and kube-proxy."""
    for node in NODES:
        client = ca.issue(
            f"kubelet-{node.short}", f"system:node:{node.name}", organization="system:nodes"
        )
        write_kubeconfig(
            CLUSTER_DIR / f"kubelet-{node.short}.kubeconfig",
            server=server,
            ca=ca.cert_path,
            client=client,
            user=f"system:node:{node.name}",
        )
        ca.issue(
            f"kubelet-{node.short}-serving",
            node.name,
            dns_names=(node.name,),
            ip_addresses=(BRIDGE_IP,),
            server=True,
        )
    proxy = ca.issue("kube-proxy", "system:kube-proxy")
    write_kubeconfig(
        CLUSTER_DIR / "kube-proxy.kubeconfig",
        server=server,
        ca=ca.cert_path,
        client=proxy,
        user="system:kube-proxy",
    )
    # The apiserver's client identity towards the kubelets (logs, exec, port-forward).
    ca.issue(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="system:masters"
    )


def containerd_config(node: Node) -> str:
    state = node.run_dir / "containerd"
    return textwrap.dedent(
        f"""\
        version = 3
        root = "{node.directory / "containerd"}"
        state = "{state}"

        [grpc]
          address = "{node.socket}"
        [ttrpc]
          address = "{node.socket}.ttrpc"
        [debug]
          level = "warn"

        [plugins.'io.containerd.internal.v1.opt']
          path = "{node.directory / "opt"}"
        [plugins.'io.containerd.nri.v1.nri']
          disable = true
        [plugins.'io.containerd.cri.v1.images']
          snapshotter = "overlayfs"
          [plugins.'io.containerd.cri.v1.images'.pinned_images]
            sandbox = "{PAUSE_IMAGE}"
        [plugins.'io.containerd.cri.v1.runtime']
          # Negative oom_score_adj needs CAP_SYS_RESOURCE, which this host withholds:
          # runc then fails with "can't get final child's PID from pipe: EOF".
          restrict_oom_score_adj = true
          netns_mounts_under_state_dir = true
          [plugins.'io.containerd.cri.v1.runtime'.containerd]
            default_runtime_name = "runc"
            [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
              runtime_type = "io.containerd.runc.v2"
              [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
                BinaryName = "{RUNC}"
                SystemdCgroup = false
          [plugins.'io.containerd.cri.v1.runtime'.cni]
            bin_dirs = ["{BIN_DIR.resolve() / "cni"}"]
            conf_dir = "{node.directory / "net.d"}"
        [plugins.'io.containerd.grpc.v1.cri']
          disable_tcp_service = true
          stream_server_address = "127.0.0.1"
          stream_server_port = "0"
        """
    )


def cni_config(node: Node) -> dict[str, object]:
    first, last = node.pod_range
    return {
        "cniVersion": "1.0.0",
        "name": node.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.run_dir / "ipam"),
                    "ranges": [
                        [
                            {
                                "subnet": f"10.244.0.0/{POD_NETWORK_PREFIXLEN}",
                                "rangeStart": first,
                                "rangeEnd": last,
                                "gateway": BRIDGE_IP,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: Node) -> dict[str, object]:
    pki = CLUSTER_DIR / "pki"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": BRIDGE_IP,
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": node.healthz_port,
        "tlsCertFile": str(pki / f"kubelet-{node.short}-serving.crt"),
        "tlsPrivateKeyFile": str(pki / f"kubelet-{node.short}-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "imageServiceEndpoint": f"unix://{node.socket}",
        # cgroup v1 hybrid and no systemd as PID 1: cgroupfs, v1 allowed, and a
        # cgroup root of its own per node so two kubelets never share `kubepods`.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupRoot": node.cgroup_root,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        # Raising RLIMIT_NOFILE above the hard limit needs CAP_SYS_RESOURCE.
        "maxOpenFiles": 20000,
        "failSwapOn": False,
        "resolvConf": str(node.directory / "resolv.conf"),
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(node.directory / "logs"),
        "volumePluginDir": str(node.directory / "volume-plugins"),
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # A shared development disk: never evict or collect images for disk pressure.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "imagefs.available": "0%",
            "nodefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "maxPods": 110,
        "podPidsLimit": -1,
    }


def kube_proxy_config() -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(CLUSTER_DIR / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODES[0].name,
        "bindAddress": BRIDGE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": f"10.244.0.0/{POD_NETWORK_PREFIXLEN}",
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{BRIDGE_IP}/32"],
        # Zero: leave the host's conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "nftables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
    }


def write_configs() -> None:
    for node in NODES:
        shutil.rmtree(node.directory, ignore_errors=True)
        shutil.rmtree(node.run_dir, ignore_errors=True)
        for sub in ("net.d", "logs", "kubelet", "volume-plugins"):
            (node.directory / sub).mkdir(parents=True, exist_ok=True)
        node.run_dir.mkdir(parents=True, exist_ok=True)
        (node.directory / "containerd.toml").write_text(containerd_config(node))
        (node.directory / "net.d" / "10-w5n.conflist").write_text(
            json.dumps(cni_config(node), indent=2)
        )
        (node.directory / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(node)))
        # Pods with dnsPolicy Default (CoreDNS itself) get this; there is no upstream.
        (node.directory / "resolv.conf").write_text(
            f"search {CLUSTER_DOMAIN}\nnameserver 127.0.0.1\n"
        )
    (CLUSTER_DIR / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config()))


# --- host state: sysctls and cgroups ----------------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def record_sysctls() -> None:
    """Remember the host's values once, before any bed changed them."""
    if SYSCTLS_FILE.exists():
        return
    found = {}
    for name in HOST_SYSCTLS:
        with contextlib.suppress(OSError):
            found[name] = _sysctl_path(name).read_text().strip()
    SYSCTLS_FILE.write_text(json.dumps(found, indent=2))


def restore_sysctls() -> None:
    try:
        found = json.loads(SYSCTLS_FILE.read_text())
    except (OSError, ValueError):
        return
    for name, value in found.items():
        with contextlib.suppress(OSError):
            path = _sysctl_path(name)
            if path.read_text().strip() != value:
                path.write_text(value)
    SYSCTLS_FILE.unlink(missing_ok=True)


def _hierarchies() -> list[Path]:
    """Every cgroup hierarchy: the v1 controllers, the named systemd one, the unified one."""
    if not CGROUP_ROOT.exists():
        return []
    return sorted(path for path in CGROUP_ROOT.iterdir() if path.is_dir() and not path.is_symlink())


def prepare_cgroups() -> None:
    """The kubelet wants its `cgroupRoot` to exist in every hierarchy; cpuset children
    start with no CPUs or memory nodes in v1, so copy the parent's."""
    for node in NODES:
        for hierarchy in _hierarchies():
            directory = hierarchy / node.name
            directory.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                parent = hierarchy / knob
                if parent.exists() and not (directory / knob).read_text().strip():
                    (directory / knob).write_text(parent.read_text())


def _our_cgroups() -> list[Path]:
    found = []
    for hierarchy in _hierarchies():
        for node in NODES:
            top = hierarchy / node.name
            if top.is_dir():
                found.extend(p for p in top.rglob("*") if p.is_dir())
                found.append(top)
    return found


def kill_cgroup_processes() -> None:
    """Every process in our cgroups is a container process of ours (or a pause).

    A node frozen by a fault test (and left so by a crash) is thawed first: a frozen
    process takes no signal, not even SIGKILL, until its cgroup thaws."""
    for node in NODES:
        with contextlib.suppress(OSError):
            (CGROUP_ROOT / "freezer" / node.name / "freezer.state").write_text("THAWED")
    for _ in range(3):
        pids = set()
        for cgroup in _our_cgroups():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)


def remove_cgroups() -> None:
    """Deepest first, in every hierarchy (a cgroup with children cannot be removed)."""
    for cgroup in sorted(_our_cgroups(), key=lambda p: len(p.parts), reverse=True):
        for _ in range(10):
            try:
                cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


# --- mounts and network ------------------------------------------------------------


def unmount_under(*roots: Path) -> None:
    """Unmount everything under the nodes' directories, deepest first (lazily: a
    mount a dying process still holds must not stop the cleanup)."""
    prefixes = [str(root.resolve()) + "/" for root in roots if root.exists()]
    # Another work tree's bed (taken over once it had no users) mounts under its own
    # `.testbed/nodes/<node>/`: the node names find those too.
    markers = [f"/nodes/{node.name}/" for node in NODES]
    mountpoints = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point.startswith(prefix) for prefix in prefixes) or any(
            marker in point for marker in markers
        ):
            mountpoints.append(point)
    for point in sorted(set(mountpoints), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def delete_nftables() -> None:
    for family in ("ip", "ip6"):
        subprocess.run(
            ["nft", "delete", "table", family, "kube-proxy"], capture_output=True, check=False
        )
    # A partition a fault test made (tests/testbed/faults.py) and could not heal.
    subprocess.run(
        ["nft", "delete", "table", "ip", "w5n-partition"], capture_output=True, check=False
    )


# --- images -----------------------------------------------------------------------


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    from images.containers import PODMAN

    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=False)


def project_image_archives() -> list[Path]:
    """The project's images, saved from the storage `make images` builds into, as OCI
    archives (re-saved only when the image id changed)."""
    from images.containers import image_ref

    if shutil.which("podman") is None:
        raise NodeError("podman is missing: run `make images` (it installs buildah and podman)")
    archives = []
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    for kind in ("worker", "operator"):
        ref = image_ref(kind)
        inspected = _podman("image", "inspect", "--format", "{{.Id}}", ref)
        if inspected.returncode != 0:
            raise NodeError(f"image {ref} is missing: run `make images` first")
        image_id = inspected.stdout.strip()
        archive = IMAGES_DIR / f"w5xde-{kind}.tar"
        stamp = archive.with_suffix(".id")
        if not archive.exists() or not stamp.exists() or stamp.read_text() != image_id:
            archive.unlink(missing_ok=True)
            saved = _podman("save", "--format", "oci-archive", "-o", str(archive), ref)
            if saved.returncode != 0:
                raise NodeError(f"podman save {ref}: {saved.stderr.strip()}")
            stamp.write_text(image_id)
        archives.append(archive)
    return archives


def testbed_image_archives() -> list[Path]:
    """The sandbox image and CoreDNS, one static binary each (built by testbed-bin)."""
    pause = oci.ImageSpec(
        name=PAUSE_IMAGE,
        files=(oci.ImageFile("pause", (BIN_DIR / "pause").read_bytes()),),
        entrypoint=("/pause",),
        user="65535",
    )
    coredns = oci.ImageSpec(
        name=COREDNS_IMAGE,
        files=(oci.ImageFile("coredns", (BIN_DIR / "coredns").read_bytes()),),
        entrypoint=("/coredns",),
    )
    return [
        oci.write_archive(pause, IMAGES_DIR / "pause.tar"),
        oci.write_archive(coredns, IMAGES_DIR / "coredns.tar"),
    ]


def ctr(node: Node, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "ctr"), f"--address={node.socket}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


#: Extra names for the project's images on the nodes: the API tier's fixtures name the
#: worker image `:testbed` (the node agent's convention); it is the same image.
IMAGE_ALIASES = {"worker": "localhost/w5xde-worker:testbed"}


def import_images(archives: list[Path]) -> None:
    """Import every archive into every node's containerd (nodes in parallel)."""
    from images.containers import image_ref

    def one_node(node: Node) -> None:
        for archive in archives:
            result = ctr(node, "images", "import", str(archive))
            if result.returncode != 0:
                raise NodeError(f"ctr import {archive.name} into {node.name}: {result.stderr}")
        for kind, alias in IMAGE_ALIASES.items():
            result = ctr(node, "images", "tag", "--force", image_ref(kind), alias)
            if result.returncode != 0:
                raise NodeError(f"ctr tag {alias} on {node.name}: {result.stderr}")
        result = ctr(node, "images", "label", PAUSE_IMAGE, "io.cri-containerd.pinned=pinned")
        if result.returncode != 0:
            raise NodeError(f"ctr label {PAUSE_IMAGE} on {node.name}: {result.stderr}")

    with concurrent.futures.ThreadPoolExecutor(len(NODES)) as pool:
        for future in [pool.submit(one_node, node) for node in NODES]:
            future.result()


def container_pid(node: Node, container_id: str) -> int:
    """The host pid of a container's main process, from its node's containerd."""
    result = ctr(node, "tasks", "ls")
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0] == container_id:
            return int(fields[1])
    raise NodeError(f"no task {container_id} on {node.name}:\n{result.stdout}{result.stderr}")


# --- CoreDNS ----------------------------------------------------------------------

COREFILE = f"""\
.:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def coredns_manifest() -> str:
    labels = {"k8s-app": "kube-dns"}
    objects: list[dict[str, object]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "coredns",
                                "image": COREDNS_IMAGE,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 1,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "resources": {"limits": {"memory": "170Mi"}},
                                "volumeMounts": [
                                    {
                                        "name": "config",
                                        "mountPath": "/etc/coredns",
                                        "readOnly": True,
                                    }
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]
    return yaml.safe_dump_all(objects)
