"""The CRD is generated from the models, structural, and checked in unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from w5xde.api.crd import (
    CHART_CRD_PATH,
    CRD_PATH,
    SchemaConversionError,
    chart_crd_yaml,
    crd_document,
    crd_yaml,
    generated_files,
    structural_schema,
)
from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.cli import main

ROOT = Path(__file__).parents[2]


def _version() -> dict[str, Any]:
    version: dict[str, Any] = crd_document()["spec"]["versions"][0]
    return version


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = _version()["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


@pytest.mark.parametrize("relative", [CRD_PATH, CHART_CRD_PATH], ids=str)
def test_checked_in_files_match_the_generator(relative: Path) -> None:
    expected = generated_files()[relative]
    actual = (ROOT / relative).read_text(encoding="utf-8")
    assert actual == expected, f"{relative} is stale: run `make crd`"


def test_crd_command_check_passes_on_the_tree_and_fails_on_drift(tmp_path: Path) -> None:
    assert main(["crd", "--check", "--root", str(ROOT)]) == 0
    assert main(["crd", "--root", str(tmp_path)]) == 0
    assert (tmp_path / CRD_PATH).read_text() == crd_yaml()
    (tmp_path / CRD_PATH).write_text("# edited by hand\n")
    assert main(["crd", "--check", "--root", str(tmp_path)]) == 1


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        if path.endswith((".properties", ".properties.metadata")) or "[" in path:
            continue  # maps of field names, rule lists, and metadata (the server's own)
        for key in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            assert key not in node, f"{key} at {path}"
        assert node.get("additionalProperties") is not False, path
        if node.get("type") == "object" and "properties" not in node:
            assert "additionalProperties" in node or node.get(
                "x-kubernetes-preserve-unknown-fields"
            ), f"free-form object without preserve-unknown-fields at {path}"


def _defaults_of(node: dict[str, Any]) -> Any:
    """What the API server would fill in for an empty object with this schema."""
    result = {}
    for name, child in node.get("properties", {}).items():
        if "default" not in child:
            continue  # absent stays absent (an optional object such as issuerRef)
        if "properties" in child:
            result[name] = {**child["default"], **_defaults_of(child)}
        else:
            result[name] = child["default"]
    return result


def _assert_subset(part: dict[str, Any], whole: dict[str, Any], where: str = "spec") -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _assert_subset(value, whole[key], f"{where}.{key}")
        else:
            assert whole[key] == value, f"{where}.{key}"


def test_defaults_round_trip_to_the_model_defaults() -> None:
    spec_schema = _schema()["properties"]["spec"]
    server_defaults = _defaults_of(spec_schema)
    model = CompressionClusterSpec.model_validate(server_defaults)
    assert model == CompressionClusterSpec()
    model_defaults = CompressionClusterSpec().model_dump(mode="json", by_alias=True)
    _assert_subset(server_defaults, model_defaults)
    assert spec_schema["default"] == {}


def test_enums_bounds_and_free_form_fields() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert (spec["workers"]["minimum"], spec["workers"]["maximum"]) == (1, 1000)
    assert set(spec["logMode"]["enum"]) == {"silent", "normal", "verbose", "1", "2", "3"}
    assert spec["workload"]["properties"]["topology"]["enum"] == [
        "ring",
        "all-to-all",
        "pairs",
        "mesh",
    ]
    assert spec["resources"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["tolerations"]["items"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["network"]["properties"]["sysctls"]["maxProperties"] == 32


def test_cel_rules_carry_messages_and_field_paths() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    network_rules = spec["network"]["x-kubernetes-validations"]
    assert {rule["fieldPath"] for rule in network_rules} == {
        ".chunkBytes",
        ".sysctls",
        ".socketBufferBytes",
        ".path",
    }
    (level_rule,) = spec["compression"]["x-kubernetes-validations"]
    assert level_rule["fieldPath"] == ".level"
    assert "'auto'" in level_rule["rule"]
    assert "'auto'" in level_rule["message"]
    assert spec["compression"]["properties"]["level"]["x-kubernetes-int-or-string"] is True
    buffers = spec["network"]["properties"]["socketBufferBytes"]
    assert buffers["x-kubernetes-int-or-string"] is True
    assert spec["workload"]["properties"]["balance"]["enum"] == ["even", "capacity"]
    workload_rules = spec["workload"]["x-kubernetes-validations"]
    assert "self.source != 'file'" in workload_rules[0]["rule"]
    for rule in network_rules + workload_rules:
        assert rule["message"].startswith(("network.", "workload."))


def test_status_is_declared_without_defaults() -> None:
    status = _schema()["properties"]["status"]["properties"]
    for field in (
        "observedGeneration", "phase", "ready", "readyWorkers", "throughput",
        "throughputBytesPerSecond", "wireBytesPerSecond", "batchesPerSecond",
        "compressionRatio", "networkSeconds", "compressionSeconds", "memoryBytes",
        "totals", "retiredTotals", "spread", "notableWorkers", "reporting", "conditions",
        "startedAt", "completedAt",
    ):  # fmt: skip
        assert field in status, field
    assert status["startedAt"]["nullable"] is True
    assert set(status["totals"]["properties"]) == {
        "batches", "rawBytes", "wireBytes", "lostBatches", "corruptBatches", "resentBatches",
    }  # fmt: skip
    # Nothing in the status grows with the worker count: no per-worker map.
    assert "workers" not in status
    assert "foldedWorkers" not in status
    assert not any("additionalProperties" in node for _, node in _walk(status))
    notable = status["notableWorkers"]
    assert notable["type"] == "array"
    assert notable["maxItems"] == 10
    assert set(notable["items"]["required"]) >= {"name", "reason"}
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert not any("default" in node for _, node in _walk(_schema()["properties"]["status"]))


def test_subresources_names_and_columns() -> None:
    document = crd_document()
    assert document["spec"]["names"]["shortNames"] == ["cc"]
    version = _version()
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.workers"
    # An HPA needs the pods' selector from the scale subresource.
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    status_fields = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status_fields["selector"]["type"] == "string"
    columns = [column["name"].upper() for column in version["additionalPrinterColumns"]]
    assert columns == ["READY", "PHASE", "THROUGHPUT", "RATIO", "BATCHES/S", "AGE"]
    assert version["additionalPrinterColumns"][0]["jsonPath"] == ".status.ready"


def test_chart_copy_is_the_same_document_behind_the_switch() -> None:
    text = chart_crd_yaml()
    lines = text.splitlines()
    assert lines[0] == "{{- if .Values.crds.install }}"
    assert lines[-1] == "{{- end }}"
    assert "helm.sh/resource-policy: keep" in text
    assert "{{- if .Values.crds.keep }}" in text
    plain = "\n".join(line for line in lines if "{{" not in line)
    assert yaml.safe_load(plain)["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    without = yaml.safe_load(plain)
    del without["metadata"]["annotations"]
    assert without == crd_document()


class _Optional(BaseModel):
    count: int | None = None
    ratio: float = Field(0.5, gt=0)


def test_converter_collapses_optionals_and_exclusive_bounds() -> None:
    schema = structural_schema(_Optional, with_defaults=True)
    # No `default: null`: the server would write null into every object; absent says it.
    assert schema["properties"]["count"] == {"type": "integer", "nullable": True}
    assert schema["properties"]["ratio"]["minimum"] == 0
    assert schema["properties"]["ratio"]["exclusiveMinimum"] is True


class _Union(BaseModel):
    value: int | str = 0


def test_converter_refuses_unions_it_cannot_express() -> None:
    with pytest.raises(SchemaConversionError, match="X \\| None"):
        structural_schema(_Union, with_defaults=True)


def _schema_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _schema_nodes(child)
    elif isinstance(node, list):
        for child in node:
            yield from _schema_nodes(child)


def test_no_object_default_the_server_would_refuse() -> None:
    # The API server validates defaults against their own schema: `{}` for an object
    # with required fields makes the whole CRD invalid.
    schema = _version()["schema"]["openAPIV3Schema"]
    offenders = [
        node.get("description", "?")
        for node in _schema_nodes(schema)
        if node.get("default") == {} and node.get("required")
    ]
    assert offenders == []
