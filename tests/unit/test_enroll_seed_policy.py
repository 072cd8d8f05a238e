"""Enrollment in a seed set: the manifest records masters and nodes; nodes enroll their own
kubelet and kube-proxy identities (never the admin ``kubecfg``), masters their apiserver
certificate.  Seed sets without hosts keep their manifest byte for byte."""

import pytest
import support
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support import kubeadm as ks

k8s_pki = support.k8s_pki

MASTERS = [{"name": "m1", "ip": "192.0.2.11"}]
NODES = [{"name": "n1", "ip": "192.0.2.21"}, {"name": "n2"}]


def make_seed(root, tag="s1", masters=MASTERS, nodes=NODES, service_account_key=True):
    """A seed set with its cluster.yaml, as generate_certs writes it."""
    return support.make_recorded_set(
        root,
        tag,
        "seed",
        masters=masters,
        nodes=nodes,
        service_account_key=service_account_key,
    )


@pytest.fixture
def seed(tmp_path):
    return make_seed(tmp_path / "pki")


def _csr(key=None):
    return k8s_pki.csr_for(key or ec.generate_private_key(ec.SECP256R1()), "system:masters")


def _sign(directory, minion, member, csr=None):
    return k8s_pki.sign_request(str(directory), minion, member, csr or _csr())


def _cert(ret):
    return x509.load_pem_x509_certificate(ret["cert"].encode())


def test_a_seed_manifest_without_hosts_is_unchanged_and_still_read(tmp_path):
    settings = {"profile": "seed", **k8s_pki.PROFILE_DEFAULTS["seed"]}
    text = k8s_pki.render_manifest(settings).decode()
    assert "masters" not in text and "nodes" not in text  # what earlier formulas wrote
    parsed = k8s_pki.parse_manifest(text.encode(), "cluster.yaml")
    assert parsed["masters"] == [] and parsed["nodes"] == []
    with_hosts = {**settings, "masters": k8s_pki.canonical("masters", MASTERS)}
    text = k8s_pki.render_manifest(with_hosts)
    assert k8s_pki.parse_manifest(text, "cluster.yaml")["masters"] == MASTERS


@pytest.mark.parametrize(
    ("masters", "nodes", "why"),
    [
        ([{"name": "m1"}], [], "'ip' is missing for m1"),
        ([{"name": "m1", "ip": "192.0.2.11", "role": "x"}], [], "unknown key 'role'"),
        ("m1", [], "is not a list"),
        (MASTERS, [{"name": "m1"}], "'m1' is also listed in masters"),
        (MASTERS, [{"name": "Bad_Name"}], "nodes\\[0\\].name"),
    ],
)
def test_seed_hosts_are_parsed_strictly(tmp_path, masters, nodes, why):
    with pytest.raises(k8s_pki.InputError, match=why):
        make_seed(tmp_path / "pki", masters=masters, nodes=nodes)
    assert not (tmp_path / "pki" / "s1").exists()


def test_a_manifest_with_bad_hosts_is_refused(seed):
    text = (seed / "cluster.yaml").read_text().replace("192.0.2.11", "not-an-ip")
    with pytest.raises(k8s_pki.SetError, match="masters\\[0\\].ip"):
        k8s_pki.parse_manifest(text.encode(), "cluster.yaml")


def test_a_seed_node_enrolls_per_node_identities_never_the_admin(seed, tmp_path):
    client = _cert(_sign(seed, "n1", "kubelet-client"))
    assert client.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    assert k8s_pki.cert_usages(client) == ("client",)
    serving = _cert(_sign(seed, "n1", "kubelet-serving"))
    assert k8s_pki.cert_sans(serving)[0] == ("n1",)
    assert [str(ip) for ip in k8s_pki.cert_sans(serving)[1]] == ["192.0.2.21"]
    proxy = _cert(_sign(seed, "n2", "kube-proxy"))
    assert proxy.subject.rfc4514_string() == "CN=system:kube-proxy"
    for cert in (client, serving, proxy):
        assert "system:masters" not in cert.subject.rfc4514_string()
        path = tmp_path / "leaf.pem"
        path.write_bytes(k8s_pki.cert_pem(cert))
        assert ks.verify(seed / "ca.crt", path)
    for member in ("apiserver", "kubecfg", "server", "sa"):
        with pytest.raises(k8s_pki.EnrollRefused, match=f"a node of 's1' may enroll .*{member}"):
            _sign(seed, "n1", member)


