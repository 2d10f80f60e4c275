"""HMAC authentication of the report channel, both ways.

The operator signs each request with a key derived from the cluster key (it created
that Secret), so nobody else can read reports or change a worker's idea of the
cluster size; the worker signs its answer bound to the request's nonce, so a report
cannot be forged or replayed by anything between them.  A derived key, so a report
signature is never also valid as a data-plane handshake proof.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SCHEME = "W5XDE-HMAC-SHA256"
#: Not `Authorization`: the API server strips that one when it proxies (`kubectl w5xde
#: status --workers` reaches workers through the pod proxy).
AUTHORIZATION_HEADER = "X-W5XDE-Authorization"
SIGNATURE_HEADER = "X-W5XDE-Signature"
#: Requests older or newer than this are refused (clock skew plus transit).
MAX_SKEW_SECONDS = 60.0
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


def verify_authorization(
    key: bytes, header: str | None, method: str, target: str, now: float
) -> str:
    """The request's nonce if `header` signs this request within the skew; else AuthError."""
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
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise AuthError(f"request time is more than {MAX_SKEW_SECONDS:.0f} s off")
    expected = _request_digest(key, method, target, stamp, nonce)
    if not hmac.compare_digest(expected, digest):
        raise AuthError("bad request signature")
    return nonce


def response_signature(key: bytes, nonce: str, body: bytes) -> str:
    return hmac.new(key, nonce.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def verify_response(key: bytes, nonce: str, body: bytes, signature: str | None) -> None:
    if not signature or not hmac.compare_digest(response_signature(key, nonce, body), signature):
        raise AuthError("bad or missing response signature")
