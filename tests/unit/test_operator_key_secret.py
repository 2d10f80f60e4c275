"""Whose the cluster key Secret is decides whether its key is ever used."""

from __future__ import annotations

import base64

from w5xde.operator.key_secret import key_of, key_problem, owned_by
from w5xde.operator.resources.metadata import ClusterRef, owner_reference
from w5xde.operator.resources.secret import render_secret

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def _stored(owners: list[dict[str, object]]) -> dict[str, object]:
    return {
        "metadata": {"name": "demo-key", "ownerReferences": owners},
        "data": {"key": base64.b64encode(b"ab" * 32).decode()},
    }


def test_the_rendered_secret_is_owned_and_its_key_is_used() -> None:
    rendered = render_secret(CLUSTER, "ab" * 32)
    assert owned_by(rendered, CLUSTER)
    stored = _stored([owner_reference(CLUSTER)])
    assert key_problem(stored, CLUSTER) is None
    assert key_of(stored) == b"ab" * 32
    assert key_problem(None, CLUSTER) is None  # not there yet: the operator creates it


def test_a_secret_someone_else_made_is_refused_with_the_reason() -> None:
    for owners in (
        [],
        [{**owner_reference(CLUSTER), "uid": "another-cluster"}],
        [{**owner_reference(CLUSTER), "controller": False}],
    ):
        problem = key_problem(_stored(owners), CLUSTER)
        assert problem is not None, owners
        assert problem.reason == "KeySecretNotOwned"
        assert "demo-key" in problem.message
