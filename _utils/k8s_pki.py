"""The PKI of a Kubernetes cluster, as plain Python.

This module has no Salt dunders: the runner (``_runners/k8s_helper.py``) and the
minion-side modules are thin layers over it, and the unit tests import it
directly.  Salt loads it from ``_utils/`` (after ``saltutil.sync_utils``, or with
``utils_dirs`` pointing here), which puts this folder on ``sys.path`` while the
runner and execution modules are imported.

Layers, top to bottom:

* input checking (``check_*``): every bad argument raises :class:`InputError`
  naming the parameter;
* certificate building (:func:`new_key`, :func:`build_ca`, :func:`issue_leaf`)
  on one shared builder;
* inspection (:func:`load_cert`, :func:`describe_cert`, :func:`key_matches`,
  :func:`signed_by`);
* what pillar hands a minion (:func:`check_distribution`) and whether a PEM
  bundle holds a certificate (:func:`bundle_has`), for the minion-side states;
* a certificate *set* on disk: :func:`plan_set` decides what to keep and what to
  (re)issue, :func:`ensure_set` writes it atomically under a lock.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import datetime
import errno
import fcntl
import hashlib
import ipaddress
import os
import re
import shutil
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_PKI_ROOT = "/var/salt/k8s-helper/pki"
KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384")
DEFAULT_KEY_TYPE = "rsa-2048"
DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 365
DEFAULT_RENEW_BEFORE_DAYS = 90
BACKUP_DIR = "backup"
# Certificates are back-dated a little so that hosts with a slightly slow clock
# accept them at once.
BACKDATE = datetime.timedelta(minutes=5)

CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700


class PKIError(Exception):
    """Anything this module refuses to do; the message is meant for the operator."""


class InputError(PKIError, ValueError):
    """A bad argument.  The message starts with the parameter's name."""


class SetError(PKIError):
    """An existing certificate set that cannot be used or extended safely."""


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------

_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_cluster_tag(value):
    if not isinstance(value, str) or not _TAG_RE.match(value) or ".." in value:
        raise InputError(
            f"cluster_tag: {value!r} is not a safe folder name; use 1-63 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit, and no '..'"
        )
    return value


def check_ip(value, name="api_service_address"):
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise InputError(f"{name}: {value!r} is not an IPv4 or IPv6 address") from None


def check_dns_name(value, name="api_server_fqdn"):
    text = value if isinstance(value, str) else ""
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise InputError(
            f"{name}: {value!r} is not a valid DNS name (labels of letters, digits and '-', "
            "joined by '.')"
        )
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return text.rstrip(".").lower()
    raise InputError(f"{name}: {value!r} is an IP address, not a DNS name")


def check_bool(value, name):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputError(f"{name}: {value!r} is not a boolean (use True or False)")


def check_days(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f"{name}: {value!r} is not a whole number of days")
    try:
        days = int(value)
    except ValueError:
        raise InputError(f"{name}: {value!r} is not a whole number of days") from None
    if days <= 0:
        raise InputError(f"{name}: {value!r} must be a positive number of days")
    if days > 36500:
        raise InputError(f"{name}: {value!r} is more than 100 years")
    return days


def check_key_type(value):
    key_type = str(value).strip().lower() if isinstance(value, str) else value
    if key_type not in KEY_TYPES:
        raise InputError(f"key_type: {value!r} is not one of {', '.join(KEY_TYPES)}")
    return key_type


def split_sans(values, name="extra_sans"):
    """Split a list (or comma-separated string) of names into (dns names, ip addresses)."""
    if values is None or values == "":
        return (), ()
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, (list, tuple)):
        raise InputError(f"{name}: {values!r} is not a list of DNS names and IP addresses")
    dns, ips = [], []
    for value in values:
        text = str(value).strip()
        try:
            ips.append(ipaddress.ip_address(text))
        except ValueError:
            dns.append(check_dns_name(text, name))
    return tuple(dns), tuple(ips)


# --------------------------------------------------------------------------
# Keys and certificates
# --------------------------------------------------------------------------


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


