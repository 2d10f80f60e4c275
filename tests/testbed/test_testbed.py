"""The test bed itself against the real control plane: pods run, talk, restart, die as asked."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest

from testbed.fixtures import Testbed
from testbed.paths import VENV_BIN

pytestmark = [pytest.mark.testbed, pytest.mark.netns]

PYTHON = str(VENV_BIN / "python")


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


def test_nodes_registered_and_ready(testbed: Testbed) -> None:
    nodes = json.loads(testbed.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    names = {n["metadata"]["name"] for n in nodes}
    assert {"w5n-node-a", "w5n-node-b"} <= names
    leases = testbed.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "name").stdout
    assert "w5n-node-a" in leases
    assert "w5n-node-b" in leases
    pins = dict(
        line.split("=", 1)
        for line in (Path(__file__).parent / "go" / "pins.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    version = json.loads(testbed.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pins["KUBERNETES_VERSION"]
    assert version["clientVersion"]["gitVersion"] == pins["KUBERNETES_VERSION"]
    assert pins["HELM_VERSION"] in testbed.helm("version", "--short").stdout


def test_pod_reaches_another_pod_over_the_bridge(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: server}}
        spec:
          containers:
          - name: http
            image: python
            command: ["{PYTHON}", "-m", "http.server", "8080", "--directory", "/data"]
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
        """,
    )
    testbed.wait_for(lambda: ready(testbed, namespace, "server"), 60, "server pod Ready")
    server_ip = pod_json(testbed, namespace, "server")["status"]["podIP"]
    assert server_ip.startswith("10.244.")
    apply(
        testbed,
        namespace,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: client}}
        spec:
          restartPolicy: Never
          containers:
          - name: fetch
            image: python
            command: ["{PYTHON}", "-c"]
            args: ["import urllib.request as u; print(u.urlopen('http://{server_ip}:8080/hello.txt').read().decode())"]
        """,
    )
    testbed.wait_for(
        lambda: phase(testbed, namespace, "client") == "Succeeded", 60, "client Succeeded"
    )
    assert "hello from the server pod" in testbed.pod_log(namespace, "client", "fetch")
    client = pod_json(testbed, namespace, "client")
    assert client["status"]["podIP"] != server_ip


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
              containers:
              - name: main
                image: python
                command: ["{PYTHON}", "-c"]
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

    testbed.wait_for(resolved, 60, "both StatefulSet pods resolving each other")
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
            image: python
            command: ["{PYTHON}", "-c"]
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
        60,
        "whoami finished",
    )
    log = testbed.pod_log(namespace, "whoami", "main")
    pod = pod_json(testbed, namespace, "whoami")
    assert pod["status"]["phase"] == "Succeeded", log
    assert f"uid 65532 api-sees whoami {pod['status']['podIP']}" in log
    assert (
        f"env {pod['status']['podIP']} {pod['spec']['nodeName']} w5xde s3cret fast hi-whoami" in log
    )


def test_safe_sysctl_applied_in_pod_netns_unsafe_refused(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: tuned}
        spec:
          restartPolicy: Never
          securityContext:
            sysctls: [{name: net.ipv4.tcp_rmem, value: "4096 131072 7340032"}]
          containers:
          - name: main
            image: python
            command: [cat, /proc/sys/net/ipv4/tcp_rmem]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: greedy}
        spec:
          securityContext:
            sysctls: [{name: net.core.rmem_max, value: "67108864"}]
          containers:
          - {name: main, image: python, command: [sleep, "100"]}
        """,
    )
    testbed.wait_for(
        lambda: phase(testbed, namespace, "tuned") == "Succeeded", 60, "tuned Succeeded"
    )
    assert testbed.pod_log(namespace, "tuned", "main").split()[-3:] == ["4096", "131072", "7340032"]
    with open("/proc/sys/net/ipv4/tcp_rmem") as host:
        assert host.read().split() != ["4096", "131072", "7340032"]
    testbed.wait_for(lambda: phase(testbed, namespace, "greedy") == "Failed", 60, "greedy Failed")
    status = pod_json(testbed, namespace, "greedy")["status"]
    assert status["reason"] == "SysctlForbidden"
    assert "net.core.rmem_max" in status["message"]


def test_killed_container_restarts_and_deletion_honours_grace(
    testbed: Testbed, namespace: str
) -> None:
    apply(
        testbed,
        namespace,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: phoenix}
        spec:
          terminationGracePeriodSeconds: 3
          containers:
          - name: main
            image: python
            command: [sh, -c, "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.2; done"]
        """,
    )
    testbed.wait_for(lambda: ready(testbed, namespace, "phoenix"), 60, "phoenix Ready")
    status = pod_json(testbed, namespace, "phoenix")["status"]["containerStatuses"][0]
    pid = testbed.container_pid(namespace, "phoenix", "main")
    assert status["containerID"] == f"process://{pid}"
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        statuses = pod_json(testbed, namespace, "phoenix")["status"]["containerStatuses"]
        return statuses[0]["restartCount"] == 1 and "running" in statuses[0]["state"]

    testbed.wait_for(restarted, 30, "phoenix restarted once")
    last = pod_json(testbed, namespace, "phoenix")["status"]["containerStatuses"][0]["lastState"]
    assert last["terminated"]["exitCode"] == 137
    testbed.kubectl("delete", "pod", "phoenix", "-n", namespace, "--wait=true", timeout=30)
    assert "got TERM" in testbed.pod_log(namespace, "phoenix", "main")


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
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: root}
            spec:
              containers:
              - name: main
                image: python
                command: [sleep, "1"]
                securityContext: {privileged: true}
            """
        ),
    )
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def test_init_container_volumes_and_liveness_restart(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        """
        apiVersion: v1
        kind: Secret
        metadata: {name: key}
        stringData: {key.txt: sesame}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: layered, labels: {tier: test}}
        spec:
          terminationGracePeriodSeconds: 1
          initContainers:
          - name: prepare
            image: python
            command: [sh, -c, "echo prepared > /work/ready.txt"]
            volumeMounts: [{name: work, mountPath: /work}]
          containers:
          - name: main
            image: python
            command: [sh, -c]
            args:
            - cat /work/ready.txt /secret/key.txt /info/labels; echo; exec sleep 1000
            volumeMounts:
            - {name: work, mountPath: /work}
            - {name: secret, mountPath: /secret, readOnly: true}
            - {name: info, mountPath: /info}
            livenessProbe:
              tcpSocket: {port: 9}
              periodSeconds: 1
              failureThreshold: 2
          volumes:
          - {name: work, emptyDir: {}}
          - {name: secret, secret: {secretName: key}}
          - name: info
            downwardAPI:
              items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
        """,
    )

    def restarted_by_liveness() -> bool:
        statuses = pod_json(testbed, namespace, "layered").get("status", {})
        main = (statuses.get("containerStatuses") or [{}])[0]
        return int(main.get("restartCount", 0)) >= 1

    testbed.wait_for(restarted_by_liveness, 60, "a restart by the failing liveness probe")
    status = pod_json(testbed, namespace, "layered")["status"]
    init = status["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert init["restartCount"] == 0
    log = testbed.pod_log(namespace, "layered", "main")
    assert "prepared\nsesame" in log
    assert 'tier="test"' in log
