"""X.509 for KeyVault: EC P-256 keys, certificate requests, SPKI pins and a small CA.

Split out of :mod:`common.tls` so that a process that only serves or dials TLS (``keyvault
agent run``) does not import ``cryptography.x509`` and the asymmetric-key modules (~2 MiB of
idle RSS, docs/performance.md): import this module where certificates are made or parsed.

* A **pin** is ``"sha256:" + hex(SHA-256(SubjectPublicKeyInfo DER))`` of a certificate. An
  enrolment token carries the control plane's CA pin, so a client can check it talks to the
  right CA before trusting anything it is sent (:func:`verify_pin`).
* :class:`CertificateAuthority` is a small CA: a self-signed root or an intermediate of another
  CA; it issues server certificates, signs client certificate requests under a name the CA
  chooses, and builds CRLs.

Keys are EC P-256 and signatures ECDSA-SHA256. Every time comes from an injectable ``clock`` so
tests can make expired or not-yet-valid certificates. Messages never contain key material.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import IntegrityError, ValidationError
from common.tls import Clock, PinMismatchError, TLSError, utcnow

PIN_PREFIX = "sha256:"
SERIAL_BITS = 159
CLOCK_SKEW = timedelta(minutes=1)
_PIN_RE = re.compile(r"sha256:[0-9a-fA-F]{64}", re.ASCII)


# --------------------------------------------------------------------------- helpers


def _aware(moment: datetime) -> datetime:
    """A datetime as aware UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _now(clock: Clock) -> datetime:
    return _aware(clock())


def _random_serial() -> int:
    """A random positive serial of at most 159 bits (fits RFC 5280's 20 octets)."""
    serial = 0
    while serial == 0:
        serial = secrets.randbits(SERIAL_BITS)
    return serial


def _check_serial(serial: int) -> int:
    if not 0 < serial < (1 << SERIAL_BITS):
        raise ValidationError(f"a certificate serial must be between 1 and 2**{SERIAL_BITS} - 1")
    return serial


def _check_duration(value: timedelta, name: str) -> timedelta:
    if value <= timedelta(0):
        raise ValidationError(f"{name} must be a positive duration (got {value})")
    return value


def _name(common_name: str) -> x509.Name:
    """An X.509 name holding only a common name (1-64 characters)."""
    if not common_name or not common_name.strip():
        raise ValidationError("a certificate common name must not be empty")
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    except ValueError as exc:
        raise ValidationError(
            f"a certificate common name must be at most 64 characters (got {len(common_name)})"
        ) from exc


