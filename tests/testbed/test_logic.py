"""Pure logic of the node agent: what the kubelet would decide, without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.nodeagent import hosts, podenv, process_runtime, sysctls
from testbed.nodeagent.ipam import Ipam
from testbed.nodeagent.process_runtime import resolve_argv
from testbed.nodeagent.runtime import ContainerSpec, ContainerStartError, Mount
from testbed.paths import VENV_BIN


def pod(name: str, ip: str | None, subdomain: str | None = "peers", ns: str = "ns") -> dict:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": name + "-uid", "labels": {"app": "x"}},
        "spec": {"hostname": name, "subdomain": subdomain, "nodeName": "n1"},
        "status": {"podIP": ip},
    }


def test_hosts_list_peers_behind_headless_services_only() -> None:
    pods = [pod("a", "10.244.1.2"), pod("b", "10.244.2.2"), pod("c", "10.244.1.3", "other")]
    entries = hosts.dns_entries(pods, {("ns", "peers")})
    text = hosts.hosts_file(pods[0], "10.244.1.2", entries)
    assert "10.244.2.2\tb.peers.ns.svc.cluster.local b.peers.ns.svc b.peers.ns b.peers" in text
    assert "10.244.1.2\ta.peers.ns.svc.cluster.local" in text
    assert "10.244.1.3" not in text  # its subdomain names no headless service


def test_hosts_skip_pods_being_deleted_and_other_namespaces() -> None:
    going = pod("b", "10.244.2.2")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    elsewhere = pod("d", "10.244.2.3", ns="other")
    entries = hosts.dns_entries([going, elsewhere], {("ns", "peers"), ("other", "peers")})
    text = hosts.hosts_file(pod("a", "10.244.1.2"), "10.244.1.2", entries)
    assert "10.244.2.2" not in text
    assert "10.244.2.3" not in text


def test_sysctl_allow_list_matches_the_kubelet() -> None:
    asked = [
        {"name": "net.ipv4.tcp_rmem", "value": "1 2 3"},
        {"name": "net/ipv4/tcp_wmem", "value": "1 2 3"},
        {"name": "net.core.rmem_max", "value": "1"},
        {"name": "kernel.msgmax", "value": "1"},
    ]
    assert sysctls.forbidden(asked) == ["net.core.rmem_max", "kernel.msgmax"]


def test_env_expansion_follows_kubernetes_rules() -> None:
    env = {"A": "x"}
    assert podenv.expand("$(A)-$(B)-$$(A)", env) == "x-$(B)-$(A)"


def test_env_resolves_downward_api_and_refs() -> None:
    def lookup(kind: str, namespace: str, name: str) -> dict[str, str] | None:
        return {"key": f"{kind}:{namespace}/{name}"} if name != "missing" else None

    container = {
        "name": "c",
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "key"}}},
            {
                "name": "O",
                "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k", "optional": True}},
            },
            {"name": "MIX", "value": "$(APP)/$(IP)"},
        ],
    }
    env = podenv.container_env(pod("a", "10.244.1.2"), container, lookup)
    assert env["IP"] == "10.244.1.2"
    assert env["S"] == "secret:ns/s"
    assert "O" not in env
    assert env["MIX"] == "x/10.244.1.2"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.244.0.1"
    with pytest.raises(podenv.EnvError, match="missing"):
        podenv.container_env(
            pod("a", None),
            {
                "name": "c",
                "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}
                ],
            },
            lookup,
        )


def spec(image: str, command: tuple[str, ...] = (), args: tuple[str, ...] = ()) -> ContainerSpec:
    return ContainerSpec("ns/p", "c", image, command, args, {}, None, "w5n-x")


def test_own_images_run_the_installed_w5xde() -> None:
    w5xde = str(VENV_BIN / "w5xde")
    assert resolve_argv(spec("ghcr.io/x/w5xde-worker:1", args=("worker",))) == [w5xde, "worker"]
    assert resolve_argv(spec("w5xde", command=("w5xde", "operator"))) == [w5xde, "operator"]
    assert resolve_argv(spec("busybox", command=("sleep",), args=("1",))) == ["sleep", "1"]
    with pytest.raises(ContainerStartError):
        resolve_argv(spec("busybox"))


def test_pod_ips_are_not_reused_at_once_and_stay_in_the_node_subnet() -> None:
    ipam = Ipam(("a", "b"))
    first = ipam.allocate("a")
    ipam.release("a", first)
    second = ipam.allocate("a")
    assert first == "10.244.1.2"
    assert second == "10.244.1.3"
    assert ipam.allocate("b") == "10.244.2.2"
    taken = {ipam.allocate("a") for _ in range(252)}
    assert first in taken  # wrapped round once the range was used up
    assert len(taken) == 252
    with pytest.raises(RuntimeError, match="no pod IP left"):
        ipam.allocate("a")


def test_volume_over_a_parent_of_the_work_tree_keeps_the_tree_visible(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(process_runtime, "REPO_ROOT", Path("/tmp/clone"))
    volume = tmp_path / "tmp-volume"
    volume.mkdir()
    script = process_runtime._mount_script(
        ContainerSpec(
            "ns/p", "c", "w5xde", (), (), {}, None, "w5n-x", "h", (Mount(volume, "/tmp"),)
        )
    )
    lines = script.splitlines()
    assert lines.index("exec {image_root}</tmp/clone") < lines.index(
        'mount --no-canonicalize --bind "/proc/self/fd/${source_0}" /tmp'
    )
    assert lines.index(
        'mount --no-canonicalize --bind "/proc/self/fd/${image_root}" /tmp/clone'
    ) > lines.index('mount --no-canonicalize --bind "/proc/self/fd/${source_0}" /tmp')
    elsewhere = process_runtime._mount_script(
        ContainerSpec(
            "ns/p", "c", "w5xde", (), (), {}, None, "w5n-x", "h", (Mount(volume, "/data"),)
        )
    )
    assert "image_root" not in elsewhere
