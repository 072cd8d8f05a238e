"""check_expiration and renew on a kubeadm set, through the real salt-run.

The sets are made by the real ``salt-run k8s-helper.generate_certs
profile=kubeadm`` (or, for dates in the past, by the library with ``now=``)
in a throwaway master's pki_root.  What salt-run prints and its exit status
are what operators and cron see.
"""

import datetime
import json

import pytest
from support import event_sink, k8s_pki, salt_run, snapshot
from support import kubeadm as ks

MASTERS = "[{name: m0, ip: 10.0.0.10}, {name: m1, ip: 10.0.0.11}]"
NODES = "[{name: n1}]"
TAG = "kprod"


@pytest.fixture
def sink(master_conf):
    with event_sink(master_conf):
        yield master_conf


@pytest.fixture
def kset(sink, pki_root):
    proc = salt_run(
        sink,
        "k8s-helper.generate_certs",
        f"cluster_tag={TAG}",
        "profile=kubeadm",
        f"masters={MASTERS}",
        f"nodes={NODES}",
        "key_type=ecdsa-p256",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return pki_root / TAG


def run_json(conf, fun, *args):
    proc = salt_run(conf, fun, *args)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def past_set(pki_root, tag, age_days, leaf_days):
    """A kubeadm set issued ``age_days`` ago (the library's ``now=``), with its manifest."""
    settings = {
        **k8s_pki.PROFILE_DEFAULTS["kubeadm"],
        "profile": "kubeadm",
        "masters": [{"name": "m0", "ip": "10.0.0.10"}],
        "nodes": [{"name": "n1"}],
    }
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age_days)
    k8s_pki.ensure_set(
        pki_root,
        tag,
        k8s_pki.specs_for(settings),
        key_type="ecdsa-p256",
        leaf_days=leaf_days,
        now=when,
        manifest=k8s_pki.render_manifest(settings),
    )
    return pki_root / tag


# -- check_expiration ---------------------------------------------------------------


def test_check_expiration_prints_kubeadm_s_two_tables(sink, kset):
    proc = salt_run(sink, "k8s-helper.check_expiration", f"cluster_tag={TAG}", out=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("CERTIFICATE "))
    assert lines[header].split() == [
        "CERTIFICATE",
        "EXPIRES",
        "RESIDUAL",
        "TIME",
        "CERTIFICATE",
        "AUTHORITY",
        "EXTERNALLY",
        "MANAGED",
        "STATUS",
    ]
    rows = {}
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        name = line[: line.index("  ")]
        rows[name] = line.split()
    assert sorted(rows) == sorted(
        [
            "admin.conf",
            "apiserver (m0)",
            "apiserver (m1)",
            "apiserver-etcd-client",
            "apiserver-kubelet-client",
            "controller-manager.conf (m0)",
            "controller-manager.conf (m1)",
            "etcd-healthcheck-client",
            "etcd-peer (m0)",
            "etcd-peer (m1)",
            "etcd-server (m0)",
            "etcd-server (m1)",
            "front-proxy-client",
            "kubelet.conf (m0)",
            "kubelet.conf (m1)",
            "kubelet.conf (n1)",
            "scheduler.conf (m0)",
            "scheduler.conf (m1)",
            "super-admin.conf",
        ]
    )
    # e.g. "etcd-peer (m1)  Dec 03, 2027 09:15 UTC  364d  etcd-ca  no  ok"
    # (365 days to the second when the check falls in the second the set was made: "1y")
    assert rows["etcd-peer (m1)"][-4] in ("364d", "1y")
    assert rows["etcd-peer (m1)"][-3:] == ["etcd-ca", "no", "ok"]
    assert rows["front-proxy-client"][-3:] == ["front-proxy-ca", "no", "ok"]
    ca_header = next(i for i, line in enumerate(lines) if line.startswith("CERTIFICATE AUTHORITY"))
    assert lines[ca_header].split()[:4] == ["CERTIFICATE", "AUTHORITY", "EXPIRES", "RESIDUAL"]
    cas = [line.split()[0] for line in lines[ca_header + 1 : ca_header + 4]]
    assert cas == ["ca", "etcd-ca", "front-proxy-ca"]
    assert lines[ca_header + 1].split()[-3] in ("9y", "10y")  # (10y: checked in the same second)
    assert lines[ca_header + 1].split()[-2:] == ["no", "ok"]
    # the kubeconfigs' embedded CA is not repeated as a row
    assert "cluster kubernetes" not in proc.stdout and "embedded" not in proc.stdout
    assert "22 certificates: 22 ok, 0 renew-soon, 0 expired, 0 unreadable" in proc.stdout


