"""kubernetes.running with ``kubernetes:certs_mode: enrolled`` as Salt renders it
(state.show_sls): it uses kubernetes.certs.enrolled, and a renewal there restarts what
reads the renewed files: the kubelet (watch), the static pods (their manifests carry the
digest of the enrolled certificates they read, taken when the manifest is written)."""

import json

import pytest
import salt.config
import salt.pillar
import support
import yaml
from support import kubeadm as ks
from support.node import FAST, RUNNING, Minion, Renderer, sa_pair

k8s_pki = support.k8s_pki

ENROLLED = "kubernetes-certs-enrolled-{}-certificate-enrolled"
KUBELET_CLIENT = {"k8s_enroll": ENROLLED.format("kubelet-client")}
KUBELET_SERVING = {"k8s_enroll": ENROLLED.format("kubelet-serving")}


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    return Renderer(Minion(None, tmp_path_factory.mktemp("render") / "minion", sync=False, **FAST))


def render(renderer, pillar):
    states = renderer(RUNNING, {"kubernetes": pillar})
    assert isinstance(states, dict), states
    # show_sls does not resolve requisites (a run does): each must name a state of the tree
    for state_id, state in states.items():
        for kind in ("require", "watch", "require_in", "watch_in", "onchanges"):
            for requisite in state.get(kind) or ():
                ((module, target),) = requisite.items()
                assert target in states, f"{state_id}: {kind} {module}: {target} is no state"
                assert states[target]["fun"].split(".")[0] == module, (state_id, requisite)
    return states


def _pods(states):
    return {
        s["name"]: s for s in states.values() if s["name"].startswith("/etc/kubernetes/manifests/")
    }


def test_a_seed_node_runs_on_enrolled_pairs_and_holds_no_admin_key(renderer):
    states = render(
        renderer,
        {"certs_mode": "enrolled", "role": "node", "certs": {"ca.crt": "x"}},
    )
    service = states["kubernetes-kubelet-service-running"]
    assert KUBELET_CLIENT in service["watch"] and KUBELET_SERVING in service["watch"]
    assert {"file": "kubernetes-certs-enrolled-kubelet-kubeconfig-file-managed"} in service["watch"]
    # the kubeconfigs are the enrolled ones (no second writer, no kubecfg pair)
    assert "kubernetes-kubelet-kubeconfig-file-managed" not in states
    assert "kubernetes-running-kube-proxy-kubeconfig-file-managed" not in states
    assert "kubecfg" not in json.dumps(states)
    pem = [s["source"] for s in states.values() if s["fun"].startswith("k8s_certs.pem")]
    assert pem == ["kubernetes:certs:ca.crt"]  # the trust store's CA, nothing secret
    config = states["kubernetes-kubelet-config-file-managed"]["context"]
    assert config["serving"] == {
        "cert": "/var/lib/kubelet/pki/kubelet.crt",
        "key": "/var/lib/kubelet/pki/kubelet.key",
    }
    env = states["kubernetes-kubelet-env-file-managed"]["context"]
    assert env["kubeconfig"] == "/var/lib/kubelet/kubeconfig"


def test_a_seed_master_restarts_its_apiserver_after_an_enrolled_renewal(renderer):
    pillar = {
        "certs_mode": "enrolled",
        "role": "master",
        "certs": {"ca.crt": "x", "kubecfg.crt": "y", "kubecfg.key": "z"},
        "service_account": sa_pair("ecdsa-p256"),
    }
    states = render(renderer, pillar)
    pods = _pods(states)
    apiserver = pods["/etc/kubernetes/manifests/kube-apiserver.yaml"]
    assert apiserver["context"]["digest_files"] == ["/srv/kubernetes/server.cert"]
    assert {"k8s_enroll": ENROLLED.format("apiserver")} in apiserver["require"]
    assert apiserver["context"]["flags"]["tls-cert-file"] == "/srv/kubernetes/server.cert"
    assert pods["/etc/kubernetes/manifests/kube-scheduler.yaml"]["context"]["digest_files"] == []
    # the pillar way still needs the apiserver's pair from pillar
    ret = renderer(RUNNING, {"kubernetes": {**pillar, "certs_mode": "pillar"}})
    assert "has no server.cert/server.key" in json.dumps(ret)


