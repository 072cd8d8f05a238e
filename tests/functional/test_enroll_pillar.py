"""The k8s_kubeadm ext_pillar with ``enrolled: true``: a host gets only what it cannot
enroll (a node: ``pki/ca.crt``, no key at all), in the master's real pillar compiler;
the kubeadm states accept that share and leave the enrolled files alone."""

import json

import pytest
import support
from support import kubeadm as ks
from support.node import FAST, Minion, Renderer

k8s_pki = support.k8s_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("enroll-pillar") / "pki"
    ks.make_set(root)
    return root


def _pillar(tmp_path, pki, minion_id, **options):
    ext = [{"k8s_kubeadm": {"cluster_tag": "c1", **options}}]
    return support.compiled_pillar(tmp_path, pki, minion_id, ext)


def test_a_node_gets_the_ca_certificate_and_no_key(tmp_path, pki):
    pillar = _pillar(tmp_path, pki, "n1", enrolled=True)
    given = pillar["kubernetes"]["kubeadm_pki"]
    assert set(given["files"]) == {"pki/ca.crt"}
    assert given["enrolled"] == ["kubelet.conf"]
    assert "PRIVATE KEY" not in json.dumps(pillar)
    # without the option, the pillar way is unchanged: its kubelet.conf, with a key
    pillar = _pillar(tmp_path / "b", pki, "n1")
    assert set(pillar["kubernetes"]["kubeadm_pki"]["files"]) == {"pki/ca.crt", "kubelet.conf"}


def test_a_master_gets_only_what_every_master_shares(tmp_path, pki):
    given = _pillar(tmp_path, pki, "m1", enrolled=True)["kubernetes"]["kubeadm_pki"]
    files = set(given["files"])
    assert {"pki/ca.key", "pki/etcd/ca.key", "pki/front-proxy-ca.key", "pki/sa.key"} <= files
    assert {"admin.conf", "controller-manager.conf", "scheduler.conf"} <= files
    assert not files & k8s_pki.ENROLLED_KUBEADM_FILES
    assert set(given["enrolled"]) == set(k8s_pki.ENROLLED_KUBEADM_FILES)
    # the share passes the minion's check when what is enrolled is named; else it is missing
    k8s_pki.check_kubeadm_host(given["files"], role="master", enrolled=given["enrolled"])
    with pytest.raises(k8s_pki.PKIError, match="missing .*kubelet.conf"):
        k8s_pki.check_kubeadm_host(given["files"], role="master")


def test_a_bad_option_fails_the_pillar(tmp_path, pki):
    pillar = _pillar(tmp_path, pki, "n1", enrolled="maybe")
    (error,) = pillar["_errors"]
    assert "k8s_kubeadm: enrolled" in error
    assert "kubernetes" not in pillar


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    return Renderer(Minion(None, tmp_path_factory.mktemp("render") / "minion", sync=False, **FAST))


def test_kubeadm_present_leaves_the_enrolled_files_alone(renderer):
    share = {"host": "n1", "role": "node", "files": {"pki/ca.crt": "x"}}
    states = renderer(
        "kubernetes.kubeadm.present",
        {"kubernetes": {"kubeadm_pki": {**share, "enrolled": ["kubelet.conf"]}}},
    )
    assert isinstance(states, dict), states
    assert "kubernetes-kubeadm-kubelet-conf-file-absent" not in states
    assert "kubernetes-kubeadm-pki-ca-key-file-absent" in states  # never a node's
    # the pillar way: a node's kubelet.conf not handed is removed, as before
    states = renderer("kubernetes.kubeadm.present", {"kubernetes": {"kubeadm_pki": share}})
    assert "kubernetes-kubeadm-kubelet-conf-file-absent" in states
