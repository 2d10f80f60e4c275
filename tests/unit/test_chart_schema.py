"""values.yaml and values.schema.json describe the same settings.

The schema refuses unknown keys, so a value added to values.yaml without the schema
breaks every install; a schema property without a default in values.yaml is an
undocumented option. Both are caught here without needing helm.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "w5xde"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
# Set by Helm for umbrella charts, never in our values.yaml.
HELM_PROVIDED = {"global"}


def closed_objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object that lists its properties and refuses others, with its path."""
    if schema.get("type") == "object" and "properties" in schema:
        assert schema.get("additionalProperties") is False, f"{path or '/'} accepts unknown keys"
        yield path, schema
        for name, child in schema["properties"].items():
            yield from closed_objects(child, f"{path}/{name}")


def value_at(path: str) -> Any:
    node = VALUES
    for part in path.strip("/").split("/") if path else []:
        node = node[part]
    return node


def test_schema_and_values_list_the_same_keys() -> None:
    for path, schema in closed_objects(SCHEMA):
        declared = set(schema["properties"]) - HELM_PROVIDED
        defaults = value_at(path)
        assert isinstance(defaults, dict), f"{path}: values.yaml has no object here"
        assert set(defaults) <= declared, f"{path}: not in the schema: {set(defaults) - declared}"
        missing = declared - set(defaults)
        assert not missing, f"{path}: no default in values.yaml: {missing}"


def test_every_schema_property_says_what_it_is_for() -> None:
    for path, schema in closed_objects(SCHEMA):
        for name, child in schema["properties"].items():
            assert child.get("description"), f"{path}/{name} has no description"


def test_every_top_level_value_is_commented() -> None:
    """Like the prometheus-community charts: each setting explains itself in values.yaml."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith(("#", " ")):
            key = line.split(":", 1)[0]
            before, first_inside = lines[index - 1], lines[index + 1].lstrip()
            assert before.startswith("#") or first_inside.startswith("#"), (
                f"{key} has no comment in values.yaml"
            )
