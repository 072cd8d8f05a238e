"""kubernetes.certs as Salt renders it (state.show_sls): pillar kubernetes:certs_mode picks
.present or .enrolled; .enrolled asks for each member of the host's role."""

import json

import pytest
import yaml
from support import REPO
from support.node import FAST, Minion, Renderer

ENROLLMENT = yaml.safe_load((REPO / "kubernetes/parameters/enrollment.yaml").read_text())


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    return Renderer(Minion(None, tmp_path_factory.mktemp("render") / "minion", sync=False, **FAST))


def _enrolled(states):
    return {
        s["member"]: s for s in states.values() if s["fun"] == "k8s_enroll.certificate_enrolled"
    }


@pytest.mark.parametrize("role", ["node", "master"])
def test_enrolled_mode_asks_for_the_members_of_the_role(renderer, role):
    pillar = {"kubernetes": {"certs_mode": "enrolled", "role": role}}
    states = renderer("kubernetes.certs", pillar)
    assert isinstance(states, dict), states
    members = _enrolled(states)
    assert list(members) == ENROLLMENT["roles"][role]
    client = members["kubelet-client"]
    assert client["name"] == "/var/lib/kubelet/pki/kubelet-client.crt"
    assert client["cluster_tag"] == "default" and client["key_type"] == "ecdsa-p256"
    assert not [s for s in states.values() if s["fun"].startswith("k8s_certs.pem")]


def test_the_lists_agree_with_the_masters_policy():
    """What the SLS asks for per role is what the master lets the role enroll."""
    from support import k8s_pki

    assert tuple(ENROLLMENT["roles"]["node"]) == k8s_pki.role_members("node")
    assert tuple(ENROLLMENT["roles"]["master"]) == k8s_pki.role_members("master")
    assert set(ENROLLMENT["members"]) == set(k8s_pki.MASTER_MEMBERS)


def test_pillar_settings_reach_the_states(renderer):
    pillar = {
        "kubernetes": {
            "certs_mode": "enrolled",
            "enrollment": {"cluster_tag": "prod", "key_type": "rsa-2048", "renew_before_days": 30},
        }
    }
    client = _enrolled(renderer("kubernetes.certs.enrolled", pillar))["kubelet-client"]
    assert (client["cluster_tag"], client["key_type"], client["renew_before_days"]) == (
        "prod",
        "rsa-2048",
        30,
    )


def test_default_mode_is_pillar(renderer):
    states = renderer("kubernetes.certs", {"kubernetes": {}})
    assert isinstance(states, dict) and not _enrolled(states)
    assert "kubernetes-certs-pillar-validated" in states


@pytest.mark.parametrize(
    ("pillar", "why"),
    [
        ({"certs_mode": "keys"}, "kubernetes:certs_mode: keys is not one of pillar, enrolled"),
        ({"certs_mode": "enrolled", "role": "admin"}, "kubernetes:role: admin is not one of"),
    ],
)
def test_bad_settings_fail_the_render(renderer, pillar, why):
    ret = renderer("kubernetes.certs", {"kubernetes": pillar})
    assert why in json.dumps(ret)


def test_the_kubelet_kubeconfig_points_at_the_enrolled_pair(renderer):
    pillar = {
        "kubernetes": {
            "certs_mode": "enrolled",
            "enrollment": {"server": "https://lb.example:6443", "server_name": "lb.example"},
        }
    }
    states = renderer("kubernetes.certs.enrolled", pillar)
    conf = states["kubernetes-certs-enrolled-kubelet-kubeconfig-file-managed"]
    assert conf["name"] == "/etc/kubernetes/kubelet.conf" and conf["mode"] == "0600"
    context = conf["context"]
    assert context["server"] == "https://lb.example:6443"
    assert context["server_name"] == "lb.example"
    assert context["cert"] == "/var/lib/kubelet/pki/kubelet-client.crt"
    assert context["key"] == "/var/lib/kubelet/pki/kubelet-client.key"
    removed = renderer("kubernetes.certs.enrolled_removed", {"kubernetes": {}})
    names = {s["name"] for s in removed.values()}
    assert "/etc/kubernetes/kubelet.conf" in names
    assert "/var/lib/kubelet/pki/kubelet-client.key" in names