def test_check_expiration_json_is_plain_data(sink, kset, tmp_path):
    page = tmp_path / "k.html"
    proc, data = run_json(sink, "k8s-helper.check_expiration", f"cluster_tag={TAG}", f"html={page}")
    assert proc.returncode == 0
    html = page.read_text()  # the page draws both lists
    assert "kubelet.conf (n1)" in html and "front-proxy-ca" in html and "BEGIN" not in html
    assert data["profile"] == "kubeadm" and data["retcode"] == 0
    assert len(data["certificates"]) == 19 and len(data["certificate_authorities"]) == 3
    row = next(e for e in data["certificates"] if e["name"] == "kubelet.conf (n1)")
    assert row["file"] == "hosts/n1/kubelet.conf" and row["certificate_authority"] == "ca"
    assert row["externally_managed"] is False and row["status"] == "ok"
    assert "CERTIFICATE AUTHORITY" not in proc.stdout and "BEGIN" not in proc.stdout


def test_check_expiration_exit_1_on_expired_and_unreadable(sink, pki_root):
    d = past_set(pki_root, "old", age_days=40, leaf_days=30)
    proc = salt_run(sink, "k8s-helper.check_expiration", "cluster_tag=old", out=None)
    assert proc.returncode == 1, proc.stdout
    apiserver = next(line for line in proc.stdout.splitlines() if line.startswith("apiserver (m0)"))
    assert apiserver.split()[-4:] == ["<invalid>", "ca", "no", "expired"]
    proc, data = run_json(sink, "k8s-helper.check_expiration", "cluster_tag=old")
    assert proc.returncode == 1 and data["summary"]["expired"] == 13
    # a fresh set with one unreadable file
    d = past_set(pki_root, "broken", age_days=0, leaf_days=365)
    (d / "hosts/m0/etcd/peer.crt").write_text("garbage\n")
    proc = salt_run(sink, "k8s-helper.check_expiration", "cluster_tag=broken", out=None)
    assert proc.returncode == 1, proc.stdout
    assert "unreadable: etcd-peer (m0): hosts/m0/etcd/peer.crt" in proc.stdout


def test_seed_table_unchanged(sink, pki_root):
    assert salt_run(sink, "k8s-helper.generate_certs", "key_type=ecdsa-p256").returncode == 0
    proc = salt_run(sink, "k8s-helper.check_expiration", out=None)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[3].split() == [
        "CERTIFICATE",
        "STATUS",
        "DAYS",
        "LEFT",
        "NOT",
        "AFTER",
        "SUBJECT",
        "ISSUER",
    ]
    assert [line.split()[0] for line in lines[4:7]] == ["ca.crt", "kubecfg.crt", "server.crt"]


# -- renew --------------------------------------------------------------------------


def _serials(d):
    out = {}
    for path in sorted(d.rglob("*")):
        if "backup" in path.parts or not path.is_file():
            continue
        rel = str(path.relative_to(d))
        if rel.endswith(".crt"):
            out[rel] = k8s_pki.load_cert(path.read_bytes()).serial_number
        elif rel.endswith(".conf"):
            out[rel] = k8s_pki.load_cert(ks.kubeconfig(path)["cert"]).serial_number
        else:
            out[rel] = path.read_bytes()
    return out


