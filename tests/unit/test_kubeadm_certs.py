"""A kubeadm set in kubeadm's words: names, what renew selects, what restarts, the expiry view.

The renewals are checked on the files they wrote, reloaded, and with openssl.
"""

import base64
import datetime
import os

import pytest
import support
from cryptography import x509
from support import kubeadm as ks

k8s_pki = support.k8s_pki

MASTERS = [{"name": "m0", "ip": "10.0.0.10"}, {"name": "m1", "ip": "10.0.0.11"}]
NODES = [{"name": "n1"}]


@pytest.fixture
def specs():
    return k8s_pki.kubeadm_specs(MASTERS, NODES)


@pytest.fixture
def made(tmp_path, specs):
    """A kubeadm set on disk (ECDSA: quick), its root and its specs."""
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "k", specs, key_type="ecdsa-p256")
    return root, specs


def _cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def _drop_created(root, tag, ca):
    """Make ``ca`` a CA k8s-helper did not create (and take its key away): externally managed."""
    created = root / f".{tag}.created"
    fp = k8s_pki.fingerprint(_cert(root / tag / f"{ca}.crt"))
    lines = created.read_text().splitlines()
    created.write_text("".join(f"{line}\n" for line in lines if fp not in line))
    (root / tag / f"{ca}.key").unlink()


def test_every_member_has_kubeadm_s_name(specs):
    labels = {m: k8s_pki.kubeadm_label(m) for m in specs}
    assert labels["hosts/m0/apiserver"] == "apiserver (m0)"
    assert labels["hosts/m1/etcd/server"] == "etcd-server (m1)"
    assert labels["hosts/m1/etcd/peer"] == "etcd-peer (m1)"
    assert labels["hosts/n1/kubelet.conf"] == "kubelet.conf (n1)"
    assert labels["etcd/healthcheck-client"] == "etcd-healthcheck-client"
    assert labels["etcd/ca"] == "etcd-ca"
    assert labels["admin.conf"] == "admin.conf"
    assert labels["sa"] == "sa"  # no kubeadm certificate name: shown as it is
    assert k8s_pki.set_hosts(specs) == (["m0", "m1"], ["m0", "m1", "n1"])
    # every name of the table names a member of the set
    for name, template in k8s_pki.KUBEADM_CERT_NAMES.items():
        assert any(k8s_pki.kubeadm_name(m)[0] == name for m in specs), (name, template)


def test_selection_in_kubeadm_words(specs):
    select = k8s_pki.select_kubeadm_certs
    every, explicit = select(None, None, specs)
    assert not explicit and "sa" not in every and "ca" not in every
    # 4 shared pairs, 2 shared kubeconfigs, 5 per master x 2 (apiserver, etcd server and
    # peer, controller-manager.conf, scheduler.conf), 3 kubelet.conf
    assert len(every) == 19
    assert select("all", None, specs) == (every, True)
    assert select("apiserver", None, specs) == (["hosts/m0/apiserver", "hosts/m1/apiserver"], True)
    assert select(["kubelet.conf", "admin.conf"], ["n1"], specs) == (
        ["hosts/n1/kubelet.conf", "admin.conf"],
        True,
    )
    assert select("etcd-peer,etcd-healthcheck-client", ["m1"], specs)[0] == [
        "hosts/m1/etcd/peer",
        "etcd/healthcheck-client",
    ]
    # hosts narrows the per-host certificates; the shared ones follow certs
    narrowed, _ = select("all", ["m1"], specs)
    assert "hosts/m0/apiserver" not in narrowed and "hosts/m1/apiserver" in narrowed
    assert "front-proxy-client" in narrowed
    assert k8s_pki.check_kubeadm_hosts("m1, n1,", specs) == ["m1", "n1"]
    assert k8s_pki.check_kubeadm_hosts(["m0"], specs) == ["m0"]
    assert k8s_pki.check_kubeadm_hosts(None, specs) is None


