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
import functools
import hashlib
import ipaddress
import json
import math
import os
import re
import shutil
import stat
import warnings
from dataclasses import dataclass, field

import yaml
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

# Actions of a CA item whose files a rotation rewrites from certificates and
# keys it already has (nothing to generate): "rebundled" rewrites <name>.crt
# (another trust bundle, same CA and key); "rotated" puts the next CA and its
# key in place of the current ones.
CA_FILE_ACTIONS = ("rebundled", "rotated")

CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700
# Folders above pki_root that k8s-helper creates itself (/var/salt,
# /var/salt/k8s-helper): anyone may look, only the master's user may write.
ANCESTOR_MODE = 0o755
DEFAULT_BACKUP_KEEP = 5


def pki_root(opts):
    """Where the sets live on the master: ``k8s_helper:pki_root`` in its config, or the default."""
    return (opts.get("k8s_helper") or {}).get("pki_root", DEFAULT_PKI_ROOT)


def backup_keep(opts):
    """How many backups a set keeps: ``k8s_helper:backup_keep`` (a whole number >= 1), or 5."""
    value = (opts.get("k8s_helper") or {}).get("backup_keep", DEFAULT_BACKUP_KEEP)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(
            f"k8s_helper:backup_keep: must be a whole number of at least 1, not {value!r}; "
            "fix it in the master config"
        )
    return value


class PKIError(Exception):
    """Anything this module refuses to do; the message is meant for the operator."""


class InputError(PKIError, ValueError):
    """A bad argument.  The message starts with the parameter's name."""


class SetError(PKIError):
    """An existing certificate set that cannot be used or extended safely."""


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------

# Every check matches the whole string (fullmatch): with re.match, "$" also
# matches before a trailing newline, which would then reach a SAN or a path.
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_DAYS_RE = re.compile(r"-?[0-9]+")  # ASCII digits: int() also takes "٣٦٥", "1_000", " +5 "


def check_cluster_tag(value):
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value) or ".." in value:
        raise InputError(
            f"cluster_tag: {value!r} is not a safe folder name; use 1-63 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit, and no '..'"
        )
    return value


def check_ip(value, name="api_service_address"):
    """An IPv4 or IPv6 address, exactly as given (no spaces, no IPv6 zone)."""
    try:
        address = ipaddress.ip_address(value if isinstance(value, str) else str(value))
    except ValueError:
        raise InputError(f"{name}: {value!r} is not an IPv4 or IPv6 address") from None
    if getattr(address, "scope_id", None):
        # A certificate cannot hold the zone: the SAN would never equal the
        # request, and every run would issue the certificate again.
        raise InputError(
            f"{name}: {value!r} is a scoped IPv6 address; a certificate holds no zone "
            "(%...): give the address without it"
        )
    return address


def check_dns_name(value, name="api_server_fqdn"):
    text = value if isinstance(value, str) else ""
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
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
    if isinstance(value, str) and not _DAYS_RE.fullmatch(value):
        raise InputError(f"{name}: {value!r} is not a whole number of days (digits 0-9 only)")
    days = int(value)
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
        text = str(value).strip(" ")  # "a, b": the spaces after commas
        try:
            ipaddress.ip_address(text)
        except ValueError:
            dns.append(check_dns_name(text, name))
        else:
            ips.append(check_ip(text, name))
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
        # A usage this module does not name (kept from an existing certificate
        # by a renewal) is its dotted OID.
        return [_USAGE_OIDS.get(u) or x509.ObjectIdentifier(u) for u in self.usages]


@dataclass(frozen=True)
class KeyPairSpec:
    """A bare key pair, ``<name>.key`` and ``<name>.pub`` (the service-account signing key)."""


