"""The krew manifest template and its rendering for a release."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from w5xde.plugin.krew import __main__ as krew

ROOT = Path(__file__).parents[2]


def test_the_template_is_what_krew_accepts() -> None:
    assert krew.problems(krew.template()) == []


def test_the_binary_is_the_console_script_kubectl_finds() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert krew.BINARY in scripts


def test_broken_manifests_are_named() -> None:
    broken = krew.template().replace("bin: kubectl-w5xde", "bin: w5xde")
    assert krew.problems(broken) == ["spec.platforms[0].bin must be kubectl-w5xde"]
    assert "the template lacks {{SHA256_LINUX_AMD64}}" in krew.problems(
        krew.template().replace("{{SHA256_LINUX_AMD64}}", "x")
    )


def test_render_fills_version_and_digest() -> None:
    digest = "a" * 64
    manifest = yaml.safe_load(krew.render("1.2.3", digest))
    assert manifest["spec"]["version"] == "v1.2.3"
    (platform,) = manifest["spec"]["platforms"]
    assert platform["sha256"] == digest
    assert platform["uri"].endswith("/v1.2.3/kubectl-w5xde_linux_amd64.tar.gz")
    with pytest.raises(ValueError, match="sha256"):
        krew.render("1.2.3", "nope")
