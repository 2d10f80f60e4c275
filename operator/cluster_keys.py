"""The fold loop's view of one cluster's key and CA: read, rotated, rotation finished.

The key Secret is re-read every few minutes (every fold while a rotation or a CA
problem is under way); a rotation starts when the cluster's annotation asks for one
and ends once every worker reports the new key's fingerprint (see `key_secret`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from w5xde.contract.certificates import Authority
from w5xde.operator.certificate_authority import read_authority
from w5xde.operator.key_secret import (
    completion_patch,
    key_of,
    key_problem,
    previous_key_of,
    rotation_patch,
)
from w5xde.operator.kube import Kube
from w5xde.operator.observation import Fetched, Problem
from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.secret import new_cluster_key

logger = logging.getLogger("w5xde.operator")

#: A cluster key Secret is read again after this long (every fold during a rotation).
KEY_CACHE_SECONDS = 300.0


@dataclass
class ClusterKeys:
    """The cluster key Secret as last read or patched (None if absent or not its own),
    and the CA, with what keeps either from being used."""

    secret: dict[str, Any] | None = None
    key_problem: Problem | None = None
    read_at: float = float("-inf")
    authority: Authority | None = None
    ca_problem: Problem | None = None

    @property
    def key(self) -> bytes | None:
        return key_of(self.secret) if self.secret is not None else None

    @property
    def previous_key(self) -> bytes | None:
        """The key being rotated out, while a rotation is under way."""
        return previous_key_of(self.secret) if self.secret is not None else None

    async def read(self, kube: Kube, cluster: ClusterRef) -> None:
        """The cluster key, re-read every few minutes; never one the cluster does not own."""
        cached = time.monotonic() - self.read_at < KEY_CACHE_SECONDS
        settled = self.ca_problem is None and self.previous_key is None
        if self.key is not None and settled and cached:
            return  # a problem or a rotation is looked at again every fold
        secret = await asyncio.to_thread(kube.read_secret, cluster.namespace, cluster.key_secret)
        self.read_at = time.monotonic()
        self.key_problem = key_problem(secret, cluster)
        usable = secret is not None and self.key_problem is None and key_of(secret) is not None
        self.secret = secret if usable else None
        self.authority, self.ca_problem = await asyncio.to_thread(read_authority, kube, cluster)

    async def rotate(self, kube: Kube, cluster: ClusterRef, annotations: Mapping[str, str]) -> None:
        """Start a rotation the cluster's annotation asks for (see key_secret)."""
        if self.secret is None:
            return
        patch = rotation_patch(annotations, self.secret, new_cluster_key())
        if patch is None:
            return
        self.secret = await asyncio.to_thread(
            kube.patch_secret, cluster.namespace, cluster.key_secret, patch
        )
        logger.warning("cluster %s: cluster key rotation started", cluster.cluster_id)

    async def finish_rotation(
        self, kube: Kube, cluster: ClusterRef, fetched: Sequence[Fetched], workers: int
    ) -> None:
        """Drop the previous key once every worker reports it uses the new one."""
        if self.secret is None or self.previous_key is None:
            return
        fingerprints = [item.report.key_fingerprint for item in fetched if item.report is not None]
        patch = completion_patch(self.secret, fingerprints, workers)
        if patch is None:
            return
        self.secret = await asyncio.to_thread(
            kube.patch_secret, cluster.namespace, cluster.key_secret, patch
        )
        logger.warning("cluster %s: cluster key rotation done", cluster.cluster_id)

    def problems(self, operator_issued: bool) -> tuple[Problem, ...]:
        found = [self.key_problem] if self.key_problem is not None else []
        if self.ca_problem is not None and operator_issued:
            found.append(self.ca_problem)
        return tuple(found)