@pytest.mark.parametrize(
    ("certs", "hosts", "message"),
    [
        ("bogus", None, "certs: 'bogus' is not a certificate of this set; choose from admin.conf"),
        ("ca", None, "certs: 'ca' is a CA; renew never touches a CA"),
        ("etcd-ca", None, "certs: 'etcd-ca' is a CA"),
        ("etcd/ca", None, "certs: 'etcd/ca' is a CA"),
        ("front-proxy-ca", None, "certs: 'front-proxy-ca' is a CA"),
        ("server", None, "certs: 'server' is a certificate of the seed profile; this set is"),
        ("kubecfg.crt", None, "certs: 'kubecfg.crt' is a certificate of the seed profile"),
        ("sa.key", None, "certs: 'sa.key' is the service-account signing pair"),
        ("all,apiserver", None, "certs: 'all' stands alone"),
        ("apiserver", ["n1"], "certs: 'apiserver': hosts n1 hold none .only m0, m1 do."),
        ("apiserver", ["zz"], "hosts: 'zz' is not a host of this set .its hosts: m0, m1, n1."),
        ("apiserver", ["m0", 5], "hosts: 5 is not a name"),
        ("apiserver", ",", "hosts: ',' is not a list of names"),
        ([], None, r"certs: \[\] is not a list of names"),
        (7, None, "certs: 7 is not a list of names"),
    ],
)
def test_bad_selection_is_refused(specs, certs, hosts, message):
    with pytest.raises(k8s_pki.InputError, match=message):
        chosen = k8s_pki.check_kubeadm_hosts(hosts, specs)
        k8s_pki.select_kubeadm_certs(certs, chosen, specs)


def test_what_restarts_where(specs):
    restarts = k8s_pki.kubeadm_restarts
    assert restarts(["hosts/m1/apiserver", "hosts/n1/kubelet.conf"], specs) == [
        "kube-apiserver (static pod) on m1",
        "kubelet on n1",
    ]
    assert restarts(["front-proxy-client", "hosts/m1/etcd/peer"], specs) == [
        "kube-apiserver (static pod) on m0, m1",
        "etcd (static pod) on m1",
    ]
    assert restarts(["hosts/m0/controller-manager.conf", "hosts/m1/scheduler.conf"], specs) == [
        "kube-controller-manager (static pod) on m0",
        "kube-scheduler (static pod) on m1",
    ]
    assert restarts(["admin.conf", "super-admin.conf", "etcd/healthcheck-client"], specs) == []


def _identity(path):
    """What a renewal must keep: subject, SANs, usages (of a kubeconfig's client cert too)."""
    if str(path).endswith(".conf"):
        conf = ks.kubeconfig(path)
        cert = x509.load_pem_x509_certificate(conf["cert"])
        extra = conf["server"]
    else:
        cert, extra = _cert(path), None
    return (
        cert.subject.rfc4514_string(),
        k8s_pki.cert_sans(cert),
        k8s_pki.cert_usages(cert),
        extra,
    ), cert.serial_number


def test_renew_all_keeps_names_and_leaves_cas_and_sa_alone(made):
    root, specs = made
    d = root / "k"
    cas = {rel: (d / rel).read_bytes() for rel in ("ca.crt", "ca.key", "etcd/ca.key", "sa.key")}
    sa_pub = (d / "sa.pub").read_bytes()
    leaves = k8s_pki.select_kubeadm_certs("all", None, specs)[0]
    paths = [d / (m if m.endswith(".conf") else f"{m}.crt") for m in leaves]
    before = {p: _identity(p) for p in paths}
    plan, backup, skipped = k8s_pki.renew_kubeadm_set(root, "k", specs, "all")
    assert not skipped and backup and os.path.isdir(backup)
    assert len([i for i in plan.items.values() if i.action != "reused"]) == 19
    for path in paths:
        names, serial = _identity(path)
        assert names == before[path][0], path  # subject, SANs, usages, server: the same
        assert serial != before[path][1], path  # a new certificate
    for rel, data in cas.items():
        assert (d / rel).read_bytes() == data, rel
    assert (d / "sa.pub").read_bytes() == sa_pub
    assert ks.verify(d / "etcd/ca.crt", d / "hosts/m1/etcd/peer.crt")
    conf = ks.unpack_kubeconfig(d / "hosts/n1/kubelet.conf", root / "unpacked")
    assert ks.verify(d / "ca.crt", conf["cert"])


def test_renew_by_default_renews_only_what_is_due(made):
    root, specs = made
    d = root / "k"
    # apiserver (m1) issued 60 days ago for 100 days: 40 left, due
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=60)
    k8s_pki.renew_kubeadm_set(root, "k", specs, "apiserver", ["m1"], leaf_days=100, now=past)
    others = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and "backup" not in p.parts}
    plan, _, _ = k8s_pki.renew_kubeadm_set(root, "k", specs)
    renewed = [i.name for i in plan.items.values() if i.action != "reused"]
    assert renewed == ["hosts/m1/apiserver"]
    assert "expires" in plan.items["hosts/m1/apiserver"].reason
    changed = [p for p, data in others.items() if p.read_bytes() != data]
    assert sorted(p.name for p in changed) == ["apiserver.crt", "apiserver.key"]
    again, _, _ = k8s_pki.renew_kubeadm_set(root, "k", specs)
    assert not again.changed  # a second run renews nothing


