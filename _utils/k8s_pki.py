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
* a certificate *set* on disk: :func:`plan_set` decides what to keep and what to
  (re)issue, :func:`ensure_set` writes it atomically under a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import errno
import fcntl
import functools
import hashlib
import ipaddress
import os
import re
import shutil
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
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
class CASpec:
    """A self-signed CA of the set."""

    common_name: str
    organizations: tuple = ()


@dataclass(frozen=True)
class LeafSpec:
    """What a leaf certificate must say, and which CA of the set signs it.

    Two equal specs are satisfied by the same certificates: comparing a
    certificate with its spec (:func:`satisfies`) is how drift is found.
    """

    common_name: str
    organizations: tuple = ()
    usages: tuple = ()  # "server", "client"
    dns_names: tuple = ()
    ip_addresses: tuple = ()
    issuer: str = "ca"

    @property
    def extended_key_usages(self):
        return [_USAGE_OIDS[u] for u in self.usages]


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


def load_key(data, what="key", check=True):
    """Parse a private key.  ``check=False`` skips OpenSSL's RSA consistency check
    (tens of ms per key): enough to compare public keys, not to sign with."""
    try:
        return serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=not check
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


def seed_specs(
    api_server_fqdn="kubernetes.api",
    api_service_address="10.254.0.1",
    cluster_domain="cluster.local",
    extra_sans=(),
):
    """The kube-up style set (``ca``, ``server``, ``kubecfg``), checked and ready to issue."""
    fqdn = check_dns_name(api_server_fqdn, "api_server_fqdn")
    address = check_ip(api_service_address, "api_service_address")
    domain = check_dns_name(cluster_domain, "cluster_domain")
    extra_dns, extra_ips = split_sans(extra_sans)
    dns = [fqdn, "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns += [f"kubernetes.default.svc.{domain}", *extra_dns]
    return {
        "ca": CASpec(common_name="kubernetes-ca"),
        "server": LeafSpec(
            common_name="kube-apiserver",
            usages=("server",),
            dns_names=tuple(dict.fromkeys(dns)),
            ip_addresses=tuple(dict.fromkeys([address, *extra_ips])),
        ),
        "kubecfg": LeafSpec(
            common_name="kubecfg",
            organizations=("system:masters",),
            usages=("client",),
        ),
    }


# --------------------------------------------------------------------------
# A certificate set on disk
#
# A set is a dict of name -> CASpec | LeafSpec, CAs first.  Each name is a pair
# of files, <name>.crt and <name>.key, under the cluster's folder ("etcd/ca"
# lives in a sub-folder).
# --------------------------------------------------------------------------


@dataclass
class Item:
    """One certificate + key pair of a set, as found on disk or as planned."""

    name: str
    cert: x509.Certificate | None = None
    key: object = None
    cert_bytes: bytes | None = None
    key_bytes: bytes | None = None
    action: str = "reused"  # "reused", "generated" (new key) or "reissued" (same key)
    reason: str = ""
    key_checked: bool = False  # False: parsed without the RSA consistency check

    @property
    def present(self):
        return self.cert_bytes is not None or self.key_bytes is not None


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


def read_pair(directory, name):
    """The pair ``name`` as found in ``directory`` (parsed); SetError if it is broken."""
    item = Item(
        name,
        cert_bytes=_read(os.path.join(directory, f"{name}.crt")),
        key_bytes=_read(os.path.join(directory, f"{name}.key")),
    )
    try:
        if item.cert_bytes is not None:
            item.cert = load_cert(item.cert_bytes, f"{name}.crt")
        if item.key_bytes is not None:
            item.key = load_key(item.key_bytes, f"{name}.key", check=False)
    except PKIError as err:
        raise SetError(f"{directory}: {err}") from None
    if item.cert is not None and item.key is not None and not key_matches(item.cert, item.key):
        raise SetError(f"{directory}: {name}.key does not belong to {name}.crt")
    return item


def _leaf_drift(item, spec, ca, renew_before_days, now):
    """Why the leaf must be issued again, or "" when it is fine as it is."""
    if item.cert is None or item.key is None:
        return "missing"
    if ca.action != "reused" or not signed_by(item.cert, ca.cert):
        return f"not signed by the current {spec.issuer}"
    if not satisfies(item.cert, spec):
        return "names or usages differ from those requested"
    if days_left(item.cert, now) < renew_before_days:
        return f"expires within {renew_before_days} days"
    return ""


def plan_set(
    directory,
    specs,
    *,
    force_regen=False,
    renew=(),
    keep_keys=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
):
    """Decide, without writing anything, which pairs to keep and which to issue.

    A complete, valid set is kept as it is.  A leaf is (re)issued when it is
    missing, when it no longer says what its spec asks (SANs, names, usages),
    when it is not signed by its CA, when it expires within
    ``renew_before_days``, or when it is named in ``renew`` (then with its old
    key if ``keep_keys``).  A CA is only made where it and every leaf it signs
    are absent, or with ``force_regen``: an existing CA is never replaced
    otherwise, and a set whose CA cannot be used is an error.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    found = {name: read_pair(directory, name) for name in specs}
    plan = Plan(directory)
    if force_regen or not any(item.present for item in found.values()):
        plan.backup = force_regen and any(item.present for item in found.values())
        reason = "force_regen" if plan.backup else "new set"
        plan.items = {name: Item(name, action="generated", reason=reason) for name in specs}
        return plan

    for name, spec in specs.items():
        item = found[name]
        if isinstance(spec, CASpec):
            signs = [n for n, s in specs.items() if getattr(s, "issuer", None) == name]
            if not item.present and not any(found[n].present for n in signs):
                plan.items[name] = Item(name, action="generated", reason="missing")
                continue
            if item.cert is None or item.key is None:
                missing = f"{name}.crt" if item.cert is None else f"{name}.key"
                raise SetError(
                    f"{directory}: {missing} is missing, so {name} cannot issue certificates; "
                    "restore it, or start a new set with force_regen=True"
                )
            if not is_ca(item.cert):
                raise SetError(f"{directory}: {name}.crt is not a CA certificate")
            plan.items[name] = item
            continue
        reason = _leaf_drift(item, spec, plan.items[spec.issuer], renew_before_days, now)
        if not reason and name in renew:
            reason = "renewal requested"
        if reason:
            reuse_key = keep_keys and item.key is not None and reason != "missing"
            item.action = "reissued" if reuse_key else "generated"
            if not reuse_key:
                item.key = item.key_bytes = None
            item.reason = reason
        plan.items[name] = item
    plan.backup = bool(renew) and plan.changed
    return plan


def _fill(plan, specs, key_type, ca_days, leaf_days, now):
    """Make the keys and certificates the plan asks for (CAs come first in ``specs``)."""
    for name, spec in specs.items():
        item = plan.items[name]
        if item.action == "reused":
            continue
        if item.action == "generated":
            item.key, item.key_checked = new_key(key_type), True
            item.key_bytes = key_pem(item.key)
        if isinstance(spec, CASpec):
            item.cert = build_ca(item.key, spec.common_name, ca_days, spec.organizations, now)
        else:
            ca = plan.items[spec.issuer]
            if not ca.key_checked:  # read from disk with the quick parse: check before signing
                ca.key, ca.key_checked = load_key(ca.key_bytes, f"{ca.name}.key"), True
            item.cert = issue_leaf(spec, item.key, ca.cert, ca.key, leaf_days, now=now)
        item.cert_bytes = cert_pem(item.cert)


def _write(path, data, mode):
    """Create ``path`` (it must not exist) with exactly ``mode``, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)
        handle.write(data)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _flush(directory, files=()):
    """Make what was written under ``directory`` durable before it is renamed into place.

    One ``syncfs`` of the file system where Linux has it (much cheaper than a
    ``fsync`` per file); otherwise ``fsync`` on each file and the folder.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is not None and syncfs(fd) == 0:
            return
        for path in files:
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def _exchange(a, b):
    """Swap two directories in one step (Linux renameat2); False where unsupported."""
    renameat2 = getattr(_libc(), "renameat2", None)
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


def _files(directory):
    """The set's files under ``directory`` (relative paths), leaving out backups."""
    for dirpath, dirnames, filenames in os.walk(directory):
        if dirpath == directory and BACKUP_DIR in dirnames:
            dirnames.remove(BACKUP_DIR)
        for name in filenames:
            yield os.path.relpath(os.path.join(dirpath, name), directory)


