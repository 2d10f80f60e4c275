"""Per-worker TLS identities: the CA's signing rules, enrollment, and mutual TLS handshakes
over real sockets (the receiver takes the sender's name from its certificate)."""

from __future__ import annotations

import datetime
import hashlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from w5xde.contract import auth, certificates
from w5xde.contract.certificates import CertificateRequestError
from w5xde.worker.handshake import Accepted, Identity, client_handshake, server_handshake
from w5xde.worker.protocol import ProtocolError
from w5xde.worker.report_endpoint import ReportEndpoint
from w5xde.worker.tls import CertificateRejectedError, TlsIdentity
from w5xde.worker.tls_channel import TlsChannel

KEY = b"k" * 32
CLUSTER = "unit/tls"


@pytest.fixture(scope="module")
def authority() -> certificates.Authority:
    return certificates.new_authority(CLUSTER)


def identity_files(directory: Path, authority: certificates.Authority, name: str) -> TlsIdentity:
    certificate, key = certificates.issue(authority, name)
    (directory / f"{name}.crt").write_bytes(certificate)
    (directory / f"{name}.key").write_bytes(key)
    ca = directory / "ca.crt"
    ca.write_bytes(authority.certificate_pem)
    return TlsIdentity.from_files(name, directory / f"{name}.crt", directory / f"{name}.key", ca)


# --- what the CA signs ---------------------------------------------------------------


def test_the_ca_signs_a_request_for_the_expected_name_only(
    authority: certificates.Authority,
) -> None:
    key = certificates.new_key()
    request = certificates.certificate_request("w-1", key)
    signed = x509.load_pem_x509_certificate(
        certificates.sign_request(authority, request, expected_name="w-1")
    )
    assert signed.subject.rfc4514_string() == "CN=w-1"
    assert signed.public_key() == key.public_key()
    signed.verify_directly_issued_by(authority.certificate)
    assert not signed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(CertificateRequestError, match="only 'w-2' as its common name"):
        certificates.sign_request(authority, request, expected_name="w-2")


def _request(subject: x509.Name, key: object, names: list[x509.GeneralName]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    from cryptography.hazmat.primitives import serialization

    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def test_requests_that_ask_for_more_than_the_pod_s_name_are_refused(
    authority: certificates.Authority,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    own = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w-1")])
    extra_name = _request(own, key, [x509.DNSName("w-1"), x509.DNSName("w-2")])
    with pytest.raises(CertificateRequestError, match="alternative names must be only 'w-1'"):
        certificates.sign_request(authority, extra_name, expected_name="w-1")
    with_org = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "w-1"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
        ]
    )
    with pytest.raises(CertificateRequestError, match="common name"):
        certificates.sign_request(authority, _request(with_org, key, []), expected_name="w-1")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(CertificateRequestError, match="EC P-256"):
        certificates.sign_request(authority, _request(own, rsa_key, []), expected_name="w-1")
    with pytest.raises(CertificateRequestError, match="not a PEM certificate request"):
        certificates.sign_request(authority, b"-----BEGIN nonsense", expected_name="w-1")
    with pytest.raises(CertificateRequestError, match="larger than"):
        certificates.sign_request(authority, b"x" * 5000, expected_name="w-1")


# --- enrollment ----------------------------------------------------------------------


