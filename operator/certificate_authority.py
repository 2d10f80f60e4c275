"""Each cluster's CA: created once, kept in a Secret only the operator reads, and used to
sign the certificate requests workers publish in their reports.

The CA's key never reaches a pod: workers get the CA *certificate* from a ConfigMap
(`NAME-ca`), and their own certificates from the operator, which signs a request only
for the name of the pod it pulled it from.  A `NAME-ca` Secret the cluster does not own
is never used (its author would know the CA key): `CASecretNotOwned`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from w5xde.contract.certificates import Authority, new_authority
from w5xde.contract.endpoints import TRUST_FILE
from w5xde.operator.key_secret import owned_by
from w5xde.operator.kube import Kube
from w5xde.operator.observation import Problem, Reason
from w5xde.operator.resources.metadata import ClusterRef, object_meta

CA_CERTIFICATE_FIELD = "tls.crt"
CA_KEY_FIELD = "tls.key"
#: The file name of the CA certificate in the workers' trust-bundle volume.
TRUST_BUNDLE_FIELD = TRUST_FILE


def render_ca_secret(cluster: ClusterRef, authority: Authority) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(cluster, cluster.ca_secret),
        "type": "kubernetes.io/tls",
        "stringData": {
            CA_CERTIFICATE_FIELD: authority.certificate_pem.decode(),
            CA_KEY_FIELD: authority.key_pem.decode(),
        },
    }


def render_trust_bundle(cluster: ClusterRef, certificate_pem: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(cluster, cluster.trust_bundle),
        "data": {TRUST_BUNDLE_FIELD: certificate_pem.decode()},
    }


def authority_of(secret: Mapping[str, Any]) -> Authority:
    data = secret.get("data") or {}
    return Authority.load(
        base64.b64decode(data[CA_CERTIFICATE_FIELD]), base64.b64decode(data[CA_KEY_FIELD])
    )


def ca_problem(cluster: ClusterRef) -> Problem:
    return Problem(
        Reason.CA_SECRET_NOT_OWNED,
        f"Secret {cluster.ca_secret} exists but is not owned by this cluster: its CA is not"
        " used and no worker is started; delete it (the operator makes a new one)",
    )


def read_authority(kube: Kube, cluster: ClusterRef) -> tuple[Authority | None, Problem | None]:
    """The cluster's CA if its Secret exists and is the cluster's own."""
    secret = kube.read_secret(cluster.namespace, cluster.ca_secret)
    if secret is None:
        return None, None
    if not owned_by(secret, cluster):
        return None, ca_problem(cluster)
    try:
        return authority_of(secret), None
    except (KeyError, ValueError) as error:
        return None, Problem(
            Reason.CA_SECRET_NOT_OWNED, f"Secret {cluster.ca_secret} holds no usable CA: {error}"
        )


def ensure_authority(kube: Kube, cluster: ClusterRef) -> tuple[Authority | None, Problem | None]:
    """Create the CA once (a race with another replica keeps the first one), then read it;
    publish its certificate for the workers."""
    authority, problem = read_authority(kube, cluster)
    if authority is None and problem is None:
        kube.create_if_absent(render_ca_secret(cluster, new_authority(cluster.cluster_id)))
        authority, problem = read_authority(kube, cluster)
    if authority is not None:
        kube.apply(render_trust_bundle(cluster, authority.certificate_pem))
    return authority, problem
