"""The worker's report endpoint: the operator pulls `GET /report?workers=N` from here.

The request must carry the operator's HMAC signature (see `w5xde.contract.auth`); the
answer is the WorkerReport as JSON, signed back with the request's nonce.  The
`workers` parameter carries the cluster's current `spec.workers`, so `kubectl scale`
reaches running workers on this same channel: workers hold no Kubernetes credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from w5xde.api.v1alpha1 import MAX_WORKERS
from w5xde.contract import auth
from w5xde.contract.endpoints import (
    CERTIFICATE_PATH,
    MAX_CERTIFICATE_BYTES,
    REPORT_PATH,
    WORKERS_PARAMETER,
)
from w5xde.contract.report import WorkerReport
from w5xde.worker.keyring import KeyRing
from w5xde.worker.refusals import RefusalLog
from w5xde.worker.tls import CertificateRejectedError, TlsIdentity

log = logging.getLogger("w5xde.worker")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class ReportEndpoint:
    """Answers report requests; thread-safe (the HTTP server calls it from many threads)."""

    def __init__(
        self,
        cluster_key: bytes,
        report: Callable[[], WorkerReport],
        resize: Callable[[int], None],
        *,
        tls: TlsIdentity | None = None,
        keyring: KeyRing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring if keyring is not None else KeyRing(cluster_key)
        self._tls = tls
        self._report = report
        self._resize = resize
        self._clock = clock
        self._lock = threading.Lock()
        self.served = 0
        self.refusals = RefusalLog(log, "report requests", level=logging.WARNING)

    def _verify(self, method: str, target: str, authorization: str | None) -> tuple[bytes, str]:
        """(the report key the request was signed with, its nonce); AuthError if none.

        During a key rotation the operator may sign with the new key or the old one."""
        now = self._clock()
        keys = [auth.report_key(key) for key in self._keyring.accepted]
        for key in keys[:-1]:
            try:
                return key, auth.verify_authorization(key, authorization, method, target, now)
            except auth.AuthError:
                continue
        return keys[-1], auth.verify_authorization(keys[-1], authorization, method, target, now)

    def answer(self, method: str, target: str, authorization: str | None) -> Answer:
        try:
            key, nonce = self._verify(method, target, authorization)
        except auth.AuthError as error:
            self.refusals.refused("unauthorized", str(error))
            return Answer(401, b'{"error":"unauthorized"}')
        query = parse_qs(urlsplit(target).query)
        workers_text = (query.get(WORKERS_PARAMETER) or [""])[0]
        if workers_text:
            if not workers_text.isdigit() or not 1 <= int(workers_text) <= MAX_WORKERS:
                return Answer(400, b'{"error":"workers must be an integer in 1..%d"}' % MAX_WORKERS)
            try:
                self._resize(int(workers_text))
            except Exception:  # a resize bug must not stop the reports
                log.exception("resize to %s workers failed", workers_text)
        body = self._report().model_dump_json(by_alias=True).encode()
        with self._lock:
            self.served += 1
        signature = auth.response_signature(key, nonce, body)
        return Answer(200, body, {auth.SIGNATURE_HEADER: signature})

    def install_certificate(self, target: str, authorization: str | None, body: bytes) -> Answer:
        """`PUT /certificate?sha256=…`: the operator's signature covers the body's digest.

        The worker still checks the certificate itself (its key, its name, the cluster CA
        from its mounted Secret), so even a key holder cannot plant another identity.
        """
        try:
            self._verify("PUT", target, authorization)
        except auth.AuthError as error:
            self.refusals.refused("unauthorized", str(error))
            return Answer(401, b'{"error":"unauthorized"}')
        digest = (parse_qs(urlsplit(target).query).get("sha256") or [""])[0]
        if not hmac.compare_digest(digest, hashlib.sha256(body).hexdigest()):
            return Answer(400, b'{"error":"body does not match its sha256"}')
        if self._tls is None:
            return Answer(409, b'{"error":"TLS is off on this worker"}')
        try:
            self._tls.accept(body)
        except CertificateRejectedError as error:
            log.error("certificate refused: %s", error)
            return Answer(422, json.dumps({"error": str(error)}).encode())
        return Answer(204, b"")


def is_report_path(target: str) -> bool:
    return urlsplit(target).path == REPORT_PATH


def is_certificate_path(target: str) -> bool:
    return urlsplit(target).path == CERTIFICATE_PATH


__all__ = ["MAX_CERTIFICATE_BYTES", "Answer", "ReportEndpoint"]
