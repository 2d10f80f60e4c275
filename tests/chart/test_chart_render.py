"""The Helm chart, rendered by the real `helm` of the test bed and read back as objects.

Each test pins a promise of docs/helm.md: what the operator is allowed to do, how it
is locked down, which optional parts appear for which values, and that the schema
refuses bad values with the name of the field. Where the chart must agree with the
operator (worker labels, the tuned-node label), the test asks the operator's own
renderers, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from w5xde import cli
from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator import metrics as operator_metrics
from w5xde.operator.resources.metadata import NODE_TUNED_LABEL, ClusterRef
from w5xde.operator.resources.network_policy import render_network_policy
from w5xde.operator.resources.service import render_service
from w5xde.operator.resources.statefulset import render_statefulset
from w5xde.operator.sysctl_policy import SysctlPlan
from w5xde.worker.config import WorkerConfig
from w5xde.worker.metrics import MetricsServer
from w5xde.worker.runtime import Worker

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "w5xde"
VALUES = REPO / "tests" / "chart_values"
HELM = REPO / ".testbed" / "bin" / "helm"
# The test bed's Kubernetes; the chart requires >=1.29 and helm template assumes 1.20.
KUBE_VERSION = "1.37.2"
RELEASE = "w5xde"
NAMESPACE = "w5xde-system"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

pytestmark = pytest.mark.skipif(
    not HELM.exists(),
    reason=f"HELM IS MISSING at {HELM}: run `make testbed-bin` to build it; chart untested",
)

Object = dict[str, Any]
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, check=False
    )


@cache
def render(*args: str) -> tuple[Object, ...]:
    result = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def values_file(name: str) -> tuple[str, str]:
    return ("--values", str(VALUES / name))


def of_kind(objects: Iterable[Object], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Iterable[Object], kind: str, name: str | None = None) -> Object:
    found = [obj for obj in of_kind(objects, kind) if name in (None, obj["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def operator_container(objects: Iterable[Object]) -> Object:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def grants(rules: list[Object]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a list of RBAC rules allows, spelled out."""
    granted = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    granted.add((group, resource, verb))
    return granted


def spelled(
    group: str, resources: Iterable[str], verbs: Iterable[str]
) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for resource in resources for verb in verbs}


# What the operator does in a namespace it serves (DESIGN.md, Operator), and no more.
NAMESPACED_GRANTS = (
    spelled("w5xde.io", ["compressionclusters"], ["get", "list", "watch", "patch", "update"])
    | spelled("w5xde.io", ["compressionclusters/status"], ["get", "patch", "update"])
    | spelled("w5xde.io", ["compressionclusters/scale"], ["get", "patch", "update"])
    | spelled("apps", ["statefulsets"], ALL_VERBS)
    | spelled("", ["services", "serviceaccounts"], ALL_VERBS)
    | spelled("", ["secrets"], ["get", "create", "patch"])
    | spelled("", ["configmaps"], ["get", "create", "patch"])
    | spelled("networking.k8s.io", ["networkpolicies"], ["get", "create", "patch", "delete"])
    | spelled("rbac.authorization.k8s.io", ["roles", "rolebindings"], ["delete"])
    | spelled("", ["pods"], ["get", "list", "watch"])
    | spelled("", ["events"], ["create", "patch"])
    | spelled("events.k8s.io", ["events"], ["create", "patch"])
)
# Cluster-scoped reads kopf makes whatever it serves.
CLUSTER_READS = spelled(
    "apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"]
) | spelled("", ["namespaces"], ["list", "watch"])


def peering_grants(resource: str) -> set[tuple[str, str, str]]:
    # The operator creates its peering object itself (kopf never does), then patches it.
    return spelled("kopf.dev", [resource], ["get", "list", "watch", "patch", "create"])


