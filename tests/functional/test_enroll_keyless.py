"""An enrolled kubeadm set (``generate_certs profile=kubeadm enrolled=True``): the master
holds no key of what the hosts enroll, and every reader finds the hosts in cluster.yaml.

Through the runner as Salt's loader loads it (``salt-run`` itself for the exit status of
bad input), the ext_pillar in the master's real pillar compiler, openssl for what the
signer issues.  Issue 13: "Private keys are born on the host that uses them".
"""

import json
import pathlib

import pytest
import support
from cryptography.hazmat.primitives.asymmetric import ec

k8s_pki = support.k8s_pki

MASTERS = [{"name": "m1", "ip": "192.0.2.11"}]
NODES = [{"name": "n1"}]

#: what a plain set holds for these hosts and an enrolled one leaves out
#: (written out, not derived from the code under test)
_SHARED = ("apiserver-kubelet-client", "front-proxy-client", "apiserver-etcd-client")
_OWN = ("apiserver", "etcd/server", "etcd/peer")
ENROLLED_FILES = sorted(
    [
        *(f"{m}.{ext}" for m in (*_SHARED, "etcd/healthcheck-client") for ext in ("crt", "key")),
        *(f"hosts/m1/{m}.{ext}" for m in _OWN for ext in ("crt", "key")),
        "hosts/m1/kubelet.conf",
        "hosts/n1/kubelet.conf",
    ]
)


def _generate(runners, **kwargs):
    ret = runners["k8s-helper.generate_certs"](
        cluster_tag="c1", profile="kubeadm", key_type="ecdsa-p256", **kwargs
    )
    assert "error" not in ret, ret
    return ret


def _live_files(folder):
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in ("backup", "enrolled")
    )


def _sign(master_conf, minion_id, member):
    """sign_csr as peer_run calls it for ``minion_id``."""
    sign = support.sign_csr_as(master_conf, minion_id)
    csr = k8s_pki.csr_for(ec.generate_private_key(ec.SECP256R1()), "anything").decode()
    return sign(csr=csr, member=member, cluster_tag="c1")


def _pillar(tmp_path, pki_root, minion_id, **options):
    ext = [{"k8s_kubeadm": {"cluster_tag": "c1", **options}}]
    return support.compiled_pillar(tmp_path / "p", pki_root, minion_id, ext)


def test_an_enrolled_set_holds_no_key_its_hosts_enroll(tmp_path, master_conf, runners, pki_root):
    _generate(runners, masters=MASTERS, nodes=NODES, enrolled=True)
    folder = pki_root / "c1"
    live = _live_files(folder)
    assert not set(live) & set(ENROLLED_FILES)
    members = (*_SHARED, "etcd/healthcheck-client", *_OWN)
    assert {
        "kubelet.conf",
        *(f"pki/{m}.{ext}" for m in members for ext in ("crt", "key")),
    } == k8s_pki.ENROLLED_KUBEADM_FILES
    # what stays: the CAs, sa, the admins' and the control plane's kubeconfigs
    assert {"ca.key", "etcd/ca.key", "front-proxy-ca.key", "sa.key", "admin.conf"} <= set(live)
    assert {"hosts/m1/controller-manager.conf", "hosts/m1/scheduler.conf"} <= set(live)
    assert not (folder / "hosts/n1").exists()
    assert k8s_pki.set_profile(str(folder))[0] == "kubeadm"
    assert "enrolled: true\n" in (folder / "cluster.yaml").read_text()

    # the hosts still enroll every member of their role, signed by the set's CAs
    for minion, member, ca in [
        ("n1", "kubelet-client", "ca.crt"),
        ("m1", "apiserver", "ca.crt"),
        ("m1", "etcd/peer", "etcd/ca.crt"),
        ("m1", "apiserver-etcd-client", "etcd/ca.crt"),
    ]:
        ret = _sign(master_conf, minion, member)
        assert "error" not in ret, ret
        cert = tmp_path / f"{minion}-{member.replace('/', '-')}.crt"
        cert.write_text(ret["cert"])
        assert support.openssl("verify", "-CAfile", folder / ca, cert).returncode == 0
    assert _sign(master_conf, "n1", "apiserver")["retcode"] == 2  # the policy is unchanged

    # check_expiration covers the hosts through the master's copies
    report = runners["k8s-helper.check_expiration"](cluster_tag="c1", table=False)
    files = {row["file"] for row in report["certificates"]}
    assert {"enrolled/n1/kubelet-client.crt", "enrolled/m1/apiserver.crt"} <= files

    # verify judges a host by the share the manifest gives it (no hosts/n1/ to find it by)
    assert k8s_pki.kubeadm_share(str(folder), "n1") == {"pki/ca.crt": "ca.crt"}
    master_share = k8s_pki.kubeadm_share(str(folder), "m1")
    assert "pki/front-proxy-ca.crt" in master_share
    assert not set(master_share) & k8s_pki.ENROLLED_KUBEADM_FILES
    assert k8s_pki.kubeadm_share(str(folder), "n9") is None

    # the ext_pillar finds the hosts in cluster.yaml and hands them out as enrolled,
    # without its own option: the set holds nothing else to hand out
    node = _pillar(tmp_path, pki_root, "n1")["kubernetes"]["kubeadm_pki"]
    assert set(node["files"]) == {"pki/ca.crt"} and node["role"] == "node"
    assert node["enrolled"] == ["kubelet.conf"]
    master = _pillar(tmp_path / "b", pki_root, "m1")["kubernetes"]["kubeadm_pki"]
    assert master["role"] == "master" and "pki/ca.key" in master["files"]
    assert set(master["enrolled"]) == set(k8s_pki.ENROLLED_KUBEADM_FILES)
    assert "pki/apiserver.key" not in json.dumps(master["files"])
    assert _pillar(tmp_path / "c", pki_root, "n9") == {}