@dataclass(frozen=True)
class KubeconfigSpec:
    """A kubeconfig file holding a client certificate, its key and the CA that signed it.

    The file is the only place its certificate and key live (kubeadm's
    ``admin.conf`` and friends); the set's name is the file's name.
    """

    common_name: str
    organizations: tuple = ()
    server: str = "https://kubernetes.api:6443"
    cluster_name: str = "kubernetes"
    issuer: str = "ca"

    @property
    def leaf(self):
        """What the embedded client certificate must say."""
        return LeafSpec(
            common_name=self.common_name,
            organizations=self.organizations,
            usages=("client",),
            issuer=self.issuer,
        )


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
    """A certificate for ``key`` signed by the CA, saying what ``spec`` asks.

    It ends after ``days``, or with its CA if that comes first (a leaf that
    outlives its CA is refused by every client from the CA's end on).
    """
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    not_after, _ = capped_end(ca_cert, days, now)
    builder = (
        _builder(
            _name(spec.common_name, spec.organizations),
            ca_cert.subject,
            key.public_key(),
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


# --------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------


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
# Bare key pairs and kubeconfig files
# --------------------------------------------------------------------------

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def public_pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data, what="public key"):
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise PKIError(f"{what}: not a PEM public key ({type(err).__name__})") from None


_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    certificate-authority-data: {ca}
    server: {server}
contexts:
- name: {context}
  context:
    cluster: {cluster}
    user: {user}
current-context: {context}
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
"""


def render_kubeconfig(spec, ca_pem, cert_bytes, key_bytes):
    """A kubeconfig (YAML) for ``spec``'s user, embedding its certificate, key and CA.

    Written from a template (every text value as a JSON string, which YAML
    reads as the same string): a hundred kubeconfigs through the YAML emitter
    would cost more than making their keys.
    """

    def b64(data):
        return base64.b64encode(data).decode("ascii")

    user = spec.common_name
    return _KUBECONFIG.format(
        cluster=json.dumps(spec.cluster_name),
        server=json.dumps(spec.server),
        context=json.dumps(f"{user}@{spec.cluster_name}"),
        user=json.dumps(user),
        ca=b64(ca_pem),
        cert=b64(cert_bytes),
        key=b64(key_bytes),
    ).encode()


@dataclass
class Kubeconfig:
    """What a kubeconfig's current context says (the PEMs decoded, nothing parsed yet)."""

    server: str
    ca_bytes: bytes
    cert_bytes: bytes
    key_bytes: bytes


def parse_kubeconfig(data, what="kubeconfig"):
    """The current context's server, CA, client certificate and key of a kubeconfig.

    Only embedded credentials (``*-data``) are understood: a kubeconfig that
    points to files elsewhere is not one this module wrote or can check.
    """

    def bad(why):
        return PKIError(f"{what}: {why}")

    try:
        doc = yaml.load(data, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        raise bad("not a YAML kubeconfig") from None
    if not isinstance(doc, dict):
        raise bad("not a YAML kubeconfig")

    def named(section, name):
        for entry in doc.get(section) or ():
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise bad(f"no {section[:-1]} named {name!r}")

    context = named("contexts", doc.get("current-context")).get("context") or {}
    cluster = named("clusters", context.get("cluster")).get("cluster") or {}
    user = named("users", context.get("user")).get("user") or {}

    def decoded(section, key):
        value = section.get(key)
        if not isinstance(value, str):
            raise bad(f"no embedded {key}")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise bad(f"{key} is not base64") from None

    server = cluster.get("server")
    if not isinstance(server, str):
        raise bad("no server")
    return Kubeconfig(
        server=server,
        ca_bytes=decoded(cluster, "certificate-authority-data"),
        cert_bytes=decoded(user, "client-certificate-data"),
        key_bytes=decoded(user, "client-key-data"),
    )


# --------------------------------------------------------------------------
# The seed set: CA, apiserver serving certificate, admin client certificate
# --------------------------------------------------------------------------


def seed_specs(
    api_server_fqdn="kubernetes.api",
    api_service_address="10.254.0.1",
    cluster_domain="cluster.local",
    extra_sans=(),
    service_account_key=False,
):
    """The kube-up style set (``ca``, ``server``, ``kubecfg``), checked and ready to issue.

    ``service_account_key`` adds ``sa.key``/``sa.pub``: a key pair of its own for
    signing service-account tokens, so that a new serving certificate does not
    invalidate every token (the seed signs them with ``server.key``).
    """
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
        **({"sa": KeyPairSpec()} if check_bool(service_account_key, "service_account_key") else {}),
    }


# --------------------------------------------------------------------------
# The kubeadm profile: kubeadm's file names, identities and per-host material
#
# Names in the set are paths relative to the cluster's folder.  What every
# control-plane host shares sits at the top (as in /etc/kubernetes/pki and
# /etc/kubernetes); what belongs to one host sits under hosts/<name>/ with the
# path it takes on that host (hosts/m1/etcd/server -> etcd/server.crt on m1).
# --------------------------------------------------------------------------

KUBEADM_HOSTS_DIR = "hosts"
KUBEADM_ADMIN_GROUP = "kubeadm:cluster-admins"
KUBEADM_PORT = 6443
_HOST_KEYS = ("name", "ip")


def check_hosts(value, name, need_ip=True):
    """A list of ``{name: ..., ip: ...}`` entries, checked: ``((name, ip or None), ...)``."""
    if value is None or value == "":
        return ()
    if not isinstance(value, (list, tuple)):
        raise InputError(
            f"{name}: {value!r} is not a list of {{name: ..., ip: ...}} entries "
            f"(on the command line: {name}='[{{name: host1, ip: 192.0.2.11}}]')"
        )
    hosts, seen_ips = [], {}
    for index, entry in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: {entry!r} is not a mapping with 'name' and 'ip'")
        unknown = sorted(str(k) for k in entry if k not in _HOST_KEYS)
        if unknown:
            raise InputError(f"{where}: unknown key {unknown[0]!r} (use 'name' and 'ip')")
        if "name" not in entry:
            raise InputError(f"{where}: 'name' is missing")
        host = check_dns_name(entry["name"], f"{where}.name")
        if entry.get("ip") is None:
            if need_ip:
                raise InputError(f"{where}: 'ip' is missing for {host}")
            ip = None
        else:
            ip = check_ip(entry["ip"], f"{where}.ip")
        if any(host == other for other, _ in hosts):
            raise InputError(f"{where}.name: {host!r} is listed twice")
        if ip is not None and ip in seen_ips:
            raise InputError(f"{where}.ip: {ip} is also the address of {seen_ips[ip]!r}")
        if ip is not None:
            seen_ips[ip] = host
        hosts.append((host, ip))
    return tuple(hosts)


def check_endpoint(value, name="control_plane_endpoint"):
    """``host`` or ``host:port`` (``[v6]:port``) -> ``(host, port)``; host a DNS name or IP."""
    text = value if isinstance(value, str) else ""
    with contextlib.suppress(ValueError):  # a bare IPv6 address, no port
        ipaddress.IPv6Address(text)
        return str(check_ip(text, name)), KUBEADM_PORT
    host, port = text, KUBEADM_PORT
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?", text) or re.fullmatch(
        r"([^:\[\]]+)(?::([0-9]{1,5}))?", text
    )
    if match:
        host, port = match.group(1), int(match.group(2) or KUBEADM_PORT)
    if not match or not 0 < port < 65536:
        raise InputError(
            f"{name}: {value!r} is not host[:port] (a DNS name or IP address, port 1-65535)"
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return check_dns_name(host, name), port
    return str(check_ip(host, name)), port


def _url(host, port):
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def kubeadm_specs(
    masters,
    nodes=(),
    api_server_fqdn="kubernetes.api",
    api_service_address="10.254.0.1",
    cluster_domain="cluster.local",
    extra_sans=(),
    control_plane_endpoint=None,
    cluster_name="kubernetes",
):
    """kubeadm's set for these hosts, checked and ready to issue.

    ``masters`` and ``nodes`` are lists of ``{name, ip}`` (a node's ip is
    optional).  Every host gets a kubelet kubeconfig (``system:node:<name>``);
    each master also gets its own apiserver, etcd server and etcd peer
    certificates, naming its host name and address.
    """
    fqdn = check_dns_name(api_server_fqdn, "api_server_fqdn")
    address = check_ip(api_service_address, "api_service_address")
    domain = check_dns_name(cluster_domain, "cluster_domain")
    extra_dns, extra_ips = split_sans(extra_sans)
    master_hosts = check_hosts(masters, "masters")
    if not master_hosts:
        raise InputError("masters: the kubeadm profile needs at least one master {name, ip}")
    node_hosts = check_hosts(nodes, "nodes", need_ip=False)
    master_ips = {ip: host for host, ip in master_hosts}
    for index, (host, ip) in enumerate(node_hosts):
        if host in dict(master_hosts):
            raise InputError(f"nodes[{index}].name: {host!r} is also listed in masters")
        if ip in master_ips:
            raise InputError(f"nodes[{index}].ip: {ip} is also the address of {master_ips[ip]!r}")
    if control_plane_endpoint in (None, ""):
        endpoint = (fqdn, KUBEADM_PORT)
    else:
        endpoint = check_endpoint(control_plane_endpoint)
    server = _url(*endpoint)
    endpoint_dns, endpoint_ips = split_sans([endpoint[0]], "control_plane_endpoint")

    def conf(cn, orgs=()):
        return KubeconfigSpec(cn, tuple(orgs), server=server, cluster_name=cluster_name)

    specs = {
        "ca": CASpec(common_name="kubernetes-ca"),
        "front-proxy-ca": CASpec(common_name="kubernetes-front-proxy-ca"),
        "etcd/ca": CASpec(common_name="etcd-ca"),
        "apiserver-kubelet-client": LeafSpec(
            "kube-apiserver-kubelet-client", (KUBEADM_ADMIN_GROUP,), ("client",)
        ),
        "front-proxy-client": LeafSpec(
            "front-proxy-client", usages=("client",), issuer="front-proxy-ca"
        ),
        "etcd/healthcheck-client": LeafSpec(
            "kube-etcd-healthcheck-client", usages=("client",), issuer="etcd/ca"
        ),
        "apiserver-etcd-client": LeafSpec(
            "kube-apiserver-etcd-client", usages=("client",), issuer="etcd/ca"
        ),
        "sa": KeyPairSpec(),
        "admin.conf": conf("kubernetes-admin", [KUBEADM_ADMIN_GROUP]),
        "super-admin.conf": conf("kubernetes-super-admin", ["system:masters"]),
        "controller-manager.conf": conf("system:kube-controller-manager"),
        "scheduler.conf": conf("system:kube-scheduler"),
    }
    service_dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    service_dns.append(f"kubernetes.default.svc.{domain}")
    loopback = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for host, ip in master_hosts:
        here = f"{KUBEADM_HOSTS_DIR}/{host}"
        dns = [host, fqdn, *endpoint_dns, *service_dns, *extra_dns]
        ips = [address, ip, *endpoint_ips, *extra_ips]
        specs[f"{here}/apiserver"] = LeafSpec(
            "kube-apiserver",
            usages=("server",),
            dns_names=tuple(dict.fromkeys(dns)),
            ip_addresses=tuple(dict.fromkeys(ips)),
        )
        for leaf, cn in (("server", "kube-etcd"), ("peer", "kube-etcd-peer")):
            specs[f"{here}/etcd/{leaf}"] = LeafSpec(
                cn,
                usages=("server", "client"),
                dns_names=(host, "localhost"),
                ip_addresses=tuple(dict.fromkeys([ip, *loopback])),
                issuer="etcd/ca",
            )
    for host, _ in master_hosts + node_hosts:
        specs[f"{KUBEADM_HOSTS_DIR}/{host}/kubelet.conf"] = conf(
            f"system:node:{host}", ["system:nodes"]
        )
    return specs


# Where each file of the set goes on a host, relative to /etc/kubernetes.
_KUBEADM_MASTER_SHARED = (
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key",
    "front-proxy-client.crt",
    "front-proxy-client.key",
    "etcd/healthcheck-client.crt",
    "etcd/healthcheck-client.key",
    "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
    "sa.key",
    "sa.pub",
)
_KUBEADM_MASTER_OWN = (
    "apiserver.crt",
    "apiserver.key",
    "etcd/server.crt",
    "etcd/server.key",
    "etcd/peer.crt",
    "etcd/peer.key",
)
_KUBEADM_CONFS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")


def kubeadm_host_files(host, master):
    """What one host receives: ``{path under /etc/kubernetes: path in the set's folder}``.

    A master gets everything kubeadm keeps on a control-plane host (the CA keys
    included); a node gets the cluster CA certificate and its own kubelet.conf,
    no key but its own.
    """
    host = check_dns_name(host, "host")
    own = f"{KUBEADM_HOSTS_DIR}/{host}"
    files = {"pki/ca.crt": "ca.crt", "kubelet.conf": f"{own}/kubelet.conf"}
    if master:
        files.update({f"pki/{rel}": rel for rel in _KUBEADM_MASTER_SHARED})
        files.update({f"pki/{rel}": f"{own}/{rel}" for rel in _KUBEADM_MASTER_OWN})
        files.update({conf: conf for conf in _KUBEADM_CONFS})
    return files


KUBEADM_HOST_FILES = tuple(
    ["pki/ca.crt", "kubelet.conf"]
    + [f"pki/{rel}" for rel in _KUBEADM_MASTER_SHARED + _KUBEADM_MASTER_OWN if rel != "ca.crt"]
    + list(_KUBEADM_CONFS)
)
_KUBEADM_NODE_FILES = ("pki/ca.crt", "kubelet.conf")
_KUBEADM_CAS = {"ca": "pki/ca.crt", "front-proxy-ca": "pki/front-proxy-ca.crt"}
_KUBEADM_CAS["etcd/ca"] = "pki/etcd/ca.crt"


def kubeadm_file_mode(rel):
    """The mode of a laid-down kubeadm file: keys and kubeconfigs 0600, the rest 0644."""
    return KEY_MODE if rel.endswith((".key", ".conf")) else CERT_MODE


def _kubeadm_issuer(rel):
    """Which CA file (relative to /etc/kubernetes) signs the laid-down file ``rel``."""
    if rel == "pki/apiserver-etcd-client.crt" or rel.startswith("pki/etcd/"):
        return _KUBEADM_CAS["etcd/ca"]
    if rel == "pki/front-proxy-client.crt":
        return _KUBEADM_CAS["front-proxy-ca"]
    return _KUBEADM_CAS["ca"]


def check_kubeadm_host(files, where="kubernetes:kubeadm_pki:files", now=None, role=None):
    """Check the kubeadm files pillar hands one host, before anything is written.

    ``files`` maps paths under /etc/kubernetes (:data:`KUBEADM_HOST_FILES`) to
    their text.  A node has ``pki/ca.crt`` and ``kubelet.conf``; a master has
    every file.  Every certificate must parse and, but for the CAs, be signed
    by its CA; every key must belong to its certificate (``sa.key`` to
    ``sa.pub``); every kubeconfig must embed a key matching its certificate,
    signed by and holding ``pki/ca.crt``; nothing may be expired or not yet
    valid.  With ``role`` ``node``, any file but those two is refused, whatever
    pillar gives (a node never holds a CA key, ``sa.key`` or a control-plane
    identity).  PEM is read strictly, exactly as the states write it
    (:func:`strict_pem` without indentation).  Returns ``{path: description}``
    (no key material); raises :class:`PKIError` listing every problem, each
    starting with ``<where>:<path>``.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not isinstance(files, dict):
        raise PKIError(
            f"{where}: missing from pillar" if files is None else f"{where}: not a mapping"
        )
    problems, report, certs = [], {}, {}
    unknown = sorted(str(k) for k in files if k not in KUBEADM_HOST_FILES)
    if unknown:
        problems.append(f"{where}: unknown file(s) {', '.join(unknown)}")
    master = any(k not in _KUBEADM_NODE_FILES for k in files if k in KUBEADM_HOST_FILES)
    if role == "node" and master:
        beyond = sorted(
            k for k in files if k in KUBEADM_HOST_FILES and k not in _KUBEADM_NODE_FILES
        )
        problems.append(
            f"{where}: the role is node, and a node must never hold {', '.join(beyond)}, "
            "whatever its pillar says"
        )
    needed = KUBEADM_HOST_FILES if master else _KUBEADM_NODE_FILES
    missing = [k for k in needed if k not in files]
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")

    def text(rel, labels=None, count=1):
        """The file's bytes; PEM (``labels``) checked strictly, exactly as written."""
        value = files[rel]
        if not isinstance(value, str):
            raise PKIError(f"{where}:{rel}: expected text, got {type(value).__name__}")
        if labels:
            strict_pem(value, labels, f"{where}:{rel}", count, indented=False)
        return value.encode("utf-8", "replace")

    def embedded(data, rel, what, labels, count=1):
        strict_pem(data, labels, f"{where}:{rel}: {what}", count, indented=False)
        return data

    def dated(cert, label):
        if days_left(cert, now) <= 0:
            problems.append(f"{where}:{label}: expired on {_iso(cert.not_valid_after_utc)}")
        elif cert.not_valid_before_utc > now:
            problems.append(f"{where}:{label}: not valid before {_iso(cert.not_valid_before_utc)}")

    for rel in (k for k in KUBEADM_HOST_FILES if k in files and k.endswith(".crt")):
        try:
            # A CA file may be a bundle (old and new CA during a rotation).
            many = None if rel in _KUBEADM_CAS.values() else 1
            certs[rel] = cert = load_cert(text(rel, CERT_LABELS, many), f"{where}:{rel}")
        except PKIError as err:
            problems.append(str(err))
            continue
        dated(cert, rel)
        report[rel] = describe_cert(cert)
    for rel in _KUBEADM_CAS.values():
        if rel in certs and not is_ca(certs[rel]):
            problems.append(f"{where}:{rel}: not a CA certificate")
    for rel, cert in certs.items():
        if rel in _KUBEADM_CAS.values():
            continue
        issuer = certs.get(_kubeadm_issuer(rel))
        if issuer is not None and not signed_by(cert, issuer):
            problems.append(f"{where}:{rel}: not signed by {_kubeadm_issuer(rel)}")
        key_rel = rel[: -len(".crt")] + ".key"
        if key_rel not in files:
            problems.append(f"{where}:{key_rel}: missing while {rel} is given")
            continue
        try:
            key = load_key(text(key_rel, PRIVATE_KEY_LABELS), f"{where}:{key_rel}", validate=False)
        except PKIError as err:
            problems.append(str(err))
            continue
        if not key_matches(cert, key) or not key_works(cert, key):
            problems.append(f"{where}:{key_rel}: does not belong to {rel}")
    if "pki/sa.key" in files or "pki/sa.pub" in files:
        try:
            key = load_key(
                text("pki/sa.key", PRIVATE_KEY_LABELS), f"{where}:pki/sa.key", validate=False
            )
            public = load_public_key(text("pki/sa.pub", PUBLIC_KEY_LABELS), f"{where}:pki/sa.pub")
            if not _same_public_key(public, key):
                problems.append(f"{where}:pki/sa.pub: does not belong to pki/sa.key")
        except (PKIError, KeyError) as err:
            problems.append(str(err) if isinstance(err, PKIError) else f"{where}: {err} missing")
    ca = certs.get(_KUBEADM_CAS["ca"])
    for rel in (k for k in KUBEADM_HOST_FILES if k in files and k.endswith(".conf")):
        try:
            conf = parse_kubeconfig(text(rel), f"{where}:{rel}")
            cert_pem = embedded(conf.cert_bytes, rel, "client-certificate-data", CERT_LABELS)
            key_pem = embedded(conf.key_bytes, rel, "client-key-data", PRIVATE_KEY_LABELS)
            ca_pem = embedded(conf.ca_bytes, rel, "certificate-authority-data", CERT_LABELS, None)
            cert = load_cert(cert_pem, f"{where}:{rel}")
            key = load_key(key_pem, f"{where}:{rel}", validate=False)
            embedded_cas = load_certs(ca_pem, f"{where}:{rel}")
        except PKIError as err:
            problems.append(str(err))
            continue
        dated(cert, rel)
        if not key_matches(cert, key) or not key_works(cert, key):
            problems.append(f"{where}:{rel}: its key does not belong to its certificate")
        if ca is not None and not signed_by(cert, ca):
            problems.append(f"{where}:{rel}: not signed by pki/ca.crt")
        if ca is not None and ca not in embedded_cas:
            problems.append(f"{where}:{rel}: does not hold pki/ca.crt as its CA")
        report[rel] = {**describe_cert(cert), "server": conf.server}
    if problems:
        raise PKIError("; ".join(problems))
    return report


# --------------------------------------------------------------------------
# A certificate set on disk
#
# A set is a dict of name -> spec, CAs first.  A CASpec or LeafSpec name is a
# pair of files, <name>.crt and <name>.key, under the cluster's folder ("etcd/ca"
# lives in a sub-folder); a KeyPairSpec name is <name>.key and <name>.pub; a
# KubeconfigSpec name is one file, the kubeconfig itself ("admin.conf").
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
    key_type: str | None = None  # of the key a "generated" item replaces, when known
    pub_bytes: bytes | None = None  # a KeyPairSpec's <name>.pub
    file_bytes: bytes | None = None  # a KubeconfigSpec's whole file
    kubeconfig: Kubeconfig | None = None
    external: bool = False  # a CA found here that k8s-helper did not create
    # Every certificate of <name>.crt when it holds more than one (a CA's trust
    # bundle during a rotation); ``cert`` is then the one ``key`` belongs to.
    bundle: list = field(default_factory=list)
    capped: str = ""  # issued to end with its CA, sooner than asked: says so

    @property
    def present(self):
        return any(
            data is not None
            for data in (self.cert_bytes, self.key_bytes, self.pub_bytes, self.file_bytes)
        )

    @property
    def cert_only(self):
        """A CA whose key is not here: what it signs is verified, never issued."""
        return self.action == "reused" and self.cert is not None and self.key is None


@dataclass
class Plan:
    directory: str
    items: dict = field(default_factory=dict)
    backup: bool = False
    specs: dict = field(default_factory=dict)
    # Files of the folder (relative paths) the new set leaves out: they remain
    # only in the backup (e.g. ca.next.crt/.key once a rotation promoted them).
    drop: set = field(default_factory=set)
    warnings: list = field(default_factory=list)  # what the operator must act on

    @property
    def changed(self):
        return bool(self.drop) or any(item.action != "reused" for item in self.items.values())


def read_file(path):
    """The bytes of ``path``, or None when there is no such file."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------
# Who may touch the store.  Everything under pki_root must belong to the
# master's user (the process's effective uid) and be writable by it alone;
# private keys (and kubeconfigs, which embed one) readable by it alone; no
# symlink anywhere.  Each folder above pki_root must belong to that user or
# root and not be writable by group/others (unless sticky, like /tmp): whoever
# can write a folder on the way can swap what lies below it.  Anything else is
# refused, naming the path, what is wrong and how to fix it.
# --------------------------------------------------------------------------


def _is_secret(rel):
    """A file of a set that holds a private key (backups included)."""
    return rel.endswith(".key") or rel.endswith(KUBECONFIG_SUFFIXES)


def _owner_fix(path):
    return f"chown {os.geteuid()} {path} (the master's user) or move it away"


def _check_entry(path, st, secret=False):
    """Refuse ``path`` (its lstat ``st``) unless the master's user alone controls it."""
    if stat.S_ISLNK(st.st_mode):
        raise SetError(
            f"{path}: is a symbolic link; k8s-helper never follows links in its store. "
            "Replace it with the real folder or file"
        )
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise SetError(f"{path}: is neither a folder nor a regular file; move it away")
    if st.st_uid != os.geteuid():
        raise SetError(
            f"{path}: owned by uid {st.st_uid}, not by the master's user "
            f"(uid {os.geteuid()}); fix: {_owner_fix(path)}"
        )
    if st.st_mode & 0o022:
        raise SetError(
            f"{path}: writable by group or others (mode {st.st_mode & 0o7777:04o}); "
            f"fix: chmod go-w {path}"
        )
    if secret and st.st_mode & 0o077:
        raise SetError(
            f"{path}: a private key readable by group or others (mode "
            f"{st.st_mode & 0o7777:04o}); fix: chmod 600 {path}, and consider the key exposed"
        )


def _check_ancestors(path):
    """Refuse a folder above ``path`` that someone else could use to swap it."""
    seen = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        folder = os.path.dirname(start)
        while True:
            if folder not in seen:
                seen.add(folder)
                try:
                    link = os.lstat(folder)
                    st = os.stat(folder)
                except FileNotFoundError:
                    st = None
                if st is not None:
                    for who in (link, st):
                        if who.st_uid not in (0, os.geteuid()):
                            raise SetError(
                                f"{folder}: above pki_root, owned by uid {who.st_uid}, neither "
                                f"root nor the master's user; fix: chown root {folder}, or "
                                "choose another k8s_helper:pki_root"
                            )
                    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                        raise SetError(
                            f"{folder}: above pki_root, writable by group or others (mode "
                            f"{st.st_mode & 0o7777:04o}), so they could swap the folders below; "
                            f"fix: chmod go-w {folder}"
                        )
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent


def _lstat(path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def check_set_folder(directory):
    """Refuse the set folder, its pki_root or a folder above them unless only we control it.

    The cheap part of :func:`check_store` (no walk of the set): for readers of
    a few files, such as the ext_pillars.  Returns whether the set folder exists.
    """
    directory = os.path.normpath(directory)
    root, tag = os.path.split(directory)
    _check_ancestors(root)
    st = _lstat(root)
    if st is None:
        return False
    _check_entry(root, st)
    if not stat.S_ISDIR(st.st_mode):
        raise SetError(f"{root}: pki_root is not a folder; move it away")
    for name in (f".{tag}.lock", f".{tag}.created"):
        path = os.path.join(root, name)
        st = _lstat(path)
        if st is not None:
            _check_entry(path, st)
    st = _lstat(directory)
    if st is None:
        return False
    _check_entry(directory, st)
    if not stat.S_ISDIR(st.st_mode):
        raise SetError(f"{directory}: is not a folder; move it away")
    return True


def read_set_file(directory, rel):
    """The bytes of ``<directory>/<rel>`` (a path inside a checked set folder), or None.

    Every folder between the set folder and the file is checked like the file
    itself (no symlink, ours alone), so a swapped ``hosts/<name>`` cannot
    redirect the read.
    """
    parts = rel.split("/")
    path = directory
    for part in parts[:-1]:
        path = os.path.join(path, part)
        st = _lstat(path)
        if st is None:
            return None
        _check_entry(path, st)
        if not stat.S_ISDIR(st.st_mode):
            raise SetError(f"{path}: is not a folder; move it away")
    return _read_store_file(os.path.join(path, parts[-1]), secret=_is_secret(parts[-1]))


def check_store(directory):
    """Refuse a set folder (``<pki_root>/<tag>``), its pki_root or anything in them not ours.

    Checks the folders above pki_root, pki_root itself, the set's lock and
    record of made CAs, and every folder and file of the set (backups too).
    A missing pki_root or set is fine: nothing to trust yet.
    """
    directory = os.path.normpath(directory)
    if not check_set_folder(directory):
        return
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            _check_entry(path, os.lstat(path), secret=name in filenames and _is_secret(name))


def _read_store_file(path, secret=False):
    """The bytes of a file of the store, or None; refused unless only we control it.

    Opened without following a symlink, and checked on the open file, so what
    is checked is what is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SetError(
                f"{path}: is a symbolic link; k8s-helper never follows links in its store. "
                "Replace it with the real file"
            ) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        _check_entry(path, os.fstat(fd), secret=secret)
        return handle.read()


def read_pair(directory, name):
    """The pair ``name`` as found in ``directory`` (parsed); SetError if it is broken."""
    item = Item(
        name,
        cert_bytes=_read_store_file(os.path.join(directory, f"{name}.crt")),
        key_bytes=_read_store_file(os.path.join(directory, f"{name}.key"), secret=True),
    )
    try:
        if item.cert_bytes is not None:
            certs = load_certs(item.cert_bytes, f"{name}.crt")
            item.cert = certs[0]
            if len(certs) > 1:
                item.bundle = certs
        if item.key_bytes is not None:
            item.key = load_key(item.key_bytes, f"{name}.key", validate=False)
    except PKIError as err:
        raise SetError(f"{directory}: {err}") from None
    if item.cert is not None and item.key is not None:
        # In a bundle the key's own certificate may be any of them (a CA
        # rotation puts it first, but a bundle made by hand need not).
        own = [cert for cert in item.bundle or [item.cert] if key_matches(cert, item.key)]
        if not own:
            what = f"any certificate of {name}.crt" if item.bundle else f"{name}.crt"
            raise SetError(f"{directory}: {name}.key does not belong to {what}")
        item.cert = own[0]
    return item


def read_keypair(directory, name):
    """The bare key pair ``name`` (``.key`` + ``.pub``); SetError if it is broken."""
    item = Item(
        name,
        key_bytes=_read_store_file(os.path.join(directory, f"{name}.key"), secret=True),
        pub_bytes=_read_store_file(os.path.join(directory, f"{name}.pub")),
    )
    public = None
    try:
        if item.key_bytes is not None:
            item.key = load_key(item.key_bytes, f"{name}.key", validate=False)
        if item.pub_bytes is not None:
            public = load_public_key(item.pub_bytes, f"{name}.pub")
    except PKIError as err:
        raise SetError(f"{directory}: {err}") from None
    if item.key is not None and public is not None and not _same_public_key(public, item.key):
        raise SetError(f"{directory}: {name}.pub does not belong to {name}.key")
    return item


def _same_public_key(public, key):
    return public_key_fingerprint(public) == public_key_fingerprint(key.public_key())


def read_kubeconfig(directory, name):
    """The kubeconfig file ``name``, its embedded certificate and key parsed."""
    item = Item(name, file_bytes=_read_store_file(os.path.join(directory, name), secret=True))
    if item.file_bytes is None:
        return item
    try:
        item.kubeconfig = parse_kubeconfig(item.file_bytes, name)
        item.cert_bytes, item.key_bytes = item.kubeconfig.cert_bytes, item.kubeconfig.key_bytes
        item.cert = load_cert(item.cert_bytes, f"{name}: client-certificate-data")
        item.key = load_key(item.key_bytes, f"{name}: client-key-data", validate=False)
    except PKIError as err:
        raise SetError(f"{directory}: {err}") from None
    if not key_matches(item.cert, item.key):
        raise SetError(f"{directory}: {name}: the embedded key does not belong to its certificate")
    return item


def read_item(directory, name, spec):
    """What is on disk for one name of a set, whatever kind of spec it is."""
    if isinstance(spec, KeyPairSpec):
        return read_keypair(directory, name)
    if isinstance(spec, KubeconfigSpec):
        return read_kubeconfig(directory, name)
    return read_pair(directory, name)


def spec_files(name, spec):
    """The files (relative paths) and modes one name of a set occupies."""
    if isinstance(spec, KeyPairSpec):
        return [(f"{name}.key", KEY_MODE), (f"{name}.pub", CERT_MODE)]
    if isinstance(spec, KubeconfigSpec):
        return [(name, KEY_MODE)]  # it embeds a private key
    return [(f"{name}.crt", CERT_MODE), (f"{name}.key", KEY_MODE)]


# Which CAs k8s-helper made itself, by certificate fingerprint, one per line
# ("<sha256> <name>"), in <pki_root>/.<cluster_tag>.created.  Only a CA listed
# there may be replaced (force_regen); any other CA found in the folder was
# brought by the user.  The file lives beside the cluster folder, not in it,
# so that the set's own files stay exactly the profile's; it only ever grows,
# and is rewritten (atomically) before the set that holds a new CA lands, so a
# crash leaves at worst a fingerprint of a CA that never landed.


def _created_path(directory):
    directory = os.path.normpath(directory)
    return os.path.join(os.path.dirname(directory), f".{os.path.basename(directory)}.created")


def created_cas(directory):
    """The fingerprints of the CAs k8s-helper created for the set at ``directory``."""
    data = _read_store_file(_created_path(directory)) or b""
    return {line.split()[0] for line in data.decode("ascii", "replace").splitlines() if line}


def _record_created(directory, cas):
    """Add ``{fingerprint: name}`` to the record of CAs made here (atomic rewrite)."""
    path = _created_path(directory)
    old = (_read_store_file(path) or b"").decode("ascii", "replace")
    lines = [line for line in old.splitlines() if line.strip()]
    lines += [f"{fp} {name}" for fp, name in cas.items()]
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    _write(tmp, ("\n".join(lines) + "\n").encode("ascii"), CERT_MODE)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _leaf_drift(item, spec, ca, renew_before_days, now):
    """Why the leaf must be issued again, or "" when it is fine as it is."""
    if item.cert is None or item.key is None:
        return "missing"
    if ca.action == "generated" or not signed_by(item.cert, ca.cert):
        return f"not signed by the current {spec.issuer}"
    if not satisfies(item.cert, spec):
        return "names or usages differ from those requested"
    return renewal_due(item.cert, renew_before_days, now, ca.cert)


def _kubeconfig_drift(item, spec, ca):
    """Why a kubeconfig whose certificate is fine must still be written again, or ""."""
    if item.kubeconfig.server != spec.server:
        return f"server is {item.kubeconfig.server!r}, not {spec.server!r}"
    try:
        embedded = load_certs(item.kubeconfig.ca_bytes)
    except PKIError:
        embedded = []
    if ca.cert not in embedded:
        return f"does not hold the current {spec.issuer} certificate"
    return ""


def _check_provided(directory, name, spec, item, ca, renew, renew_before_days, now):
    """A leaf of a CA whose key is not here: it must be present and right; never issued."""
    leaf = spec.leaf if isinstance(spec, KubeconfigSpec) else spec
    problem = _leaf_drift(item, leaf, ca, 0, now)
    if not problem and isinstance(spec, KubeconfigSpec):
        problem = _kubeconfig_drift(item, spec, ca)
    if not problem and name in renew:
        problem = "renewal requested"
    if problem:
        what = name if isinstance(spec, KubeconfigSpec) else f"{name}.crt"
        raise SetError(
            f"{directory}: {what}: {problem}; {spec.issuer}.key is not here (a CA k8s-helper "
            f"did not create), so {what} must be provided, signed by {spec.issuer}"
        )
    if days_left(item.cert, now) < renew_before_days:
        item.reason = f"expires within {renew_before_days} days; renew it with {spec.issuer}"


def _plan_keypair(item, name, renew):
    if item.key is None:
        item.action, item.reason = "generated", "missing"
        item.key_bytes = item.pub_bytes = None
    elif name in renew:
        item.action, item.reason = "generated", "renewal requested"
        item.key = item.key_bytes = item.pub_bytes = None
    elif item.pub_bytes is None:
        item.action, item.reason = "reissued", f"{name}.pub missing"
    return item


# The leaf whose key (in the seed layout, without sa.key) signs the tokens.
TOKEN_KEY_LEAF = "server"  # noqa: S105 - a pair name, not a secret


def token_signing_leaf(directory, specs):
    """The leaf whose key also signs the cluster's service-account tokens, or None.

    In the seed layout kube-apiserver signs (and verifies) tokens with
    ``server.key`` unless the set has a key pair of its own (``sa.key``): a new
    ``server.key`` then invalidates every token in the cluster.
    """
    if TOKEN_KEY_LEAF not in specs or not isinstance(specs[TOKEN_KEY_LEAF], LeafSpec):
        return None
    if "sa" in specs or os.path.exists(os.path.join(directory, "sa.key")):
        return None
    return TOKEN_KEY_LEAF


def token_key_warning(name):
    return (
        f"{name}.key is new and it also signs the cluster's service-account tokens (the set "
        "has no sa.key): every token signed with the old key is refused once kube-apiserver "
        "runs with the new one; reissue them (delete the service-account token Secrets, "
        "restart the pods that use tokens; see docs/lifecycle.md)"
    )


def plan_set(
    directory,
    specs,
    *,
    force_regen=False,
    renew=(),
    keep_keys=False,
    rotate_token_key=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
    cas=None,
):
    """Decide, without writing anything, which pairs to keep and which to issue.

    A complete, valid set is kept as it is.  A leaf is (re)issued when it is
    missing, when it no longer says what its spec asks (SANs, names, usages),
    when it is not signed by its CA, when it expires within
    ``renew_before_days``, or when it is named in ``renew`` (then with its old
    key if ``keep_keys``).  A CA is only made where it and every leaf it signs
    are absent, or with ``force_regen``: an existing CA is never replaced
    otherwise, and a set whose CA cannot be used is an error.  ``renew`` may
    only name leaves of the set.  Whenever an existing pair is replaced, the
    plan asks for a backup of the folder first.

    ``cas`` maps CA names to items the caller has already decided (a CA
    rotation: a trust bundle rewritten, or the next CA put in place); the
    leaves are then judged against those.

    The key that signs service-account tokens (:func:`token_signing_leaf`) is
    kept whenever its leaf is issued again, unless ``rotate_token_key``; a new
    one in an existing set adds a warning to the plan.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for name in renew:
        if name not in specs:
            raise InputError(f"renew: {name!r} is not a certificate of this set")
        if isinstance(specs[name], CASpec):
            raise InputError(f"renew: {name!r} is a CA; renewal never replaces a CA")
    found = {name: read_item(directory, name, spec) for name, spec in specs.items()}
    plan = Plan(directory, specs=specs)
    created = created_cas(directory)
    if force_regen:
        for name, spec in specs.items():
            cert = found[name].cert
            if isinstance(spec, CASpec) and cert is not None and fingerprint(cert) not in created:
                raise SetError(
                    f"{directory}: force_regen would replace {name}.crt, a CA that k8s-helper "
                    "did not create; it never overwrites such a CA. Move the folder (or that "
                    "CA) away yourself to start a new set"
                )
    if force_regen or not any(item.present for item in found.values()):
        plan.backup = force_regen and any(item.present for item in found.values())
        reason = "force_regen" if plan.backup else "new set"
        plan.items = {name: Item(name, action="generated", reason=reason) for name in specs}
        if force_regen:  # a new start ends any CA rotation: its new CA goes to the backup only
            rotation = (f"{NEXT_CA}.crt", f"{NEXT_CA}.key")
            plan.drop |= {f for f in rotation if os.path.exists(os.path.join(directory, f))}
        return plan

    token_leaf = token_signing_leaf(directory, specs)
    for name, spec in specs.items():
        item = found[name]
        if isinstance(spec, CASpec) and cas and name in cas:
            plan.items[name] = cas[name]
            plan.backup = plan.backup or cas[name].action != "reused"
            continue
        if isinstance(spec, CASpec):
            signs = [n for n, s in specs.items() if getattr(s, "issuer", None) == name]
            if not item.present and not any(found[n].present for n in signs):
                plan.items[name] = Item(name, action="generated", reason="missing")
                continue
            ours = item.cert is not None and fingerprint(item.cert) in created
            if item.cert is None or (item.key is None and ours):
                missing = f"{name}.crt" if item.cert is None else f"{name}.key"
                raise SetError(
                    f"{directory}: {missing} is missing, so {name} cannot issue certificates; "
                    "restore it, or start a new set with force_regen=True"
                )
            if not is_ca(item.cert):
                raise SetError(f"{directory}: {name}.crt is not a CA certificate")
            item.external = not ours
            plan.items[name] = item
            continue
        if isinstance(spec, KeyPairSpec):
            plan.items[name] = _plan_keypair(item, name, renew)
            continue
        ca = plan.items[spec.issuer]
        if ca.cert_only:
            _check_provided(directory, name, spec, item, ca, renew, renew_before_days, now)
            plan.items[name] = item
            continue
        leaf = spec.leaf if isinstance(spec, KubeconfigSpec) else spec
        reason = _leaf_drift(item, leaf, ca, renew_before_days, now)
        if not reason and isinstance(spec, KubeconfigSpec):
            reason = _kubeconfig_drift(item, spec, ca)
        if not reason and name in renew:
            reason = "renewal requested"
        if reason and ca.action == "reused" and days_left(ca.cert, now) <= 0:
            raise SetError(
                f"{directory}: {spec.issuer}.crt expired on {_iso(ca.cert.not_valid_after_utc)}, "
                f"so {name} ({reason}) cannot be issued from it; make a new set with "
                "force_regen=True"
            )
        if reason:
            reuse_key = keep_keys and item.key is not None and reason != "missing"
            if name == token_leaf:
                reuse_key = item.key is not None and not rotate_token_key
                if not reuse_key:
                    plan.warnings.append(token_key_warning(name))
            item.action = "reissued" if reuse_key else "generated"
            plan.backup = plan.backup or item.present
            if not reuse_key:
                item.key_type = key_type_of(item.key) if item.key is not None else None
                item.key = item.key_bytes = None
            item.reason = reason
        plan.items[name] = item
    return plan


def _fill(plan, specs, key_type, ca_days, leaf_days, now):
    """Make the keys and certificates the plan asks for (CAs come first in ``specs``)."""
    for name, spec in specs.items():
        item = plan.items[name]
        if item.action in ("reused", *CA_FILE_ACTIONS):
            continue
        if item.action == "generated":
            item.key = new_key(key_type or item.key_type or DEFAULT_KEY_TYPE)
            item.key_checked = True
            item.key_bytes = key_pem(item.key)
        if isinstance(spec, KeyPairSpec):
            item.pub_bytes = public_pem(item.key)
            continue
        if isinstance(spec, CASpec):
            item.cert = build_ca(item.key, spec.common_name, ca_days, spec.organizations, now)
        else:
            ca = plan.items[spec.issuer]
            if not ca.key_checked:  # read from disk with the quick parse: check before signing
                ca.key, ca.key_checked = load_key(ca.key_bytes, f"{ca.name}.key"), True
            leaf = spec.leaf if isinstance(spec, KubeconfigSpec) else spec
            item.cert = issue_leaf(leaf, item.key, ca.cert, ca.key, leaf_days, now=now)
            _, requested = capped_end(ca.cert, leaf_days, now)
            if requested is not None:
                item.capped = (
                    f"valid until {spec.issuer}.crt ends ({_iso(item.cert.not_valid_after_utc)}), "
                    f"not until {_iso(requested)} ({leaf_days} days asked): a certificate "
                    "cannot outlive its CA"
                )
        item.cert_bytes = cert_pem(item.cert)
        if isinstance(spec, KubeconfigSpec):
            ca_pem = plan.items[spec.issuer].cert_bytes
            item.file_bytes = render_kubeconfig(spec, ca_pem, item.cert_bytes, item.key_bytes)


def _outputs(item, spec):
    """(relative path, bytes, mode, kept) for each file of ``item``; kept = linked as it is."""
    kept = item.action == "reused"
    key_kept = item.action in ("reused", "reissued", "rebundled")
    if isinstance(spec, KubeconfigSpec):
        rows = [(item.name, item.file_bytes, KEY_MODE, kept)]
    elif isinstance(spec, KeyPairSpec):
        rows = [
            (f"{item.name}.key", item.key_bytes, KEY_MODE, key_kept),
            (f"{item.name}.pub", item.pub_bytes, CERT_MODE, kept),
        ]
    else:
        rows = [
            (f"{item.name}.crt", item.cert_bytes, CERT_MODE, kept),
            (f"{item.name}.key", item.key_bytes, KEY_MODE, key_kept),
        ]
    # A CA whose key was never here (an external CA) has no key file to carry along.
    return [row for row in rows if row[1] is not None]


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


def _make_root(pki_root):
    """Create pki_root (0700) and its missing ancestors (0755), whatever the umask.

    The folders made here belong to the master's user (the process's); then
    the whole way down is checked, for folders that were already there.
    """
    pki_root = os.path.abspath(pki_root)
    missing = []
    folder = pki_root
    while _lstat(folder) is None:
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        mode = DIR_MODE if folder == pki_root else ANCESTOR_MODE
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            os.mkdir(folder, mode)
            os.chmod(folder, mode)  # mkdir's mode went through the umask
    _check_ancestors(pki_root)
    st = os.lstat(pki_root)
    _check_entry(pki_root, st)
    if not stat.S_ISDIR(st.st_mode):
        raise SetError(f"{pki_root}: pki_root is not a folder; move it away")


def _is_ours(st):
    """A scratch folder a writer of ours made: a real folder, the master's user's, 0700."""
    return (
        stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o7777 == DIR_MODE
    )


def _clear_scratch(path):
    """Remove a scratch folder a killed writer left; refuse one that is not ours."""
    st = _lstat(path)
    if st is None:
        return
    if not _is_ours(st):
        raise SetError(
            f"{path}: left in pki_root, but not a scratch folder k8s-helper made (a real "
            f"folder of the master's user, mode 0700); look at it and remove it yourself"
        )
    shutil.rmtree(path)  # does not follow symlinks inside


@contextlib.contextmanager
def locked(pki_root, cluster_tag):
    """Serialise writers of one cluster's set, and clear what a killed writer left."""
    _make_root(pki_root)
    target = os.path.join(pki_root, cluster_tag)
    check_store(target)
    lock = os.path.join(pki_root, f".{cluster_tag}.lock")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(lock, flags, KEY_MODE)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SetError(f"{lock}: is a symbolic link; remove it") from None
        raise
    try:
        _check_entry(lock, os.fstat(fd))
        fcntl.flock(fd, fcntl.LOCK_EX)
        staging, old = _scratch(pki_root, cluster_tag)
        st = _lstat(old)
        if st is not None and _is_ours(st) and _lstat(target) is None:
            os.rename(old, target)  # a writer died between the fallback's two renames
        _clear_scratch(staging)
        _clear_scratch(old)
        with contextlib.suppress(FileNotFoundError):  # a record of made CAs half written
            os.unlink(_created_path(target) + ".tmp")
        check_store(target)  # what a killed writer left is ours too
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
    """Create the sub-folders a set file lives in (``hosts/m1/etcd/peer.crt``), each 0700.

    (os.makedirs gives only the last folder the mode; the ones above it would
    get the umask's.)
    """
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        _parent(parent)
        os.mkdir(parent, DIR_MODE)


def _link(src, dst):
    _parent(dst)
    os.link(src, dst, follow_symlinks=False)


def _copy(src, dst, secret):
    """A real copy of ``src`` (never through a symlink) at ``dst``.

    A key gets 0600; any other file at most 0644, never more open than ``src``.
    """
    _parent(dst)
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        mode = KEY_MODE if secret else stat.S_IMODE(os.fstat(fd).st_mode) & CERT_MODE
        _write(dst, handle.read(), mode)


# A backup's folder name: when it was made (UTC), "-<n>" for a second one in
# the same microsecond.  Anything else in backup/ is left alone.
_BACKUP_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z(?:-(\d+))?$")


def backups(directory):
    """The backup folders of a set (names under ``backup/``), oldest first."""
    try:
        names = os.listdir(os.path.join(directory, BACKUP_DIR))
    except FileNotFoundError:
        return []
    found = [
        (name.split("-")[0], int(m.group(1) or 0), name)
        for name in names
        if (m := _BACKUP_RE.match(name))
    ]
    return [name for *_, name in sorted(found)]


def _stage(plan, staging, now, keep=DEFAULT_BACKUP_KEEP):
    """Build the complete new cluster folder at ``staging``; returns the backup's path.

    Of the earlier backups, only the newest are carried along, so that the
    set holds at most ``keep`` of them, the new one included.
    """
    os.mkdir(staging, DIR_MODE)
    os.chmod(staging, DIR_MODE)
    target = plan.directory
    earlier = backups(target)
    keep_earlier = set(earlier[max(len(earlier) - (keep - 1 if plan.backup else keep), 0) :])
    backup_dir = os.path.join(target, BACKUP_DIR)
    if os.path.isdir(backup_dir):
        # Earlier backups travel along as hard links (they are copies already,
        # shared with no live file); those beyond ``keep`` are left behind.
        def dropped(folder, names):
            return [
                n
                for n in names
                if folder == backup_dir and _BACKUP_RE.match(n) and n not in keep_earlier
            ]

        shutil.copytree(
            backup_dir,
            os.path.join(staging, BACKUP_DIR),
            symlinks=True,
            copy_function=_link,
            ignore=dropped,
        )
    backup, written = None, []
    if plan.backup:
        backup = os.path.join(BACKUP_DIR, now.strftime("%Y%m%dT%H%M%S.%fZ"))
        taken = os.path.join(staging, backup)
        for n in range(1, 1000):  # two writes at the same instant (a caller's fixed now=)
            if not os.path.exists(taken):
                break
            taken = os.path.join(staging, f"{backup}-{n}")
        backup = os.path.relpath(taken, staging)
        # Real copies, not links: a later edit of a live file must not reach
        # its backup, and a backup key is 0600 whatever the live file's mode.
        for rel in _files(target):
            path = os.path.join(staging, backup, rel)
            _copy(os.path.join(target, rel), path, _is_secret(rel))
            written.append(path)
    planned = set()
    for item in plan.items.values():
        for rel, data, mode, kept in _outputs(item, plan.specs.get(item.name)):
            planned.add(rel)
            path = os.path.join(staging, rel)
            if kept:
                _link(os.path.join(target, rel), path)
            else:
                _parent(path)
                _write(path, data, mode)
                written.append(path)
    if os.path.isdir(target):  # files the set does not name (yet) are the user's: keep them
        for rel in _files(target):
            if rel not in planned and rel not in plan.drop:
                _link(os.path.join(target, rel), os.path.join(staging, rel))
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
    rotate_token_key=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
    backup_keep=DEFAULT_BACKUP_KEEP,
):
    """Make sure ``<pki_root>/<cluster_tag>`` holds a complete, valid set.

    Returns ``(plan, backup_path_or_None)``.  Nothing on disk changes unless the
    plan changes something; when it does, the whole folder is replaced in one
    rename, so a reader (or a crash) sees the old set or the new one, never a mix.
    Whenever an existing pair is replaced (``force_regen``, ``renew`` or drift),
    the previous files are kept under ``backup/<timestamp>/``, and only the
    newest ``backup_keep`` backups stay.  With ``key_type=None`` each new key
    is of the same type as the key it replaces.  A store someone else could
    have changed is refused (:func:`check_store`) before anything is read.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    decide = dict(renew_before_days=renew_before_days, now=now)
    check_store(directory)
    if not force_regen and not renew and os.path.isdir(directory):
        # Fast path, no lock: a valid set is left alone without writing anything.
        try:
            plan = plan_set(directory, specs, **decide)
            if not plan.changed:
                return plan, None
        except SetError:
            # Perhaps a writer mid-swap: decide again under the lock.  Where no
            # writer ever took the lock there is none; refuse, creating nothing.
            if _lstat(os.path.join(pki_root, f".{cluster_tag}.lock")) is None:
                raise
    with locked(pki_root, cluster_tag):
        plan = plan_set(
            directory,
            specs,
            force_regen=force_regen,
            renew=renew,
            keep_keys=keep_keys,
            rotate_token_key=rotate_token_key,
            **decide,
        )
        if not plan.changed:
            return plan, None
        backup = write_plan(
            pki_root, cluster_tag, plan, key_type, ca_days, leaf_days, now, backup_keep
        )
        return plan, backup


def write_plan(
    pki_root, cluster_tag, plan, key_type, ca_days, leaf_days, now, keep=DEFAULT_BACKUP_KEEP
):
    """Make what ``plan`` asks for and swap the new folder in; returns the backup's path.

    The one writer of a set: :func:`ensure_set` and the CA rotation both end
    here.  The caller holds :func:`locked` and made ``plan`` under it.  On any
    failure (a full disk included) the staging folder is removed again.
    """
    specs = plan.specs
    _fill(plan, specs, key_type, ca_days, leaf_days, now)
    made = {
        fingerprint(plan.items[name].cert): name
        for name, spec in specs.items()
        if isinstance(spec, CASpec) and plan.items[name].action == "generated"
    }
    if made:
        _record_created(plan.directory, made)
    staging, old = _scratch(pki_root, cluster_tag)
    try:
        backup = _stage(plan, staging, now, keep)
        _commit(staging, old, plan.directory)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return backup


def prune_backups(pki_root, cluster_tag, keep=DEFAULT_BACKUP_KEEP):
    """Remove all but the newest ``keep`` backups of a set; returns the removed folders' paths.

    Each old backup folder is removed under the set's lock; the live files are
    not touched.
    """
    directory = os.path.join(pki_root, cluster_tag)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(
            f"{directory}: no certificate set for cluster {cluster_tag!r}; nothing to prune"
        )
    removed = []
    with locked(pki_root, cluster_tag):
        names = backups(directory)
        for name in names[: max(len(names) - keep, 0)]:
            path = os.path.join(directory, BACKUP_DIR, name)
            shutil.rmtree(path)
            removed.append(path)
        if removed:
            _fsync_dir(os.path.join(directory, BACKUP_DIR))
    return removed


def describe_plan(plan, backup=None):
    """The runner's return value: paths, fingerprints, subjects, dates; no key material."""
    files = {}
    for item in plan.items.values():
        spec = plan.specs.get(item.name)
        if isinstance(spec, (KeyPairSpec, KubeconfigSpec)):
            files.update(_describe_other(plan.directory, item, spec))
            continue
        cert_path = os.path.join(plan.directory, f"{item.name}.crt")
        key_path = os.path.join(plan.directory, f"{item.name}.key")
        files[f"{item.name}.crt"] = {
            "path": cert_path,
            "action": item.action,
            **describe_cert(item.cert),
        }
        if item.external:
            files[f"{item.name}.crt"]["external"] = True
        if item.bundle:
            # The file is a trust bundle: every CA it holds, the key's own first.
            files[f"{item.name}.crt"]["bundle"] = [fingerprint(cert) for cert in item.bundle]
        if item.key is not None:
            files[f"{item.name}.key"] = {
                "path": key_path,
                "action": "reused" if item.action in ("reissued", "rebundled") else item.action,
                "public_key_sha256": public_key_fingerprint(item.key.public_key()),
            }
        if item.reason:
            files[f"{item.name}.crt"]["reason"] = item.reason
        if item.capped:
            files[f"{item.name}.crt"]["capped"] = item.capped
    described = {
        "directory": plan.directory,
        "changed": plan.changed,
        "backup": backup,
        "files": files,
    }
    if plan.drop:  # files the new folder left out (kept in the backup)
        described["removed"] = sorted(plan.drop)
    if plan.warnings:
        described["warnings"] = list(plan.warnings)
    return described


def _describe_other(directory, item, spec):
    """describe_plan's entries for a bare key pair or a kubeconfig."""
    public = public_key_fingerprint(item.key.public_key())
    if isinstance(spec, KeyPairSpec):
        entries = {
            f"{item.name}.key": {
                "path": os.path.join(directory, f"{item.name}.key"),
                "action": "reused" if item.action == "reissued" else item.action,
                "public_key_sha256": public,
            },
            f"{item.name}.pub": {
                "path": os.path.join(directory, f"{item.name}.pub"),
                "action": "generated" if item.action == "reissued" else item.action,
                "public_key_sha256": public,
            },
        }
        first = f"{item.name}.key"
    else:
        entries = {
            item.name: {
                "path": os.path.join(directory, item.name),
                "action": item.action,
                "server": spec.server,
                **describe_cert(item.cert),
                "public_key_sha256": public,
            }
        }
        first = item.name
    if item.reason:
        entries[first]["reason"] = item.reason
    if item.capped:
        entries[first]["capped"] = item.capped
    return entries


# --------------------------------------------------------------------------
# Lifecycle: when a certificate is due, expiry reports, renewal
# --------------------------------------------------------------------------


def renewal_window_days(cert, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS):
    """How many days before its end a certificate is due for renewal.

    ``renew_before_days``, except for a certificate that does not live longer
    than that: it is due once the last third of its lifetime has begun
    (cert-manager's rule).  Otherwise a certificate issued for, say, 30 days
    would be due the moment it is made, and every run would issue it again.
    """
    lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400
    # Whole days: a certificate issued for 90 days lives 90 days and the few
    # minutes it is back-dated, and is still not "longer" than a 90-day window.
    return renew_before_days if renew_before_days < math.floor(lifetime) else lifetime / 3


def renewal_due(cert, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS, now=None, ca_cert=None):
    """Why the certificate must be renewed now ("expired", "expires in ..."), or "".

    A leaf that already ends with its CA (``ca_cert``) is not due before it
    expires: a new one could not last a moment longer (see :func:`issue_leaf`),
    and reissuing it on every run would only churn keys.
    """
    left = days_left(cert, now)
    if left <= 0:
        return "expired"
    if ca_cert is not None and cert.not_valid_after_utc >= ca_cert.not_valid_after_utc:
        return ""
    window = renewal_window_days(cert, renew_before_days)
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


def spec_from_cert(cert, issuer="ca"):
    """The LeafSpec an existing leaf satisfies: what a renewal must say again."""
    dns, ips = cert_sans(cert)
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return LeafSpec(
        common_name=cns[0] if cns else "",
        organizations=tuple(orgs),
        usages=cert_usages(cert),
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        issuer=issuer,
    )


def leaf_names(specs):
    return [name for name, spec in specs.items() if isinstance(spec, LeafSpec)]


def check_renew_names(value, specs, name="certs"):
    """The leaves ``value`` names (a list or comma-separated string); all leaves when empty.

    ``server`` and ``server.crt`` both name the pair ``server``.  A CA or a name
    the set does not have is refused.
    """
    leaves = leaf_names(specs)
    if value is None or value == "" or value == []:
        return tuple(leaves)
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f"{name}: {value!r} is not a list of certificate names")
    chosen = []
    for entry in value:
        text = str(entry).strip()
        base = text[: -len(".crt")] if text.endswith(".crt") else text
        if base in specs and isinstance(specs[base], CASpec):
            raise InputError(
                f"{name}: {text!r} is a CA; renew never touches a CA (a new CA means a new set: "
                "generate_certs force_regen=True)"
            )
        if base not in leaves:
            raise InputError(
                f"{name}: {text!r} is not a certificate of this set; choose from "
                f"{', '.join(leaves)}"
            )
        if base not in chosen:
            chosen.append(base)
    return tuple(chosen)


