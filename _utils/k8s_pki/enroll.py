"""Enrollment: a host makes its own key and sends a CSR; the master signs under the set's policy.

The identity a certificate carries (CN, O, SANs, usages, validity, the CA that
signs it) comes from two things only: the set's record (``cluster.yaml``: its
profile and hosts) and the minion id Salt authenticated.  The CSR contributes
its public key and nothing else: its subject, SANs and extensions are never
read, so a CSR asking for ``CN=system:node:<other>``, ``O=system:masters`` or
``CA:TRUE`` gets the requester's own identity or a refusal.

The master keeps a copy of every certificate it signs (never a key: it never
sees one) under ``<set>/enrolled/<minion>/<member>.crt``, where
``check_expiration`` finds it, and marks each public key it certified under
``<set>/enrolled/keys/``: a CSR whose key was already certified for another
host or member (a replayed CSR) is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .crypto import (
    cert_pem,
    fingerprint,
    iso_utc,
    issue_leaf,
    key_matches,
    key_pem,
    load_cert,
    load_certs,
    load_key,
    renewal_due,
    signed_by,
)
from .defaults import CERT_MODE, KEY_MODE
from .errors import PKIError, SetError
from .files import make_parents
from .guard import check_entry, check_set_folder, lstat_or_none, read_set_file, read_store_file
from .kinds import CERTIFICATE
from .manifest import host_role, manifest_path, parse_manifest, specs_for
from .pem import strict_pem
from .profiles import (
    CLUSTER,
    DIST_CA,
    KUBEADM,
    KUBEADM_ENROLLED_FILES,
    KUBEADM_HOSTS_DIR,
    PER_MASTER,
    host_enrolls,
    kubelet_serving_spec,
)
from .record import file_identity
from .signer import LOCAL, check_backend
from .specs import LeafSpec
from .store import Item
from .writer import hold_lock

ENROLLED_DIR = "enrolled"

#: the public keys certified so far, one file each (named by the key's SHA-256)
ENROLLED_KEYS_DIR = f"{ENROLLED_DIR}/keys"

#: what every host of a set may enroll: its kubelet's client and serving identities
HOST_MEMBERS = ("kubelet-client", "kubelet-serving")

#: what a master may enroll besides: its own serving/etcd certificates and the
#: client certificates kubeadm shares between masters (each master gets its own key)
#: (read off the kubeadm table: its certificates that masters hold, per master or shared)
MASTER_OWN_MEMBERS = tuple(
    m.path for m in KUBEADM if host_enrolls(m) and m.kind is CERTIFICATE and m.scope == PER_MASTER
)
MASTER_SHARED_MEMBERS = tuple(
    m.path for m in KUBEADM if host_enrolls(m) and m.kind is CERTIFICATE and m.scope == CLUSTER
)
MASTER_MEMBERS = HOST_MEMBERS + MASTER_OWN_MEMBERS + MASTER_SHARED_MEMBERS

#: what every host of a seed set enrolls: its kubelet's identities and kube-proxy's
#: (``system:kube-proxy``, the user Kubernetes' ``system:node-proxier`` role is bound to;
#: a seed cluster runs kube-proxy on the host, kubeadm as a DaemonSet), each with a key
#: made on the host, in place of the admin ``kubecfg`` pair the pillar way hands them
SEED_HOST_MEMBERS = HOST_MEMBERS + ("kube-proxy",)

#: and a master of a seed set, its own apiserver serving certificate (the seed's
#: ``server``, naming the master too); ``kubecfg`` stays an admin credential that
#: only masters receive, through pillar
SEED_MASTER_MEMBERS = SEED_HOST_MEMBERS + ("apiserver",)

#: the files of kubeadm's layout (relative to /etc/kubernetes) a host of an enrolled
#: cluster enrolls instead of receiving them through pillar: its kubelet's identity
#: (kubelet.conf embeds a key) and, on masters, the pairs of MASTER_*_MEMBERS
ENROLLED_KUBEADM_FILES = KUBEADM_ENROLLED_FILES  # profiles.host_enrolls: one source


def pillar_share(files):
    """What pillar still hands a host of an enrolled cluster: ``{dest: src}`` without
    what it enrolls (a node keeps ``pki/ca.crt`` only; a master the CAs and their keys,
    ``sa.key``/``sa.pub`` and the control-plane kubeconfigs)."""
    return {dest: src for dest, src in files.items() if dest not in ENROLLED_KUBEADM_FILES}


def seed_pillar_share(files, master):
    """What the seed ext_pillar still hands a host of an enrolled cluster (``{pillar key:
    file}``): a node the CA certificate only; a master also the admin ``kubecfg`` pair
    (an admin credential for masters, never a node's). The apiserver's pair is enrolled."""
    keep = (DIST_CA, "kubecfg.crt", "kubecfg.key") if master else (DIST_CA,)
    return {key: rel for key, rel in files.items() if key in keep}


#: which CA certificate of the set goes with each issuer name
CA_FILES = {"ca": "ca.crt", "front-proxy-ca": "front-proxy-ca.crt", "etcd/ca": "etcd/ca.crt"}

#: the largest CSR accepted (a CSR with an RSA-8192 key is about 4 KiB)
MAX_CSR_BYTES = 16384

#: the key sizes accepted in a CSR
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 8192
EC_CURVES = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}


class EnrollRefused(PKIError):
    """A request the policy refuses; the message names the minion and what to fix."""


def role_members(role, profile="kubeadm"):
    """The members a host of ``role`` ("master" or "node") of a ``profile`` set enrolls."""
    if profile == "seed":
        return SEED_MASTER_MEMBERS if role == "master" else SEED_HOST_MEMBERS
    return MASTER_MEMBERS if role == "master" else HOST_MEMBERS


# What a manifest's bytes say, parsed once per process: a master signing hundreds
# of CSRs a second must not parse YAML and rebuild the whole set's specs for
# each (a kubeadm set may list thousands of hosts).  Keyed by the bytes, so an
# edited manifest is read again.
_POLICIES: dict = {}

# What a set's files said when last read, by the files' identity (device,
# inode, size, modification and change times: see record.file_identity, which
# also refuses a file someone else controls).  A signature then costs one
# lstat per file instead of reading, hashing and parsing it; a file replaced
# (a writer swaps the whole set: new inodes) or rewritten is read again.
_BY_IDENTITY: dict = {}


def _read_by_identity(path, secret, load):
    """``load()`` (which reads ``path``), or what it returned while ``path`` was the same file.

    None when the file is missing.  The file's owner and mode are checked on
    every call, whether it is read or not.
    """
    identity = file_identity(path, secret)
    if identity is None:
        return load()  # missing, or not a plain file: the reader says which
    cached = _BY_IDENTITY.get(path)
    if cached is not None and cached[0] == identity:
        return cached[1]
    value = load()
    if len(_BY_IDENTITY) >= 64:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[path] = (identity, value)
    return value


def _recorded_settings(directory):
    """The settings ``<directory>/cluster.yaml`` records (checked), or None."""
    path = manifest_path(directory)
    return _read_by_identity(path, False, lambda: _parse_recorded(path))


def _parse_recorded(path):
    data = read_store_file(path)  # refused unless the master's user alone controls it
    if data is None:
        return None
    digest = hashlib.sha256(data).digest()
    if digest not in _POLICIES:
        if len(_POLICIES) >= 16:
            _POLICIES.clear()
        settings = parse_manifest(data, path)
        _POLICIES[digest] = (settings, {})
    return _POLICIES[digest][0]


def _set_specs(settings):
    """``specs_for(settings)`` with the members hosts enroll, built once per manifest.

    (An enrolled set's own specs leave those out: they are what the signer needs.)
    """
    for cached, specs in _POLICIES.values():
        if cached is settings:
            if not specs:
                specs.update(specs_for(settings, include_enrolled=True))
            return specs
    return specs_for(settings, include_enrolled=True)


def kubelet_client_spec(host):
    """A kubelet's client identity: what kubeadm's ``kubelet.conf`` certifies."""
    return LeafSpec(f"system:node:{host}", ("system:nodes",), ("client",))


def _seed_member_spec(settings, host, ip, member):
    """A seed set's enrolled members: the kubelet's two identities; a master's apiserver
    certificate is the set's ``server`` spec naming the master (its name and address) too."""
    if member == "kubelet-client":
        return kubelet_client_spec(host)
    if member == "kubelet-serving":
        return kubelet_serving_spec(host, ip)
    if member == "kube-proxy":
        return LeafSpec("system:kube-proxy", (), ("client",))
    server = _set_specs(settings)["server"]
    ips = (ipaddress.ip_address(ip),) if ip else ()
    return dataclasses.replace(
        server,
        dns_names=tuple(dict.fromkeys((*server.dns_names, host))),
        ip_addresses=tuple(dict.fromkeys((*server.ip_addresses, *ips))),
    )


def member_spec(settings, host, ip, member):
    """The LeafSpec of ``member`` for ``host``, from the set's own specs (``specs_for``)."""
    if settings["profile"] == "seed":
        return _seed_member_spec(settings, host, ip, member)
    specs = _set_specs(settings)
    if member == "kubelet-client":
        return specs[f"{KUBEADM_HOSTS_DIR}/{host}/kubelet.conf"].leaf
    if member == "kubelet-serving":
        return kubelet_serving_spec(host, ip)
    if member in MASTER_OWN_MEMBERS:
        return specs[f"{KUBEADM_HOSTS_DIR}/{host}/{member}"]
    return specs[member]


def check_csr(data, where="csr"):
    """The CSR in ``data`` (PEM), checked: one block, a valid self-signature, a key we accept.

    Refusals name what is wrong, never quote the text (a key sent by mistake
    must not reach a log).  Returns the parsed CSR.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if not isinstance(data, bytes):
        raise EnrollRefused(f"{where}: expected the PEM text of a certificate request")
    if len(data) > MAX_CSR_BYTES:
        raise EnrollRefused(f"{where}: {len(data)} bytes, more than a CSR ({MAX_CSR_BYTES})")
    strict_pem(data, ("CERTIFICATE REQUEST",), where, count=1, indented=False)
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise EnrollRefused(f"{where}: not a certificate request (it does not parse)") from None
    check_request_key(csr.public_key(), where)
    if not csr.is_signature_valid:
        raise EnrollRefused(
            f"{where}: its signature does not verify (the request was altered, or signed with "
            "another key than the one it holds)"
        )
    return csr


def check_request_key(public, where="csr"):
    """Accept ECDSA P-256/P-384 and RSA of 2048 to 8192 bits; refuse the rest, naming it."""
    if isinstance(public, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= public.key_size <= RSA_MAX_BITS:
            raise EnrollRefused(
                f"{where}: an RSA key of {public.key_size} bits; use ecdsa-p256 (recommended), "
                f"ecdsa-p384 or RSA of {RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
            )
        return f"rsa-{public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in EC_CURVES:
            raise EnrollRefused(
                f"{where}: an ECDSA key on curve {public.curve.name}; use P-256 or P-384"
            )
        return EC_CURVES[public.curve.name]
    raise EnrollRefused(
        f"{where}: a {type(public).__name__.removeprefix('_')} key; use ecdsa-p256 "
        "(recommended), ecdsa-p384 or RSA of at least 2048 bits"
    )


def public_key_id(public):
    """The SHA-256 of a public key's SubjectPublicKeyInfo, in hex (a file name)."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# The CA keys checked once per process: OpenSSL's RSA consistency check costs
# tens of milliseconds, and a signing master may sign hundreds of CSRs a second.
# Keyed by the key file's SHA-256, so a replaced key is checked again.
_CHECKED_CA_KEYS: dict = {}


def _signing_ca(directory, issuer):
    """``(ca certificate, ca key, ca file bytes)`` of the set's CA ``issuer``.

    Read again whenever its certificate or key file is not the file read last.
    """
    rel = CA_FILES[issuer]
    key_rel = rel[: -len(".crt")] + ".key"
    for part in os.path.dirname(rel).split("/") if "/" in rel else ():
        folder = os.path.join(directory, part)  # etcd/: checked like read_set_file does
        st = lstat_or_none(folder)
        if st is not None:
            check_entry(folder, st)
    cert_path, key_path = os.path.join(directory, rel), os.path.join(directory, key_rel)
    key_identity = file_identity(key_path, True)
    loaded = _read_by_identity(
        cert_path, False, lambda: (key_identity, _load_signing_ca(directory, issuer))
    )
    if loaded[0] != key_identity:  # the key changed, not the certificate
        loaded = (key_identity, _load_signing_ca(directory, issuer))
        _BY_IDENTITY[cert_path] = (file_identity(cert_path, False), loaded)
    return loaded[1]


def _load_signing_ca(directory, issuer):
    rel = CA_FILES[issuer]
    cert_bytes = read_set_file(directory, rel)
    key_rel = rel[: -len(".crt")] + ".key"
    key_bytes = read_set_file(directory, key_rel)
    if cert_bytes is None:
        raise SetError(f"{directory}: {rel} is missing; run salt-run k8s-helper.generate_certs")
    if key_bytes is None:
        raise SetError(
            f"{directory}: {key_rel} is not on the master (a CA brought without its key): "
            "enrollment signs with it; sign with the CA where its key lives"
        )
    digest = hashlib.sha256(key_bytes).digest()
    key = _CHECKED_CA_KEYS.get(digest)
    if key is None:
        key = load_key(key_bytes, os.path.join(directory, key_rel))
        if len(_CHECKED_CA_KEYS) >= 16:
            _CHECKED_CA_KEYS.clear()
        _CHECKED_CA_KEYS[digest] = key
    ca_cert = x509.load_pem_x509_certificates(cert_bytes)
    own = [cert for cert in ca_cert if _same_key(cert.public_key(), key.public_key())]
    if not own:
        raise SetError(f"{directory}: {key_rel} does not belong to {rel}")
    return own[0], key, cert_bytes


def _remote_ca(directory, issuer):
    """``(certificate, file bytes)`` of the set's CA ``issuer`` whose key a signer keeps."""
    rel = CA_FILES[issuer]
    data = read_set_file(directory, rel)
    if data is None:
        raise SetError(f"{directory}: {rel} is missing; run salt-run k8s-helper.generate_certs")
    return x509.load_pem_x509_certificates(data)[0], data


def _same_key(a, b):
    return public_key_id(a) == public_key_id(b)


def _set_lock(directory):
    """Hold the set's lock (the one generate_certs and renew take) while writing into it.

    A writer swaps the whole folder; a copy written meanwhile into the old one
    would be lost.  Only the lock file is checked here, not the whole set (the
    files read and written are checked one by one).
    """
    root, tag = os.path.split(os.path.normpath(directory))
    return hold_lock(root, tag)


def _checked_folders(directory, rel_folder):
    """Make the folders of ``rel_folder`` under the set (0700), refusing any not ours."""
    path = directory
    for part in rel_folder.split("/"):
        path = os.path.join(path, part)
        st = lstat_or_none(path)
        if st is None:
            make_parents(os.path.join(path, "x"))
            st = os.lstat(path)
        check_entry(path, st)


def _claim_key(directory, key_id, minion_id, member):
    """Mark the key as certified for ``minion_id``'s ``member``; refuse one certified for another.

    The same host asking again for the same member with the same key (a reply
    lost on the way) is signed again.
    """
    _checked_folders(directory, ENROLLED_KEYS_DIR)
    path = os.path.join(directory, ENROLLED_KEYS_DIR, key_id)
    owner = f"{minion_id} {member}\n".encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, CERT_MODE)
    except FileExistsError:
        recorded = read_set_file(directory, f"{ENROLLED_KEYS_DIR}/{key_id}")
        if recorded != owner:
            raise EnrollRefused(
                f"{minion_id}: the key of this CSR was already certified for another host or "
                "member (a replayed or copied CSR); each certificate needs a key made for it "
                "on the host that uses it"
            ) from None
        return
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, CERT_MODE)
        handle.write(owner)


