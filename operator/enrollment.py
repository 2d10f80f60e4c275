"""Certificate enrollment: the operator signs the requests its workers put in reports.

A request is signed only for the name of the pod it was pulled from (by the pod's IP
from the pod index), so no worker can obtain another's identity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from w5xde.contract.certificates import CertificateRequestError, sign_request
from w5xde.operator import metrics
from w5xde.operator.certificate_authority import read_authority
from w5xde.operator.cluster_keys import ClusterKeys
from w5xde.operator.kube import Kube
from w5xde.operator.observation import Fetched, PodState
from w5xde.operator.report_client import ReportClient
from w5xde.operator.resources.metadata import ClusterRef

logger = logging.getLogger("w5xde.operator")


async def enroll(
    kube: Kube,
    client: ReportClient,
    cluster: ClusterRef,
    keys: ClusterKeys,
    *,
    states: Sequence[PodState],
    fetched: Sequence[Fetched],
) -> int:
    """Sign the certificate requests in the reports; how many workers got one."""
    requests = [
        (item.name, item.report.certificate.request)
        for item in fetched
        if item.report is not None
        and item.report.certificate is not None
        and item.report.certificate.request
    ]
    if not requests or keys.key is None:
        return 0
    if keys.authority is None:
        keys.authority, problem = await asyncio.to_thread(read_authority, kube, cluster)
        if keys.authority is None:
            logger.warning("cluster %s has no usable CA yet: %s", cluster.cluster_id, problem)
            return 0
    by_name = {pod.name: pod for pod in states}
    signed = 0
    for name, request in requests:
        pod = by_name.get(name)
        if pod is None or not pod.ip:
            continue
        try:
            certificate = sign_request(keys.authority, request.encode(), expected_name=pod.name)
        except CertificateRequestError as error:
            metrics.CERTIFICATES.labels(result="refused").inc()
            logger.error("certificate request of %s refused: %s", pod.name, error)
            continue
        outcome, detail = await client.put_certificate(pod, keys.key, certificate)
        metrics.CERTIFICATES.labels(result=outcome).inc()
        if outcome == "issued":
            signed += 1
        else:
            logger.warning("certificate for %s not installed: %s %s", pod.name, outcome, detail)
    return signed
