"""The kubeadm profile in the PKI library: identities, layout, reuse, drift, external CAs.

Certificates are reloaded from disk and checked with the openssl CLI, independent
of the code that made them.
"""

import datetime
import ipaddress
import os
import shutil
import stat

import pytest
import support
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import kubeadm as ks

k8s_pki = support.k8s_pki

SHARED_PAIRS = (
    "ca",
    "front-proxy-ca",
    "etcd/ca",
    "apiserver-kubelet-client",
    "front-proxy-client",
    "etcd/healthcheck-client",
    "apiserver-etcd-client",
)

# Default CN, O, usages, issuing CA's CN -- kubeadm's identities (Kubernetes'
# "PKI certificates and requirements"; kubeadm puts its admin identities in
# the kubeadm:cluster-admins group, super-admin in system:masters).
LEAVES = {
    "apiserver-kubelet-client.crt": (
        "kube-apiserver-kubelet-client",
        ["kubeadm:cluster-admins"],
        ["client"],
        "kubernetes-ca",
    ),
    "front-proxy-client.crt": ("front-proxy-client", [], ["client"], "kubernetes-front-proxy-ca"),
    "etcd/healthcheck-client.crt": ("kube-etcd-healthcheck-client", [], ["client"], "etcd-ca"),
    "apiserver-etcd-client.crt": ("kube-apiserver-etcd-client", [], ["client"], "etcd-ca"),
}
CONFS = {
    "admin.conf": ("kubernetes-admin", ["kubeadm:cluster-admins"]),
    "super-admin.conf": ("kubernetes-super-admin", ["system:masters"]),
}
# each master's own: pointing at its own apiserver (https://<its ip>:6443), as kubeadm does
LOCAL_CONFS = {
    "controller-manager.conf": ("system:kube-controller-manager", []),
    "scheduler.conf": ("system:kube-scheduler", []),
}
CAS = {"ca.crt": "kubernetes-ca", "front-proxy-ca.crt": "kubernetes-front-proxy-ca"}
CAS["etcd/ca.crt"] = "etcd-ca"


def _cert(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def _names(cert):
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return cn, sorted(orgs)


def _usages(cert):
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}
    ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    return sorted(names[oid] for oid in ext)


