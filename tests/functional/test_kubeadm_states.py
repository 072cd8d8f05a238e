"""kubernetes.kubeadm.present / .removed: the kubeadm profile laid down at kubeadm's paths.

Real ``salt-call --local`` with this checkout as file_roots and the formula's
k8s_kubeadm ext_pillar reading a generated set, applied inside a throwaway mount
namespace (tests/support/sandbox.py) so the states write the real /etc/kubernetes
without touching the host.
"""

import json
import pathlib
import subprocess

import pytest
import support
import yaml
from support import kubeadm as ks
from support import sandbox

k8s_pki = support.k8s_pki

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(sandbox.available() is not None, reason=str(sandbox.available())),
]

PRESENT = "kubernetes.kubeadm.present"
REMOVED = "kubernetes.kubeadm.removed"
ETC = "/etc/kubernetes"


class Minion:
    """A masterless minion with the k8s_kubeadm ext_pillar; every apply runs inside ``box``."""

    def __init__(self, box, base, minion_id, pki_root, cluster_tag="c1"):
        self.box, self.base = box, pathlib.Path(base)
        pillar = self.base / "pillar"
        pillar.mkdir(parents=True, exist_ok=True)
        (pillar / "top.sls").write_text("base:\n  '*':\n    - common\n")
        (pillar / "common.sls").write_text("kubernetes:\n  k8s_env: c1\n")
        formula = support.formula_root(self.base)
        self.conf = self.base / "conf"
        self.conf.mkdir(exist_ok=True)
        (self.conf / "minion").write_text(
            yaml.safe_dump(
                {
                    "id": minion_id,
                    "file_client": "local",
                    "root_dir": str(self.base / "root"),
                    "user": "root",
                    "file_roots": {"base": [str(formula)]},
                    "pillar_roots": {"base": [str(pillar)]},
                    "ext_pillar": [
                        {"k8s_kubeadm": {"cluster_tag": cluster_tag, "pki_root": str(pki_root)}}
                    ],
                    "log_level_logfile": "info",
                }
            )
        )
        # sync the formula's _pillar/_states/_utils; writes only under root_dir (no sandbox)
        proc = subprocess.run(
            self.argv("saltutil.sync_all"), capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        synced = json.loads(proc.stdout)["local"]
        assert "states.k8s_kubeadm" in synced["states"] and "pillar.k8s_kubeadm" in synced["pillar"]

    def argv(self, *args):
        return [
            str(support.VENV_BIN / "salt-call"),
            "--local",
            "-c",
            str(self.conf),
            "--out=json",
            *args,
        ]

    def call(self, *args):
        proc = self.box.run(self.argv(*args))
        try:
            return proc, json.loads(proc.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            return proc, None

    def log(self):
        path = self.base / "root/var/log/salt/minion"
        return path.read_text() if path.exists() else ""


def changed(states):
    return sorted(key.split("_|-")[1] for key, r in states.items() if r["changes"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("states-pki")
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    return root


def files_of(box):
    tree = box.tree(ETC)
    return {path: entry for path, entry in tree.items() if entry["kind"] == "file"}


def test_master_gets_its_share_and_a_second_apply_changes_nothing(tmp_path, pki):
    box = sandbox.Sandbox(tmp_path / "box")
    minion = Minion(box, tmp_path / "m1", "m1", pki)
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["result"] for r in states.values())
    expected = k8s_pki.kubeadm_host_files("m1", master=True)
    found = files_of(box)
    assert set(found) == {f"{ETC}/{rel}" for rel in expected}
    for rel, src in expected.items():
        entry = found[f"{ETC}/{rel}"]
        assert bytes.fromhex(entry["data"]) == (pki / "c1" / src).read_bytes(), rel
        assert entry["mode"] == k8s_pki.kubeadm_file_mode(rel) and entry["uid"] == 0, rel
    # the laid-down files chain up, checked by openssl from the host side
    assert ks.verify(box.upper(f"{ETC}/pki/etcd/ca.crt"), box.upper(f"{ETC}/pki/etcd/peer.crt"))
    assert ks.verify(box.upper(f"{ETC}/pki/ca.crt"), box.upper(f"{ETC}/pki/apiserver.crt"))
    text = proc.stdout + proc.stderr + minion.log()
    assert "PRIVATE KEY" not in text and "client-key-data" not in text

    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0 and changed(states) == []
    assert files_of(box) == found


def test_node_gets_only_the_ca_and_its_kubelet_conf(tmp_path, pki):
    box = sandbox.Sandbox(tmp_path / "box")
    # the same machine was master m1 before: every key of that role must go
    master = Minion(box, tmp_path / "m1", "m1", pki)
    assert master.call("state.apply", PRESENT)[0].returncode == 0
    node = Minion(box, tmp_path / "n1", "n1", pki)
    _, pillar = node.call("pillar.item", "kubernetes:kubeadm_pki", "unmask=True")
    given = pillar["kubernetes:kubeadm_pki"]
    assert given["role"] == "node" and sorted(given["files"]) == ["kubelet.conf", "pki/ca.crt"]

    proc, states = node.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = files_of(box)
    assert set(found) == {f"{ETC}/pki/ca.crt", f"{ETC}/kubelet.conf"}
    assert (
        bytes.fromhex(found[f"{ETC}/kubelet.conf"]["data"])
        == (pki / "c1/hosts/n1/kubelet.conf").read_bytes()
    )
    assert ks.kubeconfig(box.upper(f"{ETC}/kubelet.conf"))["user"] == "system:node:n1"


def test_bad_share_writes_nothing(tmp_path, pki):
    """A kubelet.conf from another cluster's CA: the state fails naming it; disk unchanged."""
    broken = tmp_path / "pki"
    import shutil

    shutil.copytree(pki / "c1", broken / "c1")
    other = tmp_path / "other"
    k8s_pki.ensure_set(other, "c1", ks.specs(), key_type="ecdsa-p256")
    box = sandbox.Sandbox(tmp_path / "box")
    minion = Minion(box, tmp_path / "n1", "n1", broken)
    assert minion.call("state.apply", PRESENT)[0].returncode == 0
    before = box.tree(ETC)
    shutil.copy(other / "c1/hosts/n1/kubelet.conf", broken / "c1/hosts/n1/kubelet.conf")
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    comment = next(r["comment"] for k, r in states.items() if "validated" in k)
    assert "kubelet.conf: not signed by pki/ca.crt" in comment
    assert "kubelet.conf: does not hold pki/ca.crt" in comment
    assert box.tree(ETC) == before


def test_removed_takes_away_exactly_the_profile_files(tmp_path, pki):
    box = sandbox.Sandbox(tmp_path / "box")
    minion = Minion(box, tmp_path / "m1", "m1", pki)
    box.run(
        ["sh", "-c", f"mkdir -p {ETC}/manifests && echo keep > {ETC}/manifests/etcd.yaml"],
        check=True,
    )
    assert minion.call("state.apply", PRESENT)[0].returncode == 0
    proc, states = minion.call("state.apply", REMOVED)
    assert proc.returncode == 0, proc.stdout
    left = files_of(box)
    assert set(left) == {f"{ETC}/manifests/etcd.yaml"}
    proc, states = minion.call("state.apply", REMOVED)
    assert proc.returncode == 0 and changed(states) == []


def test_minion_outside_the_set_gets_nothing(tmp_path, pki):
    box = sandbox.Sandbox(tmp_path / "box")
    minion = Minion(box, tmp_path / "x9", "x9", pki)
    _, pillar = minion.call("pillar.item", "kubernetes:kubeadm_pki")
    assert not pillar["kubernetes:kubeadm_pki"]
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    assert "missing from pillar" in json.dumps(states)
    assert files_of(box) == {}


# --------------------------------------------------------------------------
# Issue 10: exact minion ids, destination symlinks, strict PEM; issue 15: roles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("minion_id", ["M1", "m1."])
def test_a_look_alike_minion_id_gets_nothing_of_master_m1(tmp_path, pki, minion_id):
    """'M1' and 'm1.' are other minions (other accepted keys) than 'm1'."""
    box = sandbox.Sandbox(tmp_path / "box")
    minion = Minion(box, tmp_path / "look-alike", minion_id, pki)
    _, pillar = minion.call("pillar.item", "kubernetes:kubeadm_pki", "unmask=True")
    assert not pillar["kubernetes:kubeadm_pki"]
    proc, _ = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    assert files_of(box) == {}


def test_a_symlink_at_a_kubeadm_destination_is_refused(tmp_path, pki):
    box = sandbox.Sandbox(tmp_path / "box")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    box.run(["sh", "-ec", f"mkdir -p {ETC}/pki && ln -s {outside} {ETC}/pki/ca.key"], check=True)
    minion = Minion(box, tmp_path / "m1", "m1", pki)
    before = box.tree(ETC)
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    check = next(r for k, r in states.items() if "destinations-no-symlinks" in k)
    assert f"{ETC}/pki/ca.key is a symlink to {outside}" in check["comment"]
    assert changed(states) == []
    assert box.tree(ETC) == before
    assert outside.read_text() == "precious\n"


def _share(pki, host, master):
    return {
        rel: (pki / "c1" / src).read_text()
        for rel, src in k8s_pki.kubeadm_host_files(host, master).items()
    }


def test_kubeadm_share_pem_is_parsed_strictly_and_node_roles_hold_no_master_file(pki):
    share = _share(pki, "m1", True)
    k8s_pki.check_kubeadm_host(share)  # as generated: fine
    bad = dict(share)
    bad["pki/ca.crt"] += "-----BEGIN CERTIFICATE-----\nZZZZ\n"
    bad["pki/sa.key"] = "junk\n" + bad["pki/sa.key"]
    bad["pki/apiserver.key"] += bad["pki/etcd/peer.key"]
    bad["pki/front-proxy-client.crt"] = bad["pki/front-proxy-client.crt"].replace("\n", "\n  ")
    with pytest.raises(k8s_pki.PKIError) as err:
        k8s_pki.check_kubeadm_host(bad)
    message = str(err.value)
    where = "kubernetes:kubeadm_pki:files"
    assert f"{where}:pki/ca.crt: not a PEM certificate: the CERTIFICATE block of line" in message
    assert f"{where}:pki/sa.key: not a PEM private key: line 1: text outside" in message
    assert f"{where}:pki/apiserver.key: holds 2 PEM blocks, expected 1" in message
    # written verbatim by file.managed, so indentation is refused here
    assert f"{where}:pki/front-proxy-client.crt: not a PEM certificate: line 2" in message
    assert support.leaked(message, [share["pki/ca.key"]]) is None
    # a node handed a master's share, whatever pillar says
    with pytest.raises(k8s_pki.PKIError, match="the role is node, and a node must never hold"):
        k8s_pki.check_kubeadm_host(share, role="node")
    k8s_pki.check_kubeadm_host(_share(pki, "n1", False), role="node")
