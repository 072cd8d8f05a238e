"""A cluster-CA rotation of a kubeadm set rolled out by ``kubernetes.kubeadm.present``.

Two masterless minions, master ``m1`` and node ``n1``, each in its own
mount-namespace sandbox (tests/support/sandbox.py), get their share of the set
from the formula's real ``k8s_kubeadm`` ext_pillar and lay it down with the real
``salt-call state.apply kubernetes.kubeadm.present`` at /etc/kubernetes.  The
runner moves the set through prepare -> trust -> reissue -> finish; after each
stage the master is applied first and the node second, as a roll-out goes.
At each step the real ``kubectl`` runs with the kubeconfigs *as the states
laid them down* (the node's ``kubelet.conf``, the master's ``admin.conf``)
against an apiserver stand-in serving the master's laid-down
``pki/apiserver.crt`` and trusting its laid-down ``pki/ca.crt``: with the
node one stage behind the master, and again once both are rolled, every call
gets through; and each laid-down kubeconfig embeds exactly the ``ca.crt`` laid
down beside it (the bundle during trust and reissue).
"""

import pytest
import support
from support import kubeadm as ks
from support import sandbox
from support.minion import Minion

k8s_pki = support.k8s_pki

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(sandbox.available() is not None, reason=str(sandbox.available())),
]

PRESENT = "kubernetes.kubeadm.present"
ETC = "/etc/kubernetes"
STAGES = ("prepare", "trust", "reissue", "finish")
FQDN = "kubernetes.api"


def host(tmp_path, name, pki_root):
    box = sandbox.Sandbox(tmp_path / f"box-{name}")
    ext = [{"k8s_kubeadm": {"cluster_tag": "c1", "pki_root": str(pki_root)}}]
    return box, Minion(box, tmp_path / name, name, ext_pillar=ext)


def apply(minion):
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["result"] for r in states.values())


def calls(master_box, node_box, home):
    """kubectl with the node's kubelet.conf and the master's admin.conf, as laid down,
    against the master's apiserver files as laid down."""
    with ks.ApiServerStandIn(
        master_box.upper(f"{ETC}/pki/apiserver.crt"),
        master_box.upper(f"{ETC}/pki/apiserver.key"),
        master_box.upper(f"{ETC}/pki/ca.crt"),
    ) as server:
        return {
            "n1 kubelet.conf": ks.kubectl_healthz(
                server, node_box.upper(f"{ETC}/kubelet.conf"), home
            ),
            "m1 admin.conf": ks.kubectl_healthz(
                server, master_box.upper(f"{ETC}/admin.conf"), home
            ),
        }


def embeds_its_ca_file(box, confs):
    ca_file = k8s_pki.load_certs(box.upper(f"{ETC}/pki/ca.crt").read_bytes())
    return all(
        k8s_pki.load_certs(ks.kubeconfig(box.upper(f"{ETC}/{conf}"))["ca"]) == ca_file
        for conf in confs
    )


def test_a_cluster_ca_rotation_rolled_out_by_the_states(tmp_path):
    conf = support.write_master_config(tmp_path / "master")
    run = support.load_runners(conf)
    pki_root = tmp_path / "master" / "pki"
    ret = run["k8s-helper.generate_certs"](
        cluster_tag="c1",
        profile="kubeadm",
        masters=ks.MASTERS,
        nodes=ks.NODES,
        key_type="ecdsa-p256",
    )
    assert ret.get("result") is not False, ret
    master_box, master = host(tmp_path, "m1", pki_root)
    node_box, node = host(tmp_path, "n1", pki_root)
    apply(master)
    apply(node)
    assert calls(master_box, node_box, tmp_path) == {"n1 kubelet.conf": True, "m1 admin.conf": True}
    seen, bundles = {}, {}
    master_confs = [*ks.CONFS, "kubelet.conf"]
    for stage in STAGES:
        ret = run["k8s-helper.rotate_ca"](cluster_tag="c1", stage=stage)
        assert ret.get("result") is not False, ret
        apply(master)  # the master first; the node still holds the previous stage's files
        seen[(stage, "master rolled")] = calls(master_box, node_box, tmp_path)
        apply(node)
        seen[(stage, "both rolled")] = calls(master_box, node_box, tmp_path)
        set_ca = (pki_root / "c1" / "ca.crt").read_bytes()
        for box in (master_box, node_box):
            assert box.upper(f"{ETC}/pki/ca.crt").read_bytes() == set_ca, stage
        assert embeds_its_ca_file(master_box, master_confs), stage
        assert embeds_its_ca_file(node_box, ["kubelet.conf"]), stage
        bundles[stage] = len(k8s_pki.load_certs(set_ca))
    assert bundles == {"prepare": 1, "trust": 2, "reissue": 2, "finish": 1}
    refused = {key: ok for key, ok in seen.items() if not all(ok.values())}
    assert not refused, refused