def test_a_seed_master_enrolls_its_apiserver_certificate(seed, tmp_path):
    ret = _sign(seed, "m1", "apiserver")
    cert = _cert(ret)
    server = x509.load_pem_x509_certificate((seed / "server.crt").read_bytes())
    dns, ips = k8s_pki.cert_sans(cert)
    want_dns, want_ips = k8s_pki.cert_sans(server)
    assert set(dns) == {*want_dns, "m1"} and {str(i) for i in ips} == {
        *(str(i) for i in want_ips),
        "192.0.2.11",
    }
    assert cert.subject == server.subject and k8s_pki.cert_usages(cert) == ("server",)
    assert (seed / "enrolled/m1/apiserver.crt").read_text() == ret["cert"]
    with pytest.raises(k8s_pki.EnrollRefused, match="not 'kubecfg'"):
        _sign(seed, "m1", "kubecfg")  # the admin pair is never enrolled


def test_seed_apiserver_needs_a_token_key_of_its_own(tmp_path):
    root = tmp_path / "pki"
    directory = make_seed(root, service_account_key=False)
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.EnrollRefused, match="service_account_key=True"):
        _sign(directory, "m1", "apiserver")
    assert support.snapshot(root) == before
    assert _sign(directory, "m1", "kubelet-client")["role"] == "master"


def _bad(case):
    if case == "garbage":
        return (
            b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n"
        )
    if case == "wrong signature":
        csr = x509.load_pem_x509_csr(_csr())
        der = bytearray(csr.public_bytes(serialization.Encoding.DER))
        der[-5] ^= 0xFF  # inside the signature
        return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    if case == "rsa-1024":
        return _csr(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    return _csr(ec.generate_private_key(ec.SECP521R1()))


@pytest.mark.parametrize(
    ("minion", "case", "why"),
    [
        ("n1", "garbage", "csr: not a PEM file"),
        ("n1", "wrong signature", "signature does not verify"),
        ("n1", "rsa-1024", "an RSA key of 1024 bits"),
        ("n1", "p-521", "curve secp521r1"),
        ("x1", "good", "x1: not a host of the set 's1'"),
    ],
)
def test_seed_bad_input_is_refused_and_changes_nothing(seed, minion, case, why):
    root = seed.parent
    data = _csr() if case == "good" else _bad(case)
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.PKIError, match=why):
        _sign(seed, minion, "kubelet-client", data)
    assert support.snapshot(root) == before


def test_the_policy_cache_sees_every_change_of_the_sets_files(seed):
    """What sign_request caches (the manifest's settings, the CA) is read again when the file
    changes, even rewritten in place; its owner and mode are checked on every call."""
    assert _sign(seed, "n2", "kubelet-client")["role"] == "node"
    manifest = seed / "cluster.yaml"
    text = manifest.read_text()
    with open(manifest, "r+") as handle:  # same inode: an in-place edit dropping n2
        handle.write("".join(line for line in text.splitlines(True) if '"n2"' not in line))
        handle.truncate()
    with pytest.raises(k8s_pki.EnrollRefused, match="n2: not a host of the set 's1'"):
        _sign(seed, "n2", "kubelet-client")
    manifest.chmod(0o666)
    with pytest.raises(k8s_pki.SetError, match="cluster.yaml"):
        _sign(seed, "n1", "kubelet-client")
    manifest.chmod(0o644)
    key = seed / "ca.key"
    key.chmod(0o644)
    with pytest.raises(k8s_pki.SetError, match="ca.key"):
        _sign(seed, "n1", "kubelet-client")
    key.chmod(0o600)
    # a new CA (force_regen swaps the folder): the next certificate is signed by it
    make_seed(seed.parent.parent / "other")
    for name in ("ca.crt", "ca.key"):
        (seed / name).write_bytes((seed.parent.parent / "other/s1" / name).read_bytes())
    ret = _sign(seed, "n1", "kubelet-client")
    assert ret["ca"] == (seed / "ca.crt").read_text()
    assert ks.verify(seed / "ca.crt", _write(seed.parent.parent / "leaf.pem", ret["cert"]))


def _write(path, text):
    path.write_text(text)
    return path
