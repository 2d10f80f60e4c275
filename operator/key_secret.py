"""The cluster key Secret: whose it is, and the key in it.

The operator creates `NAME-key` once and owns it. A Secret of that name that the
cluster does not own (made before the cluster, by someone else) would let its author
know the key every worker proves itself with, so it is never used: the cluster is
Degraded with `KeySecretNotOwned` and no worker is started with it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

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
