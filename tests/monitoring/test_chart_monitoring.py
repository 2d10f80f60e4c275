"""The chart's monitoring objects, rendered by the real helm: rules, monitors, test hook.

Unit tier (helm template only). The scrape configs generated from the monitors
must pass the real promtool's config check, so the test bed's Prometheus in
test_prometheus.py scrapes what a Prometheus Operator would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring import prom

# helm renders the chart (the helm tier: `make test`, not `make unit`).
pytestmark = pytest.mark.helm

RELEASE, NAMESPACE = "w5xde", "w5xde-system"


def test_prometheus_rule_is_opt_in_and_names_the_release_namespace() -> None:
    prom.require(prom.HELM)
    assert not prom.of_kind(prom.render_chart(RELEASE, NAMESPACE), "PrometheusRule")
    objects = prom.render_chart(
        RELEASE, NAMESPACE, "--set", "prometheusRule.enabled=true",
        "--set", "prometheusRule.labels.release=kube-prometheus-stack",
    )  # fmt: skip
    (rule,) = prom.of_kind(objects, "PrometheusRule")
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    text = yaml.safe_dump(rule["spec"])
    assert "W5XDE_OPERATOR_NAMESPACE" not in text
    assert 'namespace="w5xde-system"' in text
    # Alert templates reach Prometheus unrendered by helm.
    assert "{{ $labels.compressioncluster }}" in text
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "W5XDEBatchesLost", "W5XDEBatchesCorrupt", "W5XDEProtocolErrors", "W5XDEWorkerDown",
        "W5XDEWorkerStalled",
        "W5XDEThroughputCollapsed", "W5XDEOperatorDown", "W5XDEOperatorErrors",
        "W5XDEReportPullsFailing", "W5XDEFoldLagHigh",
    }  # fmt: skip
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            assert item["labels"]["severity"] in {"critical", "warning"}
            assert item["annotations"]["summary"]
            assert item["annotations"]["description"]
            # Worker alerts group by the relabelled label, never by `cluster`.
            assert " cluster" not in item["expr"].replace("compressioncluster", "")


def test_generated_scrape_configs_pass_promtool(tmp_path: Path) -> None:
    prom.require(prom.HELM, prom.PROMTOOL)
    objects = prom.render_chart(
        RELEASE, NAMESPACE, "--set", "podMonitor.enabled=true",
        "--set", "serviceMonitor.enabled=true", "--set", "watchNamespaces={team-a,team-b}",
    )  # fmt: skip
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "x", "user": {}}],
            "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
        })
    )  # fmt: skip
    configs = prom.scrape_configs(objects, kubeconfig)
    by_job = {c["job_name"]: c for c in configs}
    assert set(by_job) == {"podMonitor/w5xde-system/w5xde-operator/0",
                           "podMonitor/w5xde-system/w5xde-workers/0"}  # fmt: skip
    workers = by_job["podMonitor/w5xde-system/w5xde-workers/0"]
    assert workers["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["team-a", "team-b"]}
    targets = [r.get("target_label") for r in workers["relabel_configs"]]
    assert "compressioncluster" in targets
    assert "cluster" not in targets
    services = prom.service_scrape_configs(objects, kubeconfig)
    service_workers = {c["job_name"]: c for c in services}[
        "serviceMonitor/w5xde-system/w5xde-workers/0"
    ]
    relabelled = [r for r in service_workers["relabel_configs"] if r.get("source_labels")]
    assert any(
        r["source_labels"] == ["__meta_kubernetes_service_label_w5xde_io_cluster"]
        and r["target_label"] == "compressioncluster"
        for r in relabelled
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump({"scrape_configs": configs + services}))
    result = subprocess.run([str(prom.PROMTOOL), "check", "config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_test_pod_checks_the_operator_and_the_crd() -> None:
    prom.require(prom.HELM)
    objects = prom.render_chart(RELEASE, NAMESPACE)
    (pod,) = [o for o in prom.of_kind(objects, "Pod") if o["metadata"]["name"] == "w5xde-test"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    (service,) = prom.of_kind(objects, "Service")
    port = service["spec"]["ports"][0]["port"]
    assert env["METRICS_URL"] == f"http://w5xde-metrics.{NAMESPACE}.svc:{port}/metrics"
    assert env["CRD_GROUP_VERSION"] == "w5xde.io/v1alpha1"
    assert pod["spec"]["serviceAccountName"] == "w5xde"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # No Service, no test pod (it would have nothing to call).
    without = prom.render_chart(RELEASE, NAMESPACE, "--set", "service.enabled=false")
    assert not prom.of_kind(without, "Pod")
