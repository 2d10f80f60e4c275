"""The chart's alert rules under the real promtool: they load, and each fires and stays silent.

The rules are taken from the rendered chart (`prometheusRule.enabled=true`), so
what is tested is what a user installs, with the release namespace filled in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring import prom

# helm renders the chart (the helm tier: `make test`, not `make unit`).
pytestmark = pytest.mark.helm

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "rules_test.yaml"


def rendered_rules(tmp_path: Path) -> Path:
    prom.require(prom.PROMTOOL, prom.HELM)
    objects = prom.render_chart("w5xde", "w5xde-system", "--set", "prometheusRule.enabled=true")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(prom.rule_groups(objects), sort_keys=False))
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(prom.PROMTOOL), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_rendered_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = rendered_rules(tmp_path)
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout, result.stdout


def test_every_alert_fires_and_stays_silent_under_promtool(tmp_path: Path) -> None:
    rules = rendered_rules(tmp_path)
    shutil.copy(FIXTURES, tmp_path / "rules_test.yaml")
    result = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout

    # Coverage: every alert of the chart has a firing and a silent case in the fixtures.
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = yaml.safe_load(FIXTURES.read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test") or []:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
        for check in case.get("promql_expr_test") or []:
            (name,) = re.findall(r'alertname="(\w+)"', check["expr"])
            (firing if check["exp_samples"] else silent).add(name)
    assert alerts == firing, f"alerts without a firing case: {alerts - firing}"
    assert alerts == silent, f"alerts without a silent case: {alerts - silent}"


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The check above is not vacuous: promtool refuses a rule Prometheus would refuse."""
    rules = rendered_rules(tmp_path)
    text = rules.read_text().replace(
        "increase(w5xde_lost_batches_total", "increase(w5xde_lost_batches_total[", 1
    )
    rules.write_text(text)
    result = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode != 0