def _parent(path):
    """Create the sub-folders a set file lives in (``etcd/ca.crt``), mode 0700."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=DIR_MODE)


def _link(src, dst):
    _parent(dst)
    os.link(src, dst)


def _stage(plan, staging, now):
    """Build the complete new cluster folder at ``staging``; returns the backup's path."""
    os.mkdir(staging, DIR_MODE)
    os.chmod(staging, DIR_MODE)
    target = plan.directory
    backups = os.path.join(target, BACKUP_DIR)
    if os.path.isdir(backups):  # earlier backups travel along (hard links: no copying)
        shutil.copytree(backups, os.path.join(staging, BACKUP_DIR), copy_function=os.link)
    backup, written = None, []
    if plan.backup:
        backup = os.path.join(BACKUP_DIR, now.strftime("%Y%m%dT%H%M%S.%fZ"))
        for rel in _files(target):
            _link(os.path.join(target, rel), os.path.join(staging, backup, rel))
    for item in plan.items.values():
        for suffix, data, mode in (
            (".crt", item.cert_bytes, CERT_MODE),
            (".key", item.key_bytes, KEY_MODE),
        ):
            path = os.path.join(staging, item.name + suffix)
            if item.action == "reused" or (suffix == ".key" and item.action == "reissued"):
                _link(os.path.join(target, item.name + suffix), path)
            else:
                _parent(path)
                _write(path, data, mode)
                written.append(path)
    _flush(staging, written)
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
    force_regen=False,
    renew=(),
    keep_keys=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
):
    """Make sure ``<pki_root>/<cluster_tag>`` holds a complete, valid set.

    Returns ``(plan, backup_path_or_None)``.  Nothing on disk changes unless the
    plan changes something; when it does, the whole folder is replaced in one
    rename, so a reader (or a crash) sees the old set or the new one, never a mix.
    ``force_regen`` and ``renew`` keep the previous files under ``backup/``.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    decide = dict(renew_before_days=renew_before_days, now=now)
    if not force_regen and not renew and os.path.isdir(directory):
        # Fast path, no lock: a valid set is left alone without writing anything.
        with contextlib.suppress(SetError):  # a writer mid-swap: decide again under the lock
            plan = plan_set(directory, specs, **decide)
            if not plan.changed:
                return plan, None
    with locked(pki_root, cluster_tag):
        plan = plan_set(
            directory, specs, force_regen=force_regen, renew=renew, keep_keys=keep_keys, **decide
        )
        if not plan.changed:
            return plan, None
        _fill(plan, specs, key_type, ca_days, leaf_days, now)
        staging, old = _scratch(pki_root, cluster_tag)
        backup = _stage(plan, staging, now)
        _commit(staging, old, directory)
        return plan, backup


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
            "action": "reused" if item.action == "reissued" else item.action,
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