def renew_set(
    pki_root,
    cluster_tag,
    specs,
    certs=None,
    *,
    keep_keys=False,
    rotate_token_key=False,
    key_type=None,
    leaf_days=DEFAULT_LEAF_DAYS,
    due_within=None,
    now=None,
    backup_keep=DEFAULT_BACKUP_KEEP,
):
    """Issue the named leaves (all leaves by default) again from the set's own CA.

    Each renewed leaf says exactly what the one it replaces says (subject, SANs,
    usages): a renewal changes dates, serial and (unless ``keep_keys``) the key,
    nothing else.  ``specs`` gives the set's members (which are CAs, which CA
    signs each leaf); their names are taken from the certificates on disk.
    Leaves not named are kept, unless they are already unusable (expired or not
    signed by their CA) - those are reissued too, and the return says why.  The
    previous files are kept under ``backup/``.  A CA is never touched; a missing
    leaf is an error (renewal has nothing to copy its names from).

    With ``due_within`` (days), only those of the named leaves that are due
    (:func:`renewal_due`) are renewed: running it twice renews once.

    The key that signs service-account tokens (``server.key`` without ``sa.key``)
    is kept unless ``rotate_token_key``; the plan's warnings then say that the
    tokens must be reissued.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    names = check_renew_names(certs, specs)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(
            f"{directory}: no certificate set for cluster {cluster_tag!r}; run generate_certs first"
        )
    token_leaf = token_signing_leaf(directory, specs)
    if rotate_token_key and token_leaf is None:
        raise InputError(
            "rotate_token_key: this set signs service-account tokens with sa.key, which renew "
            "never replaces; leave rotate_token_key out"
        )
    if rotate_token_key and token_leaf not in names:
        raise InputError(f"rotate_token_key: only with {token_leaf} among certs")
    derived, due, ca_certs = {}, {}, {}
    for name, spec in specs.items():
        if isinstance(spec, CASpec):
            derived[name] = spec
            ca_certs[name] = read_pair(directory, name).cert
            continue
        item = read_pair(directory, name)
        if item.cert is None:
            raise SetError(
                f"{directory}: {name}.crt is missing, so there is nothing to renew; "
                "generate_certs issues it (with the cluster's names)"
            )
        derived[name] = spec_from_cert(item.cert, spec.issuer)
        kept_type = key_type_of(item.key) if item.key is not None else None
        keeps_token_key = name == token_leaf and name in names and not rotate_token_key
        if keeps_token_key and key_type is not None and kept_type not in (None, key_type):
            raise InputError(
                f"key_type: {name}.key is kept (it signs service-account tokens), so it "
                f"stays {kept_type}; add rotate_token_key=True for a new {key_type} key "
                "(every token must then be reissued)"
            )
        if due_within is not None and name in names:
            due[name] = renewal_due(item.cert, due_within, now, ca_certs.get(spec.issuer))
            if not due[name]:
                names = tuple(n for n in names if n != name)
    plan, backup = ensure_set(
        pki_root,
        cluster_tag,
        derived,
        key_type=key_type,
        leaf_days=leaf_days,
        renew=names,
        keep_keys=keep_keys,
        rotate_token_key=rotate_token_key,
        renew_before_days=0,
        now=now,
        backup_keep=backup_keep,
    )
    for name, reason in due.items():  # say why it was due, not just "requested"
        if reason and plan.items[name].reason == "renewal requested":
            plan.items[name].reason = reason
    return plan, backup


# --------------------------------------------------------------------------
# CA rotation: a new CA beside the old one, trusted everywhere, then in use
#
# The cluster folder says where a rotation stands; nothing else is recorded:
#
#   idle      ca.crt holds one CA, the one ca.key belongs to
#   prepared  + ca.next.crt / ca.next.key: the new CA, not handed out yet
#   trusted   ca.crt = current CA + new CA (the key still the current one's)
#   reissued  ca.crt = new CA + the old one(s), ca.key the new CA's key, the
#             leaves signed by the new CA, no ca.next.* any more
#
# and back to idle (ca.crt = the new CA alone) when the rotation finishes.
# In every state the first certificate of ca.crt is the one ca.key belongs to:
# the CA that signs, so generate_certs and renew keep working in between.
# --------------------------------------------------------------------------

NEXT_CA = "ca.next"
ROTATION_STAGES = ("prepare", "trust", "reissue", "finish", "abort")
ROTATION_STATES = ("idle", "prepared", "trusted", "reissued")
#: the stage that moves a rotation on from each state
NEXT_STAGE = {"idle": "prepare", "prepared": "trust", "trusted": "reissue", "reissued": "finish"}
_STAGE_REACHES = {"prepare": "prepared", "trust": "trusted", "reissue": "reissued"}


def check_rotation_stage(value, allowed=ROTATION_STAGES):
    stage = value.strip().lower() if isinstance(value, str) else value
    if stage not in allowed:
        raise InputError(f"stage: {value!r} is not one of {', '.join(allowed)}")
    return stage


@dataclass
class Rotation:
    """Where a cluster's CA rotation stands, as read from its folder."""

    directory: str
    state: str
    ca: Item  # the signing CA: ``cert`` is ca.key's certificate, ``bundle`` all of ca.crt
    next: Item | None  # ca.next.crt/.key when there
    old: list  # the CA certificates of ca.crt other than the signing one
    leaves: dict  # leaf name -> Item

    def signer(self, cert):
        """Which CA of the rotation signed ``cert``: "current", "old", "next" or ""."""
        if signed_by(cert, self.ca.cert):
            return "current"
        if any(signed_by(cert, ca) for ca in self.old):
            return "old"
        if self.next is not None and signed_by(cert, self.next.cert):
            return "next"
        return ""


