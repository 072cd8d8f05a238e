"""The enrollment policy (k8s_pki.enroll): identity from the set's record and the minion id only.

Every certificate is checked with the openssl CLI against the set's CA; every
refusal leaves the master's folder exactly as it was.
"""

import ipaddress
import os

import pytest
import support
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import kubeadm as ks

k8s_pki = support.k8s_pki


@pytest.fixture
def pki(tmp_path):
    root = tmp_path / "pki"
    directory = ks.make_set(root)
    return root, directory


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _greedy_csr(key, cn="system:node:n2", orgs=("system:masters",)):
    """A CSR asking for everything: another node's name, the admin group, the apiserver's SANs,
    a CA's basic constraints and key usage."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("kubernetes.default"),
                    x509.IPAddress(ipaddress.ip_address("10.254.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _names(cert):
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return cn, sorted(orgs)


def _sign(directory, minion, member, csr):
    return k8s_pki.sign_request(str(directory), minion, member, csr)


def _openssl_ok(tmp_path, ca_pem, cert_pem, name="c"):
    ca, cert = tmp_path / f"{name}-ca.pem", tmp_path / f"{name}.pem"
    ca.write_text(ca_pem)
    cert.write_text(cert_pem)
    return ks.verify(ca, cert)


def test_node_gets_its_own_identity_whatever_the_csr_asks(pki, tmp_path):
    root, directory = pki
    key = _key()
    ret = _sign(directory, "n1", "kubelet-client", _greedy_csr(key))
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert _names(cert) == (["system:node:n1"], ["system:nodes"])
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert k8s_pki.public_key_fingerprint(cert.public_key()) == k8s_pki.public_key_fingerprint(
        key.public_key()
    )
    assert ret["ca"] == (directory / "ca.crt").read_text()
    assert _openssl_ok(tmp_path, ret["ca"], ret["cert"])
    subject = ks.subject(tmp_path / "c.pem")
    assert "system:masters" not in subject and "system:node:n1" in subject
    # the master keeps a copy, public and 0644, where check_expiration looks
    copy = directory / "enrolled/n1/kubelet-client.crt"
    assert ret["copy"] == str(copy) and copy.read_text() == ret["cert"]
    assert oct(copy.stat().st_mode & 0o777) == "0o644"
    names = [e["name"] for e in k8s_pki.expiry_report(str(directory))["certificates"]]
    assert "enrolled/n1/kubelet-client.crt" in names
    assert "PRIVATE" not in repr(ret)


def test_kubelet_serving_names_the_host_and_its_recorded_address(pki, tmp_path):
    _, directory = pki
    ret = _sign(directory, "n1", "kubelet-serving", _greedy_csr(_key()))
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert _names(cert) == (["system:node:n1"], ["system:nodes"])
    dns, ips = k8s_pki.cert_sans(cert)
    assert list(dns) == ["n1"] and [str(ip) for ip in ips] == ["192.0.2.21"]
    assert k8s_pki.cert_usages(cert) == ("server",)
    # n2 has no address in the record: its name only
    ret = _sign(directory, "n2", "kubelet-serving", _greedy_csr(_key()))
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert k8s_pki.cert_sans(cert) == (("n2",), ())
    assert _openssl_ok(tmp_path, ret["ca"], ret["cert"])


@pytest.mark.parametrize(
    ("member", "set_name", "ca_file"),
    [
        ("apiserver", "hosts/m1/apiserver", "ca.crt"),
        ("etcd/server", "hosts/m1/etcd/server", "etcd/ca.crt"),
        ("etcd/peer", "hosts/m1/etcd/peer", "etcd/ca.crt"),
        ("apiserver-etcd-client", "apiserver-etcd-client", "etcd/ca.crt"),
        ("front-proxy-client", "front-proxy-client", "front-proxy-ca.crt"),
        ("apiserver-kubelet-client", "apiserver-kubelet-client", "ca.crt"),
    ],
)
def test_master_members_say_what_the_set_says(pki, tmp_path, member, set_name, ca_file):
    _, directory = pki
    ret = _sign(directory, "m1", member, _greedy_csr(_key()))
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    made_by_generate = x509.load_pem_x509_certificate((directory / f"{set_name}.crt").read_bytes())
    assert k8s_pki.satisfies(cert, k8s_pki.spec_from_cert(made_by_generate))
    assert ret["ca"] == (directory / ca_file).read_text()
    assert _openssl_ok(tmp_path, ret["ca"], ret["cert"])


@pytest.mark.parametrize(
    ("minion", "member", "why"),
    [
        ("n1", "apiserver", "a node of 'c1' may enroll kubelet-client, kubelet-serving"),
        ("n1", "etcd/peer", "not 'etcd/peer'"),
        ("m1", "admin.conf", "not 'admin.conf'"),
        ("n9", "kubelet-client", "n9: not a host of the set 'c1'"),
        ("N1", "kubelet-client", "N1: not a host"),
        ("n1.", "kubelet-client", "n1.: not a host"),
        ("", "kubelet-client", "minion id is unknown"),
        (None, "kubelet-client", "minion id is unknown"),
    ],
)
def test_identity_and_role_refusals_change_nothing(pki, minion, member, why):
    root, directory = pki
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.EnrollRefused, match=why):
        _sign(directory, minion, member, _greedy_csr(_key()))
    assert support.snapshot(root) == before


def _tampered(csr_pem):
    """The CSR with one byte of its signed part changed (its signature no longer verifies)."""
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    pos = der.index(b"system:node:n2")  # inside the signed subject
    der = der[:pos] + b"X" + der[pos + 1 :]
    csr = x509.load_der_x509_csr(der)
    return csr.public_bytes(serialization.Encoding.PEM)


def _csr_with(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n1")])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


BAD_CSRS = {
    "garbage": (lambda: b"hello, master", "csr: not a PEM"),
    "empty": (lambda: b"", "csr: not a PEM"),
    "not bytes": (lambda: {"csr": 1}, "expected the PEM text"),
    "huge": (lambda: b"A" * 100000, "more than a CSR"),
    "wrong signature": (lambda: _tampered(_greedy_csr(_key())), "signature does not verify"),
    "rsa-1024": (
        lambda: _csr_with(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "an RSA key of 1024 bits",
    ),
    "p-521": (lambda: _csr_with(ec.generate_private_key(ec.SECP521R1())), "curve secp521r1"),
    "ed25519": (lambda: _csr_with(ed25519.Ed25519PrivateKey.generate()), "Ed25519PublicKey"),
    "dsa": (lambda: _csr_with(dsa.generate_private_key(2048)), "DSAPublicKey"),
    "a private key": (lambda: k8s_pki.key_pem(_key()), "a private key block"),
    "a certificate": (lambda: None, "a certificate block"),
    "two requests": (lambda: _greedy_csr(_key()) * 2, "holds 2 PEM blocks, expected 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSRS))
def test_bad_csrs_are_refused_naming_the_problem(pki, case):
    root, directory = pki
    make, why = BAD_CSRS[case]
    data = make()
    if case == "a certificate":
        data = (directory / "ca.crt").read_bytes()
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.PKIError, match=why) as err:
        _sign(directory, "n1", "kubelet-client", data)
    assert support.snapshot(root) == before
    assert "PRIVATE KEY" not in str(err.value) and "MII" not in str(err.value)


def test_rsa_2048_and_p384_are_accepted(pki):
    _, directory = pki
    for key in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP384R1())):
        ret = _sign(directory, "n1", "kubelet-client", _csr_with(key))
        assert "system:node:n1" in ret["subject"]


def test_a_replayed_csr_is_refused_the_same_host_may_ask_again(pki):
    root, directory = pki
    csr = _greedy_csr(_key())
    first = _sign(directory, "n1", "kubelet-client", csr)
    again = _sign(directory, "n1", "kubelet-client", csr)  # its reply was lost: signed again
    assert again["subject"] == first["subject"]
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.EnrollRefused, match="n2: the key of this CSR was already"):
        _sign(directory, "n2", "kubelet-client", csr)
    with pytest.raises(k8s_pki.EnrollRefused, match="already certified"):
        _sign(directory, "n1", "kubelet-serving", csr)  # one key, one certificate
    assert support.snapshot(root) == before


def test_a_host_removed_from_the_set_is_no_longer_signed(pki):
    root, directory = pki
    _sign(directory, "n2", "kubelet-client", _greedy_csr(_key()))
    ks.make_set(root, nodes=ks.NODES[:1])  # the operator drops n2 from the set
    # the rewrite of the set kept the copies (files the set does not name are kept)
    assert (directory / "enrolled/n2/kubelet-client.crt").is_file()
    with pytest.raises(k8s_pki.EnrollRefused, match="n2: not a host"):
        _sign(directory, "n2", "kubelet-client", _greedy_csr(_key()))
    # a master demoted to a node keeps only what a node may enroll
    ks.make_set(root, masters=ks.MASTERS[:2], nodes=[*ks.NODES[:1], {"name": "m3"}])
    with pytest.raises(k8s_pki.EnrollRefused, match="a node of 'c1' may enroll"):
        _sign(directory, "m3", "apiserver", _greedy_csr(_key()))
    assert _sign(directory, "m3", "kubelet-client", _greedy_csr(_key()))["role"] == "node"


def test_sets_that_cannot_enroll_are_refused(tmp_path):
    root = tmp_path / "pki"
    with pytest.raises(k8s_pki.EnrollRefused, match="no certificate set 'c1'"):
        _sign(root / "c1", "n1", "kubelet-client", _greedy_csr(_key()))
    k8s_pki.ensure_set(root, "seed", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    with pytest.raises(k8s_pki.EnrollRefused, match="no cluster.yaml manifest"):
        _sign(root / "seed", "n1", "kubelet-client", _greedy_csr(_key()))
    settings = {"profile": "seed", **k8s_pki.PROFILE_DEFAULTS["seed"]}
    (root / "seed" / "cluster.yaml").write_bytes(k8s_pki.render_manifest(settings))
    os.chmod(root / "seed" / "cluster.yaml", 0o644)
    with pytest.raises(k8s_pki.EnrollRefused, match="the seed set 'seed' records no hosts"):
        _sign(root / "seed", "n1", "kubelet-client", _greedy_csr(_key()))


def test_a_ca_without_its_key_is_refused(pki):
    root, directory = pki
    (directory / "etcd/ca.key").unlink()
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.SetError, match="etcd/ca.key is not on the master"):
        _sign(directory, "m1", "etcd/server", _greedy_csr(_key()))
    assert support.snapshot(root) == before
