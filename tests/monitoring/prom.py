"""A real Prometheus for the tests: the chart's monitors as scrape configs, a process, queries.

`scrape_configs` turns the PodMonitors the chart renders into Prometheus scrape
configs the way the Prometheus Operator does (pod discovery from the API server,
the selector and the port as `keep` rules, `namespace`/`pod`/`container`/`job`
target labels, then the monitor's own relabelings), so a change to the chart's
monitors changes what the test bed's Prometheus scrapes. The binaries are the
ones `make monitoring-bin` builds from Prometheus' Go module.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "w5xde"
HELM = REPO / ".testbed" / "bin" / "helm"
MONITORING_BIN = REPO / ".monitoring" / "bin"
PROMETHEUS = MONITORING_BIN / "prometheus"
PROMTOOL = MONITORING_BIN / "promtool"
KUBE_VERSION = "1.37.2"
#: Dashboard panels whose description says this may show no series on a healthy cluster.
EMPTY_WHEN_HEALTHY = "Empty when healthy"

Object = dict[str, Any]


def require(*binaries: Path) -> None:
    """Fail (never skip) when a binary the tier needs was not built."""
    missing = [str(path) for path in binaries if not path.exists()]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run `make monitoring-bin testbed-bin` "
            "(prometheus and promtool from Go modules, helm from the test bed's build)"
        )


def render_chart(release: str, namespace: str, *settings: str) -> list[Object]:
    result = subprocess.run(
        [str(HELM), "template", release, str(CHART), "--namespace", namespace,
         "--kube-version", KUBE_VERSION, *settings],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: Iterable[Object], kind: str) -> list[Object]:
    return [item for item in objects if item.get("kind") == kind]


def rule_groups(objects: Iterable[Object]) -> dict[str, Any]:
    """The rendered PrometheusRule as a Prometheus rule file."""
    (rule,) = of_kind(objects, "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def dashboard(objects: Iterable[Object]) -> Object:
    (config_map,) = [
        item
        for item in of_kind(objects, "ConfigMap")
        if item["metadata"]["name"].endswith("-dashboard")
    ]
    (text,) = config_map["data"].values()
    return dict(json.loads(text))


def _label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "separator": "separator",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def relabel_config(rule: Object) -> Object:
    """A monitoring.coreos.com RelabelConfig as Prometheus' relabel_config."""
    unknown = set(rule) - set(_RELABEL_KEYS)
    assert not unknown, f"relabeling keys this translation does not know: {unknown}"
    out = {_RELABEL_KEYS[key]: value for key, value in rule.items()}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def _selector_rules(selector: Object, role: str = "pod") -> list[Object]:
    """`keep`/`drop` rules for a label selector on discovered pods or services."""
    rules: list[Object] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        name = _label_name(key)
        rules.append({
            "action": "keep",
            "source_labels": [f"__meta_kubernetes_{role}_label_{name}",
                              f"__meta_kubernetes_{role}_labelpresent_{name}"],
            "regex": f"({value});true",
        })  # fmt: skip
    for expression in selector.get("matchExpressions") or []:
        name = _label_name(expression["key"])
        label = f"__meta_kubernetes_{role}_label_{name}"
        present = f"__meta_kubernetes_{role}_labelpresent_{name}"
        values = "|".join(expression.get("values") or [])
        operator = expression["operator"]
        if operator == "Exists":
            rules.append({"action": "keep", "source_labels": [present], "regex": "true"})
        elif operator == "DoesNotExist":
            rules.append({"action": "drop", "source_labels": [present], "regex": "true"})
        elif operator == "In":
            rules.append({"action": "keep", "source_labels": [label, present],
                          "regex": f"({values});true"})  # fmt: skip
        elif operator == "NotIn":
            rules.append({"action": "drop", "source_labels": [label, present],
                          "regex": f"({values});true"})  # fmt: skip
        else:
            raise AssertionError(f"unknown selector operator {operator}")
    return rules