def test_renew_renews_what_is_due_by_default(sink, pki_root):
    d = past_set(pki_root, "due", age_days=300, leaf_days=365)  # 65 days left: due
    before = _serials(d)
    proc, data = run_json(sink, "k8s-helper.renew", "cluster_tag=due")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["profile"] == "kubeadm" and data["backup"]
    assert sorted(data["renewed"]) == sorted(
        [
            "apiserver-kubelet-client",
            "front-proxy-client",
            "etcd-healthcheck-client",
            "apiserver-etcd-client",
            "admin.conf",
            "super-admin.conf",
            "controller-manager.conf (m0)",
            "scheduler.conf (m0)",
            "apiserver (m0)",
            "etcd-server (m0)",
            "etcd-peer (m0)",
            "kubelet.conf (m0)",
            "kubelet.conf (n1)",
        ]
    )
    after = _serials(d)
    for rel in ("ca.crt", "ca.key", "etcd/ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub"):
        assert after[rel] == before[rel], rel  # CAs and sa never touched
    assert after["hosts/m0/apiserver.crt"] != before["hosts/m0/apiserver.crt"]
    assert data["restart"] == [
        "kube-apiserver (static pod) on m0",
        "etcd (static pod) on m0",
        "kube-controller-manager (static pod) on m0",
        "kube-scheduler (static pod) on m0",
        "kubelet on m0, n1",
    ]
    assert "give the new admin.conf and super-admin.conf" in data["next"]
    assert "PRIVATE" not in proc.stdout and "client-key-data" not in proc.stdout
    # a second run: nothing is due any more
    proc, data = run_json(sink, "k8s-helper.renew", "cluster_tag=due")
    assert proc.returncode == 0 and data["renewed"] == [] and not data["changed"]


def test_renew_nothing_due_changes_nothing(sink, kset, pki_root):
    before = snapshot(pki_root)
    proc, data = run_json(sink, "k8s-helper.renew", f"cluster_tag={TAG}")
    assert proc.returncode == 0 and data["renewed"] == [] and data["restart"] == []
    assert snapshot(pki_root) == before


def test_renew_all_and_named_per_host(sink, kset):
    before = _serials(kset)
    proc, data = run_json(sink, "k8s-helper.renew", f"cluster_tag={TAG}", "certs=all")
    assert proc.returncode == 0, proc.stdout
    assert len(data["renewed"]) == 19
    after = _serials(kset)
    changed = sorted(rel for rel in after if after[rel] != before[rel])
    assert "ca.crt" not in changed and "sa.key" not in changed and "etcd/ca.key" not in changed
    assert "hosts/n1/kubelet.conf" in changed and "admin.conf" in changed
    # kubeadm's rule: the same subject, SANs and server
    assert ks.subject(kset / "hosts/m1/apiserver.crt") == "CN = kube-apiserver"
    assert ks.kubeconfig(kset / "admin.conf")["server"] == "https://kubernetes.api:6443"
    assert ks.verify(kset / "etcd/ca.crt", kset / "hosts/m1/etcd/server.crt")

    for hosts in ("hosts=m1,n1", "hosts=[m1, n1]"):
        before = _serials(kset)
        proc, data = run_json(
            sink, "k8s-helper.renew", f"cluster_tag={TAG}", "certs=apiserver,kubelet.conf", hosts
        )
        assert proc.returncode == 0, proc.stdout
        assert data["renewed"] == ["apiserver (m1)", "kubelet.conf (m1)", "kubelet.conf (n1)"]
        after = _serials(kset)
        assert sorted(rel for rel in after if after[rel] != before[rel]) == [
            "hosts/m1/apiserver.crt",
            "hosts/m1/apiserver.key",
            "hosts/m1/kubelet.conf",
            "hosts/n1/kubelet.conf",
        ]
        assert data["restart"] == ["kube-apiserver (static pod) on m1", "kubelet on m1, n1"]