def _keep_copy(directory, minion_id, member, data):
    """Write ``enrolled/<minion>/<member>.crt`` (0644), replacing the previous copy at once."""
    rel = f"{ENROLLED_DIR}/{minion_id}/{member}.crt"
    _checked_folders(directory, os.path.dirname(rel))
    path = os.path.join(directory, rel)
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, CERT_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, CERT_MODE)
        handle.write(data)
    # Renamed, not fsynced (an fsync costs more than the signature): the host
    # holds its certificate durably; a copy lost to a power cut only drops out
    # of check_expiration until the host renews.
    os.replace(tmp, path)
    return path


def copies_of_removed_hosts(directory, settings):
    """The master's copies (``enrolled/<host>/...``, relative paths) of hosts ``settings`` no
    longer names: the next write of the set leaves them out (kept in its backup), so that
    ``check_expiration`` and ``verify`` stop reporting a host that left the cluster.

    Hosts are matched exactly, as everywhere (``M1`` is not ``m1``); the claims
    of certified keys (``enrolled/keys/``) stay, so a removed host's key is
    never certified for another host.
    """
    folder = os.path.join(directory, ENROLLED_DIR)
    st = lstat_or_none(folder)
    if st is None:
        return ()
    check_entry(folder, st)  # ours and no link, before its listing is believed
    hosts = {h["name"] for key in ("masters", "nodes") for h in settings.get(key) or ()}
    keys = os.path.basename(ENROLLED_KEYS_DIR)
    stale = []
    for entry in sorted(os.listdir(folder)):
        if entry == keys or entry in hosts:
            continue
        for parent, _, names in os.walk(os.path.join(folder, entry)):
            stale += [os.path.relpath(os.path.join(parent, n), directory) for n in names]
    return tuple(stale)