def test_a_worker_asks_until_signed_then_again_after_two_thirds_of_the_lifetime(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    (tmp_path / "ca.crt").write_bytes(authority.certificate_pem)
    worker = TlsIdentity("w-0", tmp_path / "ca.crt")
    assert not worker.ready
    request = worker.certificate_request()
    assert request is not None
    assert worker.certificate_request() == request  # the same key until it is signed
    now = datetime.datetime.now(datetime.UTC)
    worker.accept(certificates.sign_request(authority, request, expected_name="w-0", now=now))
    assert worker.ready
    assert worker.certificate_request(now + datetime.timedelta(hours=15)) is None
    renewal = worker.certificate_request(now + datetime.timedelta(hours=17))
    assert renewal is not None
    assert renewal != request  # a renewal is a new key
    old = worker.contexts
    worker.accept(certificates.sign_request(authority, renewal, expected_name="w-0"))
    assert worker.contexts is not old
    assert worker.certificate_request() is None


def test_a_worker_refuses_certificates_not_for_its_key_name_or_ca(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    (tmp_path / "ca.crt").write_bytes(authority.certificate_pem)
    worker = TlsIdentity("w-0", tmp_path / "ca.crt")
    with pytest.raises(CertificateRejectedError, match="no certificate request is pending"):
        worker.accept(certificates.issue(authority, "w-0")[0])
    request = worker.certificate_request()
    assert request is not None
    other_key, _ = certificates.issue(authority, "w-0")
    with pytest.raises(CertificateRejectedError, match="not for this worker's key"):
        worker.accept(other_key)
    foreign = certificates.new_authority("another cluster")
    with pytest.raises(CertificateRejectedError, match="not signed by the cluster CA"):
        worker.accept(certificates.sign_request(foreign, request, expected_name="w-0"))
    other_name = certificates.sign_request(
        authority,
        certificates.certificate_request("w-9", certificates.new_key()),
        expected_name="w-9",
    )
    with pytest.raises(CertificateRejectedError):
        worker.accept(other_name)
    assert not worker.ready


def test_the_certificate_endpoint_needs_the_operator_s_signature_and_the_body_s_digest(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    (tmp_path / "ca.crt").write_bytes(authority.certificate_pem)
    worker = TlsIdentity("w-0", tmp_path / "ca.crt")
    request = worker.certificate_request()
    assert request is not None
    endpoint = ReportEndpoint(KEY, lambda: None, lambda _: None, tls=worker)  # type: ignore[arg-type,return-value]
    body = certificates.sign_request(authority, request, expected_name="w-0")
    target = f"/certificate?sha256={hashlib.sha256(body).hexdigest()}"
    key = auth.report_key(KEY)

    def signed(path: str) -> str:
        return auth.authorization(key, "PUT", path, time.time(), auth.new_nonce())

    assert endpoint.install_certificate(target, None, body).status == 401
    forged = auth.authorization(auth.report_key(b"x" * 32), "PUT", target, time.time(), "n")
    assert endpoint.install_certificate(target, forged, body).status == 401
    wrong_digest = f"/certificate?sha256={hashlib.sha256(b'other').hexdigest()}"
    assert endpoint.install_certificate(wrong_digest, signed(wrong_digest), body).status == 400
    assert not worker.ready
    assert endpoint.install_certificate(target, signed(target), body).status == 204
    assert worker.ready


# --- mutual TLS handshakes -----------------------------------------------------------


def run_server(sock: socket.socket, me: Identity) -> Callable[[], Accepted | ProtocolError]:
    result: list[Accepted | ProtocolError] = []

    def serve() -> None:
        try:
            result.append(server_handshake(sock, me))
        except ProtocolError as error:
            result.append(error)
            sock.close()

    thread = threading.Thread(target=serve)
    thread.start()

    def outcome() -> Accepted | ProtocolError:
        thread.join(10)
        assert not thread.is_alive()
        (found,) = result
        return found

    return outcome


def test_the_receiver_takes_the_sender_s_name_from_its_certificate(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    receiver = Identity(CLUSTER, "w-1", KEY, identity_files(tmp_path, authority, "w-1"))
    sender = Identity(CLUSTER, "w-0", KEY, identity_files(tmp_path, authority, "w-0"))
    client, server = socket.socketpair()
    outcome = run_server(server, receiver)
    secured = client_handshake(client, sender, stream=0, session=7, resume_from=0, peer="w-1")
    accepted = outcome()
    assert isinstance(accepted, Accepted)
    assert isinstance(accepted.sock, TlsChannel)
    assert isinstance(secured, TlsChannel)
    assert accepted.sock.version() == "TLSv1.3"
    assert accepted.hello.sender == "w-0"
    secured.sendall(b"over tls")
    assert accepted.sock.recv(64) == b"over tls"
    secured.close()
    accepted.sock.close()


def test_a_sender_claiming_another_worker_s_name_is_refused(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    receiver = Identity(CLUSTER, "w-1", KEY, identity_files(tmp_path, authority, "w-1"))
    # Holds the key and a certificate of the cluster, but for w-2: it claims to be w-0.
    impostor = Identity(CLUSTER, "w-0", KEY, identity_files(tmp_path, authority, "w-2"))
    client, server = socket.socketpair()
    outcome = run_server(server, receiver)
    with pytest.raises(ProtocolError, match="WRONG_IDENTITY"):
        client_handshake(client, impostor, stream=0, session=1, resume_from=0)
    error = outcome()
    assert isinstance(error, ProtocolError)
    assert "certificate 'w-2'" in str(error)
    client.close()


def test_a_certificate_of_another_ca_or_none_fails_the_tls_handshake(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    receiver = Identity(CLUSTER, "w-1", KEY, identity_files(tmp_path, authority, "w-1"))
    foreign_dir = tmp_path / "foreign"
    foreign_dir.mkdir()
    stranger = Identity(
        CLUSTER,
        "w-0",
        KEY,
        identity_files(foreign_dir, certificates.new_authority("other"), "w-0"),
    )
    client, server = socket.socketpair()
    outcome = run_server(server, receiver)
    with pytest.raises((ProtocolError, OSError)):
        client_handshake(client, stranger, stream=0, session=1, resume_from=0)
    error = outcome()
    assert isinstance(error, ProtocolError)
    assert "TLS handshake failed" in str(error)
    client.close()
    # Plain bytes (a TLS-off peer, or a port scanner) never get past TLS either.
    client, server = socket.socketpair()
    outcome = run_server(server, receiver)
    client.sendall(b"W5XD" + bytes(200))
    error = outcome()
    assert isinstance(error, ProtocolError)
    assert "TLS handshake failed" in str(error)
    client.close()


def test_a_sender_checks_it_reached_the_worker_it_meant(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    receiver = Identity(CLUSTER, "w-1", KEY, identity_files(tmp_path, authority, "w-1"))
    sender = Identity(CLUSTER, "w-0", KEY, identity_files(tmp_path, authority, "w-0"))
    client, server = socket.socketpair()
    outcome = run_server(server, receiver)
    with pytest.raises(ProtocolError, match="names 'w-1', not 'w-3'"):
        client_handshake(client, sender, stream=0, session=1, resume_from=0, peer="w-3")
    client.close()
    assert isinstance(outcome(), ProtocolError)


def test_a_worker_without_a_certificate_yet_does_not_connect(
    tmp_path: Path, authority: certificates.Authority
) -> None:
    (tmp_path / "ca.crt").write_bytes(authority.certificate_pem)
    waiting = Identity(CLUSTER, "w-0", KEY, TlsIdentity("w-0", tmp_path / "ca.crt"))
    client, server = socket.socketpair()
    with pytest.raises(ProtocolError, match="no certificate yet"):
        client_handshake(client, waiting, stream=0, session=1, resume_from=0)
    client.close()
    server.close()
