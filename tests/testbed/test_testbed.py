"""The test bed itself: real nodes run pods from images, with DNS, services, sysctls,
limits, probes, restarts, logs and exec, as a kubelet does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from images.containers import image_ref
from testbed.fixtures import Testbed

pytestmark = [pytest.mark.testbed, pytest.mark.netns]

#: Test pods run the worker image: Debian's shell tools, python3 and the venv with the
#: Kubernetes client (`python` on its PATH), as uid 10001.
IMAGE = image_ref("worker")


def pod_json(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    result = testbed.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def apply(testbed: Testbed, namespace: str, manifest: str) -> None:
    testbed.kubectl("apply", "-n", namespace, "-f", "-", input=textwrap.dedent(manifest))


def phase(testbed: Testbed, namespace: str, name: str) -> str:
    return str(pod_json(testbed, namespace, name).get("status", {}).get("phase", ""))


def ready(testbed: Testbed, namespace: str, name: str) -> bool:
    conditions = pod_json(testbed, namespace, name).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def main_status(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    statuses = pod_json(testbed, namespace, name).get("status", {}).get("containerStatuses")
    return dict((statuses or [{}])[0])


def pins() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (Path(__file__).parent / "go" / "pins.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


def test_real_nodes_registered_and_ready(testbed: Testbed) -> None:
    nodes = json.loads(testbed.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert {"w5n-node-a", "w5n-node-b"} <= set(by_name)
    versions = pins()
    for name in ("w5n-node-a", "w5n-node-b"):
        info = by_name[name]["status"]["nodeInfo"]
        assert info["kubeletVersion"] == versions["KUBERNETES_VERSION"]
        assert info["kubeProxyVersion"] in ("", versions["KUBERNETES_VERSION"])
        runtime = versions["CONTAINERD_VERSION"].lstrip("v")
        assert info["containerRuntimeVersion"] == f"containerd://{runtime}"
        images = {name for image in by_name[name]["status"]["images"] for name in image["names"]}
        assert IMAGE in images, images
    # Each kubelet renews its Lease (it creates it just after registering).
    testbed.wait_for(
        lambda: (
            {"lease.coordination.k8s.io/w5n-node-a", "lease.coordination.k8s.io/w5n-node-b"}
            <= set(
                testbed.kubectl(
                    "get", "leases", "-n", "kube-node-lease", "-o", "name"
                ).stdout.split()
            )
        ),
        30,
        "both nodes' Leases",
    )
    version = json.loads(testbed.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == versions["KUBERNETES_VERSION"]
    assert version["clientVersion"]["gitVersion"] == versions["KUBERNETES_VERSION"]
    assert versions["HELM_VERSION"] in testbed.helm("version", "--short").stdout
    dns = json.loads(
        testbed.kubectl("get", "deployment", "coredns", "-n", "kube-system", "-o", "json").stdout
    )
    assert dns["status"].get("availableReplicas") == 1


def test_pod_reaches_a_pod_and_a_cluster_ip_service_by_name(
    testbed: Testbed, namespace: str
) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: server, labels: {{app: server}}}}
        spec:
          nodeName: w5n-node-a
          containers:
          - name: http
            image: {IMAGE}
            command: [python3, -m, http.server, "8080", --directory, /data]
            ports: [{{name: http, containerPort: 8080}}]
            readinessProbe: {{httpGet: {{port: http, path: /}}, periodSeconds: 1}}
            volumeMounts: [{{name: data, mountPath: /data, readOnly: true}}]
          volumes:
          - name: data
            configMap: {{name: content}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: content}}
        data: {{hello.txt: "hello from the server pod"}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: web}}
        spec: {{selector: {{app: server}}, ports: [{{port: 80, targetPort: http}}]}}
        """,
    )
    testbed.wait_for(lambda: ready(testbed, namespace, "server"), 90, "server pod Ready")
    server_ip = pod_json(testbed, namespace, "server")["status"]["podIP"]
    assert server_ip.startswith("10.244.1."), server_ip  # node a's range
    cluster_ip = testbed.kubectl(
        "get", "service", "web", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert cluster_ip.startswith("10.96."), cluster_ip
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: client}}
        spec:
          nodeName: w5n-node-b
          restartPolicy: Never
          containers:
          - name: fetch
            image: {IMAGE}
            command: [python3, -c]
            args:
            - |
              import urllib.request as u
              for url in ("http://{server_ip}:8080/hello.txt", "http://web/hello.txt",
                          "http://web.{namespace}.svc.cluster.local/hello.txt"):
                  print(url, u.urlopen(url, timeout=10).read().decode(), flush=True)
        """,
    )
    testbed.wait_for(
        lambda: phase(testbed, namespace, "client") in ("Succeeded", "Failed"),
        90,
        "client finished",
    )
    log = testbed.pod_log(namespace, "client", "fetch")
    assert phase(testbed, namespace, "client") == "Succeeded", log
    # Pod to pod across the nodes, and through kube-proxy by the service's DNS names.
    assert f"http://{server_ip}:8080/hello.txt hello from the server pod" in log
    assert "http://web/hello.txt hello from the server pod" in log
    assert f"web.{namespace}.svc.cluster.local/hello.txt hello from the server pod" in log
    client = pod_json(testbed, namespace, "client")
    assert client["status"]["podIP"].startswith("10.244.2.")  # node b's range


def test_statefulset_pods_find_each_other_by_dns_name(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: peers}}
        spec: {{clusterIP: None, selector: {{app: peers}}, ports: [{{port: 9000}}]}}
        ---
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {{name: peer}}
        spec:
          serviceName: peers
          replicas: 2
          podManagementPolicy: Parallel
          selector: {{matchLabels: {{app: peers}}}}
          template:
            metadata: {{labels: {{app: peers}}}}
            spec:
              terminationGracePeriodSeconds: 1
              containers:
              - name: main
                image: {IMAGE}
                command: [python3, -c]
                args:
                - |
                  import socket, time
                  other = "peer-1" if socket.gethostname() == "peer-0" else "peer-0"
                  name = f"{{other}}.peers.{namespace}.svc.cluster.local"
                  while True:
                      try:
                          print("resolved", name, socket.gethostbyname(name), flush=True)
                      except OSError as e:
                          print("unresolved", name, e, flush=True)
                      time.sleep(1)
        """,
    )

    def resolved() -> bool:
        return all(
            f"\nresolved peer-{1 - i}.peers.{namespace}"
            in testbed.pod_log(namespace, f"peer-{i}", "main")
            for i in (0, 1)
        )

    testbed.wait_for(resolved, 90, "both StatefulSet pods resolving each other")
    peer_1_ip = pod_json(testbed, namespace, "peer-1")["status"]["podIP"]
    log = testbed.pod_log(namespace, "peer-0", "main")
    assert f"resolved peer-1.peers.{namespace}.svc.cluster.local {peer_1_ip}\n" in log, (
        peer_1_ip,
        log[-300:],
    )


