"""The report channel's HMAC: what it accepts, and each thing it must refuse."""

from __future__ import annotations

import pytest

from w5xde.contract import auth

KEY = auth.report_key(b"cluster-key-0123456789")
NOW = 1_800_000_000.0


def _header(target: str = "/report?workers=4", at: float = NOW, key: bytes = KEY) -> str:
    return auth.authorization(key, "GET", target, at, "nonce-1")


def test_a_signed_request_is_accepted_and_yields_its_nonce() -> None:
    assert auth.verify_authorization(KEY, _header(), "GET", "/report?workers=4", NOW) == "nonce-1"


@pytest.mark.parametrize(
    ("header", "target", "now", "needle"),
    [
        (None, "/report?workers=4", NOW, "no X-W5XDE-Authorization"),
        ("Bearer abc", "/report?workers=4", NOW, "scheme"),
        (_header(), "/report?workers=9", NOW, "bad request signature"),  # tampered target
        (_header(key=auth.report_key(b"another-key-0123456")), "/report?workers=4", NOW, "bad"),
        (_header(at=NOW - 61), "/report?workers=4", NOW, "more than 60 s"),  # replayed later
        (_header().replace("ts=", "ts=x"), "/report?workers=4", NOW, "not a number"),
    ],
)
def test_forged_tampered_or_stale_requests_are_refused(
    header: str | None, target: str, now: float, needle: str
) -> None:
    with pytest.raises(auth.AuthError, match=needle):
        auth.verify_authorization(KEY, header, "GET", target, now)


def test_the_report_key_is_not_the_cluster_key() -> None:
    # A report signature must never double as a data-plane handshake proof.
    assert auth.report_key(b"cluster-key-0123456789") != b"cluster-key-0123456789"


def test_responses_are_bound_to_the_nonce_and_the_body() -> None:
    body = b'{"name":"d-0","batches":5}'
    signature = auth.response_signature(KEY, "n1", body)
    auth.verify_response(KEY, "n1", body, signature)
    for nonce, payload, sig in (
        ("n2", body, signature),  # a replay of another request's answer
        ("n1", body.replace(b"5", b"6"), signature),  # a rewritten report
        ("n1", body, None),
    ):
        with pytest.raises(auth.AuthError):
            auth.verify_response(KEY, nonce, payload, sig)


def test_a_nonce_is_accepted_once_for_the_whole_window_and_future_stamps_are_refused() -> None:
    memory = auth.NonceMemory(not_before=NOW - 100)
    header = auth.authorization(KEY, "GET", "/report", NOW, "nonce-9")
    signed = auth.verify_request(KEY, header, "GET", "/report", NOW)
    memory.accept(signed, NOW)
    # Replayed at any time while the stamp is still within the window: refused.
    for later in (NOW, NOW + 30, NOW + auth.MAX_SKEW_SECONDS):
        again = auth.verify_request(KEY, header, "GET", "/report", later)
        with pytest.raises(auth.ReplayedError):
            memory.accept(again, later)
    # Past the window the signature itself is refused.
    with pytest.raises(auth.AuthError, match="in the past"):
        auth.verify_request(KEY, header, "GET", "/report", NOW + auth.MAX_SKEW_SECONDS + 1)
    ahead = auth.authorization(KEY, "GET", "/report", NOW + 59, "nonce-10")
    with pytest.raises(auth.AuthError, match="in the future"):
        auth.verify_request(KEY, ahead, "GET", "/report", NOW)


def test_a_request_from_before_the_worker_started_is_refused() -> None:
    """Nonces do not survive a restart: what was signed before it is refused instead."""
    memory = auth.NonceMemory(not_before=NOW)
    header = auth.authorization(KEY, "GET", "/report", NOW - 10, "nonce-11")
    signed = auth.verify_request(KEY, header, "GET", "/report", NOW)
    with pytest.raises(auth.AuthError, match="before this worker started"):
        memory.accept(signed, NOW)
