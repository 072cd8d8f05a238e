"""Keys and X.509: build, sign, load and inspect certificates and keys (cryptography only)."""

from __future__ import annotations

import datetime
import hashlib
import math

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .defaults import (
    BACKDATE,
    DEFAULT_CA_DAYS,
    DEFAULT_KEY_TYPE,
    DEFAULT_LEAF_DAYS,
    DEFAULT_RENEW_BEFORE_DAYS,
    KEY_TYPES,
)
from .errors import PKIError


def new_key(key_type=DEFAULT_KEY_TYPE):
    kind, _, size = key_type.partition("-")
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(size))
    curve = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}[size]
    return ec.generate_private_key(curve())


def key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name, organizations=()):
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(subject, issuer, public_key, days, now, not_after=None):
    """What every certificate shares: names, serial, validity window, SKI."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    not_after = not_after or now + datetime.timedelta(days=days)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def build_ca(key, common_name, days=DEFAULT_CA_DAYS, organizations=(), now=None):
    """A self-signed CA certificate for ``key``."""
    name = _name(common_name, organizations)
    builder = (
        _builder(name, name, key.public_key(), days, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
    )
    return builder.sign(key, hashes.SHA256())


USAGE_OIDS = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


_USAGE_NAMES = {oid: name for name, oid in USAGE_OIDS.items()}


def _authority_key_id(ca_cert):
    """The AKI of what ``ca_cert`` signs: its SKI, or - for a CA brought without
    one - the identifier computed from its public key the same way (RFC 5280)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def capped_end(ca_cert, days, now=None):
    """When a leaf asked for ``days`` from ``now`` ends: never after its CA does.

    Returns ``(not_after, requested or None)``; ``requested`` is the end that was
    asked for when the CA's end cut it short.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    requested = now + datetime.timedelta(days=days)
    ca_end = ca_cert.not_valid_after_utc
    return (ca_end, requested) if requested > ca_end else (requested, None)


def issue_leaf(spec, key, ca_cert, ca_key, days=DEFAULT_LEAF_DAYS, now=None):
    """A certificate for ``key`` (a private key, or a public key) signed by the CA, saying
    what ``spec`` asks.

    It ends after ``days``, or with its CA if that comes first (a leaf that
    outlives its CA is refused by every client from the CA's end on).
    """
    # ``key`` may be the public key alone: a CSR's, signed for a host that keeps its private key.
    public = key if isinstance(key, PublicKeyTypes) else key.public_key()
    is_rsa = isinstance(public, rsa.RSAPublicKey)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    not_after, _ = capped_end(ca_cert, days, now)
    builder = (
        _builder(
            _name(spec.common_name, spec.organizations),
            ca_cert.subject,
            public,
            days,
            now,
            not_after,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(spec.extended_key_usages), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    sans = [x509.DNSName(n) for n in spec.dns_names]
    sans += [x509.IPAddress(ip) for ip in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def load_cert(data, what="certificate"):
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as err:
        raise PKIError(f"{what}: not a PEM certificate ({err})") from None


def load_der_cert(data, what="certificate"):
    """A certificate in DER (what ``ssl.SSLSocket.getpeercert(True)`` gives)."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as err:
        raise PKIError(f"{what}: not a DER certificate ({err})") from None


def load_certs(data, what="certificate"):
    """Every certificate in a PEM bundle (at least one)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise PKIError(f"{what}: not a PEM certificate ({err})") from None
    return certs


def load_key(data, what="key", validate=True):
    """Parse a private key.  ``validate=False`` skips OpenSSL's RSA consistency
    check (tens of ms per key): enough to compare public keys; before signing
    with such a key, parse it again with the check (or prove it, ``key_works``)."""
    try:
        return serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=not validate
        )
    except (ValueError, TypeError) as err:
        # The library's message never quotes the key; keep it out anyway.
        raise PKIError(
            f"{what}: not an unencrypted PEM private key ({type(err).__name__})"
        ) from None


def fingerprint(cert):
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def public_key_fingerprint(public_key):
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest().hex(":").upper()


def key_matches(cert, key):
    return public_key_fingerprint(cert.public_key()) == public_key_fingerprint(key.public_key())


def key_works(cert, key):
    """Does ``key`` sign what ``cert``'s public key verifies?  (Proof of possession.)"""
    data = b"k8s-pki key check"
    public = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(key.sign(data), data)
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def signed_by(cert, ca_cert):
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def cert_sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    return (
        tuple(ext.get_values_for_type(x509.DNSName)),
        tuple(ext.get_values_for_type(x509.IPAddress)),
    )


def cert_usages(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(_USAGE_NAMES.get(oid, oid.dotted_string) for oid in ext)


def satisfies(cert, spec):
    """Does the certificate say exactly what the spec asks (names, usages, SANs)?"""
    dns, ips = cert_sans(cert)
    orgs = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return (
        cns == [spec.common_name]
        and sorted(orgs) == sorted(spec.organizations)
        and sorted(cert_usages(cert)) == sorted(spec.usages)
        and sorted(dns) == sorted(spec.dns_names)
        and sorted(map(str, ips)) == sorted(map(str, spec.ip_addresses))
    )


def iso_utc(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_cert(cert):
    """A plain dict about a certificate: safe to print, log and return."""
    dns, ips = cert_sans(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "sha256": fingerprint(cert),
        "sans": list(dns) + [str(ip) for ip in ips],
        "not_before": iso_utc(cert.not_valid_before_utc),
        "not_after": iso_utc(cert.not_valid_after_utc),
    }


def days_left(cert, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def public_pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data, what="public key"):
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise PKIError(f"{what}: not a PEM public key ({type(err).__name__})") from None


def renewal_window_days(cert, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS):
    """How many days before its end a certificate is due for renewal.

    ``renew_before_days``, except for a certificate that does not live longer
    than that: it is due once the last third of its lifetime has begun
    (cert-manager's rule).  Otherwise a certificate issued for, say, 30 days
    would be due the moment it is made, and every run would issue it again.
    """
    return _window_days(cert.not_valid_before_utc, cert.not_valid_after_utc, renew_before_days)


def _window_days(not_before, not_after, renew_before_days):
    lifetime = (not_after - not_before).total_seconds() / 86400
    # Whole days: a certificate issued for 90 days lives 90 days and the few
    # minutes it is back-dated, and is still not "longer" than a 90-day window.
    return renew_before_days if renew_before_days < math.floor(lifetime) else lifetime / 3


def renewal_due(cert, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS, now=None, ca_cert=None):
    """Why the certificate must be renewed now ("expired", "expires in ..."), or "".

    A leaf that already ends with its CA (``ca_cert``) is not due before it
    expires: a new one could not last a moment longer (see :func:`issue_leaf`),
    and reissuing it on every run would only churn keys.
    """
    ca_end = ca_cert.not_valid_after_utc if ca_cert is not None else None
    return renewal_due_by_dates(
        cert.not_valid_before_utc, cert.not_valid_after_utc, renew_before_days, now, ca_end
    )


def renewal_due_by_dates(not_before, not_after, renew_before_days, now=None, ca_not_after=None):
    """:func:`renewal_due` for a certificate known by its dates (and its CA's end) only."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    left = (not_after - now).total_seconds() / 86400
    if left <= 0:
        return "expired"
    if ca_not_after is not None and not_after >= ca_not_after:
        return ""
    window = _window_days(not_before, not_after, renew_before_days)
    if left < window:
        return f"expires in {_days_text(left)} (renewal window: {_days_text(window)})"
    return ""


def _days_text(days):
    whole = math.floor(days)
    if whole >= 1:
        return f"{whole} day{'s' if whole != 1 else ''}"
    return f"{max(1, math.ceil(days * 24))} hour(s)"


def key_type_of(key):
    """The ``KEY_TYPES`` name of a private key, or None for a kind this module does not make."""
    if isinstance(key, rsa.RSAPrivateKey):
        name = f"rsa-{key.key_size}"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        name = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name, "")
    else:
        name = ""
    return name if name in KEY_TYPES else None