def test_renew_dry_run_writes_nothing(sink, kset, pki_root):
    before = snapshot(pki_root)
    proc, data = run_json(
        sink, "k8s-helper.renew", f"cluster_tag={TAG}", "certs=etcd-peer", "test=True"
    )
    assert proc.returncode == 0 and data["test"] is True
    assert data["renewed"] == ["etcd-peer (m0)", "etcd-peer (m1)"]
    assert snapshot(pki_root) == before


def test_renew_with_an_externally_managed_ca(sink, kset, pki_root):
    """front-proxy-ca came without its key: all renews the rest and says what it skipped;
    naming front-proxy-client is refused with nothing changed."""
    fp = k8s_pki.fingerprint(k8s_pki.load_cert((kset / "front-proxy-ca.crt").read_bytes()))
    created = pki_root / f".{TAG}.created"
    created.write_text("".join(f"{x}\n" for x in created.read_text().splitlines() if fp not in x))
    (kset / "front-proxy-ca.key").unlink()
    proc, data = run_json(sink, "k8s-helper.check_expiration", f"cluster_tag={TAG}")
    rows = {e["name"]: e for e in data["certificates"] + data["certificate_authorities"]}
    assert rows["front-proxy-ca"]["externally_managed"] is True
    assert rows["front-proxy-client"]["externally_managed"] is True
    assert rows["apiserver (m0)"]["externally_managed"] is False

    before = snapshot(pki_root)
    proc, data = run_json(
        sink, "k8s-helper.renew", f"cluster_tag={TAG}", "certs=front-proxy-client"
    )
    assert proc.returncode == 2, proc.stdout
    assert data["error"].startswith("certs: front-proxy-client is signed by front-proxy-ca, whose")
    assert snapshot(pki_root) == before

    proc, data = run_json(sink, "k8s-helper.renew", f"cluster_tag={TAG}", "certs=all")
    assert proc.returncode == 0, proc.stdout
    assert "front-proxy-client" not in data["renewed"] and len(data["renewed"]) == 18
    assert "externally managed CA" in data["skipped"]["front-proxy-client"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certs=bogus"], "certs: 'bogus' is not a certificate of this set; choose from"),
        (["certs=apiserver,nope"], "certs: 'nope' is not a certificate of this set"),
        (["certs=ca"], "certs: 'ca' is a CA; renew never touches a CA"),
        (["certs=etcd-ca"], "certs: 'etcd-ca' is a CA; renew never touches a CA"),
        (["certs=front-proxy-ca"], "certs: 'front-proxy-ca' is a CA; renew never touches a CA"),
        (["certs=server"], "certs: 'server' is a certificate of the seed profile; this set is"),
        (["certs=kubecfg"], "certs: 'kubecfg' is a certificate of the seed profile; this set"),
        (["certs=sa.key"], "certs: 'sa.key' is the service-account signing pair"),
        (["hosts=m9"], "hosts: 'm9' is not a host of this set (its hosts: m0, m1, n1)"),
        (["certs=apiserver", "hosts=n1,m7"], "hosts: 'm7' is not a host of this set"),
        (["certs=etcd-peer", "hosts=n1"], "certs: 'etcd-peer': hosts n1 hold none"),
        (["rotate_token_key=True"], "rotate_token_key: this set signs service-account tokens"),
    ],
)
def test_renew_bad_input_changes_nothing(sink, kset, pki_root, args, message):
    before = snapshot(pki_root)
    proc, data = run_json(sink, "k8s-helper.renew", f"cluster_tag={TAG}", *args)
    assert proc.returncode == 2, proc.stdout
    assert data["error"].startswith(message), data["error"]
    assert "\n" not in data["error"] and "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(pki_root) == before


def test_hosts_on_a_seed_set_is_refused(sink, pki_root):
    assert salt_run(sink, "k8s-helper.generate_certs", "key_type=ecdsa-p256").returncode == 0
    before = snapshot(pki_root)
    proc, data = run_json(sink, "k8s-helper.renew", "hosts=m1")
    assert proc.returncode == 2 and data["error"] == "hosts: only used with a kubeadm set"
    assert snapshot(pki_root) == before
