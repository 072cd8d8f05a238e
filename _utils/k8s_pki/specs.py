"""What a member of a set must be: CA, leaf certificate, key pair, kubeconfig."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cryptography import x509
from cryptography.x509.oid import NameOID

from .crypto import USAGE_OIDS, cert_sans, cert_usages
from .kinds import CA, CERTIFICATE, KEY_PAIR, KUBECONFIG, Kind


@dataclass(frozen=True)
class CASpec:
    """A self-signed CA of the set."""

    kind: ClassVar[Kind] = CA
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

    kind: ClassVar[Kind] = CERTIFICATE

    @property
    def leaf(self):
        """What the certificate must say: itself (a kubeconfig's is inside it)."""
        return self

    @property
    def extended_key_usages(self):
        # A usage this module does not name (kept from an existing certificate
        # by a renewal) is its dotted OID.
        return [USAGE_OIDS.get(u) or x509.ObjectIdentifier(u) for u in self.usages]


@dataclass(frozen=True)
class KeyPairSpec:
    """A bare key pair, ``<name>.key`` and ``<name>.pub`` (the service-account signing key)."""

    kind: ClassVar[Kind] = KEY_PAIR


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

    kind: ClassVar[Kind] = KUBECONFIG

    @property
    def leaf(self):
        """What the embedded client certificate must say."""
        return LeafSpec(
            common_name=self.common_name,
            organizations=self.organizations,
            usages=("client",),
            issuer=self.issuer,
        )


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


def spec_from_ca(cert):
    """The CASpec an existing CA certificate satisfies (its names)."""
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return CASpec(common_name=cns[0] if cns else "", organizations=tuple(orgs))
