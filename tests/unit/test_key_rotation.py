"""Rotating the cluster key without a restart: the worker's key ring, both proofs and
signatures accepted during the rotation, and the operator's start and end of it."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from w5xde.contract import auth
from w5xde.contract.report import WorkerReport
from w5xde.operator.key_secret import (
    PREVIOUS_KEY_FIELD,
    ROTATE_KEY_ANNOTATION,
    ROTATED_ANNOTATION,
    completion_patch,
    rotation_patch,
)
from w5xde.worker.handshake import Identity, client_handshake, server_handshake
from w5xde.worker.keyring import PREVIOUS_KEY_FILE, KeyRing
from w5xde.worker.protocol import ProtocolError
from w5xde.worker.report_endpoint import ReportEndpoint

OLD = b"o" * 64
NEW = b"n" * 64
OTHER = b"x" * 64


def _write(path: Path, data: bytes, mtime: float) -> None:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def test_the_ring_follows_the_mounted_files(tmp_path: Path) -> None:
    key = tmp_path / "key"
    _write(key, OLD + b"\n", 1000)
    ring = KeyRing.from_file(key)
    assert ring.accepted == (OLD,)
    # The operator starts a rotation: the kubelet swaps both files in.
    _write(key, NEW, 2000)
    _write(tmp_path / PREVIOUS_KEY_FILE, OLD, 2000)
    ring.refresh()
    assert ring.current == NEW
    assert ring.accepted == (NEW, OLD)
    assert ring.fingerprint == auth.key_fingerprint(NEW) != auth.key_fingerprint(OLD)
    # ... and ends it: the old key is no longer accepted.
    (tmp_path / PREVIOUS_KEY_FILE).unlink()
    _write(key, NEW, 3000)
    ring.refresh()
    assert ring.accepted == (NEW,)
    # A truncated or missing file never replaces a good key.
    _write(key, b"short", 4000)
    ring.refresh()
    assert ring.current == NEW


def _handshake(server: Identity, client: Identity) -> ProtocolError | None:
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server_handshake(right, server)
        except BaseException as error:  # handed to the test's thread
            errors.append(error)
        finally:
            right.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client_handshake(left, client, stream=0, session=1, resume_from=0)
    except ProtocolError as error:
        thread.join(10)
        return error
    finally:
        left.close()
    thread.join(10)
    assert not errors
    return None


def test_during_a_rotation_peers_on_either_key_still_connect() -> None:
    rotating = Identity("c", "w-1", NEW, keyring=KeyRing(NEW, OLD))
    assert _handshake(rotating, Identity("c", "w-0", OLD)) is None  # not rotated yet
    assert _handshake(rotating, Identity("c", "w-0", NEW)) is None
    assert _handshake(Identity("c", "w-0", OLD), rotating) is None  # answered with its key
    assert isinstance(_handshake(rotating, Identity("c", "w-0", OTHER)), ProtocolError)
    done = Identity("c", "w-1", NEW, keyring=KeyRing(NEW))
    assert isinstance(_handshake(done, Identity("c", "w-0", OLD)), ProtocolError)
    # A rotating sender proves with the old key first; refused by a peer that has
    # already dropped it (the rotation ended there first), it tries the new one next.
    assert rotating.own_key(0) == OLD
    assert rotating.own_key(1) == NEW
    assert _handshake(done, rotating) is not None
    left, right = socket.socketpair()
    thread = threading.Thread(target=lambda: server_handshake(right, done))
    thread.start()
    client_handshake(left, rotating, stream=0, session=1, resume_from=0, attempt=1)
    thread.join(10)
    left.close()
    right.close()


def test_the_report_endpoint_answers_a_request_signed_with_the_previous_key() -> None:
    ring = KeyRing(NEW, OLD)
    endpoint = ReportEndpoint(NEW, lambda: WorkerReport(name="w"), lambda _: None, keyring=ring)
    for key, status in ((OLD, 200), (NEW, 200), (OTHER, 401)):
        derived = auth.report_key(key)
        nonce = auth.new_nonce()
        header = auth.authorization(derived, "GET", "/report", time.time(), nonce)
        answer = endpoint.answer("GET", "/report", header)
        assert answer.status == status
        if status == 200:
            # Signed with the key the operator used, so the operator can check it.
            auth.verify_response(derived, nonce, answer.body, answer.headers[auth.SIGNATURE_HEADER])


def _secret(current: bytes, previous: bytes | None = None, rotated: str = "") -> dict[str, object]:
    data = {"key": base64.b64encode(current).decode()}
    if previous is not None:
        data[PREVIOUS_KEY_FIELD] = base64.b64encode(previous).decode()
    annotations = {ROTATED_ANNOTATION: rotated} if rotated else {}
    return {"metadata": {"annotations": annotations}, "data": data}


def test_a_rotation_starts_on_request_once_and_not_over_an_unfinished_one() -> None:
    asked = {ROTATE_KEY_ANNOTATION: "2026-11-30"}
    patch = rotation_patch(asked, _secret(OLD), NEW.decode())
    assert patch == {
        "metadata": {"annotations": {ROTATED_ANNOTATION: "2026-11-30"}},
        "data": {
            "key": base64.b64encode(NEW).decode(),
            PREVIOUS_KEY_FIELD: base64.b64encode(OLD).decode(),
        },
    }
    assert rotation_patch({}, _secret(OLD), NEW.decode()) is None
    assert rotation_patch(asked, _secret(NEW, rotated="2026-11-30"), "z" * 64) is None
    # Asked again while workers may still use OLD: dropping it would cut them off.
    unfinished = _secret(NEW, OLD, rotated="2026-11-29")
    assert rotation_patch(asked, unfinished, "z" * 64) is None


@pytest.mark.parametrize(
    ("fingerprints", "workers", "done"),
    [
        ([auth.key_fingerprint(NEW)] * 3, 3, True),
        ([auth.key_fingerprint(NEW)] * 2, 3, False),  # one has not reported
        ([auth.key_fingerprint(NEW)] * 2 + [auth.key_fingerprint(OLD)], 3, False),
        ([], 0, True),
    ],
)
def test_a_rotation_ends_when_every_worker_reports_the_new_key(
    fingerprints: list[str], workers: int, done: bool
) -> None:
    patch = completion_patch(_secret(NEW, OLD), fingerprints, workers)
    assert patch == ({"data": {PREVIOUS_KEY_FIELD: None}} if done else None)
    assert completion_patch(_secret(NEW), fingerprints, workers) is None