def test_env_identity_and_in_cluster_credentials(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: creds}}
        stringData: {{password: s3cret}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: settings}}
        data: {{MODE: fast}}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: Role
        metadata: {{name: read-pods}}
        rules: [{{apiGroups: [""], resources: [pods], verbs: [get]}}]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: RoleBinding
        metadata: {{name: read-pods}}
        roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-pods}}
        subjects: [{{kind: ServiceAccount, name: default, namespace: {namespace}}}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: whoami, labels: {{team: w5xde}}}}
        spec:
          restartPolicy: Never
          securityContext: {{runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}}
          containers:
          - name: main
            image: {IMAGE}
            command: [python, -c]
            args:
            - |
              import os
              from kubernetes import client, config
              config.load_incluster_config()
              api = client.CoreV1Api()
              me = api.read_namespaced_pod(os.environ["POD_NAME"], os.environ["POD_NAMESPACE"])
              print("uid", os.getuid(), "api-sees", me.metadata.name, me.status.pod_ip)
              print("env", os.environ["POD_IP"], os.environ["NODE"], os.environ["TEAM"],
                    os.environ["PASSWORD"], os.environ["MODE"], os.environ["GREETING"])
              print("api-at", os.environ["KUBERNETES_SERVICE_HOST"])
            env:
            - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
            - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
            - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
            - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
            - {{name: TEAM, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['team']"}}}}}}
            - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
            - {{name: GREETING, value: "hi-$(POD_NAME)"}}
            envFrom: [{{configMapRef: {{name: settings}}}}]
        """,
    )
    testbed.wait_for(
        lambda: phase(testbed, namespace, "whoami") in ("Succeeded", "Failed"),
        90,
        "whoami finished",
    )
    log = testbed.pod_log(namespace, "whoami", "main")
    pod = pod_json(testbed, namespace, "whoami")
    assert pod["status"]["phase"] == "Succeeded", log
    assert f"uid 65532 api-sees whoami {pod['status']['podIP']}" in log
    assert (
        f"env {pod['status']['podIP']} {pod['spec']['nodeName']} w5xde s3cret fast hi-whoami" in log
    )
    # The in-cluster client went through the `kubernetes` ClusterIP service (kube-proxy).
    assert "api-at 10.96.0.1" in log


def test_safe_sysctl_applied_in_pod_netns_unsafe_refused(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: tuned}}
        spec:
          restartPolicy: Never
          securityContext:
            sysctls: [{{name: net.ipv4.tcp_rmem, value: "4096 131072 7340032"}}]
          containers:
          - name: main
            image: {IMAGE}
            command: [cat, /proc/sys/net/ipv4/tcp_rmem]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: greedy}}
        spec:
          securityContext:
            sysctls: [{{name: net.core.rmem_max, value: "67108864"}}]
          containers:
          - {{name: main, image: {IMAGE}, command: [sleep, "100"]}}
        """,
    )
    testbed.wait_for(
        lambda: phase(testbed, namespace, "tuned") == "Succeeded", 90, "tuned Succeeded"
    )
    assert testbed.pod_log(namespace, "tuned", "main").split()[-3:] == ["4096", "131072", "7340032"]
    with open("/proc/sys/net/ipv4/tcp_rmem") as host:
        assert host.read().split() != ["4096", "131072", "7340032"]
    testbed.wait_for(lambda: phase(testbed, namespace, "greedy") == "Failed", 90, "greedy Failed")
    status = pod_json(testbed, namespace, "greedy")["status"]
    assert status["reason"] == "SysctlForbidden"
    assert "net.core.rmem_max" in status["message"]


def test_killed_container_restarts_and_deletion_honours_grace(
    testbed: Testbed, namespace: str
) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: phoenix}}
        spec:
          terminationGracePeriodSeconds: 5
          containers:
          - name: main
            image: {IMAGE}
            command: [sh, -c]
            args: ["echo started; trap 'echo got TERM; exit 0' TERM; while :; do sleep 0.2; done"]
        """,
    )
    testbed.wait_for(lambda: ready(testbed, namespace, "phoenix"), 90, "phoenix Ready")
    status = main_status(testbed, namespace, "phoenix")
    assert status["containerID"].startswith("containerd://")
    pid = testbed.container_pid(namespace, "phoenix", "main")
    with open(f"/proc/{pid}/cgroup") as cgroup:
        assert "/w5n-node-" in cgroup.read()  # under the node's kubepods, not the host's
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        now = main_status(testbed, namespace, "phoenix")
        return now.get("restartCount") == 1 and "running" in now.get("state", {})

    testbed.wait_for(restarted, 60, "phoenix restarted once")
    last = main_status(testbed, namespace, "phoenix")["lastState"]
    assert last["terminated"]["exitCode"] == 137
    assert "started" in testbed.pod_log(namespace, "phoenix", "main", previous=True)
    assert testbed.container_pid(namespace, "phoenix", "main") != pid
    follow = subprocess.Popen(
        [str(testbed.bin_dir / "kubectl"), "logs", "-f", "phoenix", "-n", namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=testbed.env(),
    )
    try:
        testbed.kubectl("delete", "pod", "phoenix", "-n", namespace, "--wait=true", timeout=60)
        output, _ = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert "got TERM" in output, output


def test_pod_security_baseline_refuses_privileged(testbed: Testbed, namespace: str) -> None:
    testbed.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
    result = testbed.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        input=textwrap.dedent(
            f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: root}}
            spec:
              containers:
              - name: main
                image: {IMAGE}
                command: [sleep, "1"]
                securityContext: {{privileged: true}}
            """
        ),
    )
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def test_init_container_volumes_and_liveness_restart(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: key}}
        stringData: {{key.txt: sesame}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: layered, labels: {{tier: test}}}}
        spec:
          terminationGracePeriodSeconds: 1
          initContainers:
          - name: prepare
            image: {IMAGE}
            command: [sh, -c, "echo prepared > /work/ready.txt"]
            volumeMounts: [{{name: work, mountPath: /work}}]
          containers:
          - name: main
            image: {IMAGE}
            command: [sh, -c]
            args:
            - cat /work/ready.txt /secret/key.txt /info/labels; echo; exec sleep 1000
            volumeMounts:
            - {{name: work, mountPath: /work}}
            - {{name: secret, mountPath: /secret, readOnly: true}}
            - {{name: info, mountPath: /info}}
            livenessProbe:
              tcpSocket: {{port: 9}}
              periodSeconds: 1
              failureThreshold: 2
          volumes:
          - {{name: work, emptyDir: {{}}}}
          - {{name: secret, secret: {{secretName: key}}}}
          - name: info
            downwardAPI:
              items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]
        """,
    )

    def restarted_by_liveness() -> bool:
        return int(main_status(testbed, namespace, "layered").get("restartCount", 0)) >= 1

    testbed.wait_for(restarted_by_liveness, 90, "a restart by the failing liveness probe")
    status = pod_json(testbed, namespace, "layered")["status"]
    init = status["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert init["restartCount"] == 0
    events = testbed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=layered"
    ).stdout
    assert "Liveness probe failed" in events, events
    log = testbed.pod_log(namespace, "layered", "main", previous=True)
    assert "prepared\nsesame" in log
    assert 'tier="test"' in log


def test_exec_sees_limits_and_the_memory_limit_is_enforced(
    testbed: Testbed, namespace: str
) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: bounded}}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: main
            image: {IMAGE}
            command: [sleep, "1000"]
            resources:
              requests: {{cpu: 100m, memory: 32Mi}}
              limits: {{cpu: 500m, memory: 64Mi}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: hog}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: {IMAGE}
            command: [python3, -c]
            args: ["blocks = [bytearray(16 << 20) for _ in range(16)]; print('survived')"]
            resources:
              limits: {{cpu: 500m, memory: 64Mi}}
        """,
    )
    testbed.wait_for(lambda: ready(testbed, namespace, "bounded"), 90, "bounded Ready")
    # cgroup v1: the container sees its own cgroup at the hierarchy's root.
    limits = testbed.kubectl(
        "exec",
        "bounded",
        "-n",
        namespace,
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
    ).stdout.split()
    assert limits == [str(64 << 20), "50000", "100000"], limits
    qos = pod_json(testbed, namespace, "bounded")["status"]["qosClass"]
    assert qos == "Burstable"
    testbed.wait_for(lambda: phase(testbed, namespace, "hog") == "Failed", 90, "hog Failed")
    terminated = main_status(testbed, namespace, "hog")["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled", terminated
    assert "survived" not in testbed.pod_log(namespace, "hog", "main")


def test_a_scheduler_that_exits_is_started_again(testbed: Testbed, namespace: str) -> None:
    """kube-scheduler exits by design when it finds its cache corrupt (seen after the
    fault tier's kube-apiserver restart); the bed starts it again, as a real control
    plane's supervisor does, so the tests after that still get their pods scheduled."""
    from testbed import controlplane

    before = controlplane._read_state()["kube-scheduler"]
    os.killpg(before, signal.SIGKILL)
    testbed.wait_for(
        lambda: controlplane._read_state().get("kube-scheduler") not in (None, before),
        30,
        "the scheduler started again",
    )
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: scheduled}}
        spec:
          containers:
          - name: main
            image: {IMAGE}
            command: [sleep, "60"]
        """,
    )
    testbed.wait_for(
        lambda: bool(pod_json(testbed, namespace, "scheduled").get("spec", {}).get("nodeName")),
        60,
        "the pod bound to a node by the new scheduler",
    )