def test_switching_an_existing_set_to_enrolled_and_back(runners, pki_root):
    _generate(runners, masters=MASTERS, nodes=NODES)
    folder = pki_root / "c1"
    manifest = (folder / "cluster.yaml").read_bytes()
    before = {rel: (folder / rel).read_bytes() for rel in ENROLLED_FILES}

    snapshot = support.snapshot(pki_root)
    ret = _generate(runners, enrolled=True, test=True)  # a dry run says so, writes nothing
    assert ret["removed"] == ENROLLED_FILES and ret["would_back_up"] is True
    assert support.snapshot(pki_root) == snapshot

    ret = _generate(runners, enrolled=True)  # the hosts are the recorded ones
    assert ret["removed"] == ENROLLED_FILES
    assert ret["settings_changed"]["enrolled"] == {"from": False, "to": True, "reissues": []}
    assert not set(_live_files(folder)) & set(ENROLLED_FILES)
    backup = pathlib.Path(ret["backup"])  # every removed file, byte for byte (keys 0600)
    assert {rel: (backup / rel).read_bytes() for rel in ENROLLED_FILES} == before
    assert (backup / "hosts/m1/apiserver.key").stat().st_mode & 0o777 == 0o600
    assert _generate(runners)["changed"] is False  # recorded: a re-run keeps it

    ret = _generate(runners, enrolled=False)
    issued = {name for name, info in ret["files"].items() if info["action"] == "generated"}
    assert issued == set(ENROLLED_FILES)
    assert (folder / "cluster.yaml").read_bytes() == manifest  # as a plain set's, again
    assert {rel: (folder / rel).read_bytes() for rel in ENROLLED_FILES} != before


