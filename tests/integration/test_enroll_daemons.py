"""Enrollment with real daemons: keys born on the minions, CSRs signed through peer_run.

A salt-master (``peer_run`` allowing ``k8s-helper.sign_csr`` and nothing else,
debug logs, every event captured by ``salt-run state.event``) and three
sandboxed salt-minions: ``m1`` (a master of the kubeadm set), ``n1`` (a node)
and ``x1`` (not in the set).  ``state.apply kubernetes.certs.enrolled`` on m1
and n1, again (nothing to do), then a renewal on n1 (its client certificate
made to end in two days: a new key, a new CSR).  Then what the issue asks to
prove: no enrolled key text anywhere on the master, greedy and replayed CSRs
get the requester's own identity or a refusal, and openssl and kubectl accept
what was enrolled.
"""

import contextlib
import datetime
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import attr
import pytest
import support
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saltfactories.daemons.minion import SaltMinion
from support import k8s_pki, sandbox, tlsserver

pytestmark = [pytest.mark.daemons, pytest.mark.sandbox]

TAG = "kadm"
SEED_TAG = "sd"  # a seed set whose one node is x1 (the outsider of kadm)
SEED_WATCHED = ("/var/lib/kubelet", "/var/lib/kube-proxy", "/srv/kubernetes")
MASTER_ID, NODE_ID, OUTSIDER = "m1", "n1", "x1"
NODE_FILES = (
    "/var/lib/kubelet/pki/kubelet-client.crt",
    "/var/lib/kubelet/pki/kubelet-client.key",
    "/var/lib/kubelet/pki/kubelet.crt",
    "/var/lib/kubelet/pki/kubelet.key",
    "/etc/kubernetes/pki/ca.crt",
)
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
WATCHED = ("/var/lib/kubelet/pki", "/etc/kubernetes/pki", KUBELET_CONF)


@attr.s(kw_only=True, slots=True)
class SandboxedMinion(SaltMinion):
    """A salt-minion daemon whose process runs inside its own Sandbox."""

    sandbox = attr.ib(repr=False)

    def cmdline(self, *args):
        return self.sandbox.wrap(SaltMinion.cmdline(self, *args))


