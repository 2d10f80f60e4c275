"""The support bundle's pure parts: Secret redaction and the leak check."""

from __future__ import annotations

import base64
import io
import tarfile

import pytest
import yaml

from w5xde.plugin import report_bundle
from w5xde.plugin.report_bundle import Bundle, SecretLeakError

KEY = b"0123456789abcdef-cluster-key-material"


def _secret() -> dict[str, object]:
    encoded = base64.b64encode(KEY).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "demo-key",
            "annotations": {report_bundle.LAST_APPLIED: f'{{"data": {{"key": "{encoded}"}}}}'},
            "managedFields": [{"manager": "x"}],
        },
        "data": {"key": encoded},
    }


def test_a_secret_is_kept_as_names_and_keys_only() -> None:
    seen: set[bytes] = set()
    shown = report_bundle.tidy(report_bundle.redact_secret(_secret(), seen))
    text = yaml.safe_dump(shown)
    assert KEY not in text.encode()
    assert base64.b64encode(KEY) not in text.encode()
    assert shown["dataKeys"] == ["key"]
    assert report_bundle.LAST_APPLIED not in shown["metadata"]["annotations"]
    assert "managedFields" not in shown["metadata"]
    assert {KEY, base64.b64encode(KEY)} <= seen


def test_a_secret_value_anywhere_stops_the_bundle() -> None:
    bundle = Bundle(root="r")
    report_bundle.redact_secret(_secret(), bundle.secret_values)
    bundle.add("logs/workers/demo-0-worker.log", b"starting\nkey=" + KEY + b"\n")
    with pytest.raises(SecretLeakError, match=r"r/logs/workers/demo-0-worker\.log contains"):
        report_bundle.write_archive(bundle)


def test_the_archive_holds_the_members_and_the_errors() -> None:
    bundle = Bundle(root="w5xde-report-ns-demo")
    bundle.add_yaml("cluster.yaml", {"kind": "CompressionCluster"})
    bundle.errors.append("logs of ns/demo-1/worker: HTTP 403 Forbidden")
    with tarfile.open(fileobj=io.BytesIO(report_bundle.write_archive(bundle))) as archive:
        names = archive.getnames()
        assert names == ["w5xde-report-ns-demo/cluster.yaml", "w5xde-report-ns-demo/errors.txt"]
        errors = archive.extractfile("w5xde-report-ns-demo/errors.txt")
        assert errors is not None
        assert b"HTTP 403" in errors.read()


def test_ownership_is_by_owner_uid() -> None:
    item = {"metadata": {"ownerReferences": [{"uid": "a"}, {"uid": "b"}]}}
    assert report_bundle.owned_by(item, {"b"})
    assert not report_bundle.owned_by(item, {"c"})
    assert not report_bundle.owned_by({"metadata": {}}, {"a"})