def _next_ca_name(cert):
    """The new CA's common name: the current one's with a generation number
    (kubernetes-ca -> kubernetes-ca-2 -> kubernetes-ca-3), so the two CAs of a
    bundle are told apart at a glance."""
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    name = cns[0] if cns else "kubernetes-ca"
    match = re.match(r"^(.*)-(\d+)$", name)
    base, generation = (match.group(1), int(match.group(2))) if match else (name, 1)
    return f"{base}-{generation + 1}"[:64]


def read_rotation(directory, specs):
    """Read a seed set's CA, its next CA and its leaves; :class:`SetError` if unusable."""
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(f"{directory}: no certificate set here; run generate_certs first")
    others = [n for n, sp in specs.items() if isinstance(sp, CASpec) and n != "ca"]
    if others or os.path.exists(os.path.join(directory, "front-proxy-ca.crt")):
        raise SetError(
            f"{directory}: CA rotation handles the seed set's single CA (ca.crt); this set "
            "has more CAs (the kubeadm profile), which rotate_ca does not rotate"
        )
    ca = read_pair(directory, "ca")
    if ca.cert is None or ca.key is None:
        missing = "ca.crt" if ca.cert is None else "ca.key"
        raise SetError(f"{directory}: {missing} is missing; there is no CA to rotate")
    if fingerprint(ca.cert) not in created_cas(directory):
        raise SetError(
            f"{directory}: ca.crt is a CA k8s-helper did not create; rotate it with whatever "
            "made it (rotate_ca only replaces a CA it made itself)"
        )
    nxt = read_pair(directory, NEXT_CA)
    if not nxt.present:
        nxt = None
    elif nxt.cert is None or nxt.key is None:
        missing = f"{NEXT_CA}.crt" if nxt.cert is None else f"{NEXT_CA}.key"
        raise SetError(
            f"{directory}: {missing} is missing while the other half of the new CA is there; "
            "restore it from backup/, or remove both and run stage=prepare again"
        )
    elif nxt.bundle or not is_ca(nxt.cert):
        raise SetError(f"{directory}: {NEXT_CA}.crt must hold exactly one CA certificate")
    old = [cert for cert in ca.bundle if cert != ca.cert]
    leaves = {}
    for name, spec in specs.items():
        if isinstance(spec, CASpec):
            continue
        leaves[name] = read_pair(directory, name)
        if leaves[name].cert is None:
            raise SetError(
                f"{directory}: {name}.crt is missing; generate_certs issues it before a rotation"
            )
    if nxt is None:
        state = "reissued" if old else "idle"
    elif not old:
        state = "prepared"
    elif nxt.cert in old:
        state = "trusted"
    else:
        raise SetError(
            f"{directory}: ca.crt holds several CAs, but not {NEXT_CA}.crt: this is no state a "
            "rotation leaves; restore the folder from backup/"
        )
    return Rotation(directory, state, ca, nxt, old, leaves)


