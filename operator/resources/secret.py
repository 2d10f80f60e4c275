"""The shared-key Secret: workers prove membership with an HMAC of this key.

The key is an input, not generated here, so rendering stays pure; the reconciler
creates the Secret once and never overwrites it (rotating it would split the cluster).
"""

from __future__ import annotations

import secrets
from typing import Any

from w5xde.operator.resources.metadata import SECRET_KEY_FIELD, ClusterRef, object_meta

KEY_BYTES = 32


def new_cluster_key() -> str:
    """A fresh key as hex, so it travels through an env var unchanged."""
    return secrets.token_hex(KEY_BYTES)


def render_secret(cluster: ClusterRef, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(cluster, cluster.key_secret),
        "type": "Opaque",
        "stringData": {SECRET_KEY_FIELD: key},
    }