def _sans(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        sorted(ext.get_values_for_type(x509.DNSName)),
        sorted(str(ip) for ip in ext.get_values_for_type(x509.IPAddress)),
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One ECDSA kubeadm set for the read-only checks of this module."""
    root = tmp_path_factory.mktemp("kubeadm") / "pki"
    plan, backup = k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    return root / "c1", plan, backup


def test_layout_and_modes(made):
    directory, plan, backup = made
    assert plan.changed and backup is None
    expected = {f"{n}{s}" for n in SHARED_PAIRS for s in (".crt", ".key")}
    expected |= {"sa.key", "sa.pub", *CONFS}
    for host in ("m1", "m2", "m3"):
        expected |= {
            f"hosts/{host}/{n}{s}"
            for n in ("apiserver", "etcd/server", "etcd/peer")
            for s in (".crt", ".key")
        }
        expected |= {f"hosts/{host}/{conf}" for conf in LOCAL_CONFS}
    expected |= {f"hosts/{h}/kubelet.conf" for h in ("m1", "m2", "m3", "n1", "n2")}
    found = set()
    for dirpath, dirnames, filenames in os.walk(directory):
        for d in dirnames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, d)).st_mode) == 0o700, d
        for f in filenames:
            rel = os.path.relpath(os.path.join(dirpath, f), directory)
            found.add(rel)
            mode = stat.S_IMODE(os.stat(os.path.join(dirpath, f)).st_mode)
            secret = rel.endswith((".key", ".conf"))
            assert mode == (0o600 if secret else 0o644), (rel, oct(mode))
    assert found == expected
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_cas(made):
    directory, _, _ = made
    for rel, cn in CAS.items():
        cert = _cert(directory / rel)
        assert _names(cert) == ([cn], [])
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        text = ks.x509_text(directory / rel)
        assert "CA:TRUE" in text and "Certificate Sign, CRL Sign" in text
        assert ks.verify(directory / rel, directory / rel)


def test_shared_leaves_identities_and_chain(made):
    directory, _, _ = made
    ca_file = {
        "kubernetes-ca": "ca.crt",
        "kubernetes-front-proxy-ca": "front-proxy-ca.crt",
        "etcd-ca": "etcd/ca.crt",
    }
    for rel, (cn, orgs, usages, issuer) in LEAVES.items():
        cert = _cert(directory / rel)
        assert _names(cert) == ([cn], orgs), rel
        assert _usages(cert) == usages, rel
        assert ks.verify(directory / ca_file[issuer], directory / rel), rel
        others = [f for f in ca_file.values() if f != ca_file[issuer]]
        assert not any(ks.verify(directory / f, directory / rel) for f in others), rel
    assert ks.subject(directory / "apiserver-kubelet-client.crt") == (
        "O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client"
    )


def test_per_master_certificates(made):
    directory, _, _ = made
    for host in ks.MASTERS:
        name, ip = host["name"], host["ip"]
        here = directory / "hosts" / name
        api = _cert(here / "apiserver.crt")
        assert _names(api) == (["kube-apiserver"], []) and _usages(api) == ["server"]
        dns, ips = _sans(api)
        assert dns == sorted(
            [
                name,
                "kubernetes.api",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
        )
        assert ips == sorted(["10.254.0.1", ip])
        assert ks.verify(directory / "ca.crt", here / "apiserver.crt")
        for leaf, cn in (("server", "kube-etcd"), ("peer", "kube-etcd-peer")):
            cert = _cert(here / "etcd" / f"{leaf}.crt")
            assert _names(cert) == ([cn], [])
            assert _usages(cert) == ["client", "server"]  # etcd dials itself
            dns, ips = _sans(cert)
            assert dns == sorted([name, "localhost"])
            assert ips == sorted({ip, "127.0.0.1", "::1"})
            assert ks.verify(directory / "etcd/ca.crt", here / "etcd" / f"{leaf}.crt")
            assert not ks.verify(directory / "ca.crt", here / "etcd" / f"{leaf}.crt")


def test_kubeconfigs(made, tmp_path):
    directory, _, _ = made
    confs = {rel: (*who, "https://kubernetes.api:6443") for rel, who in CONFS.items()}
    for host in ("m1", "m2", "m3", "n1", "n2"):
        who = (f"system:node:{host}", ["system:nodes"], "https://kubernetes.api:6443")
        confs[f"hosts/{host}/kubelet.conf"] = who
    for master in ks.MASTERS:
        for name, who in LOCAL_CONFS.items():
            confs[f"hosts/{master['name']}/{name}"] = (*who, f"https://{master['ip']}:6443")
    ca_pem = (directory / "ca.crt").read_bytes()
    for rel, (cn, orgs, server) in confs.items():
        conf = ks.kubeconfig(directory / rel)
        assert conf["server"] == server, rel
        assert conf["ca"] == ca_pem
        assert conf["user"] == cn
        pems = ks.unpack_kubeconfig(directory / rel, tmp_path / rel.replace("/", "_"))
        cert = _cert(pems["cert"])
        assert _names(cert) == ([cn], orgs), rel
        assert _usages(cert) == ["client"]
        assert ks.verify(directory / "ca.crt", pems["cert"]), rel
        # the embedded key is the certificate's key (openssl's own comparison)
        pub_of_key = support.openssl("pkey", "-in", pems["key"], "-pubout").stdout
        pub_of_cert = support.openssl("x509", "-in", pems["cert"], "-noout", "-pubkey").stdout
        assert pub_of_key == pub_of_cert


def test_service_account_pair(made):
    directory, _, _ = made
    pub = support.openssl("pkey", "-in", directory / "sa.key", "-pubout").stdout
    assert pub == (directory / "sa.pub").read_text()
    assert "PRIVATE KEY" not in (directory / "sa.pub").read_text()


def test_expiry_report_includes_kubeconfigs(made):
    """check_expiration's report covers every certificate, those inside kubeconfigs too."""
    directory, _, _ = made
    report = k8s_pki.expiry_report(str(directory))
    where = {entry["name"]: entry for entry in report["certificates"]}
    assert report["summary"]["ok"] == len(where) and not report["summary"]["unreadable"]
    assert where["admin.conf user kubernetes-admin"]["subject"] == (
        "CN=kubernetes-admin,O=kubeadm:cluster-admins"
    )
    assert where["hosts/n2/kubelet.conf user system:node:n2"]["issuer"] == "CN=kubernetes-ca"
    assert where["hosts/n2/kubelet.conf cluster kubernetes"]["kind"] == "ca"
    assert "hosts/m1/etcd/peer.crt" in where
    crts = [w for w in where if w.endswith(".crt")]
    assert len(crts) == 3 + 4 + 3 * 3
    assert len([w for w in where if " user " in w]) == 2 + 2 * 3 + 5


def test_host_files_node_gets_no_foreign_key(made):
    directory, _, _ = made
    node = k8s_pki.kubeadm_host_files("n1", master=False)
    assert node == {"pki/ca.crt": "ca.crt", "kubelet.conf": "hosts/n1/kubelet.conf"}
    master = k8s_pki.kubeadm_host_files("m2", master=True)
    assert master["pki/apiserver.crt"] == "hosts/m2/apiserver.crt"
    assert master["pki/etcd/peer.key"] == "hosts/m2/etcd/peer.key"
    assert master["kubelet.conf"] == "hosts/m2/kubelet.conf"
    assert master["pki/sa.pub"] == "sa.pub" and master["admin.conf"] == "admin.conf"
    assert master["controller-manager.conf"] == "hosts/m2/controller-manager.conf"
    assert master["scheduler.conf"] == "hosts/m2/scheduler.conf"
    assert not any("m1" in src or "m3" in src for src in master.values())
    for src in master.values():  # every file named exists in the set
        assert (directory / src).is_file(), src


def test_rerun_is_byte_identical(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    before = support.snapshot(root)
    plan, backup = k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    assert not plan.changed and backup is None
    assert support.snapshot(root) == before


def test_new_node_and_moved_master(tmp_path):
    """Only what the change concerns is issued; everything else stays byte-identical."""
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    before = support.snapshot(root / "c1")
    nodes = [*ks.NODES, {"name": "n3", "ip": "192.0.2.23"}]
    plan, _ = k8s_pki.ensure_set(root, "c1", ks.specs(nodes=nodes), key_type="ecdsa-p256")
    changed = {n for n, i in plan.items.items() if i.action != "reused"}
    assert changed == {"hosts/n3/kubelet.conf"}
    after = support.snapshot(root / "c1")
    files_before = {k: v for k, v in before.items() if v[2] is not None}
    assert {k: v for k, v in after.items() if k in files_before} == files_before  # same inodes

    masters = [dict(m) for m in ks.MASTERS]
    masters[1]["ip"] = "127.0.0.9"
    plan, _ = k8s_pki.ensure_set(
        root, "c1", ks.specs(masters=masters, nodes=nodes), key_type="ecdsa-p256"
    )
    changed = {n: i.reason for n, i in plan.items.items() if i.action != "reused"}
    assert set(changed) == {
        "hosts/m2/apiserver",
        "hosts/m2/etcd/server",
        "hosts/m2/etcd/peer",
        # its own components' kubeconfigs point at its own (new) address
        "hosts/m2/controller-manager.conf",
        "hosts/m2/scheduler.conf",
    }
    assert all("differ" in changed[f"hosts/m2/{n}"] for n in ("apiserver", "etcd/peer"))
    assert "not 'https://127.0.0.9:6443'" in changed["hosts/m2/scheduler.conf"]
    assert ks.kubeconfig(root / "c1/hosts/m2/scheduler.conf")["server"] == "https://127.0.0.9:6443"
    _, ips = _sans(_cert(root / "c1/hosts/m2/etcd/peer.crt"))
    assert "127.0.0.9" in ips


def test_endpoint_change_rewrites_kubeconfigs_only(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    plan, _ = k8s_pki.ensure_set(
        root, "c1", ks.specs(control_plane_endpoint="lb.example.com:7443"), key_type="ecdsa-p256"
    )
    changed = {n for n, i in plan.items.items() if i.action != "reused"}
    confs = {*CONFS, *(f"hosts/{h}/kubelet.conf" for h in ("m1", "m2", "m3", "n1", "n2"))}
    # the masters' own kubeconfigs (controller-manager, scheduler) keep pointing at
    # their own apiserver; the apiserver certificates gain the endpoint's name as a SAN
    assert changed == confs | {f"hosts/{m}/apiserver" for m in ("m1", "m2", "m3")}
    assert ks.kubeconfig(root / "c1/admin.conf")["server"] == "https://lb.example.com:7443"
    dns, _ = _sans(_cert(root / "c1/hosts/m1/apiserver.crt"))
    assert "lb.example.com" in dns


def test_missing_pieces_are_issued_from_existing_cas(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    d = root / "c1"
    ca_before = (d / "etcd/ca.crt").read_bytes()
    (d / "admin.conf").unlink()
    (d / "hosts/m3/etcd/peer.key").unlink()
    (d / "sa.pub").unlink()
    sa_key = (d / "sa.key").read_bytes()
    plan, _ = k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    actions = {n: i.action for n, i in plan.items.items() if i.action != "reused"}
    assert actions == {
        "admin.conf": "generated",
        "hosts/m3/etcd/peer": "generated",
        "sa": "reissued",
    }
    assert (d / "etcd/ca.crt").read_bytes() == ca_before
    assert (d / "sa.key").read_bytes() == sa_key  # the pub is derived again from the same key
    assert support.openssl("pkey", "-in", d / "sa.key", "-pubout").stdout == (
        (d / "sa.pub").read_text()
    )
    assert ks.verify(d / "etcd/ca.crt", d / "hosts/m3/etcd/peer.crt")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "admin.conf").write_text("garbage: [\n"), "admin.conf: not a YAML"),
        (lambda d: (d / "admin.conf").write_text("kind: Config\n"), "admin.conf: no context"),
        (lambda d: (d / "sa.pub").write_text("nope"), "sa.pub: not a PEM public key"),
        (
            lambda d: shutil.copy(d / "hosts/m1/apiserver.key", d / "hosts/m2/apiserver.key"),
            "hosts/m2/apiserver.key does not belong to hosts/m2/apiserver.crt",
        ),
        (lambda d: (d / "etcd/ca.key").unlink(), "etcd/ca.key is missing"),
    ],
)
def test_broken_set_is_refused_untouched(tmp_path, damage, message):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    damage(root / "c1")
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.SetError, match=message):
        k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    assert support.snapshot(root) == before