def selects(selector: Object, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels + Exists/In expressions) picks `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "Exists" and key not in labels:
            return False
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        assert operator in {"Exists", "In"}, f"selector operator {operator} not understood"
    return True


def worker_objects() -> tuple[Object, Object]:
    """A worker StatefulSet and Service exactly as the operator renders them."""
    cluster = ClusterRef(name="demo", namespace="team-a", uid="0000-demo")
    spec = CompressionClusterSpec()
    statefulset = render_statefulset(
        cluster, spec, image="worker:test", sysctls=SysctlPlan(), replicas=4, template_workers=4
    )
    return statefulset, render_service(cluster, spec)


# --- defaults -------------------------------------------------------------------------


def test_defaults_render_the_operator_and_nothing_optional() -> None:
    objects = render()
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "Pod",  # the `helm test` hook
            "NetworkPolicy",  # the operator's (networkPolicy.enabled, .operator)
            *["CustomResourceDefinition"] * 3,
        ]
    )
    crds = {crd["metadata"]["name"] for crd in of_kind(objects, "CustomResourceDefinition")}
    assert crds == {
        "compressionclusters.w5xde.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]
        # The generated CompressionCluster CRD is the same in every release.
        if obj["metadata"]["name"] != "compressionclusters.w5xde.io":
            assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_operator_pod_is_locked_down() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(render())
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # A read-only root still needs a writable /tmp for Python.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_hit_the_kopf_liveness_port_the_operator_is_told() -> None:
    container = operator_container(render("--set", "health.port=9811"))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 9811}
    assert "--liveness=9811" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_operator_command_line_and_images_default_to_the_app_version() -> None:
    container = operator_container(render())
    assert container["image"] == f"ghcr.io/w5xde/w5xde-operator:{APP_VERSION}"
    assert container["args"] == [
        "operator",
        "--all-namespaces",
        "--log-mode=normal",
        "--liveness=8081",
        "--metrics-port=8080",
        f"--peering={RELEASE}",
        "--operator-pod-labels=app.kubernetes.io/component=operator,"
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=w5xde",
    ]
    env = {item["name"]: item for item in container["env"]}
    assert env["W5XDE_WORKER_IMAGE"]["value"] == f"ghcr.io/w5xde/w5xde-worker:{APP_VERSION}"
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    field = env["W5XDE_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.namespace"


def test_image_values_reach_the_pod() -> None:
    objects = render(*values_file("full.yaml"))
    container = operator_container(objects)
    assert container["image"] == "registry.example/w5xde-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert "--log-mode=verbose" in container["args"]
    env = {item["name"]: item for item in container["env"]}
    assert env["W5XDE_WORKER_IMAGE"]["value"] == "registry.example/w5xde-worker:1.2.3"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


# --- RBAC -----------------------------------------------------------------------------


def test_cluster_wide_rbac_grants_exactly_what_the_operator_does() -> None:
    objects = render()
    role = one(objects, "ClusterRole")
    assert grants(role["rules"]) == (
        NAMESPACED_GRANTS | CLUSTER_READS | peering_grants("clusterkopfpeerings")
    )
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert not of_kind(objects, "Role")
    assert not of_kind(objects, "RoleBinding")


def test_operator_can_neither_list_nor_watch_secrets() -> None:
    """It reads its clusters' key Secrets by name; listing would expose every Secret."""
    granted = grants(one(render(), "ClusterRole")["rules"])
    assert ("", "secrets", "get") in granted
    assert not {("", "secrets", verb) for verb in ("list", "watch")} & granted


def test_watch_namespaces_limits_rbac_and_peering_to_those_namespaces() -> None:
    objects = render("--set", "watchNamespaces={team-a,team-b}")
    args = operator_container(objects)["args"]
    assert "--all-namespaces" not in args
    assert [arg for arg in args if arg.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    cluster_role = one(objects, "ClusterRole")
    assert grants(cluster_role["rules"]) == CLUSTER_READS
    roles = of_kind(objects, "Role")
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert grants(role["rules"]) == NAMESPACED_GRANTS | peering_grants("kopfpeerings")
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[0]["metadata"]["name"],
        }
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_rbac_create_false_leaves_rbac_to_the_user() -> None:
    objects = render("--set", "rbac.create=false")
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not of_kind(objects, kind)


# --- peering ---------------------------------------------------------------------------


def test_peering_name_reaches_the_operator_which_creates_the_object() -> None:
    objects = render("--set", "peering.name=team-peers")
    assert "--peering=team-peers" in operator_container(objects)["args"]
    # A chart-made peering object would race the operator's own create on first install.
    assert not [obj for obj in objects if obj["apiVersion"].startswith("kopf.dev/")]


def test_allowed_unsafe_sysctls_reach_the_operator() -> None:
    args = operator_container(render(*values_file("full.yaml")))["args"]
    assert "--allowed-unsafe-sysctls=net.core.somaxconn,net.ipv4.tcp_*" in args
    assert not [a for a in operator_container(render())["args"] if "unsafe" in a]


# --- CRDs -----------------------------------------------------------------------------


def test_crds_follow_install_and_keep() -> None:
    assert not of_kind(render(*values_file("no-crds.yaml")), "CustomResourceDefinition")
    kept = of_kind(render(), "CustomResourceDefinition")
    assert len(kept) == 3
    for crd in kept:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for crd in of_kind(render(*values_file("crds-not-kept.yaml")), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
    without_kopf = of_kind(render("--set", "crds.kopfPeering=false"), "CustomResourceDefinition")
    assert [crd["metadata"]["name"] for crd in without_kopf] == ["compressionclusters.w5xde.io"]
    only_kopf = render("--set", "crds.install=false,crds.kopfPeering=true")
    assert sorted(
        crd["metadata"]["name"] for crd in of_kind(only_kopf, "CustomResourceDefinition")
    ) == [
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ]


# --- PodDisruptionBudget --------------------------------------------------------------


def test_disruption_budget_only_with_several_replicas() -> None:
    assert not of_kind(render(), "PodDisruptionBudget")
    assert not of_kind(render("--set", "replicaCount=0"), "PodDisruptionBudget")
    objects = render("--set", "replicaCount=2")
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert "maxUnavailable" not in budget
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(budget["selector"], pod_labels)
    other = one(render(*values_file("pdb-max-unavailable.yaml")), "PodDisruptionBudget")
    assert other["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in other["spec"]


# --- monitoring -----------------------------------------------------------------------


def test_monitors_only_when_switched_on() -> None:
    for kind in ("PodMonitor", "ServiceMonitor", "ConfigMap"):
        assert not of_kind(render(), kind)
    objects = render("--set", "podMonitor.enabled=true,podMonitor.workers=false")
    assert [m["metadata"]["name"] for m in of_kind(objects, "PodMonitor")] == ["w5xde-operator"]
    assert not of_kind(objects, "ServiceMonitor")


def test_operator_monitors_select_the_operator_pods_and_metrics_port() -> None:
    objects = render(*values_file("full.yaml"))
    pod_template = one(objects, "Deployment")["spec"]["template"]
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_template["metadata"]["labels"])
    pod_monitor = one(objects, "PodMonitor", "w5xde-operator")
    assert selects(pod_monitor["spec"]["selector"], pod_template["metadata"]["labels"])
    assert pod_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    service_monitor = one(objects, "ServiceMonitor", "w5xde-operator")
    assert selects(service_monitor["spec"]["selector"], service["metadata"]["labels"])
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_worker_monitors_select_what_the_operator_renders() -> None:
    statefulset, service = worker_objects()
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    container_ports = {
        port["name"]
        for container in statefulset["spec"]["template"]["spec"]["containers"]
        for port in container["ports"]
    }
    objects = render(*values_file("full.yaml"))
    pod_monitor = one(objects, "PodMonitor", "w5xde-workers")["spec"]
    assert selects(pod_monitor["selector"], pod_labels)
    endpoint = pod_monitor["podMetricsEndpoints"][0]
    assert endpoint["port"] in container_ports
    assert endpoint["relabelings"][0]["targetLabel"] == "compressioncluster"
    assert pod_monitor["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    service_monitor = one(objects, "ServiceMonitor", "w5xde-workers")["spec"]
    assert selects(service_monitor["selector"], service["metadata"]["labels"])
    assert service_monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The operator's own pods must not be scraped as workers.
    operator_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selects(pod_monitor["selector"], operator_labels)
    cluster_wide = render("--set", "podMonitor.enabled=true")
    assert one(cluster_wide, "PodMonitor", "w5xde-workers")["spec"]["namespaceSelector"] == {
        "any": True
    }


def exported_worker_metrics() -> set[str]:
    """The sample names a real worker serves on /metrics (its server's registry, not a list)."""
    worker = Worker(WorkerConfig(name="demo-0", cluster_id="team-a/demo"), b"k" * 32)
    server = MetricsServer.for_worker(worker, "127.0.0.1", 0)
    try:
        server.start()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as answer:
            exposition = answer.read().decode()
    finally:
        server.stop()
    return set(re.findall(r"^([a-z][a-z0-9_]*)(?:\{[^}]*\})?\s", exposition, re.MULTILINE))


def exported_operator_metrics() -> set[str]:
    """The families the operator's registry declares, with their exposition suffixes."""
    names: set[str] = set()
    for family in operator_metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_metric_conventions_build_info_and_process_collectors() -> None:
    worker = exported_worker_metrics()
    operator = exported_operator_metrics()
    for names in (worker, operator):
        assert {"w5xde_build_info", "process_cpu_seconds_total", "python_info"} <= names
        assert "process_resident_memory_bytes" in names
    assert not [name for name in worker | operator if name.endswith("_created")]
    # Counters carry _total, durations _seconds (docs/metrics.md).
    for name in worker | operator:
        if name.startswith("w5xde_") and "seconds" in name:
            assert name.endswith(("_seconds", "_seconds_total", "_bucket", "_sum", "_count")), name


def test_grafana_dashboard_configmap_carries_the_dashboard() -> None:
    config_map = one(render(*values_file("full.yaml")), "ConfigMap", "w5xde-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "W5XDE"}
    dashboard = json.loads(config_map["data"]["w5xde.json"])
    assert dashboard["uid"] == "w5xde-clusters"
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set(re.findall(r"\bw5xde_[a-z_]+", " ".join(expressions)))
    exported = exported_worker_metrics() | exported_operator_metrics()
    assert used <= exported, f"no W5XDE process exports {used - exported}"
    for needed in ("raw_bytes", "wire_bytes", "batches", "network_seconds", "compression_seconds"):
        assert any(needed in name for name in used), needed
    for expression in expressions:
        if "w5xde_operator_" in expression:
            continue
        # Worker panels filter by the relabelled target label, never by `cluster`.
        assert 'compressioncluster=~"$compressioncluster"' in expression, expression
        assert not re.search(r"\bcluster\b", expression.replace("compressioncluster", "")), (
            expression
        )
    # Counters are only ever shown through rate() or increase(): a raw counter drops
    # to 0 when a worker restarts.
    for expression in expressions:
        for counter in re.findall(r"\bw5xde_[a-z_]+_total\b", expression):
            assert re.search(rf"(rate|increase)\({counter}\b", expression), expression
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("throughput", "batches/s", "ratio", "network time", "compression time"):
        assert topic in titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert variables == ["datasource", "namespace", "compressioncluster"]


def test_cli_port_defaults_match_the_chart() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    parser = cli.build_parser()
    args = parser.parse_args(["operator"])
    assert args.metrics_port == values["metrics"]["port"] == 8080
    assert args.liveness == values["health"]["port"] == 8081


# --- network policies -----------------------------------------------------------------


def operator_options(objects: Iterable[Object], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The options the chart's operator runs with: its args through the real CLI, in its
    namespace (what the downward API hands it)."""
    from w5xde.operator import runner

    deployment = one(objects, "Deployment")
    container = operator_container(objects)
    env = {item["name"]: item for item in container["env"]}
    assert env["W5XDE_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setenv("W5XDE_OPERATOR_NAMESPACE", deployment["metadata"]["namespace"])
    seen: list[Any] = []
    monkeypatch.setattr(runner, "run_operator", lambda options: seen.append(options) or 0)
    args = cli.build_parser().parse_args(container["args"])
    assert args.handler(args) == 0
    return seen[0]


def test_worker_policies_admit_exactly_the_chart_operator_pods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator's worker policy, with the options the chart gives it, selects the
    chart's operator pods in their namespace, and no other pod there."""
    objects = render("--set", "networkPolicy.monitoringNamespaces={monitoring,obs}")
    options = operator_options(objects, monkeypatch)
    assert options.network_policy is not None
    assert options.network_policy.monitoring_namespaces == ("monitoring", "obs")
    cluster = ClusterRef(name="demo", namespace="team-a", uid="0000-demo")
    policy = render_network_policy(cluster, CompressionClusterSpec(), options.network_policy)
    operator_peer, *monitoring = policy["spec"]["ingress"][1]["from"]
    namespace = operator_peer["namespaceSelector"]["matchLabels"]
    assert namespace == {"kubernetes.io/metadata.name": NAMESPACE}
    template = one(objects, "Deployment")["spec"]["template"]
    assert selects(operator_peer["podSelector"], template["metadata"]["labels"])
    # Not the helm test pod, nor the node-tuning pods of the same release.
    assert not selects(operator_peer["podSelector"], one(objects, "Pod")["metadata"]["labels"])
    node_tuning = one(render("--set", "nodeTuning.enabled=true"), "DaemonSet")
    assert not selects(
        operator_peer["podSelector"], node_tuning["spec"]["template"]["metadata"]["labels"]
    )
    assert [peer["namespaceSelector"]["matchLabels"] for peer in monitoring] == [
        {"kubernetes.io/metadata.name": "monitoring"},
        {"kubernetes.io/metadata.name": "obs"},
    ]


def test_network_policies_switched_off_reach_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render("--set", "networkPolicy.enabled=false")
    assert not of_kind(objects, "NetworkPolicy")
    args = operator_container(objects)["args"]
    assert "--no-network-policy" in args
    assert not [arg for arg in args if arg.startswith(("--operator-pod", "--monitoring"))]
    assert operator_options(objects, monkeypatch).network_policy is None
    # The operator's own policy has a switch of its own.
    kept = render("--set", "networkPolicy.operator=false")
    assert not of_kind(kept, "NetworkPolicy")
    assert "--no-network-policy" not in operator_container(kept)["args"]


def test_operator_policy_admits_monitoring_and_the_helm_test_pod_to_metrics_only() -> None:
    objects = render(
        "--set", "networkPolicy.monitoringNamespaces={monitoring}", "--set", "metrics.port=9100"
    )  # fmt: skip
    policy = one(objects, "NetworkPolicy")
    spec = policy["spec"]
    template = one(objects, "Deployment")["spec"]["template"]
    assert selects(spec["podSelector"], template["metadata"]["labels"])
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9100}]
    assert rule["from"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    (test_peer,) = rule["from"][1:]
    assert set(test_peer) == {"podSelector"}  # the release namespace only
    assert selects(test_peer["podSelector"], one(objects, "Pod")["metadata"]["labels"])
    assert not selects(test_peer["podSelector"], template["metadata"]["labels"])


def test_operator_policy_without_peers_admits_nothing_rather_than_everyone() -> None:
    spec = one(render("--set", "helmTest.enabled=false"), "NetworkPolicy")["spec"]
    assert spec["ingress"] == []
    assert spec["policyTypes"] == ["Ingress"]


# --- node tuning ----------------------------------------------------------------------


def test_node_tuning_is_opt_in() -> None:
    objects = render()
    assert not of_kind(objects, "DaemonSet")
    assert [r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")] == ["w5xde"]


def test_node_tuning_daemonset_sets_the_caps_and_labels_what_the_operator_selects() -> None:
    objects = render(*values_file("full.yaml"))
    daemonset = one(objects, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    env = {item["name"]: item for item in container["env"]}
    assert env["RMEM_MAX"]["value"] == "33554432"
    assert env["WMEM_MAX"]["value"] == "33554432"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # The operator pins nodeTuning clusters with exactly this label.
    assert env["NODE_LABEL"]["value"] == NODE_TUNED_LABEL
    assert container["image"] == "registry.example/w5xde-operator:1.2.3"

    script_map = one(objects, "ConfigMap", daemonset["metadata"]["name"])
    script = script_map["data"]["tune_node.py"]
    assert script.strip() == (CHART / "files" / "tune_node.py").read_text().strip()
    compile(script, "tune_node.py", "exec")
    (mount,) = container["volumeMounts"]
    assert container["command"][-1] == f"{mount['mountPath']}/tune_node.py"

    account = pod["serviceAccountName"]
    role = one(objects, "ClusterRole", daemonset["metadata"]["name"])
    assert grants(role["rules"]) == spelled("", ["nodes"], ["get", "patch"])
    binding = one(objects, "ClusterRoleBinding", daemonset["metadata"]["name"])
    assert binding["subjects"][0]["name"] == account
    assert one(objects, "ServiceAccount", account)


def test_node_tuning_can_live_in_a_privileged_namespace_of_its_own() -> None:
    objects = render("--set", "nodeTuning.enabled=true,nodeTuning.namespace=kube-system")
    daemonset = one(objects, "DaemonSet")
    assert daemonset["metadata"]["namespace"] == "kube-system"
    name = daemonset["metadata"]["name"]
    assert one(objects, "ServiceAccount", name)["metadata"]["namespace"] == "kube-system"
    assert one(objects, "ConfigMap", name)["metadata"]["namespace"] == "kube-system"
    assert one(objects, "ClusterRoleBinding", name)["subjects"][0]["namespace"] == "kube-system"
    assert one(objects, "Deployment")["metadata"]["namespace"] == NAMESPACE


def test_node_tuning_defaults_are_16_mib() -> None:
    container = one(render("--set", "nodeTuning.enabled=true"), "DaemonSet")["spec"]["template"][
        "spec"
    ]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["RMEM_MAX"] == env["WMEM_MAX"] == str(16 * 1024 * 1024)


# --- names and namespaces -------------------------------------------------------------


def test_namespace_override_moves_every_namespaced_object() -> None:
    objects = render("--set", "namespaceOverride=elsewhere,nodeTuning.enabled=true")
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == "elsewhere", obj["metadata"]
    for binding in of_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"][0]["namespace"] == "elsewhere"


def test_release_name_containing_the_chart_name_is_not_repeated() -> None:
    result = helm("template", "my-w5xde", str(CHART), "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stderr
    deployment = one([d for d in yaml.safe_load_all(result.stdout) if d], "Deployment")
    assert deployment["metadata"]["name"] == "my-w5xde"


# --- lint and schema ------------------------------------------------------------------

ACCEPTED = sorted(path.name for path in VALUES.glob("*.yaml"))
REFUSED = sorted(VALUES.glob("refused/*.yaml"))
NEEDLE = re.compile(r"^# The schema must refuse this; the error names: (.+)$")


@pytest.mark.parametrize("name", [None, *ACCEPTED])
def test_lint_strict_accepts(name: str | None) -> None:
    args = values_file(name) if name else ()
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ERROR]" not in result.stdout
    assert "[WARNING]" not in result.stdout


def test_refused_values_files_exist() -> None:
    assert len(REFUSED) >= 10


@pytest.mark.parametrize("path", REFUSED, ids=lambda path: path.stem)
def test_schema_refuses_and_names_the_field(path: Path) -> None:
    needle = NEEDLE.match(path.read_text().splitlines()[0])
    assert needle, f"{path.name}: first line must say which field the error names"
    result = helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--values", str(path)
    )
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert needle.group(1) in result.stderr, result.stderr
    lint = helm(
        "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "--values", str(path)
    )
    assert lint.returncode != 0
    assert needle.group(1) in lint.stdout + lint.stderr
