"""The worker's side of the control channel: the operator pulls `GET /report`, resizes
with `PUT /resize?workers=N&generation=G` and hands over certificates with
`PUT /certificate`.

Every request must carry the operator's HMAC signature (see `w5xde.contract.auth`),
stamped within the skew window, with a nonce this worker has not accepted before (it
remembers them for the whole window), so a request captured on the wire cannot be
replayed.  The report is signed back with the request's nonce.  A resize carries the
cluster's `metadata.generation`: the same one again is a no-op (idempotent), an older
one is refused, so an old resize replayed after a newer one can never take effect.
`kubectl scale` reaches running workers this way: workers hold no Kubernetes
credentials.  Reading the report changes nothing.
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
    GENERATION_PARAMETER,
    MAX_CERTIFICATE_BYTES,
    REPORT_PATH,
    RESIZE_PATH,
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
        self._nonces = auth.NonceMemory(clock())
        #: The newest resize applied: (generation, workers); (0, 0) before the first.
        self._resized = (0, 0)
        self.served = 0
        self.refusals = RefusalLog(log, "report requests", level=logging.WARNING)

    def _verify(self, method: str, target: str, authorization: str | None) -> tuple[bytes, str]:
        """(the report key the request was signed with, its nonce); AuthError if none, or
        if the request is a replay.

        During a key rotation the operator may sign with the new key or the old one."""
        now = self._clock()
        keys = [auth.report_key(key) for key in self._keyring.accepted]
        for key in keys[:-1]:
            try:
                signed = auth.verify_request(key, authorization, method, target, now)
            except auth.AuthError:
                continue
            self._nonces.accept(signed, now)
            return key, signed.nonce
        signed = auth.verify_request(keys[-1], authorization, method, target, now)
        self._nonces.accept(signed, now)
        return keys[-1], signed.nonce

    def _refuse(self, error: auth.AuthError) -> Answer:
        reason = "replayed" if isinstance(error, auth.ReplayedError) else "unauthorized"
        self.refusals.refused(reason, str(error))
        return Answer(401, b'{"error":"unauthorized"}')

    def answer(self, method: str, target: str, authorization: str | None) -> Answer:
        """`GET /report`: the signed report; a pure read (a `workers` parameter, which
        older operators send, is ignored: resizing is `PUT /resize`)."""
        try:
            key, nonce = self._verify(method, target, authorization)
        except auth.AuthError as error:
            return self._refuse(error)
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
            return self._refuse(error)
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

    def resize(self, target: str, authorization: str | None) -> Answer:
        """`PUT /resize?workers=N&generation=G`: 204 once applied (or already applied);
        409 for a generation older than the newest applied, or the same generation with
        another size."""
        try:
            self._verify("PUT", target, authorization)
        except auth.AuthError as error:
            return self._refuse(error)
        query = parse_qs(urlsplit(target).query)
        workers_text = (query.get(WORKERS_PARAMETER) or [""])[0]
        generation_text = (query.get(GENERATION_PARAMETER) or [""])[0]
        if not workers_text.isdigit() or not 1 <= int(workers_text) <= MAX_WORKERS:
            return Answer(400, b'{"error":"workers must be an integer in 1..%d"}' % MAX_WORKERS)
        if not generation_text.isdigit() or not 0 < int(generation_text) < 1 << 63:
            return Answer(400, b'{"error":"generation must be a positive integer"}')
        workers, generation = int(workers_text), int(generation_text)
        with self._lock:
            applied_generation, applied_workers = self._resized
            if generation < applied_generation or (
                generation == applied_generation and workers != applied_workers
            ):
                self.refusals.refused(
                    "stale resize",
                    f"generation {generation} ({workers} workers) after generation "
                    f"{applied_generation} ({applied_workers} workers)",
                )
                return Answer(409, b'{"error":"an older generation than the one applied"}')
            self._resized = (generation, workers)
            try:
                self._resize(workers)
            except Exception:  # a resize bug must not stop the channel (logged)
                log.exception("resize to %d workers failed", workers)
                return Answer(500, b'{"error":"resize failed"}')
        return Answer(204, b"")

    @property
    def resized(self) -> tuple[int, int]:
        """(generation, workers) of the newest resize applied."""
        with self._lock:
            return self._resized


def is_resize_path(target: str) -> bool:
    return urlsplit(target).path == RESIZE_PATH


def is_report_path(target: str) -> bool:
    return urlsplit(target).path == REPORT_PATH


def is_certificate_path(target: str) -> bool:
    return urlsplit(target).path == CERTIFICATE_PATH


__all__ = ["MAX_CERTIFICATE_BYTES", "Answer", "ReportEndpoint"]
