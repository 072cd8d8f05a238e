"""A set on disk, read: items per kind, the externally created CAs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography import x509

from .crypto import (
    key_matches,
    load_cert,
    load_certs,
    load_key,
    load_public_key,
    public_key_fingerprint,
)
from .errors import PKIError, SetError
from .guard import read_store_file
from .kinds import CA, CERTIFICATE, KEY_PAIR, KUBECONFIG
from .kubeconfig import Kubeconfig, parse_kubeconfig


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
    # Taken as verified from the set's record (record.py), not read: its
    # files' descriptions and dates; no certificate or key object then.
    recorded: dict | None = None
    # A CA whose key a signer keeps elsewhere (OpenBao): no key here, yet it
    # issues (signer.py); unlike an external CA, what it signs is not "provided".
    remote: bool = False

    @property
    def present(self):
        if self.recorded is not None:
            return True
        return any(
            data is not None
            for data in (self.cert_bytes, self.key_bytes, self.pub_bytes, self.file_bytes)
        )

    @property
    def cert_only(self):
        """A CA whose key is not here: what it signs is verified, never issued."""
        return (
            self.action == "reused"
            and self.cert is not None
            and self.key is None
            and not self.remote
        )


def read_file(path):
    """The bytes of ``path``, or None when there is no such file."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_pair(directory, name):
    """The pair ``name`` as found in ``directory`` (parsed); SetError if it is broken."""
    item = Item(
        name,
        cert_bytes=read_store_file(os.path.join(directory, f"{name}.crt")),
        key_bytes=read_store_file(os.path.join(directory, f"{name}.key"), secret=True),
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
        key_bytes=read_store_file(os.path.join(directory, f"{name}.key"), secret=True),
        pub_bytes=read_store_file(os.path.join(directory, f"{name}.pub")),
    )
    public = None
    try:
        if item.key_bytes is not None:
            item.key = load_key(item.key_bytes, f"{name}.key", validate=False)
        if item.pub_bytes is not None:
            public = load_public_key(item.pub_bytes, f"{name}.pub")
    except PKIError as err:
        raise SetError(f"{directory}: {err}") from None
    if item.key is not None and public is not None and not same_public_key(public, item.key):
        raise SetError(f"{directory}: {name}.pub does not belong to {name}.key")
    return item


def same_public_key(public, key):
    return public_key_fingerprint(public) == public_key_fingerprint(key.public_key())


def read_kubeconfig(directory, name):
    """The kubeconfig file ``name``, its embedded certificate and key parsed."""
    item = Item(name, file_bytes=read_store_file(os.path.join(directory, name), secret=True))
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


# How each kind of member is read from disk.
_READERS = {
    CA: read_pair,
    CERTIFICATE: read_pair,
    KEY_PAIR: read_keypair,
    KUBECONFIG: read_kubeconfig,
}


def read_item(directory, name, spec):
    """What is on disk for one name of a set, whatever kind of member it is."""
    return _READERS[spec.kind](directory, name)


def spec_files(name, spec):
    """The files (relative paths) and modes one name of a set occupies."""
    return [(name + f.suffix, f.mode) for f in spec.kind.files]


def created_path(directory):
    directory = os.path.normpath(directory)
    return os.path.join(os.path.dirname(directory), f".{os.path.basename(directory)}.created")


def created_cas(directory):
    """The fingerprints of the CAs k8s-helper created for the set at ``directory``."""
    data = read_store_file(created_path(directory)) or b""
    return {line.split()[0] for line in data.decode("ascii", "replace").splitlines() if line}