def test_kubeconfig_with_foreign_key_is_refused(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    text = (root / "c1/admin.conf").read_text()
    other = ks.kubeconfig(root / "c1/hosts/m1/scheduler.conf")["key"]
    import base64

    mine = ks.kubeconfig(root / "c1/admin.conf")["key"]
    text = text.replace(base64.b64encode(mine).decode(), base64.b64encode(other).decode())
    (root / "c1/admin.conf").write_text(text)
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.SetError, match="admin.conf: the embedded key does not belong"):
        k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    assert support.snapshot(root) == before


def test_force_regen_backs_up_everything(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    before = {k: v[2] for k, v in support.snapshot(root / "c1").items()}
    plan, backup = k8s_pki.ensure_set(
        root, "c1", ks.specs(), key_type="ecdsa-p256", force_regen=True
    )
    assert backup and all(i.action == "generated" for i in plan.items.values())
    rel_backup = os.path.relpath(backup, root / "c1")
    saved = {
        k[len(rel_backup) + 1 :]: v[2]
        for k, v in support.snapshot(root / "c1").items()
        if k.startswith(rel_backup + "/")
    }
    assert {k: v for k, v in saved.items() if v is not None} == {
        k: v for k, v in before.items() if v is not None
    }
    assert (root / "c1/ca.crt").read_bytes() != before["ca.crt"]


def test_unknown_files_in_the_folder_are_kept(tmp_path):
    """A write replaces the folder: files the set does not name must travel along."""
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    (root / "c1/NOTES.txt").write_text("mine")
    (root / "c1/hosts/n1/kubelet.conf").unlink()
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    assert (root / "c1/NOTES.txt").read_text() == "mine"


# -- external CAs ---------------------------------------------------------------


def _external_ca(directory, name="ca", cn="corp-root"):
    """A CA made elsewhere (not by k8s_pki.ensure_set), dropped into the folder."""
    key = k8s_pki.new_key("ecdsa-p256")
    cert = k8s_pki.build_ca(key, cn)
    (directory / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / f"{name}.crt").write_bytes(k8s_pki.cert_pem(cert))
    (directory / f"{name}.key").write_bytes(k8s_pki.key_pem(key))
    os.chmod(directory / f"{name}.key", 0o600)
    return cert, key


def test_external_ca_issues_leaves_and_is_never_replaced(tmp_path):
    root = tmp_path / "pki"
    (root / "c1").mkdir(parents=True, mode=0o700)
    cert, _ = _external_ca(root / "c1")
    ca_bytes = (root / "c1/ca.crt").read_bytes(), (root / "c1/ca.key").read_bytes()
    plan, _ = k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    assert plan.items["ca"].action == "reused" and plan.items["ca"].external
    assert plan.items["etcd/ca"].action == "generated"  # the CAs not brought are made
    files = k8s_pki.describe_plan(plan)["files"]
    assert files["ca.crt"]["external"] is True and "external" not in files["etcd/ca.crt"]
    assert ((root / "c1/ca.crt").read_bytes(), (root / "c1/ca.key").read_bytes()) == ca_bytes
    assert ks.verify(root / "c1/ca.crt", root / "c1/hosts/m1/apiserver.crt")
    pems = ks.unpack_kubeconfig(root / "c1/admin.conf", tmp_path / "admin")
    assert ks.verify(root / "c1/ca.crt", pems["cert"])

    before = support.snapshot(root)
    with pytest.raises(k8s_pki.SetError, match="did not create"):
        k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256", force_regen=True)
    assert support.snapshot(root) == before


def test_force_regen_allowed_for_cas_made_here(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    made = k8s_pki.created_cas(str(root / "c1"))
    assert len(made) == 3
    plan, backup = k8s_pki.ensure_set(
        root, "c1", ks.specs(), key_type="ecdsa-p256", force_regen=True
    )
    assert backup
    assert len(k8s_pki.created_cas(str(root / "c1"))) == 6


def test_external_ca_certificate_only(tmp_path):
    """Only ca.crt is here: what it signs must be provided, and is verified, not issued."""
    # The "elsewhere": a full set made from the external CA, then its key taken away.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "c1").mkdir(parents=True, mode=0o700)
    _external_ca(elsewhere / "c1")
    k8s_pki.ensure_set(elsewhere, "c1", ks.specs(), key_type="ecdsa-p256")
    root = tmp_path / "pki"
    (root / "c1").mkdir(parents=True, mode=0o700)
    signed_by_ca = [n for n, s in ks.specs().items() if getattr(s, "issuer", None) == "ca"]
    for name in ["ca", *signed_by_ca]:
        for rel, _ in k8s_pki.spec_files(name, ks.specs()[name]):
            if rel != "ca.key":
                (root / "c1" / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(elsewhere / "c1" / rel, root / "c1" / rel)

    plan, _ = k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    for name in signed_by_ca:
        assert plan.items[name].action == "reused", name
    assert plan.items["etcd/ca"].action == "generated"
    assert not (root / "c1/ca.key").exists()
    files = k8s_pki.describe_plan(plan)["files"]
    assert files["ca.crt"]["external"] and "ca.key" not in files

    # a leaf the CA signs is missing: refused, nothing written
    (root / "c1/hosts/n2/kubelet.conf").unlink()
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.SetError, match="hosts/n2/kubelet.conf: missing; ca.key is not"):
        k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    assert support.snapshot(root) == before
    shutil.copy2(elsewhere / "c1/hosts/n2/kubelet.conf", root / "c1/hosts/n2/kubelet.conf")

    # a provided leaf that says something else than requested: refused
    masters = [dict(m) for m in ks.MASTERS]
    masters[0]["ip"] = "127.0.0.8"
    with pytest.raises(k8s_pki.SetError, match="hosts/m1/apiserver.crt: names or usages"):
        k8s_pki.ensure_set(root, "c1", ks.specs(masters=masters), key_type="ecdsa-p256")
    assert support.snapshot(root) == before | {
        k: v for k, v in support.snapshot(root).items() if k.startswith("c1/hosts/n2")
    }


def test_external_ca_certificate_only_expired_leaf(tmp_path):
    root = tmp_path / "pki"
    (root / "c1").mkdir(parents=True, mode=0o700)
    ca_cert, ca_key = _external_ca(root / "c1")
    specs = k8s_pki.seed_specs()
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    for name in ("server", "kubecfg"):
        key = k8s_pki.new_key("ecdsa-p256")
        cert = k8s_pki.issue_leaf(specs[name], key, ca_cert, ca_key, days=10, now=past)
        (root / f"c1/{name}.crt").write_bytes(k8s_pki.cert_pem(cert))
        (root / f"c1/{name}.key").write_bytes(k8s_pki.key_pem(key))
        os.chmod(root / f"c1/{name}.key", 0o600)
    (root / "c1/ca.key").unlink()
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.SetError, match=r"server.crt: expired; ca.key is not here"):
        k8s_pki.ensure_set(root, "c1", specs)
    assert support.snapshot(root) == before  # not even a lock file


def test_seed_set_made_here_with_lost_ca_key_is_still_an_error(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "c1", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    (root / "c1/ca.key").unlink()
    with pytest.raises(k8s_pki.SetError, match="ca.key is missing, so ca cannot issue"):
        k8s_pki.ensure_set(root, "c1", k8s_pki.seed_specs(), key_type="ecdsa-p256")


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masters": []}, "masters: the kubeadm profile needs at least one master"),
        ({"masters": "m1"}, "masters: 'm1' is not a list"),
        ({"masters": [{"name": "m1"}]}, r"masters\[0\]: 'ip' is missing"),
        ({"masters": [{"ip": "10.0.0.1"}]}, r"masters\[0\]: 'name' is missing"),
        ({"masters": ["m1"]}, r"masters\[0\]: 'm1' is not a mapping"),
        ({"masters": [{"name": "m_1", "ip": "10.0.0.1"}]}, r"masters\[0\].name: 'm_1' is not"),
        ({"masters": [{"name": "../x", "ip": "10.0.0.1"}]}, r"masters\[0\].name: '../x'"),
        ({"masters": [{"name": "a/b", "ip": "10.0.0.1"}]}, r"masters\[0\].name: 'a/b'"),
        ({"masters": [{"name": "m1", "ip": "10.0.0.256"}]}, r"masters\[0\].ip: '10.0.0.256'"),
        ({"masters": [{"name": "m1", "ip": "10.0.0.1", "role": "x"}]}, "unknown key 'role'"),
        (
            {"masters": [{"name": "m1", "ip": "10.0.0.1"}, {"name": "M1", "ip": "10.0.0.2"}]},
            r"masters\[1\].name: 'm1' is listed twice",
        ),
        (
            {"masters": [{"name": "m1", "ip": "10.0.0.1"}, {"name": "m2", "ip": "10.0.0.1"}]},
            r"masters\[1\].ip: 10.0.0.1 is also the address of 'm1'",
        ),
        ({"nodes": [{"name": "m1"}]}, r"nodes\[0\].name: 'm1' is also listed in masters"),
        ({"nodes": [{"name": "n1", "ip": "127.0.0.2"}]}, r"nodes\[0\].ip: 127.0.0.2 is also"),
        ({"nodes": [{"name": "n1", "ip": "x"}]}, r"nodes\[0\].ip: 'x' is not an IPv4"),
        ({"nodes": {"name": "n1"}}, "nodes: .* is not a list"),
        ({"control_plane_endpoint": "lb:0"}, "control_plane_endpoint: 'lb:0' is not host"),
        ({"control_plane_endpoint": "lb:70000"}, "control_plane_endpoint"),
        ({"control_plane_endpoint": "https://lb"}, "control_plane_endpoint"),
        ({"control_plane_endpoint": "l_b:6443"}, "control_plane_endpoint: 'l_b'"),
        ({"api_service_address": "10.96.0"}, "api_service_address"),
        ({"api_server_fqdn": "-bad"}, "api_server_fqdn"),
        ({"extra_sans": ["ok", "not ok"]}, "extra_sans"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"masters": ks.MASTERS, "nodes": ks.NODES, **kwargs}
    with pytest.raises(k8s_pki.InputError, match=message):
        k8s_pki.kubeadm_specs(**args)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("lb.example.com", ("lb.example.com", 6443)),
        ("LB.example.com:7443", ("lb.example.com", 7443)),
        ("192.0.2.5:443", ("192.0.2.5", 443)),
        ("[2001:db8::5]:6443", ("2001:db8::5", 6443)),
        ("2001:db8::5", ("2001:db8::5", 6443)),
    ],
)
def test_endpoint_forms(value, expected):
    assert k8s_pki.check_endpoint(value) == expected
    server = k8s_pki.kubeadm_specs(ks.MASTERS, control_plane_endpoint=value)["admin.conf"].server
    host = f"[{expected[0]}]" if ":" in expected[0] else expected[0]
    assert server == f"https://{host}:{expected[1]}"
    api = k8s_pki.kubeadm_specs(ks.MASTERS, control_plane_endpoint=value)["hosts/m1/apiserver"]
    try:
        assert ipaddress.ip_address(expected[0]) in api.ip_addresses
    except ValueError:
        assert expected[0] in api.dns_names


