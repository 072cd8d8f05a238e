"""Checks of what pillar hands a host, on the minion, before anything is laid down."""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import re

from cryptography.hazmat.primitives import serialization

from .crypto import (
    cert_pem,
    days_left,
    describe_cert,
    is_ca,
    iso_utc,
    key_matches,
    key_works,
    load_cert,
    load_certs,
    load_key,
    load_public_key,
    public_key_fingerprint,
    signed_by,
)
from .errors import PKIError
from .kubeconfig import parse_kubeconfig
from .pem import CERT_LABELS, PRIVATE_KEY_LABELS, PUBLIC_KEY_LABELS, strict_pem
from .profiles import (
    DIST_CA,
    DIST_KEYS,
    DIST_PAIRS,
    KUBEADM_CAS,
    KUBEADM_HOST_FILES,
    KUBEADM_NODE_FILES,
    kubeadm_issuer,
)
from .store import same_public_key


def check_kubeadm_host(
    files, where="kubernetes:kubeadm_pki:files", now=None, role=None, enrolled=()
):
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
    starting with ``<where>:<path>``.  ``enrolled`` names the files the host
    enrolls itself (docs/enrollment.md): not needed from pillar.
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
    master = any(k not in KUBEADM_NODE_FILES for k in files if k in KUBEADM_HOST_FILES)
    if role == "node" and master:
        beyond = sorted(k for k in files if k in KUBEADM_HOST_FILES and k not in KUBEADM_NODE_FILES)
        problems.append(
            f"{where}: the role is node, and a node must never hold {', '.join(beyond)}, "
            "whatever its pillar says"
        )
    needed = KUBEADM_HOST_FILES if master else KUBEADM_NODE_FILES
    # kubeadm's external CA mode: a CA whose key is kept elsewhere (the openbao
    # backend) leaves the master without it; the pillar then simply lacks it.
    elsewhere = {rel[: -len(".crt")] + ".key" for rel in KUBEADM_CAS.values()}
    missing = [k for k in needed if k not in files and k not in enrolled and k not in elsewhere]
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
            problems.append(f"{where}:{label}: expired on {iso_utc(cert.not_valid_after_utc)}")
        elif cert.not_valid_before_utc > now:
            problems.append(
                f"{where}:{label}: not valid before {iso_utc(cert.not_valid_before_utc)}"
            )

    for rel in (k for k in KUBEADM_HOST_FILES if k in files and k.endswith(".crt")):
        try:
            # A CA file may be a bundle (old and new CA during a rotation).
            many = None if rel in KUBEADM_CAS.values() else 1
            certs[rel] = cert = load_cert(text(rel, CERT_LABELS, many), f"{where}:{rel}")
        except PKIError as err:
            problems.append(str(err))
            continue
        dated(cert, rel)
        report[rel] = describe_cert(cert)
    for rel in KUBEADM_CAS.values():
        if rel in certs and not is_ca(certs[rel]):
            problems.append(f"{where}:{rel}: not a CA certificate")
    for rel, cert in certs.items():
        if rel in KUBEADM_CAS.values():
            continue
        issuer = certs.get(kubeadm_issuer(rel))
        if issuer is not None and not signed_by(cert, issuer):
            problems.append(f"{where}:{rel}: not signed by {kubeadm_issuer(rel)}")
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
            if not same_public_key(public, key):
                problems.append(f"{where}:pki/sa.pub: does not belong to pki/sa.key")
        except (PKIError, KeyError) as err:
            problems.append(str(err) if isinstance(err, PKIError) else f"{where}: {err} missing")
    ca = certs.get(KUBEADM_CAS["ca"])
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
            problems.append(f"{where}:{name}: expired on {iso_utc(cert.not_valid_after_utc)}")
            return False
        if cert.not_valid_before_utc > now:
            problems.append(
                f"{where}:{name}: not valid before {iso_utc(cert.not_valid_before_utc)}"
            )
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


def bundle_pattern(cert):
    """A regex finding ``cert`` in a PEM bundle, whatever its line breaks."""
    body = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return r"\s*".join(re.escape(char) for char in body)