def rotation_status(rotation, now=None):
    """A plain dict about a rotation: state, CAs, who signed each leaf, what comes next."""
    now = now or datetime.datetime.now(datetime.timezone.utc)

    def ca_info(cert):
        return {**describe_cert(cert), "days_left": int(days_left(cert, now))}

    leaves = {}
    for name, item in rotation.leaves.items():
        signer = rotation.signer(item.cert)
        leaves[f"{name}.crt"] = {
            "sha256": fingerprint(item.cert),
            "issuer": item.cert.issuer.rfc4514_string(),
            "signed_by": f"{signer} CA" if signer else "no CA of this set",
        }
    explain = {
        "idle": "no rotation in progress; stage=prepare starts one",
        "prepared": "the new CA is made (ca.next.crt) and handed out to no host yet; "
        "stage=trust puts it into ca.crt beside the current one",
        "trusted": "ca.crt trusts the current and the new CA; roll it out to every host, "
        "then stage=reissue signs the leaves with the new CA",
        "reissued": "the new CA signs; ca.crt still trusts the old one too. Once every host "
        "runs with the reissued certificates, stage=finish drops the old CA",
    }[rotation.state]
    return {
        "directory": rotation.directory,
        "state": rotation.state,
        "next_stage": NEXT_STAGE[rotation.state] if rotation.state != "idle" else None,
        "explain": explain,
        "signing_ca": ca_info(rotation.ca.cert),
        "trusted_cas": [ca_info(cert) for cert in rotation.ca.bundle or [rotation.ca.cert]],
        "next_ca": ca_info(rotation.next.cert) if rotation.next else None,
        "leaves": leaves,
    }


