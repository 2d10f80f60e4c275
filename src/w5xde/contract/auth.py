"""HMAC authentication of the report channel, both ways.

The operator signs each request with a key derived from the cluster key (it created
that Secret), so nobody else can read reports or change a worker's idea of the
cluster size; the worker signs its answer bound to the request's nonce, so a report
cannot be forged or replayed by anything between them.  A derived key, so a report
signature is never also valid as a data-plane handshake proof.

A signed request cannot be replayed: its time must lie within `MAX_SKEW_SECONDS` in
the past and `MAX_FUTURE_SKEW_SECONDS` in the future, and the worker remembers every
nonce it accepted until that window has passed over it (`NonceMemory`), so a request
captured on the wire is refused the second time, and once it is out of the window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

SCHEME = "W5XDE-HMAC-SHA256"
#: Not `Authorization`: the API server strips that one when it proxies (`kubectl w5xde
#: status --workers` reaches workers through the pod proxy).
AUTHORIZATION_HEADER = "X-W5XDE-Authorization"
SIGNATURE_HEADER = "X-W5XDE-Signature"
#: Requests older than this are refused (clock skew plus transit).
MAX_SKEW_SECONDS = 60.0
#: Requests stamped further ahead than this are refused (clocks in a cluster are synced;
#: a far-future stamp would only stretch how long a captured request stays valid).
MAX_FUTURE_SKEW_SECONDS = 5.0
#: Nonces a worker remembers at most; beyond it, new requests are refused (fail closed:
#: only key holders can make requests that get this far).
MAX_REMEMBERED_NONCES = 100_000
_KEY_LABEL = b"w5xde report channel v1"


class AuthError(ValueError):
    """A request or response that does not carry a valid signature; says why."""


def key_fingerprint(cluster_key: bytes) -> str:
    """Names a cluster key in reports without revealing it (ends a key rotation)."""
    return hashlib.sha256(b"w5xde key fingerprint\0" + cluster_key).hexdigest()[:16]


def report_key(cluster_key: bytes) -> bytes:
    return hmac.new(cluster_key, _KEY_LABEL, hashlib.sha256).digest()


def _request_digest(key: bytes, method: str, target: str, timestamp: str, nonce: str) -> str:
    message = "\n".join((method.upper(), target, timestamp, nonce)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(12)


def authorization(key: bytes, method: str, target: str, timestamp: float, nonce: str) -> str:
    """The `X-W5XDE-Authorization` header value for a request to `target` (path and query)."""
    stamp = f"{timestamp:.3f}"
    digest = _request_digest(key, method, target, stamp, nonce)
    return f"{SCHEME} ts={stamp},nonce={nonce},sig={digest}"


@dataclass(frozen=True, slots=True)
class SignedRequest:
    nonce: str
    timestamp: float


def verify_authorization(
    key: bytes, header: str | None, method: str, target: str, now: float
) -> str:
    """The request's nonce if `header` signs this request within the skew; else AuthError."""
    return verify_request(key, header, method, target, now).nonce


def verify_request(
    key: bytes, header: str | None, method: str, target: str, now: float
) -> SignedRequest:
    """The request's nonce and time if `header` signs it within the skew; else AuthError.

    It does not remember the nonce: see `NonceMemory` for that."""
    if not header:
        raise AuthError(f"no {AUTHORIZATION_HEADER} header")
    scheme, _, params = header.partition(" ")
    if scheme != SCHEME:
        raise AuthError(f"authorization scheme must be {SCHEME}")
    fields = dict(part.partition("=")[::2] for part in params.split(","))
    stamp, nonce, digest = fields.get("ts", ""), fields.get("nonce", ""), fields.get("sig", "")
    try:
        timestamp = float(stamp)
    except ValueError:
        raise AuthError("authorization ts is not a number") from None
    if not nonce or len(nonce) > 64:
        raise AuthError("authorization nonce missing or too long")
    if not now - MAX_SKEW_SECONDS <= timestamp <= now + MAX_FUTURE_SKEW_SECONDS:
        raise AuthError(
            f"request time is more than {MAX_SKEW_SECONDS:.0f} s in the past or "
            f"{MAX_FUTURE_SKEW_SECONDS:.0f} s in the future"
        )
    expected = _request_digest(key, method, target, stamp, nonce)
    if not hmac.compare_digest(expected, digest):
        raise AuthError("bad request signature")
    return SignedRequest(nonce, timestamp)


class ReplayedError(AuthError):
    """A request whose nonce was already accepted."""


class NonceMemory:
    """The nonces of accepted requests, each kept until its time is out of the window
    (`MAX_SKEW_SECONDS` after its stamp), so no request is accepted twice.

    Requests stamped before `not_before` (the worker's start, less the future skew)
    are refused too: what was accepted before a restart is not remembered.
    Thread-safe."""

    def __init__(self, not_before: float, limit: int = MAX_REMEMBERED_NONCES) -> None:
        self._lock = threading.Lock()
        self._expires: dict[str, float] = {}
        self._not_before = not_before - MAX_FUTURE_SKEW_SECONDS
        self._limit = limit

    def __len__(self) -> int:
        with self._lock:
            return len(self._expires)

    def accept(self, request: SignedRequest, now: float) -> None:
        """Remember the request's nonce; ReplayedError if it was seen, AuthError if it
        predates this process or the memory is full."""
        if request.timestamp < self._not_before:
            raise AuthError("request made before this worker started")
        with self._lock:
            expires = self._expires.get(request.nonce)
            if expires is not None and expires >= now:
                raise ReplayedError("replayed request: nonce already used")
            if len(self._expires) >= self._limit:
                self._expires = {n: t for n, t in self._expires.items() if t >= now}
                if len(self._expires) >= self._limit:
                    raise AuthError("too many requests within the skew window")
            self._expires[request.nonce] = request.timestamp + MAX_SKEW_SECONDS
            if len(self._expires) % 256 == 0:
                self._expires = {n: t for n, t in self._expires.items() if t >= now}


def response_signature(key: bytes, nonce: str, body: bytes) -> str:
    return hmac.new(key, nonce.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def verify_response(key: bytes, nonce: str, body: bytes, signature: str | None) -> None:
    if not signature or not hmac.compare_digest(response_signature(key, nonce, body), signature):
        raise AuthError("bad or missing response signature")
