"""Worker identities: a per-cluster CA, certificate requests, and the checks before signing.

The operator holds each cluster's CA key and never hands it (or any worker's key) to
a worker: a worker makes its own key, asks for a certificate with a CSR naming itself,
and the operator signs only a request whose name is the pod it pulled it from.  The
same functions give `w5xde local` and the benchmarks a throw-away CA.

A worker's identity is its name, in the certificate's common name and as its only DNS
name; peers take the sender's name from the certificate, never from the stream.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Worker certificates live this long; a worker asks again after two thirds of it.
WORKER_CERTIFICATE_LIFETIME = datetime.timedelta(hours=24)
CA_LIFETIME = datetime.timedelta(days=3650)
#: Clocks of the operator and the nodes may differ this much.
CLOCK_SKEW = datetime.timedelta(minutes=5)
MAX_CSR_BYTES = 4096


class CertificateRequestError(ValueError):
    """A CSR the operator refuses to sign; the message says which rule it broke."""


@dataclass(frozen=True)
class Authority:
    """A cluster's CA: its certificate (public, given to workers) and its key (never)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def load(cls, certificate_pem: bytes, key_pem: bytes) -> Authority:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        return cls(x509.load_pem_x509_certificate(certificate_pem), key)


def new_key() -> ec.EllipticCurvePrivateKey:
    """P-256: fast handshakes, small certificates, supported by every TLS 1.3 stack."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_authority(cluster: str, *, now: datetime.datetime | None = None) -> Authority:
    """A self-signed CA for one cluster, allowed to sign worker certificates only."""
    now = now or _now()
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"w5xde cluster CA {cluster}"[:64])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def certificate_request(name: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The PEM CSR a worker hands the operator: its name, proven by its own key."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def sign_request(
    authority: Authority,
    csr_pem: bytes,
    *,
    expected_name: str,
    lifetime: datetime.timedelta = WORKER_CERTIFICATE_LIFETIME,
    now: datetime.datetime | None = None,
) -> bytes:
    """A PEM certificate for the CSR, if it names `expected_name` and nothing else.

    The caller decides `expected_name` from what it knows (the pod it pulled the CSR
    from), so a worker can never obtain another worker's identity.
    """
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CertificateRequestError(f"request larger than {MAX_CSR_BYTES} bytes")
    try:
        request = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise CertificateRequestError(f"not a PEM certificate request: {error}") from None
    if not request.is_signature_valid:
        raise CertificateRequestError("the request's signature does not match its key")
    public_key = request.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise CertificateRequestError("the request's key must be EC P-256")
    names = [attribute.value for attribute in request.subject]
    common = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or len(common) != 1 or common[0].value != expected_name:
        raise CertificateRequestError(
            f"the request must name only {expected_name!r} as its common name, "
            f"it names {request.subject.rfc4514_string()!r}"
        )
    for extension in request.extensions:
        if extension.oid != x509.SubjectAlternativeName.oid:
            raise CertificateRequestError(f"the request asks for extension {extension.oid}")
        if list(extension.value) != [x509.DNSName(expected_name)]:
            raise CertificateRequestError(
                f"the request's alternative names must be only {expected_name!r}"
            )
    now = now or _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, expected_name)]))
        .issuer_name(authority.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(expected_name)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def issue(
    authority: Authority,
    name: str,
    *,
    lifetime: datetime.timedelta = WORKER_CERTIFICATE_LIFETIME,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `name`: for local runs, where one process is all."""
    key = new_key()
    request = certificate_request(name, key)
    return sign_request(authority, request, expected_name=name, lifetime=lifetime), key_pem(key)


def not_after(certificate_pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(certificate_pem).not_valid_after_utc


def not_before(certificate_pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(certificate_pem).not_valid_before_utc


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