def _rotation_specs(rotation, specs, with_next):
    """The set's members as they stand (leaves as their certificates say), for planning."""
    out = {"ca": specs["ca"]}
    if with_next:  # kept as it is: its spec is never used to issue anything
        out[NEXT_CA] = spec_from_ca(rotation.next.cert)
    for name, spec in specs.items():
        if not isinstance(spec, CASpec):
            out[name] = spec_from_cert(rotation.leaves[name].cert, spec.issuer)
    return out


class RotationRefused(PKIError):
    """A stage asked for out of order; the message says which stage comes first."""


def rotate_ca(
    pki_root,
    cluster_tag,
    specs,
    stage,
    *,
    key_type=None,
    ca_days=DEFAULT_CA_DAYS,
    leaf_days=DEFAULT_LEAF_DAYS,
    keep_keys=True,
    now=None,
    backup_keep=DEFAULT_BACKUP_KEEP,
):
    """Move the CA rotation of a seed set on by one stage (see the comment above).

    ``prepare``: make the new CA as ca.next.crt/.key.  ``trust``: ca.crt
    becomes current + new.  ``reissue``: the new CA takes ca.key, ca.crt
    becomes new + old, every leaf is issued again from the new CA (with its
    own key unless ``keep_keys=False``).  ``finish``: ca.crt holds the new CA
    alone.  ``abort`` (before reissue): back to the current CA alone, the new
    one dropped.  A stage already done changes nothing; one asked for too early
    raises :class:`RotationRefused` saying what must come first.  Every write
    goes through :func:`write_plan` under the cluster's lock, after a backup.

    Returns ``(before, after, plan_or_None, backup)``: the state names before
    and after, the plan written (None when nothing changed), the backup path.
    """
    stage = check_rotation_stage(stage)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    read_rotation(directory, specs)  # a missing or unusable set: refused, nothing created
    with locked(pki_root, cluster_tag):
        rot = read_rotation(directory, specs)
        before = rot.state
        order = ROTATION_STATES.index(before)
        plan = None
        if stage in _STAGE_REACHES and order >= ROTATION_STATES.index(_STAGE_REACHES[stage]):
            return before, before, None, None  # done already
        if stage == "prepare":
            plan = _plan_prepare(rot, specs, now)
        elif stage == "trust":
            if before == "idle":
                raise RotationRefused(
                    "stage=trust: there is no new CA yet; run stage=prepare first"
                )
            plan = _plan_trust(rot, specs, now)
        elif stage == "reissue":
            if before == "idle":
                raise RotationRefused(
                    "stage=reissue: no rotation in progress; start with stage=prepare"
                )
            if before != "trusted":
                raise RotationRefused(
                    "stage=reissue: the new CA is not in ca.crt yet, so hosts would refuse "
                    "certificates it signs; run stage=trust and roll ca.crt out to every host first"
                )
            plan = _plan_reissue(rot, specs, keep_keys, now)
        elif stage == "finish":
            if before == "idle":
                return before, before, None, None  # nothing to finish: done already
            if before != "reissued":
                raise RotationRefused(
                    f"stage=finish: the rotation is only {before}; the leaves are still signed "
                    "by the current CA, so dropping it would break every host. Next: "
                    f"stage={NEXT_STAGE[before]}"
                )
            stale = [
                f"{n}.crt" for n, item in rot.leaves.items() if rot.signer(item.cert) != "current"
            ]
            if stale:
                raise RotationRefused(
                    f"stage=finish: {', '.join(stale)} not signed by the new CA yet; run "
                    "stage=reissue (and roll the result out) before dropping the old CA"
                )
            plan = _plan_finish(rot, specs, now)
        else:  # abort
            if before == "idle":
                return before, before, None, None
            if before == "reissued":
                raise RotationRefused(
                    "stage=abort: the leaves are already signed by the new CA; a rotation can "
                    "only be abandoned before stage=reissue (finish it instead)"
                )
            plan = _plan_abort(rot, specs, now)
        # key_type is the new CA's (prepare); new leaf keys keep their own types.
        new_ca_key = (key_type or key_type_of(rot.ca.key)) if stage == "prepare" else None
        backup = write_plan(
            pki_root, cluster_tag, plan, new_ca_key, ca_days, leaf_days, now, backup_keep
        )
        after = read_rotation(directory, specs).state
        return before, after, plan, backup


def _rotation_ca_item(cert, key_item, bundle, action, reason):
    """The "ca" pair as a stage leaves it: ``cert`` signs (``key_item`` holds its
    key), ca.crt = ``cert`` followed by the other CAs of ``bundle``."""
    certs = [cert, *(other for other in bundle if other != cert)]
    return Item(
        "ca",
        cert=cert,
        key=key_item.key,
        cert_bytes=b"".join(cert_pem(c) for c in certs),
        key_bytes=key_item.key_bytes,
        action=action,
        reason=reason,
        bundle=certs if len(certs) > 1 else [],
    )


def spec_from_ca(cert):
    """The CASpec an existing CA certificate satisfies (its names)."""
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return CASpec(common_name=cns[0] if cns else "", organizations=tuple(orgs))


def _plan_prepare(rot, specs, now):
    members = _rotation_specs(rot, specs, with_next=False)
    current = spec_from_ca(rot.ca.cert)
    ca_spec = CASpec(_next_ca_name(rot.ca.cert), current.organizations)
    members = {"ca": members.pop("ca"), NEXT_CA: ca_spec, **members}
    plan = plan_set(rot.directory, members, renew_before_days=0, now=now)
    plan.items[NEXT_CA].reason = "the new CA of a rotation (not handed out yet)"
    return plan


def _plan_trust(rot, specs, now):
    ca = _rotation_ca_item(
        rot.ca.cert,
        rot.ca,
        [rot.ca.cert, rot.next.cert],
        "rebundled",
        "trust bundle: the current CA, then the new one",
    )
    members = _rotation_specs(rot, specs, with_next=True)
    return plan_set(rot.directory, members, renew_before_days=0, now=now, cas={"ca": ca})


def _plan_reissue(rot, specs, keep_keys, now):
    ca = _rotation_ca_item(
        rot.next.cert,
        rot.next,
        [rot.next.cert, *rot.ca.bundle],
        "rotated",
        "the new CA signs from now on; ca.crt still trusts the old one",
    )
    ca.key_checked = False
    members = _rotation_specs(rot, specs, with_next=False)
    plan = plan_set(
        rot.directory,
        members,
        keep_keys=keep_keys,
        rotate_token_key=not keep_keys,  # keep_keys=False asks for new keys, this one too
        renew_before_days=0,
        now=now,
        cas={"ca": ca},
    )
    for item in plan.items.values():
        if item.name != "ca" and item.action != "reused":
            kept = "same key" if item.action == "reissued" else "new key"
            item.reason = f"signed by the old CA; issued again by the new one ({kept})"
    plan.drop |= {f"{NEXT_CA}.crt", f"{NEXT_CA}.key"}
    plan.backup = True
    return plan


def _plan_finish(rot, specs, now):
    dropped = ", ".join(fingerprint(cert) for cert in rot.old)
    ca = _rotation_ca_item(
        rot.ca.cert,
        rot.ca,
        [rot.ca.cert],
        "rebundled",
        f"old CA dropped from ca.crt: sha256 {dropped}",
    )
    members = _rotation_specs(rot, specs, with_next=False)
    return plan_set(rot.directory, members, renew_before_days=0, now=now, cas={"ca": ca})


def _plan_abort(rot, specs, now):
    members = _rotation_specs(rot, specs, with_next=False)
    cas = None
    if rot.old:
        ca = _rotation_ca_item(
            rot.ca.cert,
            rot.ca,
            [rot.ca.cert],
            "rebundled",
            "rotation abandoned: the new CA left ca.crt",
        )
        cas = {"ca": ca}
    plan = plan_set(rot.directory, members, renew_before_days=0, now=now, cas=cas)
    plan.drop |= {f"{NEXT_CA}.crt", f"{NEXT_CA}.key"}
    plan.backup = True
    return plan


# Files an expiry report reads: PEM certificates (one or a bundle) and
# kubeconfigs with embedded certificates.  Keys and anything else are skipped.
PEM_SUFFIXES = (".crt", ".cert", ".pem")
KUBECONFIG_SUFFIXES = (".conf", ".kubeconfig")
STATUSES = ("ok", "renew-soon", "expired", "unreadable")