# -- what one host is handed (the states check it before writing) --------------------


def _share(directory, host, master):
    return {
        dest: (directory / src).read_text()
        for dest, src in k8s_pki.kubeadm_host_files(host, master).items()
    }


def test_host_file_list_matches_the_states_parameters():
    params = (support.REPO / "kubernetes/parameters/kubeadm.yaml").read_text()
    import yaml

    listed = yaml.safe_load(params)["files"]
    assert tuple(listed) == k8s_pki.KUBEADM_HOST_FILES
    assert set(k8s_pki.kubeadm_host_files("m1", True)) == set(listed)


def test_check_kubeadm_host_accepts_real_shares(made):
    directory, _, _ = made
    master = k8s_pki.check_kubeadm_host(_share(directory, "m2", True))
    assert master["pki/etcd/peer.crt"]["subject"] == "CN=kube-etcd-peer"
    node = k8s_pki.check_kubeadm_host(_share(directory, "n1", False))
    assert set(node) == {"pki/ca.crt", "kubelet.conf"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s, d: s.pop("pki/etcd/ca.crt"), "missing pki/etcd/ca.crt"),
        (lambda s, d: s.update({"pki/extra.crt": s["pki/ca.crt"]}), "unknown file"),
        (
            lambda s, d: s.update({"pki/apiserver.key": s["pki/sa.key"]}),
            "pki/apiserver.key: does not belong to pki/apiserver.crt",
        ),
        (
            lambda s, d: s.update({"pki/sa.pub": (d / "hosts/m1/etcd/peer.crt").read_text()}),
            "pki/sa.pub: not a PEM public key",
        ),
        (
            lambda s, d: s.update({"pki/etcd/server.crt": s["pki/apiserver.crt"]}),
            "pki/etcd/server.crt: not signed by pki/etcd/ca.crt",
        ),
        (
            lambda s, d: s.update({"kubelet.conf": (d / "hosts/m2/kubelet.conf").read_text()}),
            None,  # another host's kubelet.conf is valid material; the pillar picks the host
        ),
        (lambda s, d: s.update({"admin.conf": "kind: Config\n"}), "admin.conf: no context"),
    ],
)
def test_check_kubeadm_host_refuses_bad_shares(made, change, message):
    directory, _, _ = made
    share = _share(directory, "m1", True)
    change(share, directory)
    if message is None:
        k8s_pki.check_kubeadm_host(share)
        return
    with pytest.raises(k8s_pki.PKIError, match=message) as caught:
        k8s_pki.check_kubeadm_host(share)
    assert "PRIVATE KEY" not in str(caught.value)


def test_specs_of_some_nodes_are_those_of_the_whole_set():
    """``specs_for(only_nodes=...)`` (what explains a change to a few hosts of a large set)
    gives the kept nodes' and the masters' members exactly as the whole set's specs do."""
    manifest = k8s_pki.manifest
    settings = {
        "profile": "kubeadm",
        **manifest.PROFILE_DEFAULTS["kubeadm"],
        "masters": [{"name": "m1", "ip": "192.0.2.11"}, {"name": "m2", "ip": "192.0.2.12"}],
        "nodes": [{"name": "n1"}, {"name": "n2", "ip": "192.0.2.21"}, {"name": "n3"}],
        "extra_sans": ["api.example", "198.51.100.7"],
    }
    whole = manifest.specs_for(settings)
    some = manifest.specs_for(settings, only_nodes={"n2", "m1"})
    assert some == {
        name: spec
        for name, spec in whole.items()
        if k8s_pki.profiles.host_of(name) not in ("n1", "n3")
    }
    assert whole == k8s_pki.kubeadm_specs(
        settings["masters"], settings["nodes"], extra_sans=settings["extra_sans"]
    )