def enrollment_policy(directory, minion_id):
    """``(settings, role, ip)`` of ``minion_id`` in the set at ``directory``; refused if no host."""
    tag = os.path.basename(os.path.normpath(directory))
    if not isinstance(minion_id, str) or not minion_id:
        raise EnrollRefused("the caller's minion id is unknown: call through peer_run")
    if not check_set_folder(directory):
        raise EnrollRefused(f"{minion_id}: there is no certificate set {tag!r} on the master")
    settings = _recorded_settings(directory)
    if settings is None:
        raise EnrollRefused(
            f"{minion_id}: the set {tag!r} has no cluster.yaml manifest recording its hosts; "
            f"run salt-run k8s-helper.generate_certs cluster_tag={tag} masters=... nodes=... once"
        )
    profile = settings["profile"]
    if profile == "seed" and not (settings.get("masters") or settings.get("nodes")):
        raise EnrollRefused(
            f"{minion_id}: the seed set {tag!r} records no hosts; record them with "
            f"salt-run k8s-helper.generate_certs cluster_tag={tag} masters='[{{name: m1, ip: "
            "192.0.2.11}]' nodes='[{name: n1}]' (see docs/enrollment.md)"
        )
    role, ip = host_role(settings, minion_id)
    if role is None:
        raise EnrollRefused(
            f"{minion_id}: not a host of the set {tag!r} (its masters and nodes in cluster.yaml); "
            f"add it with salt-run k8s-helper.generate_certs profile={profile} cluster_tag={tag} "
            "masters=... nodes=..."
        )
    return settings, role, ip