def _kubeconfig_certs(data, what):
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError:
        raise PKIError(f"{what}: not a YAML kubeconfig") from None
    if not isinstance(config, dict):
        raise PKIError(f"{what}: not a kubeconfig")
    found = []
    for section, entry, field_name in (
        ("clusters", "cluster", "certificate-authority-data"),
        ("users", "user", "client-certificate-data"),
    ):
        for named in config.get(section) or []:
            body = (named or {}).get(entry) or {}
            if not body.get(field_name):
                continue
            label = f"{entry} {named.get('name', '?')}"
            try:
                pem = base64.b64decode(body[field_name], validate=True)
            except ValueError:
                raise PKIError(f"{what}: {label}: {field_name} is not base64") from None
            for index, cert in enumerate(load_certs(pem, f"{what} ({label})")):
                found.append((label if index == 0 else f"{label} #{index + 1}", cert))
    return found


def certificates_in_file(path, what=None):
    """Every certificate a file holds, as ``(label, cert)``; raises PKIError if unreadable.

    A PEM file gives one certificate (label "") or a bundle ("#1", "#2", ...);
    a kubeconfig gives the certificates embedded in it ("cluster <name>",
    "user <name>").
    """
    what = what or path
    with open(path, "rb") as handle:
        data = handle.read()
    if path.endswith(KUBECONFIG_SUFFIXES):
        return _kubeconfig_certs(data, what)
    certs = load_certs(data, what)
    if len(certs) == 1:
        return [("", certs[0])]
    return [(f"#{index + 1}", cert) for index, cert in enumerate(certs)]


def expiry_status(cert, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS, now=None):
    """ "ok", "renew-soon" or "expired" (the same window generate_certs renews in)."""
    due = renewal_due(cert, renew_before_days, now)
    if due == "expired":
        return "expired"
    return "renew-soon" if due else "ok"


def expiry_report(directory, specs=None, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS, now=None):
    """Every certificate under a cluster's folder (backups left out), with its expiry status.

    Returns a plain dict: ``certificates`` (one entry per certificate: name,
    file, kind, subject, issuer, serial, sha256, not_before, not_after,
    days_left, status, renew_window_days, renew_from; ``member`` when the file is a
    pair of ``specs``), and
    ``summary`` (a count per status).  A file that cannot be read is an entry
    with status ``unreadable`` and the reason.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(f"{directory}: no certificate set here")
    members = {f"{name}.crt": name for name in specs or ()}
    entries, parsed = [], []
    for rel in sorted(_files(directory)):
        if os.path.basename(rel).startswith(".") or not rel.endswith(
            PEM_SUFFIXES + KUBECONFIG_SUFFIXES
        ):
            continue
        path = os.path.join(directory, rel)
        base = {"name": rel, "file": rel, "path": path}
        if rel in members:
            base["member"] = members[rel]
        try:
            found = certificates_in_file(path, rel)
        except (PKIError, OSError) as err:
            reason = str(err) if isinstance(err, PKIError) else f"{rel}: {err.strerror}"
            entries.append({**base, "status": "unreadable", "error": reason})
            continue
        if not found:
            entries.append({**base, "status": "unreadable", "error": f"{rel}: no certificate"})
        for label, cert in found:
            info = describe_cert(cert)
            # the window applied to this one (shorter for a short-lived one)
            window = renewal_window_days(cert, renew_before_days)
            entries.append(
                {
                    **base,
                    "name": f"{rel} {label}" if label else rel,
                    "kind": "ca" if is_ca(cert) else "leaf",
                    "subject": info["subject"],
                    "issuer": info["issuer"],
                    "serial": info["serial"],
                    "sha256": info["sha256"],
                    "not_before": info["not_before"],
                    "not_after": info["not_after"],
                    "days_left": int(days_left(cert, now)),  # whole days, toward zero
                    "status": expiry_status(cert, renew_before_days, now),
                    "renew_window_days": round(window, 1),
                    # when it enters that window (what the HTML report draws)
                    "renew_from": _iso(cert.not_valid_after_utc - datetime.timedelta(days=window)),
                }
            )
            parsed.append((entries[-1], cert))
    if not entries:
        raise SetError(f"{directory}: no certificate found")
    notices = _outliving_leaves(parsed)
    summary = {status: 0 for status in STATUSES}
    for entry in entries:
        summary[entry["status"]] += 1
    return {
        "directory": directory,
        "checked_at": _iso(now),
        "renew_before_days": renew_before_days,
        "certificates": entries,
        "summary": summary,
        **({"notices": notices} if notices else {}),
    }


def _outliving_leaves(parsed):
    """Flag each leaf that ends after the CA that signed it, and that CA.

    From the CA's end on every client refuses the leaf, whatever its own date
    says (an external CA of short life, or a set older than the capping in
    :func:`issue_leaf`).  Adds a ``notice`` to those entries; returns the notices.
    """
    cas = [(entry, cert) for entry, cert in parsed if entry["kind"] == "ca"]
    notices, short_cas = [], {}
    for entry, cert in parsed:
        if entry["kind"] != "leaf":
            continue
        for ca_entry, ca_cert in cas:
            # the dates first: one signature check only where it matters
            if cert.not_valid_after_utc > ca_cert.not_valid_after_utc and signed_by(cert, ca_cert):
                entry["notice"] = (
                    f"outlives its CA ({ca_entry['name']}): refused from "
                    f"{ca_entry['not_after']} on, not {entry['not_after']}"
                )
                notices.append(f"{entry['name']}: {entry['notice']}")
                short_cas.setdefault(id(ca_entry), (ca_entry, []))[1].append(entry["name"])
                break
    for ca_entry, leaves in short_cas.values():
        ca_entry["notice"] = f"ends before leaves it signs: {', '.join(leaves)}"
        notices.append(f"{ca_entry['name']}: {ca_entry['notice']}")
    return notices


def expiry_alert(report):
    """What an expiry event carries, or None when every certificate is fine.

    ``renew`` lists the set's leaves (pair names, ready for ``renew certs=``)
    that are due or expired; ``cas`` the CA files that are, which renewal
    cannot help; ``certificates`` every entry that is not ``ok``.
    """
    bad = [entry for entry in report["certificates"] if entry["status"] != "ok"]
    if not bad:
        return None
    renew = [e["member"] for e in bad if e.get("kind") == "leaf" and "member" in e]
    return {
        "directory": report["directory"],
        "renew_before_days": report["renew_before_days"],
        "renew": list(dict.fromkeys(renew)),
        "cas": [e["name"] for e in bad if e.get("kind") == "ca"],
        "certificates": [
            {
                key: entry[key]
                for key in ("name", "status", "days_left", "not_after", "subject", "error")
                if key in entry
            }
            for entry in bad
        ],
    }


# --------------------------------------------------------------------------
# What pillar hands a minion (checked by the minion before anything is written)
# --------------------------------------------------------------------------

#: The CA certificate(s) every minion gets.
#: pillar key under kubernetes:certs -> file of the set on the master
PILLAR_FILES = {
    "ca.crt": "ca.crt",
    "kubecfg.crt": "kubecfg.crt",
    "kubecfg.key": "kubecfg.key",
    "server.cert": "server.crt",
    "server.key": "server.key",
}
#: pillar keys only masters receive (nodes never get the apiserver's pair)
MASTERS_ONLY = ("server.cert", "server.key")
#: the optional service-account key pair -> pillar kubernetes:service_account (masters only)
SERVICE_ACCOUNT_FILES = ("sa.key", "sa.pub")
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


CERT_LABELS = ("CERTIFICATE",)
# Spelt out piecewise: this module sits in every minion's cache, which the
# tests search for a key's PEM header.
PRIVATE_KEY_LABELS = tuple(" ".join((*kind, "PRIVATE", "KEY")) for kind in ((), ("RSA",), ("EC",)))
PUBLIC_KEY_LABELS = ("PUBLIC KEY",)
_PEM_BEGIN_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_BASE64_LINE_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_PEM_KINDS = {
    CERT_LABELS: "certificate",
    PRIVATE_KEY_LABELS: "private key",
    PUBLIC_KEY_LABELS: "public key",
}


def strict_pem(text, labels, where, count=None, indented=True):
    """Check that ``text`` is PEM and nothing else: complete blocks of ``labels``.

    Only whitespace may come between blocks: text before, after or between
    them (a pasted comment, a shell error, a foreign certificate glued on with
    junk), a block of another type (a key where a certificate belongs), a
    block without its END line, or a line inside a block that is not base64
    is refused.  ``count`` is the number of blocks wanted (None: one or more).
    ``indented`` tolerates whitespace around every line and blank lines, as
    the seed's ``indent()`` pillar produces (the states write the text
    stripped, :func:`normalize_pem`); without it, only trailing whitespace is
    tolerated (what is checked is what gets written).  Raises
    :class:`PKIError` naming ``where`` and a line number, never quoting the
    text (it may be a key).  Returns the number of blocks.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    wanted = " or ".join(labels)
    what = f"{where}: not a PEM {_PEM_KINDS.get(labels, 'file')}"
    blocks, label, start = 0, None, 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip() if indented else raw.rstrip(" \t\r")
        if label is None:
            if not line:
                continue
            begin = _PEM_BEGIN_RE.fullmatch(line)
            if not begin:
                raise PKIError(f"{what}: line {number}: text outside a PEM block")
            if begin.group(1) not in labels:
                # Named in lower case: no output may carry a key's PEM header.
                found = begin.group(1).lower()
                raise PKIError(f"{what}: line {number}: a {found} block, not {wanted.lower()}")
            label, start, body = begin.group(1), number, 0
        elif line == f"-----END {label}-----":
            if not body:
                raise PKIError(f"{what}: the {label} block of line {start} is empty")
            blocks, label = blocks + 1, None
        elif _BASE64_LINE_RE.fullmatch(line):
            body += 1
        elif not line and indented:
            continue
        else:
            raise PKIError(
                f"{what}: line {number}: not base64 inside the {label} block of line {start}"
            )
    if label is not None:
        raise PKIError(
            f"{what}: the {label} block of line {start} is not terminated "
            f"(no -----END {label}----- line)"
        )
    if not blocks:
        raise PKIError(f"{what}: no {wanted} block")
    if count is not None and blocks != count:
        raise PKIError(f"{where}: holds {blocks} PEM blocks, expected {count}")
    return blocks


def _pem_text(value, where, labels, count=None):
    """Pillar PEM text, checked strictly, as the states write it (lines stripped)."""
    if not isinstance(value, str):
        raise PKIError(f"{where}: expected PEM text, got {type(value).__name__}")
    strict_pem(value, labels, where, count)
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
        cas = load_certs(
            _pem_text(certs[DIST_CA], f"{where}:{DIST_CA}", CERT_LABELS), f"{where}:{DIST_CA}"
        )
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
            cert_data = _pem_text(certs[cert_name], f"{where}:{cert_name}", CERT_LABELS)
            found = load_certs(cert_data, f"{where}:{cert_name}")
            if len(found) != 1:
                raise PKIError(
                    f"{where}:{cert_name}: holds {len(found)} certificates, expected one"
                )
            cert = found[0]
            key = load_key(
                _pem_text(certs[key_name], f"{where}:{key_name}", PRIVATE_KEY_LABELS, 1),
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


_PEM_MARKER_RE = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]+)-----")


def bundle_problem(bundle):
    """Why the system trust bundle (bytes) would not load, or None when it loads.

    Every ``BEGIN`` must be closed by its ``END`` before the next block starts,
    and every block must be a certificate that parses: one bad block and
    OpenSSL, Python's ssl and Go refuse the whole file.  Text between blocks
    (RedHat's comments) is fine.  The reason names block numbers, not text.
    """
    open_at, blocks = None, 0
    for marker in _PEM_MARKER_RE.finditer(bundle):
        kind, label = marker.group(1), marker.group(2).decode()
        if kind == b"BEGIN":
            if open_at is not None:
                return f"block {blocks + 1} is not terminated before the next one starts"
            open_at = marker
            continue
        if open_at is None or open_at.group(2) != marker.group(2):
            return f"an END {label} line without its BEGIN after block {blocks}"
        blocks += 1
        if label != "CERTIFICATE":
            return f"block {blocks} is a {label}, not a CERTIFICATE"
        try:
            with warnings.catch_warnings():  # a system CA's odd serial is not our concern
                warnings.simplefilter("ignore")
                x509.load_pem_x509_certificate(bundle[open_at.start() : marker.end()])
        except ValueError:
            return f"block {blocks} is not a certificate that parses"
        open_at = None
    if open_at is not None:
        return f"block {blocks + 1} is not terminated (no END line)"
    if not blocks:
        return "it holds no certificate"
    return None


def symlinked(paths):
    """``[(path, target)]`` for each of ``paths`` that is a symbolic link.

    The states refuse to write through one: a link planted at a destination
    would send a key (or the trust anchor) wherever it points.
    """
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            if os.path.islink(path):
                found.append((path, os.readlink(path)))
    return found


#: what a role must never hold, whatever its pillar says: a node gets the CA,
#: and the seed's kubecfg pair (its kubelet and kube-proxy use it), but never
#: the apiserver's key nor the key that signs service-account tokens.
ROLE_FORBIDDEN = {"node": ("server.key", "sa.key")}


def role_forbidden(role, held):
    """Which of ``held`` (pillar keys / file names) the ``role`` must not hold."""
    return [name for name in ROLE_FORBIDDEN.get(role, ()) if name in held]


# --------------------------------------------------------------------------
# Cross-host verification: what minions hold, compared with the master's set
# --------------------------------------------------------------------------