def scrape_configs(objects: Iterable[Object], kubeconfig: Path) -> list[Object]:
    """One scrape config per PodMonitor endpoint, as the Prometheus Operator generates it."""
    configs: list[Object] = []
    for monitor in of_kind(objects, "PodMonitor"):
        meta, spec = monitor["metadata"], monitor["spec"]
        namespaces = spec.get("namespaceSelector") or {}
        discovery: Object = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
        if not namespaces.get("any"):
            discovery["namespaces"] = {"names": namespaces.get("matchNames") or [meta["namespace"]]}
        for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
            job = f"{meta['namespace']}/{meta['name']}"
            rules: list[Object] = [
                {
                    "action": "drop",
                    "source_labels": ["__meta_kubernetes_pod_phase"],
                    "regex": "(Failed|Succeeded)",
                },
                *_selector_rules(spec.get("selector") or {}),
                {
                    "action": "keep",
                    "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": endpoint["port"],
                },
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {
                    "source_labels": ["__meta_kubernetes_pod_container_name"],
                    "target_label": "container",
                },
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"target_label": "job", "replacement": job},
                {"target_label": "endpoint", "replacement": endpoint["port"]},
                *(relabel_config(rule) for rule in endpoint.get("relabelings") or []),
            ]
            config: Object = {
                "job_name": f"podMonitor/{job}/{index}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint.get("path", "/metrics"),
                "kubernetes_sd_configs": [discovery],
                "relabel_configs": rules,
            }
            if "interval" in endpoint:
                config["scrape_interval"] = endpoint["interval"]
            if "scrapeTimeout" in endpoint:
                config["scrape_timeout"] = endpoint["scrapeTimeout"]
            if endpoint.get("metricRelabelings"):
                config["metric_relabel_configs"] = [
                    relabel_config(rule) for rule in endpoint["metricRelabelings"]
                ]
            configs.append(config)
    return configs


def service_scrape_configs(objects: Iterable[Object], kubeconfig: Path) -> list[Object]:
    """One scrape config per ServiceMonitor endpoint (endpoints discovery), likewise."""
    configs: list[Object] = []
    for monitor in of_kind(objects, "ServiceMonitor"):
        meta, spec = monitor["metadata"], monitor["spec"]
        namespaces = spec.get("namespaceSelector") or {}
        discovery: Object = {"role": "endpoints", "kubeconfig_file": str(kubeconfig)}
        if not namespaces.get("any"):
            discovery["namespaces"] = {"names": namespaces.get("matchNames") or [meta["namespace"]]}
        for index, endpoint in enumerate(spec["endpoints"]):
            job = f"{meta['namespace']}/{meta['name']}"
            rules: list[Object] = [
                *_selector_rules(spec.get("selector") or {}, role="service"),
                {
                    "action": "keep",
                    "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                    "regex": endpoint["port"],
                },
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {
                    "source_labels": ["__meta_kubernetes_pod_container_name"],
                    "target_label": "container",
                },
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
                {"target_label": "endpoint", "replacement": endpoint["port"]},
                *(relabel_config(rule) for rule in endpoint.get("relabelings") or []),
            ]
            config: Object = {
                "job_name": f"serviceMonitor/{job}/{index}",
                "metrics_path": endpoint.get("path", "/metrics"),
                "kubernetes_sd_configs": [discovery],
                "relabel_configs": rules,
            }
            if "interval" in endpoint:
                config["scrape_interval"] = endpoint["interval"]
            if endpoint.get("metricRelabelings"):
                config["metric_relabel_configs"] = [
                    relabel_config(rule) for rule in endpoint["metricRelabelings"]
                ]
            configs.append(config)
    return configs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """A real Prometheus process on loopback with its own TSDB in `directory`."""

    def __init__(self, directory: Path, config: Object) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        check = subprocess.run([str(PROMTOOL), "check", "config", str(config_file)],
                               capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert check.returncode == 0, f"promtool check config:\n{check.stdout}{check.stderr}"
        self.log = directory / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={config_file}",
                 f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"prometheus did not become ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns `data`, or raises with Prometheus' error text."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expression: str) -> list[Object]:
        data = self.api("query", query=expression)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def targets(self) -> list[Object]:
        return list(self.api("targets")["activeTargets"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class PromQLError(AssertionError):
    """Prometheus refused a query (parse or evaluation error)."""


def panel_queries(board: Object, substitutions: dict[str, str]) -> list[tuple[Object, str]]:
    """(panel, expression) for every target of every panel, Grafana's variables substituted."""
    queries: list[tuple[Object, str]] = []
    for panel in board["panels"]:
        for target in panel.get("targets") or []:
            expression = target["expr"]
            # Longest names first: $__rate_interval before $__range, $namespace, ...
            for name in sorted(substitutions, key=len, reverse=True):
                expression = expression.replace(f"${{{name}}}", substitutions[name])
                expression = expression.replace(f"${name}", substitutions[name])
            assert "$" not in expression, f"unsubstituted variable in {expression}"
            queries.append((panel, expression))
    return queries