def _check_member(settings, tag, minion_id, role, member):
    """Refuse a member the host's role does not have (or that the set cannot sign)."""
    allowed = role_members(role, settings["profile"])
    if member not in allowed:
        raise EnrollRefused(
            f"{minion_id}: a {role} of {tag!r} may enroll {', '.join(allowed)}, not {member!r}"
        )
    seed_apiserver = settings["profile"] == "seed" and member == "apiserver"
    if seed_apiserver and not settings["service_account_key"]:
        # each master's apiserver key would sign tokens the others cannot verify
        raise EnrollRefused(
            f"{minion_id}: the seed set {tag!r} signs service-account tokens with "
            "server.key, which every master must share; give it a token key of its own "
            f"first: salt-run k8s-helper.generate_certs cluster_tag={tag} "
            "service_account_key=True"
        )


def sign_request(directory, minion_id, member, csr_pem, now=None, signer=None):
    """Sign ``csr_pem`` as ``member`` of ``minion_id`` under the set's policy.

    ``minion_id`` must be the id Salt authenticated (never one the minion
    said).  Returns a plain dict: the certificate and its CA certificate(s) in
    PEM (public), where the master keeps its copy, and what the certificate
    says.  Refusals raise :class:`EnrollRefused` (or SetError for a set that
    cannot be used); nothing is written then.

    ``signer``: one that keeps the CA keys elsewhere (OpenBao, signer.py) is
    handed the CSR itself, with the same identity; otherwise the set's own CA
    key signs.
    """
    settings, role, ip = enrollment_policy(directory, minion_id)
    tag = os.path.basename(os.path.normpath(directory))
    _check_member(settings, tag, minion_id, role, member)
    csr = check_csr(csr_pem)
    spec = member_spec(settings, minion_id, ip, member)
    signer = signer or LOCAL
    check_backend(directory, settings, signer.backend)  # the CA is where the set says
    remote = signer.keeps_ca_keys
    if remote:
        ca_cert, ca_bytes = _remote_ca(directory, spec.issuer)
    else:
        ca_cert, ca_key, ca_bytes = _signing_ca(directory, spec.issuer)
    public = csr.public_key()
    key_id = public_key_id(public)
    with _set_lock(directory):
        st = lstat_or_none(directory)  # removed or swapped while we waited?
        if st is None:
            raise EnrollRefused(f"{minion_id}: the set {tag!r} is gone from the master")
        check_entry(directory, st)
        _claim_key(directory, key_id, minion_id, member)
        if remote:
            ca = Item(spec.issuer, cert=ca_cert)
            checked = csr.public_bytes(serialization.Encoding.PEM)  # the CSR checked above
            cert = signer.sign_request(minion_id, member, spec, checked, ca, settings["days"], now)
        else:
            cert = issue_leaf(spec, public, ca_cert, ca_key, days=settings["days"], now=now)
        data = cert_pem(cert)
        copy = _keep_copy(directory, minion_id, member, data)
    info = _describe_issued(cert, spec)
    return {
        "minion": minion_id,
        "member": member,
        "role": role,
        "cert": data.decode("ascii"),
        "ca": ca_bytes.decode("ascii"),
        "copy": copy,
        **info,
    }