def _builder(subject, issuer, public_key, days, now):
    """What every certificate shares: names, serial, validity window, SKI."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
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


_USAGE_OIDS = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
_USAGE_NAMES = {oid: name for name, oid in _USAGE_OIDS.items()}


@dataclass(frozen=True)
class LeafSpec:
    """What a leaf certificate must say.  Two specs are equal when a certificate
    satisfying one satisfies the other."""

    common_name: str
    organizations: tuple = ()
    usages: tuple = ()  # "server", "client"
    dns_names: tuple = ()
    ip_addresses: tuple = ()

    @property
    def extended_key_usages(self):
        oids = {
            "server": ExtendedKeyUsageOID.SERVER_AUTH,
            "client": ExtendedKeyUsageOID.CLIENT_AUTH,
        }
        return [oids[u] for u in self.usages]


def issue_leaf(spec, key, ca_cert, ca_key, days=DEFAULT_LEAF_DAYS, now=None):
    """A certificate for ``key`` signed by the CA, saying what ``spec`` asks."""
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(
            _name(spec.common_name, spec.organizations),
            ca_cert.subject,
            key.public_key(),
            days,
            now,
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
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    sans = [x509.DNSName(n) for n in spec.dns_names]
    sans += [x509.IPAddress(ip) for ip in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


# --------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------


def load_cert(data, what="certificate"):
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as err:
        raise PKIError(f"{what}: not a PEM certificate ({err})") from None


def load_certs(data, what="certificate"):
    """Every certificate in a PEM bundle (at least one)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise PKIError(f"{what}: not a PEM certificate ({err})") from None
    return certs


def load_key(data, what="key", validate=True):
    """Load an unencrypted PEM private key.

    ``validate=False`` skips OpenSSL's full RSA consistency check (primality of
    p and q, ~30 ms for RSA-2048); pair it with :func:`key_works` to prove the
    key usable with its certificate in about a millisecond.
    """
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


def _iso(when):
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
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
    }


