"""The cluster key Secret: whose it is, and the key in it.

The operator creates `NAME-key` once and owns it. A Secret of that name that the
cluster does not own (made before the cluster, by someone else) would let its author
know the key every worker proves itself with, so it is never used: the cluster is
Degraded with `KeySecretNotOwned` and no worker is started with it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from w5xde.contract import auth
from w5xde.operator.observation import Problem, Reason
from w5xde.operator.resources.metadata import SECRET_KEY_FIELD, ClusterRef


def owned_by(secret: Mapping[str, Any], cluster: ClusterRef) -> bool:
    owners = (secret.get("metadata") or {}).get("ownerReferences") or []
    return any(owner.get("uid") == cluster.uid and owner.get("controller") for owner in owners)


def key_of(secret: Mapping[str, Any]) -> bytes | None:
    encoded = (secret.get("data") or {}).get(SECRET_KEY_FIELD)
    return base64.b64decode(encoded) if encoded else None


def key_problem(secret: Mapping[str, Any] | None, cluster: ClusterRef) -> Problem | None:
    if secret is None or owned_by(secret, cluster):
        return None
    return Problem(
        Reason.KEY_SECRET_NOT_OWNED,
        f"Secret {cluster.key_secret} exists but is not owned by this cluster: its key is"
        " not used and no worker is started; delete it (the operator makes a new one)",
    )


#: On a CompressionCluster: set (or change) it to have the operator rotate the key.
ROTATE_KEY_ANNOTATION = "w5xde.io/rotate-key"
#: On the key Secret: the `rotate-key` value its current key answers.
ROTATED_ANNOTATION = "w5xde.io/key-rotation"
PREVIOUS_KEY_FIELD = "previous-key"


def previous_key_of(secret: Mapping[str, Any]) -> bytes | None:
    encoded = (secret.get("data") or {}).get(PREVIOUS_KEY_FIELD)
    return base64.b64decode(encoded) if encoded else None


def rotation_patch(
    cluster_annotations: Mapping[str, str], secret: Mapping[str, Any], new_key: str
) -> dict[str, Any] | None:
    """The Secret patch that starts a requested rotation, or None.

    The old key stays as `previous-key` until every worker uses the new one; a request
    made while that is so waits (dropping the older key would cut off its workers).
    """
    wanted = cluster_annotations.get(ROTATE_KEY_ANNOTATION)
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    current = key_of(secret)
    if not wanted or wanted == annotations.get(ROTATED_ANNOTATION) or current is None:
        return None
    if previous_key_of(secret) is not None:
        return None
    return {
        "metadata": {"annotations": {ROTATED_ANNOTATION: wanted}},
        "data": {
            SECRET_KEY_FIELD: base64.b64encode(new_key.encode()).decode(),
            PREVIOUS_KEY_FIELD: base64.b64encode(current).decode(),
        },
    }


def completion_patch(
    secret: Mapping[str, Any], fingerprints: Sequence[str], workers: int
) -> dict[str, Any] | None:
    """Drop `previous-key` once all `workers` report the current key's fingerprint."""
    current = key_of(secret)
    if current is None or previous_key_of(secret) is None:
        return None
    wanted = auth.key_fingerprint(current)
    if len(fingerprints) < workers or any(item != wanted for item in fingerprints):
        return None
    return {"data": {PREVIOUS_KEY_FIELD: None}}
