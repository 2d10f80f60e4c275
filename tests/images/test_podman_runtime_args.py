"""How the image mode turns a pod's container into `podman run` flags (pure logic)."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.nodeagent.podenv import DEFAULT_PATH
from testbed.nodeagent.podman_runtime import container_name, podman_run_args
from testbed.nodeagent.runtime import ContainerSpec, Mount


def spec(**overrides: object) -> ContainerSpec:
    fields: dict[str, object] = {
        "pod_key": "ns/demo-0",
        "name": "worker",
        "image": "localhost/w5xde-worker:0.1.0",
        "command": (),
        "args": ("worker",),
        "env": {"PATH": DEFAULT_PATH, "HOSTNAME": "demo-0", "W5XDE_NAME": "demo-0"},
        "working_dir": None,
        "netns": "w5n-1234",
    }
    fields.update(overrides)
    return ContainerSpec(**fields)  # type: ignore[arg-type]


def test_a_restricted_pod_gets_user_read_only_root_and_no_capabilities() -> None:
    args = podman_run_args(
        spec(
            run_as_user=10001,
            run_as_group=10001,
            drop_all_capabilities=True,
            read_only_root_filesystem=True,
        ),
        "w5p-x",
    )
    assert "--user=10001:10001" in args
    assert "--cap-drop=ALL" in args
    assert "--security-opt=no-new-privileges" in args
    # Kubernetes gives a read-only root no implicit writable /tmp: neither may podman.
    assert "--read-only" in args
    assert "--read-only-tmpfs=false" in args


def test_a_permissive_pod_gets_none_of_the_hardening_flags() -> None:
    args = podman_run_args(spec(), "w5p-x")
    assert not [a for a in args if a.startswith(("--user", "--cap-drop", "--read-only"))]


def test_the_container_joins_the_pod_namespace_and_its_hosts_file() -> None:
    args = podman_run_args(spec(), "w5p-x")
    assert "--network=ns:/run/netns/w5n-1234" in args
    assert "--no-hosts" in args
    assert "--volume=/etc/netns/w5n-1234/hosts:/etc/hosts:ro" in args
    assert "--volume=/etc/netns/w5n-1234/resolv.conf:/etc/resolv.conf:ro" in args
    bare = podman_run_args(spec(), "w5p-x", resolv_conf=False)
    assert not [a for a in bare if a.endswith(":/etc/resolv.conf:ro")]
    assert "--hostname=demo-0" in args
    assert "--pull=never" in args


def test_the_image_path_wins_over_the_agents_default_but_not_over_the_pods() -> None:
    assert not [a for a in podman_run_args(spec(), "w5p-x") if a.startswith("--env=PATH=")]
    pod_path = spec(env={"PATH": "/custom/bin"})
    assert "--env=PATH=/custom/bin" in podman_run_args(pod_path, "w5p-x")
    assert "--env=W5XDE_NAME=demo-0" in podman_run_args(spec(), "w5p-x")


def test_command_replaces_the_entrypoint_and_args_follow_the_image() -> None:
    args = podman_run_args(spec(command=("w5xde", "operator"), args=("--all-namespaces",)), "n")
    entrypoint = next(a for a in args if a.startswith("--entrypoint="))
    assert json.loads(entrypoint.removeprefix("--entrypoint=")) == ["w5xde", "operator"]
    assert args[-2:] == ["localhost/w5xde-worker:0.1.0", "--all-namespaces"]
    plain = podman_run_args(spec(), "n")
    assert not [a for a in plain if a.startswith("--entrypoint")]
    assert plain[-2:] == ["localhost/w5xde-worker:0.1.0", "worker"]


def test_volumes_keep_their_read_only_flag() -> None:
    mounts = (
        Mount(Path("/state/token"), "/var/run/secrets/kubernetes.io/serviceaccount", True),
        Mount(Path("/state/tmp"), "/tmp"),
    )
    args = podman_run_args(spec(mounts=mounts), "n")
    assert "--volume=/state/token:/var/run/secrets/kubernetes.io/serviceaccount:ro" in args
    assert "--volume=/state/tmp:/tmp" in args


def test_names_are_stable_per_container_and_distinct_between_containers() -> None:
    assert container_name(spec()) == container_name(spec())
    assert container_name(spec()) != container_name(spec(name="sidecar"))
    assert container_name(spec()) != container_name(spec(netns="w5n-5678"))
    assert container_name(spec()).startswith("w5p-")