def days_left(cert, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


# --------------------------------------------------------------------------
# The seed set: CA, apiserver serving certificate, admin client certificate
# --------------------------------------------------------------------------

CA = "ca"
SEED_LEAVES = ("server", "kubecfg")


def seed_specs(
    api_server_fqdn="kubernetes.api",
    api_service_address="10.254.0.1",
    cluster_domain="cluster.local",
    extra_sans=(),
):
    """The leaves of the kube-up style set, checked and ready to issue."""
    fqdn = check_dns_name(api_server_fqdn, "api_server_fqdn")
    address = check_ip(api_service_address, "api_service_address")
    domain = check_dns_name(cluster_domain, "cluster_domain")
    extra_dns, extra_ips = split_sans(extra_sans)
    dns = [
        fqdn,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
        *extra_dns,
    ]
    ips = [address, *extra_ips]
    return {
        "server": LeafSpec(
            common_name="kube-apiserver",
            usages=("server",),
            dns_names=tuple(dict.fromkeys(dns)),
            ip_addresses=tuple(dict.fromkeys(ips)),
        ),
        "kubecfg": LeafSpec(
            common_name="kubecfg",
            organizations=("system:masters",),
            usages=("client",),
        ),
    }


# --------------------------------------------------------------------------
# A certificate set on disk
# --------------------------------------------------------------------------


@dataclass
class Item:
    """One certificate + key pair of a set, as found on disk or as planned."""

    name: str
    cert: x509.Certificate | None = None
    key: object = None
    cert_bytes: bytes | None = None
    key_bytes: bytes | None = None
    action: str = "reused"  # "reused" or "generated"
    reason: str = ""


@dataclass
class Plan:
    directory: str
    items: dict = field(default_factory=dict)
    backup: bool = False

    @property
    def changed(self):
        return any(item.action != "reused" for item in self.items.values())


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_set(directory, names):
    """The pairs present in ``directory`` (parsed); raises SetError on anything broken."""
    items = {}
    for name in names:
        cert_bytes = _read(os.path.join(directory, f"{name}.crt"))
        key_bytes = _read(os.path.join(directory, f"{name}.key"))
        item = Item(name, cert_bytes=cert_bytes, key_bytes=key_bytes)
        try:
            if cert_bytes is not None:
                item.cert = load_cert(cert_bytes, f"{name}.crt")
            if key_bytes is not None:
                item.key = load_key(key_bytes, f"{name}.key")
        except PKIError as err:
            raise SetError(f"{directory}: {err}") from None
        if item.cert is not None and item.key is not None and not key_matches(item.cert, item.key):
            raise SetError(f"{directory}: {name}.key does not belong to {name}.crt")
        items[name] = item
    return items


def plan_set(
    directory,
    specs,
    *,
    force_regen=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
):
    """Decide, without writing anything, which pairs to keep and which to issue.

    A complete, valid set is kept as it is.  A leaf is (re)issued when it is
    missing, when it no longer says what ``specs`` asks (SANs, names, usages),
    when it is not signed by the CA, or when it expires within
    ``renew_before_days``.  The CA is only ever made when there is none at all,
    or with ``force_regen``.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    found = read_set(directory, [CA, *specs])
    plan = Plan(directory)
    anything = any(i.cert_bytes is not None or i.key_bytes is not None for i in found.values())
    if force_regen or not anything:
        plan.backup = anything
        for name in [CA, *specs]:
            plan.items[name] = Item(
                name, action="generated", reason="force_regen" if anything else "new set"
            )
        return plan

    ca = found[CA]
    if ca.cert is None:
        raise SetError(
            f"{directory}: ca.crt is missing but other files are there; restore it "
            "or start over with force_regen=True"
        )
    if ca.key is None:
        raise SetError(
            f"{directory}: ca.key is missing, so no certificate can be issued from "
            "this CA; restore it or start over with force_regen=True"
        )
    if not is_ca(ca.cert):
        raise SetError(f"{directory}: ca.crt is not a CA certificate")
    plan.items[CA] = ca

    for name, spec in specs.items():
        item = found[name]
        if item.cert is None or item.key is None:
            reason = "missing"
        elif not signed_by(item.cert, ca.cert):
            reason = "not signed by the current CA"
        elif not satisfies(item.cert, spec):
            reason = "names or usages differ from those requested"
        elif days_left(item.cert, now) < renew_before_days:
            reason = f"expires within {renew_before_days} days"
        else:
            plan.items[name] = item
            continue
        plan.items[name] = Item(name, action="generated", reason=reason)
    return plan


def _fill(plan, specs, key_type, ca_days, leaf_days, ca_common_name, now):
    """Make the keys and certificates the plan asks for."""
    ca = plan.items[CA]
    if ca.action == "generated":
        ca.key = new_key(key_type)
        ca.cert = build_ca(ca.key, ca_common_name, ca_days, now=now)
    for name, spec in specs.items():
        item = plan.items[name]
        if item.action == "generated":
            item.key = new_key(key_type)
            item.cert = issue_leaf(spec, item.key, ca.cert, ca.key, leaf_days, now=now)
    for item in plan.items.values():
        if item.action == "generated":
            item.cert_bytes, item.key_bytes = cert_pem(item.cert), key_pem(item.key)


def _write(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # umask must not loosen or tighten the mode


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a, b):
    """Swap two directories in one step (Linux renameat2); False where unsupported."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a)


def _scratch(pki_root, cluster_tag):
    """The two scratch folders a writer of ``cluster_tag`` may leave behind."""
    return (
        os.path.join(pki_root, f".{cluster_tag}.staging"),
        os.path.join(pki_root, f".{cluster_tag}.old"),
    )


@contextlib.contextmanager
def locked(pki_root, cluster_tag):
    """Serialise writers of one cluster's set, and clear what a killed writer left."""
    os.makedirs(pki_root, mode=DIR_MODE, exist_ok=True)
    fd = os.open(os.path.join(pki_root, f".{cluster_tag}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        staging, old = _scratch(pki_root, cluster_tag)
        target = os.path.join(pki_root, cluster_tag)
        if os.path.isdir(old) and not os.path.isdir(target):
            os.rename(old, target)  # a writer died between the fallback's two renames
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        yield
    finally:
        os.close(fd)


def _stage(plan, staging, now):
    """Build the complete new cluster folder at ``staging``; returns the backup's path."""
    os.mkdir(staging, DIR_MODE)
    os.chmod(staging, DIR_MODE)
    target = plan.directory
    backups = os.path.join(target, BACKUP_DIR)
    if os.path.isdir(backups):  # earlier backups travel along (hard links: no copying)
        shutil.copytree(backups, os.path.join(staging, BACKUP_DIR), copy_function=os.link)
    backup = None
    if plan.backup:
        backup = os.path.join(BACKUP_DIR, now.strftime("%Y%m%dT%H%M%S.%fZ"))
        os.makedirs(os.path.join(staging, backup), mode=DIR_MODE)
        os.chmod(os.path.join(staging, BACKUP_DIR), DIR_MODE)
        for entry in os.listdir(target):
            if entry != BACKUP_DIR and os.path.isfile(os.path.join(target, entry)):
                os.link(os.path.join(target, entry), os.path.join(staging, backup, entry))
    for item in plan.items.values():
        for suffix, data, mode in (
            (".crt", item.cert_bytes, CERT_MODE),
            (".key", item.key_bytes, KEY_MODE),
        ):
            path = os.path.join(staging, item.name + suffix)
            if item.action == "reused":
                os.link(os.path.join(target, item.name + suffix), path)
            else:
                _write(path, data, mode)
    _fsync_dir(staging)
    return backup and os.path.join(target, backup)


def _commit(staging, old, target):
    """Put the staged folder in place of the target in one step."""
    if not os.path.isdir(target):
        os.rename(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging)  # it now holds the previous folder
    else:
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old)
    _fsync_dir(os.path.dirname(target))


def ensure_set(
    pki_root,
    cluster_tag,
    specs,
    *,
    key_type=DEFAULT_KEY_TYPE,
    ca_days=DEFAULT_CA_DAYS,
    leaf_days=DEFAULT_LEAF_DAYS,
    ca_common_name="kubernetes-ca",
    force_regen=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
):
    """Make sure ``<pki_root>/<cluster_tag>`` holds a complete, valid set.

    Returns ``(plan, backup_path_or_None)``.  Nothing on disk changes unless the
    plan changes something; when it does, the whole folder is replaced in one
    rename, so a reader (or a crash) sees the old set or the new one, never a mix.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    decide = dict(renew_before_days=renew_before_days, now=now)
    if not force_regen and os.path.isdir(directory):
        # Fast path, no lock: a valid set is left alone without writing anything.
        with contextlib.suppress(SetError):  # a writer mid-swap: decide again under the lock
            plan = plan_set(directory, specs, **decide)
            if not plan.changed:
                return plan, None
    with locked(pki_root, cluster_tag):
        plan = plan_set(directory, specs, force_regen=force_regen, **decide)
        if plan.changed:
            _fill(plan, specs, key_type, ca_days, leaf_days, ca_common_name, now)
            staging, old = _scratch(pki_root, cluster_tag)
            backup = _stage(plan, staging, now)
            _commit(staging, old, directory)
            return plan, backup
        return plan, None


def describe_plan(plan, backup=None):
    """The runner's return value: paths, fingerprints, subjects, dates; no key material."""
    files = {}
    for item in plan.items.values():
        cert_path = os.path.join(plan.directory, f"{item.name}.crt")
        key_path = os.path.join(plan.directory, f"{item.name}.key")
        files[f"{item.name}.crt"] = {
            "path": cert_path,
            "action": item.action,
            **describe_cert(item.cert),
        }
        files[f"{item.name}.key"] = {
            "path": key_path,
            "action": item.action,
            "public_key_sha256": public_key_fingerprint(item.key.public_key()),
        }
        if item.reason:
            files[f"{item.name}.crt"]["reason"] = item.reason
    return {
        "directory": plan.directory,
        "changed": plan.changed,
        "backup": backup,
        "files": files,
    }


# --------------------------------------------------------------------------
# What pillar hands a minion (checked by the minion before anything is written)
# --------------------------------------------------------------------------

#: The CA certificate(s) every minion gets.
DIST_CA = "ca.crt"
#: (certificate, key, required) pairs; the server pair goes to masters only.
DIST_PAIRS = (("kubecfg.crt", "kubecfg.key", True), ("server.cert", "server.key", False))
DIST_KEYS = (DIST_CA, *(name for pair in DIST_PAIRS for name in pair[:2]))


def normalize_pem(text):
    """PEM text the way every parser takes it: each line stripped, no blank lines,
    one final newline.

    Pillar templates easily indent every line after the first (the well-known
    ``{{ ... | indent(8) }}`` under a block scalar indented by 6 leaves two
    spaces before each line). The ``cryptography`` parser shrugs that off, but
    OpenSSL's and Go's (kube-apiserver, kubectl) refuse the certificate, so the
    states write this form, and the checks look at this form. Generated files
    pass through unchanged.
    """
    lines = (line.strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line) + "\n"


def _pem_text(value, where):
    if not isinstance(value, str):
        raise PKIError(f"{where}: expected PEM text, got {type(value).__name__}")
    return normalize_pem(value).encode("utf-8", "replace")


def check_distribution(certs, where="kubernetes:certs", now=None):
    """Check the certificates pillar hands one minion, before anything is written.

    ``certs`` maps the pillar keys of :data:`DIST_KEYS` to PEM text. Every
    certificate must parse, ``ca.crt`` must hold only CA certificates, every key
    must match its certificate, every leaf must be directly signed by a
    certificate of ``ca.crt``, and nothing may be expired or not yet valid.
    ``kubecfg.crt``/``kubecfg.key`` are required, ``server.cert``/``server.key``
    come both or not at all. The texts are checked as :func:`normalize_pem`
    makes them, which is how the states write them.

    Returns ``{item: description}`` (subjects, fingerprints, dates: no key
    material). Raises :class:`PKIError` listing every problem, each starting with
    ``<where>:<item>``.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not isinstance(certs, dict):
        if certs is None:
            raise PKIError(f"{where}: missing from pillar")
        raise PKIError(f"{where}: expected a mapping of file names to PEM text")
    problems = []
    unknown = sorted(str(k) for k in certs if k not in DIST_KEYS)
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(DIST_KEYS)})"
        )

    def dated(cert, name):
        if days_left(cert, now) <= 0:
            problems.append(f"{where}:{name}: expired on {_iso(cert.not_valid_after_utc)}")
            return False
        if cert.not_valid_before_utc > now:
            problems.append(f"{where}:{name}: not valid before {_iso(cert.not_valid_before_utc)}")
            return False
        return True

    report = {}
    cas = []
    try:
        if DIST_CA not in certs:
            raise PKIError(f"{where}:{DIST_CA}: missing")
        cas = load_certs(_pem_text(certs[DIST_CA], f"{where}:{DIST_CA}"), f"{where}:{DIST_CA}")
        for index, ca in enumerate(cas):
            label = DIST_CA if len(cas) == 1 else f"{DIST_CA}[{index}]"
            if not is_ca(ca):
                problems.append(f"{where}:{label}: not a CA certificate")
            dated(ca, label)
        report[DIST_CA] = [describe_cert(ca) for ca in cas]
    except PKIError as err:
        problems.append(str(err))

    for cert_name, key_name, required in DIST_PAIRS:
        present = [n for n in (cert_name, key_name) if n in certs]
        if not present:
            if required:
                problems.append(f"{where}:{cert_name}, {key_name}: missing")
            continue
        if len(present) == 1:
            other = key_name if present == [cert_name] else cert_name
            problems.append(f"{where}:{other}: missing while {present[0]} is given")
            continue
        try:
            cert_data = _pem_text(certs[cert_name], f"{where}:{cert_name}")
            found = load_certs(cert_data, f"{where}:{cert_name}")
            if len(found) != 1:
                raise PKIError(
                    f"{where}:{cert_name}: holds {len(found)} certificates, expected one"
                )
            cert = found[0]
            key = load_key(
                _pem_text(certs[key_name], f"{where}:{key_name}"),
                f"{where}:{key_name}",
                validate=False,
            )
        except PKIError as err:
            problems.append(str(err))
            continue
        if not key_matches(cert, key):
            problems.append(f"{where}:{key_name}: does not belong to {cert_name}")
        elif not key_works(cert, key):
            problems.append(f"{where}:{key_name}: damaged (its signatures do not verify)")
        if cas and not any(signed_by(cert, ca) for ca in cas):
            problems.append(
                f"{where}:{cert_name}: not signed by {DIST_CA} ({cert.issuer.rfc4514_string()})"
            )
        if is_ca(cert):
            problems.append(f"{where}:{cert_name}: is a CA certificate, expected a leaf")
        dated(cert, cert_name)
        report[cert_name] = describe_cert(cert)
        report[key_name] = {"public_key_sha256": public_key_fingerprint(key.public_key())}
    if problems:
        raise PKIError("; ".join(problems))
    return report


_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----"
)


def bundle_has(bundle, cert):
    """Does the PEM bundle (bytes, e.g. /etc/ssl/certs/ca-certificates.crt) hold ``cert``?

    Compares the DER encoding of every certificate block; text between blocks
    (comments, as in RedHat's bundle) is ignored.
    """
    if cert_pem(cert).strip() in bundle:  # the usual case, as cryptography writes PEM
        return True
    wanted = base64.b64encode(cert.public_bytes(serialization.Encoding.DER))
    return any(b"".join(body.split()) == wanted for body in _PEM_CERT_RE.findall(bundle))