def _describe_issued(cert, spec):
    """What :func:`describe_cert` says of a certificate just issued from ``spec``: its SANs
    are the spec's (not parsed back from the certificate: half of a signature's time).

    Not "serial": Salt's channel takes a reply's top-level "serial" for its own
    message counter and drops the reply (salt.crypt.Crypticle.loads).
    """
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial_number": format(cert.serial_number, "x"),
        "sha256": fingerprint(cert),
        "sans": list(spec.dns_names) + [str(ip) for ip in spec.ip_addresses],
        "not_before": iso_utc(cert.not_valid_before_utc),
        "not_after": iso_utc(cert.not_valid_after_utc),
    }


def csr_for(key, minion_id):
    """A CSR for ``key`` (what a host sends): the subject names the minion, for people only."""
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, minion_id)])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


# --------------------------------------------------------------------------
# On the host: is the enrolled pair still good, and laying down a new one
# --------------------------------------------------------------------------


def _read_local(path):
    """The bytes of a file on the host, not following a symlink; None when missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PKIError(f"{path}: is a symbolic link; remove it") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def enrolled_problem(cert_path, key_path, ca_path, renew_before_days, now=None):
    """Why the host must enroll ``cert_path`` again (missing, broken, due), or "" if it is fine.

    Like x509_v2's ``certificate_managed``: a certificate entering its renewal
    window is renewed with a new key.  Messages name paths, never key text.
    """
    cert_bytes, key_bytes = _read_local(cert_path), _read_local(key_path)
    if cert_bytes is None:
        return f"{cert_path}: missing"
    if key_bytes is None:
        return f"{key_path}: missing"
    try:
        cert = load_cert(cert_bytes, cert_path)
        key = load_key(key_bytes, key_path)
    except PKIError as err:
        return str(err)
    if not key_matches(cert, key):
        return f"{key_path}: does not belong to {cert_path}"
    ca_bytes = _read_local(ca_path)
    try:
        cas = load_certs(ca_bytes, ca_path) if ca_bytes is not None else []
    except PKIError as err:
        return str(err)
    if not any(signed_by(cert, ca) for ca in cas):
        return f"{cert_path}: not signed by {ca_path}"
    due = renewal_due(cert, renew_before_days, now)
    return f"{cert_path}: {due}" if due else ""


def check_reply(reply, key, member):
    """The certificate and CA bundle of the master's reply, checked against our key.

    Refuses a reply that is a refusal (naming the master's reason), that is not
    an answer (peer_run not allowing the call gives ``{}``), or whose
    certificate is not for our key or not signed by the CA it came with.
    """
    if isinstance(reply, dict) and reply.get("result") is False and "error" in reply:
        raise EnrollRefused(f"the master refused: {reply['error']}")
    if not isinstance(reply, dict) or not reply:
        said = f" ({reply})" if isinstance(reply, str) and reply else ""
        raise EnrollRefused(
            f"no answer from the master's k8s-helper.sign_csr{said}: does the master config "
            "allow it to this minion (peer_run: {'.*': ['k8s-helper.sign_csr']}, see "
            "docs/enrollment.md), and does the master have the formula's runner?"
        )
    try:
        strict_pem(reply.get("cert", ""), ("CERTIFICATE",), "the master's certificate", count=1)
        cert = load_cert(reply["cert"].encode(), "the master's certificate")
        cas = load_certs(reply.get("ca", "").encode(), "the master's CA certificate")
    except (PKIError, AttributeError) as err:
        raise EnrollRefused(f"the master's reply for {member}: {err}") from None
    if not key_matches(cert, key):
        raise EnrollRefused(f"the master's certificate for {member} is not for the key made here")
    if not any(signed_by(cert, ca) for ca in cas):
        raise EnrollRefused(f"the master's certificate for {member} is not signed by its CA")
    return cert, reply["ca"].encode()


def _replace_file(path, data, mode):
    """Write ``path`` (a temporary file, flushed, renamed over it) with exactly ``mode``."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700)
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)
        handle.write(data)
        handle.flush()
        os.fsync(fd)
    os.replace(tmp, path)


def install_enrolled(cert_path, key_path, ca_path, cert, key, ca_bytes):
    """Lay down the new key (0600), its certificate and the CA bundle (0644).

    The key first: a crash between the two leaves a pair that does not
    match, which the next run sees (:func:`enrolled_problem`) and enrolls
    again.  Returns which files changed (paths only).
    """
    changed = []
    _replace_file(key_path, key_pem(key), KEY_MODE)
    changed.append(key_path)
    _replace_file(cert_path, cert_pem(cert), CERT_MODE)
    changed.append(cert_path)
    if _read_local(ca_path) != ca_bytes:
        _replace_file(ca_path, ca_bytes, CERT_MODE)
        changed.append(ca_path)
    return changed