SEED_PILLAR = {"certs_mode": "enrolled", "certs": {"ca.crt": "x"}}


def test_seed_node_enrolls_its_own_identities_at_the_seed_paths(renderer):
    states = renderer("kubernetes.certs", {"kubernetes": {**SEED_PILLAR, "role": "node"}})
    assert isinstance(states, dict), states
    members = _enrolled(states)
    assert list(members) == ["kubelet-client", "kubelet-serving", "kube-proxy"]
    assert members["kubelet-client"]["ca"] == "/srv/kubernetes/ca.crt"
    assert members["kubelet-serving"]["ca"] == "/var/lib/kubelet/ca.crt"
    assert members["kube-proxy"]["key"] == "/var/lib/kube-proxy/pki/kube-proxy.key"
    kubelet = states["kubernetes-certs-enrolled-kubelet-kubeconfig-file-managed"]
    proxy = states["kubernetes-certs-enrolled-kube-proxy-kubeconfig-file-managed"]
    assert kubelet["name"] == "/var/lib/kubelet/kubeconfig"
    assert kubelet["context"]["cert"] == "/var/lib/kubelet/pki/kubelet-client.crt"
    assert proxy["name"] == "/var/lib/kube-proxy/kubeconfig"
    assert proxy["context"]["key"] == "/var/lib/kube-proxy/pki/kube-proxy.key"
    # a node lays down no admin pair: from pillar only the CA, into the trust store
    from_pillar = [s for s in states.values() if s["fun"].startswith("k8s_certs.pem")]
    assert [s["source"] for s in from_pillar] == ["kubernetes:certs:ca.crt"]
    assert "kubernetes-certs-enrolled-trust-store-trusted" in states
    assert "kubecfg" not in json.dumps(states)


def test_seed_master_enrolls_its_apiserver_pair_and_keeps_the_admin_pair(renderer):
    states = renderer("kubernetes.certs", {"kubernetes": {**SEED_PILLAR, "role": "master"}})
    members = _enrolled(states)
    assert list(members) == ["kubelet-client", "kubelet-serving", "kube-proxy", "apiserver"]
    assert members["apiserver"]["name"] == "/srv/kubernetes/server.cert"
    assert members["apiserver"]["key"] == "/srv/kubernetes/server.key"
    pem = {s["name"]: s for s in states.values() if s["fun"] == "k8s_certs.pem_managed"}
    assert sorted(pem) == [
        "/srv/kubernetes/kubecfg.crt",
        "/srv/kubernetes/kubecfg.key",
        "/usr/local/share/ca-certificates/kubernetes-ca.crt",
    ]
    assert pem["/srv/kubernetes/kubecfg.key"]["source"] == "kubernetes:certs:kubecfg.key"
    removed = renderer(
        "kubernetes.certs.enrolled_removed", {"kubernetes": {**SEED_PILLAR, "role": "node"}}
    )
    names = [s["name"] for s in removed.values() if s["fun"] == "file.absent"]
    assert {"/srv/kubernetes/server.key", "/var/lib/kube-proxy/pki/kube-proxy.key"} <= set(names)
    assert "/usr/local/share/ca-certificates/kubernetes-ca.crt" in names  # via certs.removed
    assert "/etc/kubernetes/kubelet.conf" not in names
    assert len(names) == len(set(names))  # one state per path


def test_the_seed_lists_agree_with_the_masters_policy():
    from support import k8s_pki

    assert tuple(ENROLLMENT["seed"]["roles"]["node"]) == k8s_pki.role_members("node", "seed")
    assert tuple(ENROLLMENT["seed"]["roles"]["master"]) == k8s_pki.role_members("master", "seed")


def test_a_bad_profile_fails_the_render(renderer):
    pillar = {"kubernetes": {"certs_mode": "enrolled", "enrollment": {"profile": "kube-up"}}}
    ret = renderer("kubernetes.certs", pillar)
    assert "kubernetes:enrollment:profile: kube-up is not one of" in json.dumps(ret)