def _pillar(pillar_root):
    (pillar_root / "top.sls").write_text(
        yaml.safe_dump({"base": {MASTER_ID: ["master"], NODE_ID: ["node"], OUTSIDER: ["node"]}})
    )
    common = {"certs_mode": "enrolled", "enrollment": {"cluster_tag": TAG}}
    for role in ("master", "node"):
        doc = {"kubernetes": {**common, "role": role}}
        (pillar_root / f"{role}.sls").write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def master(salt_factories, tmp_path_factory, host_untouched):
    reason = sandbox.available()
    if reason:
        pytest.skip(f"sandbox unavailable: {reason}")
    base = tmp_path_factory.mktemp("enroll")
    pillar_root = base / "pillar"
    pillar_root.mkdir()
    _pillar(pillar_root)
    factory = salt_factories.salt_master_daemon(
        "enroll-salt",
        overrides={
            "file_roots": {"base": [str(support.formula_root(base))]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "k8s_helper": {"pki_root": str(base / "pki")},
            # the documented setting: minions may call this one runner function
            "peer_run": {".*": ["k8s-helper.sign_csr"]},
            # what a host cannot enroll still comes through pillar (a node: ca.crt only)
            "ext_pillar": [
                {"k8s_kubeadm": {"cluster_tag": TAG, "enrolled": True}},
                {"k8s_certs": {"cluster_tag": SEED_TAG, "nodes": [OUTSIDER], "enrolled": True}},
            ],
            "log_level_logfile": "debug",
        },
    )
    factory.set_dir = base / "pki" / TAG
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def events(master):
    """Every event on the master's bus while the tests run (``salt-run state.event``)."""
    out = pathlib.Path(master.config["root_dir"]) / "events.jsonl"
    with open(out, "w") as handle:
        proc = subprocess.Popen(
            [
                str(support.VENV_BIN / "salt-run"),
                "-c",
                str(master.config_dir),
                "state.event",
                "pretty=False",
            ],
            stdout=handle,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(3)  # let it subscribe before anything happens
    yield out
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def minions(master, events, tmp_path_factory):
    started = {}
    for minion_id in (MASTER_ID, NODE_ID, OUTSIDER):
        box = sandbox.Sandbox(tmp_path_factory.mktemp(f"box-{minion_id}"))
        factory = master.salt_minion_daemon(minion_id, factory_class=SandboxedMinion, sandbox=box)
        started[minion_id] = factory
    with contextlib.ExitStack() as stack:
        support.start_together(stack, started.values())
        yield started


def _ok(ret):
    assert ret.returncode == 0, f"{ret.stdout}\n{ret.stderr}"
    return ret.data


def _short_lived(master, disk, cert_path):
    """The minion's enrolled certificate issued again by the set's CA for the same key,
    ending in two days: what the host holds as it enters its renewal window."""
    cert = x509.load_pem_x509_certificate(bytes.fromhex(disk[cert_path]["data"]))
    ca = k8s_pki.read_pair(str(master.set_dir), "ca")
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    spec = k8s_pki.spec_from_cert(cert)
    short = k8s_pki.issue_leaf(spec, cert.public_key(), ca.cert, ca.key, days=12, now=now)
    return k8s_pki.cert_pem(short).decode()


@pytest.fixture(scope="module")
def run(master, minions):
    salt_run = master.salt_run_cli(timeout=180)
    salt = master.salt_cli(timeout=180)
    rec = {"sync_master": _ok(salt_run.run("saltutil.sync_all"))}
    rec["generate"] = _ok(
        salt_run.run(
            "k8s-helper.generate_certs",
            f"cluster_tag={TAG}",
            "profile=kubeadm",
            "key_type=ecdsa-p256",
            f"masters=[{{name: {MASTER_ID}, ip: 127.0.0.1}}]",
            f"nodes=[{{name: {NODE_ID}}}]",
        )
    )
    rec["generate seed"] = _ok(
        salt_run.run(
            "k8s-helper.generate_certs",
            f"cluster_tag={SEED_TAG}",
            "key_type=ecdsa-p256",
            f"nodes=[{{name: {OUTSIDER}}}]",
        )
    )
    for minion_id in minions:
        _ok(salt.run("saltutil.sync_all", minion_tgt=minion_id))
        _ok(salt.run("saltutil.refresh_pillar", "wait=True", minion_tgt=minion_id))
    for minion_id in (MASTER_ID, NODE_ID, OUTSIDER):
        rec[f"apply {minion_id}"] = salt.run(
            "state.apply", "kubernetes.certs.enrolled", minion_tgt=minion_id
        )
        rec[f"disk {minion_id}"] = sandbox.tree_in(minions[minion_id].pid, *WATCHED)
    for minion_id in (MASTER_ID, NODE_ID):
        rec[f"again {minion_id}"] = salt.run(
            "state.apply", "kubernetes.certs.enrolled", minion_tgt=minion_id
        )
    # renewal: n1's client certificate now ends in two days
    path = NODE_FILES[0]
    short = _short_lived(master, rec[f"disk {NODE_ID}"], path)
    _ok(salt.run("file.write", path, f"args={json.dumps([short])}", minion_tgt=NODE_ID))
    rec["renew"] = salt.run("state.apply", "kubernetes.certs.enrolled", minion_tgt=NODE_ID)
    rec["disk renewed"] = sandbox.tree_in(minions[NODE_ID].pid, *WATCHED)
    rec["pillar node"] = salt.run("pillar.items", "unmask=True", minion_tgt=NODE_ID)
    rec["verify"] = salt_run.run(
        "k8s-helper.verify", f"cluster_tag={TAG}", "tgt=m1,n1", "tgt_type=list", "table=False"
    )
    # the set switched to enrolled (no per-host pair left on the master), with x1 a node
    # that has not enrolled yet, verified, and back (without x1)
    generate = ("k8s-helper.generate_certs", f"cluster_tag={TAG}", "profile=kubeadm")
    nodes = f"nodes=[{{name: {NODE_ID}}}, {{name: {OUTSIDER}}}]"
    rec["generate enrolled"] = _ok(salt_run.run(*generate, "enrolled=True", nodes))
    rec["verify enrolled"] = salt_run.run(
        "k8s-helper.verify", f"cluster_tag={TAG}", "tgt=m1,n1,x1", "tgt_type=list", "table=False"
    )
    back = ("enrolled=False", f"nodes=[{{name: {NODE_ID}}}]")
    rec["generate back"] = _ok(salt_run.run(*generate, *back))
    # x1 is a node of the seed set: it enrolls there (its kubeadm cluster_tag overridden)
    override = json.dumps({"kubernetes": {"enrollment": {"cluster_tag": SEED_TAG}}})
    rec["apply seed"] = salt.run(
        "state.apply", "kubernetes.certs.enrolled", f"pillar={override}", minion_tgt=OUTSIDER
    )
    rec["disk seed"] = sandbox.tree_in(minions[OUTSIDER].pid, *SEED_WATCHED)
    rec["pillar seed"] = salt.run("pillar.items", "unmask=True", minion_tgt=OUTSIDER)
    rec["verify seed"] = salt_run.run(
        "k8s-helper.verify", f"cluster_tag={SEED_TAG}", f"tgt={OUTSIDER}", "table=False"
    )
    return rec


def _states(ret):
    data = _ok(ret)
    return {key.split("_|-")[1]: value for key, value in data.items()}


def _cert(disk, path):
    return x509.load_pem_x509_certificate(bytes.fromhex(disk[path]["data"]))


def _subject(cert):
    return cert.subject.rfc4514_string()


def test_node_enrolls_its_kubelet_identities_and_holds_no_other_key(run):
    states = _states(run[f"apply {NODE_ID}"])
    assert all(s["result"] is True for s in states.values()), states
    disk = run[f"disk {NODE_ID}"]
    keys = [p for p, e in disk.items() if e["kind"] == "file" and p.endswith(".key")]
    assert sorted(keys) == sorted(p for p in NODE_FILES if p.endswith(".key"))
    for path in keys:
        assert disk[path]["mode"] == 0o600, path
    client = _cert(disk, NODE_FILES[0])
    assert _subject(client) == "CN=system:node:n1,O=system:nodes"
    assert k8s_pki.cert_usages(client) == ("client",)
    serving = _cert(disk, NODE_FILES[2])
    assert k8s_pki.cert_usages(serving) == ("server",)
    assert k8s_pki.cert_sans(serving) == (("n1",), ())
    # its kubeconfig points at the enrolled pair, and holds no key
    conf = yaml.safe_load(bytes.fromhex(run[f"disk {NODE_ID}"][KUBELET_CONF]["data"]))
    user = conf["users"][0]["user"]
    assert user == {"client-certificate": NODE_FILES[0], "client-key": NODE_FILES[1]}
    assert conf["clusters"][0]["cluster"]["certificate-authority"] == NODE_FILES[4]
    # the changes name paths, subjects and fingerprints, never a key
    text = json.dumps(run[f"apply {NODE_ID}"].data)
    assert "PRIVATE" not in text and "system:node:n1" in text


def test_master_enrolls_its_own_serving_and_etcd_certificates(run, master):
    states = _states(run[f"apply {MASTER_ID}"])
    assert all(s["result"] is True for s in states.values()), states
    disk = run[f"disk {MASTER_ID}"]
    apiserver = _cert(disk, "/etc/kubernetes/pki/apiserver.crt")
    generated = x509.load_pem_x509_certificate(
        (master.set_dir / "hosts/m1/apiserver.crt").read_bytes()
    )
    assert k8s_pki.satisfies(apiserver, k8s_pki.spec_from_cert(generated))
    # its own key, not the one generate_certs made on the master
    assert not k8s_pki.key_matches(
        generated,
        serialization.load_pem_private_key(
            bytes.fromhex(disk["/etc/kubernetes/pki/apiserver.key"]["data"]), None
        ),
    )
    peer = _cert(disk, "/etc/kubernetes/pki/etcd/peer.crt")
    assert _subject(peer) == "CN=kube-etcd-peer"
    for member in ("apiserver", "etcd/peer", "kubelet-client"):
        assert (master.set_dir / "enrolled" / MASTER_ID / f"{member}.crt").is_file(), member


def test_outsider_is_refused_and_gets_nothing(run, master):
    ret = run[f"apply {OUTSIDER}"]
    assert ret.returncode != 0
    states = {key.split("_|-")[1]: value for key, value in ret.data.items()}
    failed = [s for s in states.values() if s["result"] is False]
    assert failed and "x1: not a host of the set 'kadm'" in failed[0]["comment"]
    assert not [p for p, e in run[f"disk {OUTSIDER}"].items() if e["kind"] == "file"]
    log = (pathlib.Path(master.config["root_dir"]) / "logs" / "master.log").read_text()
    assert "sign_csr refused for minion 'x1'" in log


def test_second_apply_changes_nothing(run):
    for minion_id in (MASTER_ID, NODE_ID):
        states = _states(run[f"again {minion_id}"])
        assert all(s["result"] is True and not s["changes"] for s in states.values()), states


def test_renewal_makes_a_new_key_and_a_new_certificate(run):
    states = _states(run["renew"])
    client = states["kubernetes-certs-enrolled-kubelet-client-certificate-enrolled"]
    assert client["changes"] and "renewal window" in client["changes"]["reason"], client
    before, after = run[f"disk {NODE_ID}"], run["disk renewed"]
    key = NODE_FILES[1]
    assert before[key]["data"] != after[key]["data"]
    renewed = _cert(after, NODE_FILES[0])
    assert k8s_pki.days_left(renewed) > 300
    # the serving certificate was not due: untouched
    assert before[NODE_FILES[3]]["data"] == after[NODE_FILES[3]]["data"]


def _enrolled_keys(run):
    keys = []
    for disk in (run[f"disk {MASTER_ID}"], run[f"disk {NODE_ID}"], run["disk renewed"]):
        keys += [bytes.fromhex(e["data"]).decode() for p, e in disk.items() if p.endswith(".key")]
    return keys


def test_no_enrolled_key_text_anywhere_on_the_master(run, master, events):
    """Its whole root_dir (pillar cache, job cache, logs at debug level), the set's
    folder and every event the bus carried: none holds a line of an enrolled key."""
    keys = _enrolled_keys(run)
    assert len(keys) >= 11
    lines = support.key_lines(*keys)
    roots = [pathlib.Path(master.config["root_dir"]), master.set_dir]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    jobs = [p for p in files if "jobs" in p.parts]
    assert jobs and events in files
    log = pathlib.Path(master.config["root_dir"]) / "logs" / "master.log"
    assert log in files and "[DEBUG   ]" in log.read_text()  # logs at debug level
    assert "sign_csr" in events.read_text()  # the capture saw the signing calls
    for path in files:
        text = path.read_bytes().decode("latin-1")
        found = next((line for line in lines if line in text), None)
        assert found is None, path


def test_node_pillar_holds_no_private_key(run):
    pillar = _ok(run["pillar node"])
    assert "PRIVATE KEY" not in json.dumps(pillar)
    assert pillar["kubernetes"]["certs_mode"] == "enrolled"
    assert set(pillar["kubernetes"]["kubeadm_pki"]["files"]) == {"pki/ca.crt"}


def _greedy_csr(key):
    attrs = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
        x509.NameAttribute(NameOID.COMMON_NAME, "system:node:m1"),
    ]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("kubernetes.default")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def _ask(master, minion_id, csr, member, tag=TAG):
    """The minion ``minion_id`` itself calls publish.runner (as a compromised host could)."""
    request = json.dumps([{"__kwarg__": True, "csr": csr, "member": member, "cluster_tag": tag}])
    ret = master.salt_cli(timeout=120).run(
        "publish.runner", "k8s-helper.sign_csr", f"arg={request}", minion_tgt=minion_id
    )
    assert ret.data is not None, ret.stdout + ret.stderr
    return ret.data


def test_greedy_and_replayed_csrs_through_peer_run(run, master):
    key = k8s_pki.new_key("ecdsa-p256")
    csr = _greedy_csr(key)
    got = _ask(master, NODE_ID, csr, "kubelet-client")
    cert = x509.load_pem_x509_certificate(got["cert"].encode())
    assert _subject(cert) == "CN=system:node:n1,O=system:nodes"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    refused = _ask(master, NODE_ID, _greedy_csr(k8s_pki.new_key("ecdsa-p256")), "apiserver")
    assert refused["retcode"] == 2 and "a node of 'kadm' may enroll" in refused["error"]
    replayed = _ask(master, MASTER_ID, csr, "kubelet-client")
    assert replayed["retcode"] == 2 and "already certified" in replayed["error"], replayed
    outsider = _ask(master, OUTSIDER, _greedy_csr(k8s_pki.new_key("ecdsa-p256")), "kubelet-client")
    assert outsider["retcode"] == 2 and "x1: not a host" in outsider["error"]
    # a function peer_run does not allow: Salt answers nothing
    other = master.salt_cli(timeout=120).run(
        "publish.runner", "k8s-helper.generate_certs", minion_tgt=NODE_ID
    )
    assert not other.data, other.stdout


def _put(tmp_path, disk, path, name):
    target = tmp_path / name
    target.write_bytes(bytes.fromhex(disk[path]["data"]))
    target.chmod(0o600)
    return target


def test_openssl_and_kubectl_accept_the_enrolled_certificates(run, tmp_path):
    node, mast = run["disk renewed"], run[f"disk {MASTER_ID}"]
    ca = _put(tmp_path, node, "/etc/kubernetes/pki/ca.crt", "ca.crt")
    for path in (NODE_FILES[0], NODE_FILES[2]):
        cert = _put(tmp_path, node, path, "leaf.crt")
        assert support.openssl("verify", "-CAfile", ca, cert).stdout.strip().endswith(": OK")
    etcd_ca = _put(tmp_path, mast, "/etc/kubernetes/pki/etcd/ca.crt", "etcd-ca.crt")
    peer = _put(tmp_path, mast, "/etc/kubernetes/pki/etcd/peer.crt", "peer.crt")
    assert support.openssl("verify", "-CAfile", etcd_ca, peer).stdout.strip().endswith(": OK")
    server_cert = _put(tmp_path, mast, "/etc/kubernetes/pki/apiserver.crt", "apiserver.crt")
    server_key = _put(tmp_path, mast, "/etc/kubernetes/pki/apiserver.key", "apiserver.key")
    client_cert = _put(tmp_path, node, NODE_FILES[0], "client.crt")
    client_key = _put(tmp_path, node, NODE_FILES[1], "client.key")
    with tlsserver.TLSServer(server_cert, server_key, ca) as server:
        config = tlsserver.kubeconfig(
            tmp_path / "kubeconfig", server.url, ca, client_cert, client_key, "kubernetes.api"
        )
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(config), "get", "--raw", "/healthz"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert {
            "commonName": "system:node:n1",
            "organizationName": "system:nodes",
        } in server.clients


def test_check_expiration_covers_the_enrolled_copies(run, master):
    ret = master.salt_run_cli(timeout=120).run(
        "k8s-helper.check_expiration", f"cluster_tag={TAG}", "table=False"
    )
    names = [entry["name"] for entry in ret.data["certificates"]]
    assert f"enrolled/{NODE_ID}/kubelet-client.crt" in names
    assert f"enrolled/{MASTER_ID}/apiserver.crt" in names


def test_enrolled_removed_takes_the_files_away(run, master, minions):
    ret = master.salt_cli(timeout=180).run(
        "state.apply", "kubernetes.certs.enrolled_removed", minion_tgt=NODE_ID
    )
    _ok(ret)
    left = sandbox.tree_in(minions[NODE_ID].pid, *WATCHED)
    assert not [p for p, e in left.items() if e["kind"] == "file"], left


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(
    not (shutil.which("etcd") and shutil.which("etcdctl")),
    reason="Debian's etcd-server and etcd-client are not installed (make system-deps)",
)
def test_etcd_serves_and_peers_with_the_enrolled_certificates(run, tmp_path):
    """m1's enrolled etcd server/peer pairs run a real etcd with client-certificate auth;
    etcdctl with m1's enrolled apiserver-etcd-client pair writes and reads."""
    disk = run[f"disk {MASTER_ID}"]
    names = ("etcd/ca.crt", "etcd/server.crt", "etcd/server.key", "etcd/peer.crt")
    names += ("etcd/peer.key", "apiserver-etcd-client.crt", "apiserver-etcd-client.key")
    f = {n: _put(tmp_path, disk, f"/etc/kubernetes/pki/{n}", n.replace("/", "-")) for n in names}
    client, peer = _free_port(), _free_port()
    log = open(tmp_path / "etcd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            "etcd",
            "--name=m1",
            f"--data-dir={tmp_path / 'data'}",
            f"--listen-client-urls=https://127.0.0.1:{client}",
            f"--advertise-client-urls=https://127.0.0.1:{client}",
            f"--listen-peer-urls=https://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}",
            f"--initial-cluster=m1=https://127.0.0.1:{peer}",
            f"--cert-file={f['etcd/server.crt']}",
            f"--key-file={f['etcd/server.key']}",
            f"--trusted-ca-file={f['etcd/ca.crt']}",
            "--client-cert-auth",
            f"--peer-cert-file={f['etcd/peer.crt']}",
            f"--peer-key-file={f['etcd/peer.key']}",
            f"--peer-trusted-ca-file={f['etcd/ca.crt']}",
            "--peer-client-cert-auth",
            "--listen-metrics-urls=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def etcdctl(*args):
        cmd = [
            "etcdctl",
            f"--endpoints=https://127.0.0.1:{client}",
            f"--cacert={f['etcd/ca.crt']}",
            f"--cert={f['apiserver-etcd-client.crt']}",
            f"--key={f['apiserver-etcd-client.key']}",
            "--dial-timeout=2s",
            "--command-timeout=4s",
            *args,
        ]
        env = {**os.environ, "ETCDCTL_API": "3"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20)

    try:
        for _ in range(100):  # bounded: about 30 s at most
            health = etcdctl("endpoint", "health")
            if health.returncode == 0 or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert health.returncode == 0, (tmp_path / "etcd.log").read_text()[-2000:]
        assert etcdctl("put", "/registry/x", "1").stdout.strip() == "OK"
        got = etcdctl("get", "/registry/x", "--print-value-only")
        assert got.stdout.strip() == "1"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def test_verify_compares_enrolled_hosts_with_the_masters_copies(run):
    # m1 never applied kubernetes.kubeadm.present: its pillar share is missing (exit 1)
    assert run["verify"].returncode == 1, run["verify"].stderr
    data = run["verify"].data
    node = data["hosts"][NODE_ID]
    assert node["status"] == "ok", node
    enrolled = {c["id"]: c["status"] for c in node["checks"] if c["id"].startswith("enrolled ")}
    assert enrolled == {"enrolled kubelet-client": "match", "enrolled kubelet-serving": "match"}
    # the kubeadm checks of the enrolled paths gave way to these (no "forbidden" key)
    assert not [c for c in node["checks"] if c["status"] == "forbidden"], node["checks"]
    master = data["hosts"][MASTER_ID]
    statuses = {c["id"]: c["status"] for c in master["checks"] if c["id"].startswith("enrolled ")}
    assert len(statuses) == 9 and set(statuses.values()) == {"match"}, statuses
    assert "PRIVATE" not in json.dumps(data)


def test_verify_of_the_set_switched_to_enrolled_finds_the_hosts_in_its_manifest(run):
    assert "hosts/n1/kubelet.conf" in run["generate enrolled"]["removed"]
    data = run["verify enrolled"].data
    node, master = data["hosts"][NODE_ID], data["hosts"][MASTER_ID]
    # no hosts/n1/ on the master any more: n1 is still a node of the set, its share the CA
    assert (node["host"], node["role"], node["status"]) == (NODE_ID, "node", "ok"), node
    kubeadm = {c["id"]: c["status"] for c in node["checks"] if not c["id"].startswith("enr")}
    assert kubeadm["pki/ca.crt"] == "match" and "forbidden" not in kubeadm.values(), kubeadm
    enrolled = {c["id"]: c["status"] for c in node["checks"] if c["id"].startswith("enrolled ")}
    assert set(enrolled.values()) == {"match"}, enrolled
    assert master["role"] == "master", master
    # a host of the enrolled set the master issued nothing to yet is a problem, said so
    outsider = data["hosts"][OUTSIDER]
    assert outsider["status"] == "problems" and outsider["role"] == "node", outsider
    assert {"id": "enrolled", "status": "not enrolled"}.items() <= outsider["checks"][-1].items()
    assert run["verify enrolled"].returncode == 1
    assert "hosts/n1/kubelet.conf" in {
        n for n, i in run["generate back"]["files"].items() if i["action"] == "generated"
    }


def test_a_seed_node_enrolls_per_node_identities_and_holds_no_admin_key(run, master):
    states = _states(run["apply seed"])
    assert all(s["result"] is True for s in states.values()), states
    disk = run["disk seed"]
    client = _cert(disk, "/var/lib/kubelet/pki/kubelet-client.crt")
    assert _subject(client) == "CN=system:node:x1,O=system:nodes"
    proxy = _cert(disk, "/var/lib/kube-proxy/pki/kube-proxy.crt")
    assert _subject(proxy) == "CN=system:kube-proxy"
    keys = sorted(p for p, e in disk.items() if e["kind"] == "file" and p.endswith(".key"))
    assert keys == [
        "/var/lib/kube-proxy/pki/kube-proxy.key",
        "/var/lib/kubelet/pki/kubelet-client.key",
        "/var/lib/kubelet/pki/kubelet.key",
    ]
    conf = yaml.safe_load(bytes.fromhex(disk["/var/lib/kube-proxy/kubeconfig"]["data"]))
    assert (
        conf["users"][0]["user"]["client-certificate"] == "/var/lib/kube-proxy/pki/kube-proxy.crt"
    )
    # the seed pillar hands the node its CA only: no kubecfg (O=system:masters) key
    pillar = _ok(run["pillar seed"])
    assert set(pillar["kubernetes"]["certs"]) == {"ca.crt"}
    assert "PRIVATE KEY" not in json.dumps(pillar)
    copies = master.set_dir.parent / SEED_TAG / "enrolled" / OUTSIDER
    assert sorted(p.name for p in copies.iterdir()) == [
        "kube-proxy.crt",
        "kubelet-client.crt",
        "kubelet-serving.crt",
    ]
    data = _ok(run["verify seed"])
    host = data["hosts"][OUTSIDER]
    assert host["status"] == "ok", host["checks"]
    assert {c["id"] for c in host["checks"] if c["status"] == "match"} >= {
        "enrolled kubelet-client",
        "enrolled kube-proxy",
    }


def _bad_csrs():
    good = k8s_pki.csr_for(k8s_pki.new_key("ecdsa-p256"), OUTSIDER)
    der = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    rsa_1024 = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OUTSIDER)]))
        .sign(rsa.generate_private_key(public_exponent=65537, key_size=1024), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    return {
        "garbage": ("hello, master", "csr: not a PEM"),
        "wrong signature": (tampered.decode(), "signature does not verify"),
        "rsa-1024": (rsa_1024.decode(), "an RSA key of 1024 bits"),
    }


def test_bad_input_to_the_seed_set_through_peer_run(run, master):
    """Each refused with a one-line error and retcode, logged on the master, nothing written."""
    seed_dir = master.set_dir.parent / SEED_TAG
    before = support.snapshot(seed_dir)
    for case, (csr, why) in _bad_csrs().items():
        got = _ask(master, OUTSIDER, csr, "kubelet-client", tag=SEED_TAG)
        assert got["retcode"] == 2 and why in got["error"], (case, got)
        assert "\n" not in got["error"]
    outsider = _ask(
        master, NODE_ID, _greedy_csr(k8s_pki.new_key("ecdsa-p256")), "kube-proxy", SEED_TAG
    )
    assert outsider["retcode"] == 2 and "n1: not a host of the set 'sd'" in outsider["error"]
    assert support.snapshot(seed_dir) == before
    log = (pathlib.Path(master.config["root_dir"]) / "logs" / "master.log").read_text()
    assert "sign_csr refused for minion 'x1': csr: not a PEM" in log
    assert "sign_csr refused for minion 'n1': n1: not a host of the set 'sd'" in log