def _kubeadm_pillar(tmp_path, minion_id, enrolled=True):
    pki = tmp_path / "pki"
    if not pki.exists():
        ks.make_set(pki)
    pillar_root = support.write_pillar(tmp_path / "pillar-roots", None, text="{}\n")
    conf = support.write_master_config(
        tmp_path / f"m-{minion_id}-{enrolled}",
        pillar_roots={"base": [str(pillar_root)]},
        pillar_dirs=[str(support.REPO / "_pillar")],
        ext_pillar=[{"k8s_kubeadm": {"cluster_tag": "c1", "enrolled": enrolled}}],
        file_client="local",
        k8s_helper={"pki_root": str(pki)},
    )
    opts = salt.config.master_config(str(conf / "master"))
    pillar = salt.pillar.get_pillar(opts, {"id": minion_id}, minion_id).compile_pillar()
    return {**pillar["kubernetes"], "certs_mode": "enrolled"}


def test_a_kubeadm_master_restarts_the_pods_reading_what_it_enrolled(renderer, tmp_path):
    states = render(renderer, _kubeadm_pillar(tmp_path, "m1"))
    pods = _pods(states)
    apiserver = pods["/etc/kubernetes/manifests/kube-apiserver.yaml"]
    assert "/etc/kubernetes/pki/apiserver.crt" in apiserver["context"]["digest_files"]
    assert {"k8s_enroll": ENROLLED.format("apiserver")} in apiserver["require"]
    etcd = pods["/etc/kubernetes/manifests/etcd.yaml"]
    assert set(etcd["context"]["digest_files"]) == {
        "/etc/kubernetes/pki/etcd/server.crt",
        "/etc/kubernetes/pki/etcd/peer.crt",
    }
    service = states["kubernetes-kubelet-service-running"]
    assert KUBELET_CLIENT in service["watch"]
    # kubelet.conf has one writer: the enrolled state
    assert "kubernetes-kubeadm-kubelet-conf-file-managed" not in states
    assert "kubernetes-certs-enrolled-kubelet-kubeconfig-file-managed" in states


def test_enrolled_mode_with_a_pillar_kubelet_conf_is_refused(renderer, tmp_path):
    pillar = _kubeadm_pillar(tmp_path, "n1", enrolled=False)
    ret = renderer(RUNNING, {"kubernetes": pillar})
    assert "hands this host kubelet.conf (the pillar way)" in json.dumps(ret)


def test_the_manifest_digest_follows_the_enrolled_certificate_on_disk(renderer, tmp_path):
    """The static pod template, rendered by Salt as file.managed does when the state runs:
    the annotation changes with the certificate file's content (a renewal), not before."""
    template = (support.REPO / "kubernetes/files/static-pod.yaml.jinja").read_text()
    cert = tmp_path / "apiserver.crt"
    context = {
        "name": "kube-apiserver",
        "image": "i",
        "flags": {},
        "port": 6443,
        "probe": "/livez",
        "cpu": "1",
        "mounts": [],
        "annotations": {"a": "b"},
        "digest_files": [str(cert)],
    }

    def annotation():
        text = renderer.caller.cmd(
            "file.apply_template_on_contents",
            template,
            template="jinja",
            context=context,
            defaults=None,
            saltenv="base",
        )
        doc = yaml.safe_load(text)
        return doc["metadata"]["annotations"]

    cert.write_text("first")
    first = annotation()
    cert.write_text("renewed")
    second = annotation()
    assert first["a"] == "b" and first["kubernetes-formula/enrolled-sha256"]
    key = "kubernetes-formula/enrolled-sha256"
    assert first[key] != second[key]
    context["digest_files"] = []
    assert "kubernetes-formula/enrolled-sha256" not in annotation()