def test_externally_managed_ca_renews_nothing_it_cannot_sign(made):
    root, specs = made
    _drop_created(root, "k", "front-proxy-ca")
    plan, _, skipped = k8s_pki.renew_kubeadm_set(root, "k", specs, "all")
    assert skipped == {
        "front-proxy-client": "signed by front-proxy-ca, an externally managed CA (its key is "
        "not here): renew it with that CA"
    }
    assert plan.items["front-proxy-client"].action == "reused"
    assert plan.items["apiserver-kubelet-client"].action == "generated"
    # named explicitly: refused, nothing written
    before = support.snapshot(root)
    with pytest.raises(k8s_pki.InputError, match="front-proxy-client is signed by front-proxy-ca"):
        k8s_pki.renew_kubeadm_set(root, "k", specs, "front-proxy-client,admin.conf")
    assert support.snapshot(root) == before


def test_expiry_in_kubeadm_s_words(made):
    root, _ = made
    d = root / "k"
    _drop_created(root, "k", "etcd/ca")
    # admin.conf embedding another CA than ca.crt: that one stays, named
    other = k8s_pki.build_ca(k8s_pki.new_key("ecdsa-p256"), "other-ca")
    text = (d / "super-admin.conf").read_text()
    embedded = ks.kubeconfig(d / "super-admin.conf")["ca"]
    text = text.replace(
        base64.b64encode(embedded).decode(), base64.b64encode(k8s_pki.cert_pem(other)).decode()
    )
    (d / "super-admin.conf").write_text(text)
    report = k8s_pki.kubeadm_expiry(k8s_pki.expiry_report(str(d)))
    names = [e["name"] for e in report["certificates"]]
    assert names[:4] == ["admin.conf", "apiserver (m0)", "apiserver (m1)", "apiserver-etcd-client"]
    assert "kubelet.conf (n1)" in names and len(names) == 19
    cas = {e["name"]: e for e in report["certificate_authorities"]}
    assert sorted(cas) == ["ca", "etcd-ca", "front-proxy-ca", "super-admin.conf (embedded CA)"]
    assert cas["etcd-ca"]["externally_managed"] and not cas["ca"]["externally_managed"]
    rows = {e["name"]: e for e in report["certificates"]}
    assert rows["etcd-peer (m1)"]["certificate_authority"] == "etcd-ca"
    assert rows["etcd-peer (m1)"]["externally_managed"] is True
    assert rows["front-proxy-client"]["certificate_authority"] == "front-proxy-ca"
    assert rows["admin.conf"]["externally_managed"] is False
    assert rows["kubelet.conf (n1)"]["file"] == "hosts/n1/kubelet.conf"
    assert rows["apiserver (m0)"]["member"] == "apiserver"
    assert any("super-admin.conf (embedded CA)" in n for n in report["notices"])
    assert report["summary"]["ok"] == 23
    # the alert names kubeadm's names (what renew certs= takes) and sees the CAs
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=300)
    late = k8s_pki.kubeadm_expiry(k8s_pki.expiry_report(str(d), now=soon))
    alert = k8s_pki.expiry_alert(late)
    assert "apiserver" in alert["renew"] and "kubelet.conf" in alert["renew"]
    assert alert["cas"] == []


def test_expiry_unreadable_file_is_a_row(made):
    root, _ = made
    d = root / "k"
    (d / "hosts/m0/etcd/server.crt").write_text("not a certificate\n")
    (d / "front-proxy-ca.crt").write_text("not a certificate either\n")
    report = k8s_pki.kubeadm_expiry(k8s_pki.expiry_report(str(d)))
    row = next(e for e in report["certificates"] if e["name"] == "etcd-server (m0)")
    assert row["status"] == "unreadable" and "hosts/m0/etcd/server.crt" in row["error"]
    ca = next(e for e in report["certificate_authorities"] if e["name"] == "front-proxy-ca")
    assert ca["status"] == "unreadable"  # among the CAs, where it belongs
    assert report["summary"]["unreadable"] == 2