def test_renewal_and_rotation_of_an_enrolled_set(master_conf, runners, pki_root):
    _generate(runners, masters=MASTERS, nodes=NODES, enrolled=True)
    assert "error" not in _sign(master_conf, "n1", "kubelet-client")
    renew = runners["k8s-helper.renew"]
    for kwargs, why in [
        ({"certs": "apiserver"}, "the hosts of this set enroll it"),
        ({"certs": "kubelet.conf"}, "the hosts of this set enroll it"),
        ({"hosts": "n1"}, "'n1' enrolls its own certificates"),
    ]:
        ret = renew(cluster_tag="c1", **kwargs)
        assert ret["retcode"] == 2 and why in ret["error"], ret
    ret = renew(cluster_tag="c1", certs="all")
    assert set(ret["renewed"]) == {
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf (m1)",
        "scheduler.conf (m1)",
    }

    rotate = runners["k8s-helper.rotate_ca"]
    for stage in ("prepare", "trust", "reissue"):
        assert "error" not in rotate(cluster_tag="c1", stage=stage)
    # n1's certificate is still the old CA's: finishing would cut the node off
    ret = rotate(cluster_tag="c1", stage="finish")
    assert ret["retcode"] != 0 and "enrolled/n1/kubelet-client.crt" in ret["error"], ret
    assert "\n" not in ret["error"]
    # once it enrolled again (now signed by the new CA), the rotation finishes
    assert "error" not in _sign(master_conf, "n1", "kubelet-client")
    assert rotate(cluster_tag="c1", stage="finish")["status"]["state"] == "idle"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["profile=kubeadm", "enrolled=maybe"], "enrolled: 'maybe' is not a boolean"),
        (["enrolled=True"], "enrolled: only used with profile=kubeadm, not seed"),
    ],
)
def test_bad_input_refused_through_salt_run(master_conf, pki_root, args, why):
    if args[0] == "profile=kubeadm":
        args = [*args, "masters=[{name: m1, ip: 192.0.2.11}]"]
    before = support.snapshot(pki_root)
    with support.event_sink(master_conf):
        proc = support.salt_run(master_conf, "k8s-helper.generate_certs", "cluster_tag=c1", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert why in proc.stdout
    assert support.snapshot(pki_root) == before


def test_an_enrolled_set_that_lost_its_manifest_stays_enrolled(master_conf, runners, pki_root):
    _generate(runners, masters=MASTERS, nodes=NODES, enrolled=True)
    assert "error" not in _sign(master_conf, "n1", "kubelet-client")
    folder = pki_root / "c1"
    (folder / "cluster.yaml").unlink()  # moved away, as docs/lifecycle.md allows
    ret = _generate(runners, masters=MASTERS, nodes=NODES)
    assert not set(_live_files(folder)) & set(ENROLLED_FILES), ret["files"]
    assert "enrolled: true\n" in (folder / "cluster.yaml").read_text()


@pytest.mark.parametrize("enrolled", [True, False], ids=["enrolled-set", "plain-set"])
def test_a_host_removed_from_the_set_loses_its_copies(master_conf, runners, pki_root, enrolled):
    """The master's copies of a removed host leave the set (kept in the backup): expiry and
    verify stop reporting it, and it can no longer enroll; the claims of its keys stay."""
    _generate(runners, masters=MASTERS, nodes=[*NODES, {"name": "n2"}], enrolled=enrolled)
    for host in ("n1", "n2"):
        assert "error" not in _sign(master_conf, host, "kubelet-client")
    folder = pki_root / "c1"
    claims = sorted((folder / "enrolled/keys").iterdir())
    assert (folder / "enrolled/n1/kubelet-client.crt").is_file()
    ret = _generate(runners, nodes=[{"name": "n2"}])
    assert ret["changed"] and "enrolled/n1/kubelet-client.crt" in ret["removed"], ret
    assert not (folder / "enrolled/n1").exists()
    assert (folder / "enrolled/n2/kubelet-client.crt").is_file()
    assert sorted((folder / "enrolled/keys").iterdir()) == claims
    backup = pathlib.Path(ret["backup"])
    assert (backup / "enrolled/n1/kubelet-client.crt").is_file()
    report = runners["k8s-helper.check_expiration"](cluster_tag="c1", table=False)
    names = [c["name"] for c in report["certificates"]]
    assert not [n for n in names if "enrolled/n1/" in n], names
    assert [n for n in names if "enrolled/n2/" in n], names
    refused = _sign(master_conf, "n1", "kubelet-client")
    assert refused["retcode"] == 2 and "not a host of the set" in refused["error"], refused
    again = _generate(runners)
    assert not again["changed"], again


def test_an_enrolled_folder_that_is_a_link_is_refused(runners, pki_root, tmp_path):
    """The copies' folder is read only when it is the master's own: a link is refused, and
    neither the set nor what the link points to changes."""
    _generate(runners, masters=MASTERS, nodes=NODES)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "gone").mkdir(parents=True)
    (elsewhere / "gone/kubelet-client.crt").write_text("not ours\n")
    (pki_root / "c1/enrolled").symlink_to(elsewhere)
    before, outside = support.snapshot(pki_root), support.snapshot(elsewhere)
    ret = runners["k8s-helper.generate_certs"](cluster_tag="c1", profile="kubeadm")
    assert ret["retcode"] == 2 and "enrolled: is a symbolic link" in ret["error"], ret
    assert support.snapshot(pki_root) == before and support.snapshot(elsewhere) == outside