def _spki_der(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _p256(public_key: Any, what: str) -> ec.EllipticCurvePublicKey:
    """The key itself if it is an EC P-256 public key, else a ValidationError."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ValidationError(f"{what} must be an EC P-256 (secp256r1) key")
    return public_key


def _load_cert(cert: x509.Certificate | str | bytes) -> x509.Certificate:
    """Accept a certificate object, PEM text or bytes, or DER bytes."""
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode("ascii", "replace") if isinstance(cert, str) else bytes(cert)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValidationError("the data is not a PEM or DER X.509 certificate") from exc


# --------------------------------------------------------------------------- pins


def spki_pin(cert: x509.Certificate | str | bytes) -> str:
    """``"sha256:" + hex`` of the SHA-256 of the certificate's SubjectPublicKeyInfo (DER)."""
    public_key = _load_cert(cert).public_key()
    return PIN_PREFIX + hashlib.sha256(_spki_der(public_key)).hexdigest()


def verify_pin(cert: x509.Certificate | str | bytes, pin: str) -> None:
    """Check a certificate's key against a pin in constant time; raise PinMismatchError."""
    if not isinstance(pin, str) or not _PIN_RE.fullmatch(pin):
        raise ValidationError("a CA pin must look like 'sha256:' followed by 64 hex digits")
    actual = spki_pin(cert)
    expected = pin.lower()
    if not hmac.compare_digest(actual.encode("ascii"), expected.encode("ascii")):
        raise PinMismatchError(details={"expected_pin": expected, "actual_pin": actual})


# --------------------------------------------------------------------------- keys


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """The key as PKCS#8 PEM, encrypted with the best available scheme if a password is given."""
    encryption: serialization.KeySerializationEncryption
    if password is None:
        encryption = serialization.NoEncryption()
    elif not password:
        raise ValidationError("a private key password must not be empty")
    else:
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(pem: bytes, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Load a PEM EC P-256 private key; a wrong password or bad data raises IntegrityError."""
    try:
        key = serialization.load_pem_private_key(pem, password=password or None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IntegrityError(
            "the private key cannot be loaded: wrong password, or not a PEM private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValidationError("the private key must be an EC P-256 (secp256r1) key")
    _p256(key.public_key(), "the private key")
    return key


def make_csr(
    common_name: str, key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[bytes, bytes]:
    """A certificate signing request for ``common_name``: ``(csr_pem, key_pem)``.

    The key is generated when not given; ``key_pem`` is unencrypted PKCS#8.
    """
    key = key if key is not None else generate_private_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(common_name))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), private_key_pem(key)


# --------------------------------------------------------------------------- certificate facts


def cert_not_after(cert_pem: bytes) -> datetime:
    """When the certificate expires, as an aware UTC datetime."""
    return _load_cert(cert_pem).not_valid_after_utc


def cert_serial(cert_pem: bytes) -> int:
    """The certificate's serial number."""
    return _load_cert(cert_pem).serial_number


def cert_common_name(cert_pem: bytes) -> str:
    """The certificate subject's common name."""
    attrs = _load_cert(cert_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise ValidationError("the certificate's subject has no common name")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


# --------------------------------------------------------------------------- CA


def _leaf_builder(
    ca: CertificateAuthority,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.CertificateBuilder:
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _san_entry(name: str) -> x509.GeneralName:
    """A SAN entry: an IP address if ``name`` parses as one, else a DNS name (A-label)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or not name.isascii() or any(c.isspace() for c in name):
        raise ValidationError(
            f"{name!r} is not a valid host name; pass internationalised names as A-labels"
        )
    return x509.DNSName(name)


@dataclass(frozen=True, repr=False, eq=False)
class CertificateAuthority:
    """A small CA: an EC P-256 CA certificate (self-signed root or intermediate) and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls,
        common_name: str,
        *,
        valid_for: timedelta = timedelta(days=3650),
        clock: Clock = utcnow,
        parent: CertificateAuthority | None = None,
    ) -> CertificateAuthority:
        """A new CA named ``common_name``: a self-signed root, or an intermediate of ``parent``.

        A root may sign intermediates (path length 1); an intermediate signs only leaves (path
        length 0), never outlives its parent, and names the parent's key as its authority.
        """
        _check_duration(valid_for, "valid_for")
        now = _now(clock)
        key = generate_private_key()
        name = _name(common_name)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        if parent is None:
            issuer, signer, issuer_ski, path_length = name, key, ski, 1
            not_before, not_after = now - CLOCK_SKEW, now + valid_for
        else:
            constraints = parent.cert.extensions.get_extension_for_class(x509.BasicConstraints)
            if not constraints.value.path_length:
                raise ValidationError("the parent CA may not sign intermediate CAs (path length 0)")
            issuer, signer, path_length = parent.cert.subject, parent.key, 0
            issuer_ski = parent.cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
            not_before, not_after = parent._validity(now, None, valid_for)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
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
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                critical=False,
            )
            .sign(signer, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(
        cls, cert_pem: bytes, key_pem: bytes, password: bytes | None = None
    ) -> CertificateAuthority:
        """A CA from its PEM certificate and (optionally encrypted) PEM key."""
        cert = _load_cert(cert_pem)
        key = load_private_key(key_pem, password)
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound as exc:
            raise ValidationError(
                "the CA certificate lacks BasicConstraints or SubjectKeyIdentifier"
            ) from exc
        if not constraints.ca:
            raise ValidationError("the certificate is not a CA certificate (BasicConstraints)")
        if not hmac.compare_digest(_spki_der(cert.public_key()), _spki_der(key.public_key())):
            raise IntegrityError("the CA private key does not belong to the CA certificate")
        return cls(cert, key)

    def cert_pem(self) -> bytes:
        """The CA certificate as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        """The CA key as PKCS#8 PEM, encrypted when a password is given."""
        return private_key_pem(self.key, password)

    def pin(self) -> str:
        """The SPKI pin of the CA certificate (goes into enrolment tokens)."""
        return spki_pin(self.cert)

    def __repr__(self) -> str:
        return (
            f"CertificateAuthority(subject={self.cert.subject.rfc4514_string()!r}, "
            f"pin={self.pin()!r}, not_after={self.cert.not_valid_after_utc.isoformat()!r})"
        )

    def _validity(
        self, now: datetime, not_before: datetime | None, valid_for: timedelta
    ) -> tuple[datetime, datetime]:
        """(not_before, not_after): the period runs ``valid_for`` from ``not_before`` (or now,
        backdated one minute for clock skew) and never past the CA's own expiry."""
        _check_duration(valid_for, "valid_for")
        ca_not_after = self.cert.not_valid_after_utc
        if now >= ca_not_after:
            raise TLSError(
                f"the CA certificate expired on {ca_not_after.isoformat()}; create a new CA"
            )
        if not_before is None:
            start, first_valid = now, now - CLOCK_SKEW
        else:
            start = first_valid = _aware(not_before)
        return first_valid, min(start + valid_for, ca_not_after)

    def issue_server_cert(
        self,
        hostnames: Sequence[str],
        *,
        ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
        valid_for: timedelta = timedelta(days=365),
        clock: Clock = utcnow,
    ) -> tuple[bytes, bytes]:
        """A server certificate and new key ``(cert_pem, key_pem)`` for these names and IPs."""
        names = [_san_entry(h) for h in hostnames]
        ips: list[x509.GeneralName] = []
        for ip in ip_addresses:
            try:
                ips.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError as exc:
                raise ValidationError(f"{ip!r} is not an IP address") from exc
        if not names and not ips:
            raise ValidationError("a server certificate needs at least one host name or IP")
        common_name = hostnames[0] if hostnames else ip_addresses[0]
        key = generate_private_key()
        start, end = self._validity(_now(clock), None, valid_for)
        cert = (
            _leaf_builder(self, _name(common_name), key.public_key(), start, end, _random_serial())
            .add_extension(x509.SubjectAlternativeName(names + ips), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key)

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        common_name: str | None = None,
        valid_for: timedelta = timedelta(hours=24),
        client: bool = True,
        serial: int | None = None,
        not_before: datetime | None = None,
        clock: Clock = utcnow,
    ) -> bytes:
        """Sign a CSR into a client (or, ``client=False``, server) certificate PEM.

        Only the CSR's key is used: its extensions are ignored, and ``common_name`` (when
        given) replaces the name it asks for. A server certificate gets its name as its SAN.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValidationError("the data is not a PEM certificate request") from exc
        if not csr.is_signature_valid:
            raise ValidationError("the certificate request's signature is invalid")
        public_key = _p256(csr.public_key(), "the certificate request's key")
        if common_name is None:
            attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if not attrs:
                raise ValidationError("the certificate request has no common name; pass one")
            value = attrs[0].value
            common_name = value if isinstance(value, str) else value.decode("utf-8", "replace")
        subject = _name(common_name)
        serial = _check_serial(serial) if serial is not None else _random_serial()
        start, end = self._validity(_now(clock), not_before, valid_for)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = _leaf_builder(self, subject, public_key, start, end, serial).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san_entry(common_name)]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def issue_client_cert(
        self,
        common_name: str,
        *,
        valid_for: timedelta = timedelta(hours=24),
        not_before: datetime | None = None,
        clock: Clock = utcnow,
    ) -> tuple[bytes, bytes]:
        """A client certificate and new key ``(cert_pem, key_pem)`` for ``common_name``."""
        csr_pem, key_pem = make_csr(common_name)
        cert_pem = self.sign_csr(
            csr_pem,
            common_name=common_name,
            valid_for=valid_for,
            not_before=not_before,
            clock=clock,
        )
        return cert_pem, key_pem

    def build_crl(
        self,
        revoked: Sequence[tuple[int, datetime]],
        *,
        next_update_in: timedelta = timedelta(hours=1),
        clock: Clock = utcnow,
    ) -> bytes:
        """A PEM CRL listing ``(serial, revoked_at)`` pairs, valid for ``next_update_in``.

        The CRL number is the issue time in microseconds, so later CRLs have larger numbers.
        """
        _check_duration(next_update_in, "next_update_in")
        now = _now(clock)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + next_update_in)
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1_000_000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        for serial, revoked_at in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(_check_serial(serial))
                .revocation_date(_aware(revoked_at))
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
