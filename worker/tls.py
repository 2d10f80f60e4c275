"""This worker's TLS identity: its certificate and key, the cluster CA, and the contexts.

Two ways to get one.  In a pod the worker makes its own key, publishes a CSR in its
report and waits for the operator to sign it (`enroll`); the key never leaves the
process.  With files (`w5xde local`, benchmarks, cert-manager's CSI driver) it loads
them and reloads when they change.  Either way a renewal swaps the contexts used for
new connections; open streams keep theirs, so rotation needs no restart.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from w5xde.contract import certificates
from w5xde.contract.endpoints import ENV_TLS_SCRATCH_DIR

log = logging.getLogger("w5xde.tls")

#: A worker asks for a new certificate once this share of its lifetime has passed.
RENEW_AFTER = 2 / 3


class CertificateRejectedError(ValueError):
    """A certificate handed to this worker that is not for its key, its name or its CA."""


@dataclass(frozen=True)
class Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    not_after: datetime.datetime
    not_before: datetime.datetime


def build_contexts(certificate_pem: bytes, key_pem: bytes, ca_pem: bytes) -> Contexts:
    """TLS 1.3 only, both sides present a certificate of the cluster CA."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The peer's identity is its certificate's name, checked by the protocol code
    # (`peer_name`); host names of pods are not what identifies a worker.
    client.check_hostname = False
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ca_pem.decode())
        _load_chain(context, certificate_pem, key_pem)
    server.num_tickets = 0  # no resumption: every connection proves its key
    return Contexts(
        server,
        client,
        certificates.not_after(certificate_pem),
        certificates.not_before(certificate_pem),
    )


def _load_chain(context: ssl.SSLContext, certificate_pem: bytes, key_pem: bytes) -> None:
    """`ssl` loads keys only from files: one that lives for the call, readable by us only."""
    descriptor, path = tempfile.mkstemp(prefix="w5xde-tls-", dir=_scratch_directory())
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(certificate_pem + b"\n" + key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


def _scratch_directory() -> str | None:
    """A writable directory for that moment: the pod's in-memory volume, else the default."""
    directory = os.environ.get(ENV_TLS_SCRATCH_DIR)
    return directory if directory and os.path.isdir(directory) else None


def peer_name(sock: Any) -> str:
    """The verified peer's worker name: its one DNS name, else its common name."""
    certificate = sock.getpeercert()
    if not certificate:
        raise ssl.SSLError("peer presented no certificate")
    alternative: Any = certificate.get("subjectAltName", ())
    dns = [value for kind, value in alternative if kind == "DNS"]
    if len(dns) == 1:
        return str(dns[0])
    subject: Any = certificate.get("subject", ())
    for rdn in subject:
        for attribute, value in rdn:
            if attribute == "commonName":
                return str(value)
    raise ssl.SSLError("peer certificate names no worker")


class TlsIdentity:
    """The current contexts; thread-safe swaps, readers take whatever is current."""

    def __init__(self, name: str, ca_path: Path) -> None:
        self.name = name
        self._ca_path = ca_path
        self._lock = threading.Lock()
        self._contexts: Contexts | None = None
        self._pending_key: bytes | None = None
        self._pending_request: bytes | None = None
        self._files: tuple[Path, Path] | None = None
        self._mtimes: tuple[float, ...] = ()

    # --- from files --------------------------------------------------------------------

    @classmethod
    def from_files(cls, name: str, certificate: Path, key: Path, ca: Path) -> TlsIdentity:
        identity = cls(name, ca)
        identity._files = (certificate, key)
        identity.refresh()
        if identity._contexts is None:
            raise CertificateRejectedError(f"cannot load the certificate {certificate}")
        return identity

    def refresh(self) -> None:
        """Reload files that changed (cert-manager rewrites them before they expire)."""
        if self._files is None:
            return
        paths = (*self._files, self._ca_path)
        try:
            mtimes = tuple(path.stat().st_mtime for path in paths)
            if mtimes == self._mtimes:
                return
            certificate, key, ca = (path.read_bytes() for path in paths)
            self._install(certificate, key, ca)
            self._mtimes = mtimes
        except (OSError, ValueError, ssl.SSLError) as error:
            log.error("TLS files not loaded (keeping the previous ones): %s", error)

    # --- enrolled by the operator ------------------------------------------------------

    def certificate_request(self, now: datetime.datetime | None = None) -> bytes | None:
        """A CSR while this worker needs a certificate (none yet, or renewal due)."""
        if self._files is not None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        with self._lock:
            current = self._contexts
            if current is not None and now < _renew_at(current):
                return None
            if self._pending_request is None:
                key = certificates.new_key()
                self._pending_key = certificates.key_pem(key)
                self._pending_request = certificates.certificate_request(self.name, key)
            return self._pending_request

    def accept(self, certificate_pem: bytes) -> None:
        """Install a certificate the operator signed for the pending request."""
        with self._lock:
            key_pem = self._pending_key
        if key_pem is None:
            raise CertificateRejectedError("no certificate request is pending")
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError as error:
            raise CertificateRejectedError(f"not a PEM certificate: {error}") from None
        key = serialization.load_pem_private_key(key_pem, password=None)
        if certificate.public_key() != key.public_key():
            raise CertificateRejectedError("the certificate is not for this worker's key")
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [attribute.value for attribute in names] != [self.name]:
            raise CertificateRejectedError(f"the certificate is not for {self.name!r}")
        ca_pem = self._ca_path.read_bytes()
        if not any(_issued_by(certificate, ca) for ca in x509.load_pem_x509_certificates(ca_pem)):
            raise CertificateRejectedError("the certificate is not signed by the cluster CA")
        self._install(certificate_pem, key_pem, ca_pem)
        with self._lock:
            self._pending_key = None
            self._pending_request = None
        log.warning("certificate installed, valid until %s", certificate.not_valid_after_utc)

    # --- readers -----------------------------------------------------------------------

    def _install(self, certificate_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
        contexts = build_contexts(certificate_pem, key_pem, ca_pem)
        with self._lock:
            self._contexts = contexts

    @property
    def contexts(self) -> Contexts | None:
        return self._contexts

    @property
    def ready(self) -> bool:
        return self._contexts is not None

    @property
    def not_after(self) -> datetime.datetime | None:
        current = self._contexts
        return current.not_after if current is not None else None


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _renew_at(contexts: Contexts) -> datetime.datetime:
    return contexts.not_before + (contexts.not_after - contexts.not_before) * RENEW_AFTER