#: key pillar key -> the certificate pillar key it belongs to
KEY_PAIRS = {"kubecfg.key": "kubecfg.crt", "server.key": "server.cert"}
#: statuses of verify_host that are not a problem
VERIFY_OK = ("match", "absent")


def bundle_pattern(cert):
    """A regex finding ``cert`` in a PEM bundle, whatever its line breaks."""
    body = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return r"\s*".join(re.escape(char) for char in body)


def verify_reference(directory, now=None):
    """What the master's set says, per pillar key: fingerprints, dates, public keys.

    Nothing here is secret: fingerprints of certificates, SHA-256 of files and
    of public keys.  ``ca_patterns`` are regexes a minion can search its trust
    bundle for (one per CA certificate of ``ca.crt``).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(f"{directory}: no certificate set here; run generate_certs first")
    ref = {}
    for pillar_key, filename in PILLAR_FILES.items():
        path = os.path.join(directory, filename)
        data = read_file(path)
        if data is None:
            raise SetError(f"{path}: missing on the master; run generate_certs")
        entry = {"path": path, "file_sha256": hashlib.sha256(data).hexdigest()}
        if pillar_key in KEY_PAIRS:
            key = load_key(data, path)
            entry["public_key"] = public_key_fingerprint(key.public_key())
        else:
            certs = load_certs(data, path)
            entry["fingerprints"] = [fingerprint(cert) for cert in certs]
            entry["public_key"] = public_key_fingerprint(certs[0].public_key())
            if pillar_key == "ca.crt":
                entry["patterns"] = [bundle_pattern(cert) for cert in certs]
        ref[pillar_key] = entry
    return ref


def _observed_certs(info):
    try:
        data = base64.b64decode(info.get("base64") or "", validate=False)
        return load_certs(data, info["path"]), ""
    except (PKIError, ValueError) as err:
        return None, str(err) if isinstance(err, PKIError) else "not base64"


def _short_fp(fp):
    return fp[:23] + "..." if fp else "?"


def _check_cert(info, ref, now):
    certs, error = _observed_certs(info)
    if certs is None:
        return "unreadable", error, {}
    seen = [fingerprint(cert) for cert in certs]
    extra = {"minion_sha256": seen, "master_sha256": ref["fingerprints"]}
    same = seen == ref["fingerprints"]
    compare = (
        ""
        if same
        else f"minion sha256 {', '.join(seen)}; master sha256 {', '.join(ref['fingerprints'])}"
    )
    if not same and (len(seen) > 1 or len(ref["fingerprints"]) > 1):
        # A CA bundle (a rotation under way): say what is missing or left over.
        lacks = [fp for fp in ref["fingerprints"] if fp not in seen]
        extra_cas = [fp for fp in seen if fp not in ref["fingerprints"]]
        parts = [f"lacks {_short_fp(fp)}" for fp in lacks]
        parts += [
            f"still holds {_short_fp(fp)}, which the master's no longer does" for fp in extra_cas
        ]
        if not parts:
            parts = ["the same certificates in another order"]
        compare = f"{'; '.join(parts)} ({compare})"
    dead = [cert for cert in certs if days_left(cert, now) <= 0]
    if dead:
        when = _iso(dead[0].not_valid_after_utc)
        detail = f"expired on {when}"
        if compare:
            detail += f"; differs from the master's: {compare}"
        return "expired", detail, extra
    if not same:
        return "differs", compare, extra
    return "match", f"sha256 {_short_fp(seen[0])}", extra


_ANSWER_FIELDS = {  # field -> (allowed types, required)
    "pillar": ((str,), False),
    "k8s_env": ((str, type(None)), False),
    "given": ((list,), False),
    "files": ((dict,), False),
    "link": ((dict, type(None)), False),
    "bundle": ((dict, type(None)), False),
    "role": ((str, type(None)), False),
    "service_account": ((dict, type(None)), False),
}
_FILE_FIELDS = {
    "path": ((str,), True),
    "pillar": ((str,), True),
    "exists": ((bool,), True),
    "masters_only": ((bool, type(None)), False),
    "sha256": ((str, type(None)), False),
    "base64": ((str, type(None)), False),
    "public_key": ((str,), False),
    "public_key_error": ((str,), False),
}
_LINK_FIELDS = {
    "path": ((str,), True),
    "expected": ((str,), False),
    "is_link": ((bool,), False),
    "exists": ((bool,), False),
    "target": ((str, type(None)), False),
}
_BUNDLE_FIELDS = {"path": ((str,), True), "exists": ((bool,), False), "holds": ((list,), False)}
_SA_FIELDS = {"path": ((str,), True), "exists": ((bool,), True), "given": ((list,), False)}


def _shape_problem(value, fields, where):
    if not isinstance(value, dict):
        return f"{where}: expected a mapping, got {type(value).__name__}"
    for name, (types, required) in fields.items():
        if name not in value:
            if required:
                return f"{where}.{name}: missing"
            continue
        if not isinstance(value[name], types):
            return f"{where}.{name}: unexpected {type(value[name]).__name__}"
    return None


def probe_answer_problem(observed):
    """What is malformed in one minion's answer to verify's probe, or None.

    A minion answers whatever it likes (a broken or hostile one too): its
    answer must have the probe's shape before anything is compared, so that
    one bad answer is reported for that host and the others are still checked.
    """
    problem = _shape_problem(observed, _ANSWER_FIELDS, "answer")
    if problem:
        return problem
    if not all(isinstance(key, str) for key in observed.get("given") or ()):
        return "answer.given: not a list of pillar keys"
    parts = [
        (info, _FILE_FIELDS, f"answer.files.{ident}")
        for ident, info in (observed.get("files") or {}).items()
    ]
    for section, fields in (
        ("link", _LINK_FIELDS),
        ("bundle", _BUNDLE_FIELDS),
        ("service_account", _SA_FIELDS),
    ):
        if observed.get(section) is not None:
            parts.append((observed[section], fields, f"answer.{section}"))
    return next((p for p in (_shape_problem(*part) for part in parts) if p), None)


def _role_checks(observed, add):
    """Flag what the host's role must never hold, whatever its pillar gives (issue 15)."""
    role = observed.get("role")
    if role not in ROLE_FORBIDDEN:
        return set()
    sa = observed.get("service_account") or {}
    given = set(observed.get("given") or ()) | set(sa.get("given") or ())
    wrong = role_forbidden(role, given)
    if wrong:
        add(
            "role",
            observed.get("pillar", "kubernetes:certs"),
            "forbidden",
            f"kubernetes:role is {role}, yet its pillar gives {', '.join(wrong)}, which a "
            f"{role} must never hold; take it out of this minion's pillar "
            "(docs/certs-states.md), then apply kubernetes.certs.present",
        )
    held = {
        info.get("pillar") for info in (observed.get("files") or {}).values() if info.get("exists")
    }
    if sa.get("exists"):
        held.add("sa.key")
    on_disk = set(role_forbidden(role, held))
    if "sa.key" in on_disk:
        add(
            "sa.key",
            sa.get("path"),
            "forbidden",
            f"a {role} must never hold sa.key (kubernetes:role is {role}); remove it",
        )
    return on_disk


def verify_host(observed, reference, now=None):
    """Compare what one minion reported with the master's reference.

    ``observed`` is what the runner's probe returned for the minion: its pillar
    keys (``given``), every file the formula lays down (``files``: id -> path,
    pillar key, exists, sha256, the base64 of certificates, the public key of
    keys whose file differs), the trust link and the bundle.  Returns a list of
    checks ``{id, path, status, detail}``; statuses: ``match``, ``absent`` (not
    expected, not there), ``differs``, ``missing``, ``expired``,
    ``key does not match cert``, ``unreadable``, ``unexpected`` (there, though
    this minion's pillar does not give it), ``no pillar``, ``forbidden`` (a key
    the minion's ``role`` must never hold, :data:`ROLE_FORBIDDEN`, given by its
    pillar or on its disk).  ``observed`` must have passed
    :func:`probe_answer_problem`.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    given = set(observed.get("given") or ())
    files = observed.get("files") or {}
    checks = []
    cert_public = {}  # pillar key -> public key fingerprint of the minion's certificate

    def add(ident, path, status, detail, **extra):
        checks.append({"id": ident, "path": path, "status": status, "detail": detail, **extra})

    if not given:
        add(
            "pillar",
            observed.get("pillar", "kubernetes:certs"),
            "no pillar",
            "this minion's pillar gives no certificates (not part of the cluster, "
            "or its pillar is stale: saltutil.refresh_pillar)",
        )
    forbidden = _role_checks(observed, add)

    # Certificates first: the keys are judged against them.
    ordered = sorted(files.items(), key=lambda kv: (kv[1].get("pillar") in KEY_PAIRS, kv[0]))
    for ident, info in ordered:
        pillar_key, path = info.get("pillar"), info.get("path")
        ref = reference.get(pillar_key)
        if pillar_key in forbidden and info.get("exists"):
            role = observed.get("role")
            add(
                ident,
                path,
                "forbidden",
                f"a {role} must never hold {pillar_key} (kubernetes:role is {role}), "
                "whatever its pillar says; remove it",
            )
            continue
        # The states lay a file down where pillar gives it, and all but the
        # masters-only ones (the apiserver's pair) on every minion; a map that
        # does not say (masters_only None) goes by pillar alone.
        expected = pillar_key in given or info.get("masters_only") is False
        if not info.get("exists"):
            if expected:
                add(ident, path, "missing", f"expected: this minion's pillar gives {pillar_key}")
            else:
                add(ident, path, "absent", f"not expected: no {pillar_key} in this minion's pillar")
            continue
        if not expected:
            add(
                ident,
                path,
                "unexpected",
                f"present although this minion's pillar does not give {pillar_key}",
            )
            continue
        if ref is None:
            add(ident, path, "unexpected", f"{pillar_key}: not a file of the set")
            continue
        if pillar_key not in KEY_PAIRS:
            status, detail, extra = _check_cert(info, ref, now)
            if status != "unreadable":
                certs, _ = _observed_certs(info)
                cert_public.setdefault(pillar_key, public_key_fingerprint(certs[0].public_key()))
            add(ident, path, status, detail, **extra)
            continue
        # A private key: never read from the minion; its file hash, or the
        # public key the minion derives from it, is enough.
        if info.get("sha256") == ref["file_sha256"]:
            public = ref["public_key"]
        elif info.get("public_key"):
            try:
                loaded = serialization.load_pem_public_key(info["public_key"].encode())
                public = public_key_fingerprint(loaded)
            except ValueError:
                add(ident, path, "unreadable", "the minion's public key did not parse")
                continue
        else:
            reason = info.get("public_key_error") or "the minion could not read it"
            add(ident, path, "unreadable", f"not a usable private key ({reason})")
            continue
        same = public == ref["public_key"]
        paired = cert_public.get(KEY_PAIRS[pillar_key])
        if paired is not None and paired != public:
            add(
                ident,
                path,
                "key does not match cert",
                f"public key sha256 {_short_fp(public)} is not that of "
                f"{KEY_PAIRS[pillar_key]} ({_short_fp(paired)})",
            )
        elif same:
            add(ident, path, "match", f"public key sha256 {_short_fp(public)}")
        else:
            add(
                ident,
                path,
                "differs",
                f"minion public key sha256 {public}; master public key sha256 {ref['public_key']}",
            )

    link = observed.get("link")
    if link:
        path, target, want = link.get("path"), link.get("target"), link.get("expected")
        if link.get("is_link"):
            if target == want:
                add("trust-link", path, "match", f"-> {want}")
            else:
                add("trust-link", path, "differs", f"points to {target}, expected {want}")
        elif link.get("exists"):
            add("trust-link", path, "differs", f"not a symlink (expected a link to {want})")
        else:
            add("trust-link", path, "missing", f"expected a symlink to {want}")

    bundle = observed.get("bundle")
    if bundle:
        path = bundle.get("path")
        holds = bundle.get("holds") or []
        fps = reference.get("ca.crt", {}).get("fingerprints", [])
        if not bundle.get("exists"):
            add("trust-bundle", path, "missing", "the system trust bundle is not there")
        elif holds and all(holds):
            add("trust-bundle", path, "match", "holds the cluster CA")
        else:
            lacking = [fp for fp, held in zip(fps, holds, strict=False) if not held] or fps
            add(
                "trust-bundle",
                path,
                "differs",
                f"does not hold the cluster CA sha256 {', '.join(lacking)} "
                "(trust store not refreshed?)",
            )
    return checks


def verify_summary(hosts):
    """Counts per status (paths) and per outcome (minions), and one line saying it."""
    paths, outcome = {}, {"consistent": 0, "with problems": 0, "not answering": 0}
    for info in hosts.values():
        if info["status"] == "no answer":
            outcome["not answering"] += 1
            continue
        bad = info["status"] != "ok"
        outcome["with problems" if bad else "consistent"] += 1
        for check in info.get("checks", ()):
            paths[check["status"]] = paths.get(check["status"], 0) + 1
    problems = sorted(name for name, info in hosts.items() if info["status"] != "ok")
    line = (
        f"{len(hosts)} minion(s): {outcome['consistent']} consistent, "
        f"{outcome['with problems']} with problems, {outcome['not answering']} not answering"
    )
    if paths:
        line += "; paths: " + ", ".join(f"{n} {s}" for s, n in sorted(paths.items()))
    if problems:
        line += "; check " + ", ".join(problems)
    return {"minions": outcome, "paths": paths, "problems": problems}, line
