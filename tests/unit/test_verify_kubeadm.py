"""verify's comparison for a kubeadm set, on answers shaped like the probe's (no Salt here).

The answers are built from real files: a set made by the library and a host's
share copied the way kubernetes.kubeadm.present lays it down.
"""

import base64
import functools
import hashlib

import pytest
import support

k8s_pki = support.k8s_pki

MASTERS = [{"name": "m0", "ip": "10.0.0.10"}]
NODES = [{"name": "n1"}]


@pytest.fixture
def kset(tmp_path):
    root = tmp_path / "pki"
    k8s_pki.ensure_set(root, "k", k8s_pki.kubeadm_specs(MASTERS, NODES), key_type="ecdsa-p256")
    return root / "k"


def answer(kset, share, extra=None):
    """What the probe reports for a host holding exactly ``share`` (+ ``extra`` files)."""
    held = {rel: (kset / src).read_bytes() for rel, src in share.items()}
    held.update(extra or {})
    files = {}
    for rel in k8s_pki.KUBEADM_HOST_FILES:
        info = {"path": f"/etc/kubernetes/{rel}", "exists": rel in held, "is_link": False}
        if rel in held:
            info["sha256"] = hashlib.sha256(held[rel]).hexdigest()
            if rel.endswith((".crt", ".pub")):
                info["base64"] = base64.b64encode(held[rel]).decode()
        files[rel] = info
    return {"profile": "kubeadm", "dir": "/etc/kubernetes", "pillar_host": None, "files": files}


def statuses(checks):
    return {c["id"]: c["status"] for c in checks}


def test_share_follows_the_set_on_disk(kset):
    master = k8s_pki.kubeadm_share(str(kset), "m0")
    node = k8s_pki.kubeadm_share(str(kset), "n1")
    assert master == k8s_pki.kubeadm_host_files("m0", True)
    assert node == {"pki/ca.crt": "ca.crt", "kubelet.conf": "hosts/n1/kubelet.conf"}
    for outsider in ("x9", "M0", "m0.", "../m0", ""):
        assert k8s_pki.kubeadm_share(str(kset), outsider) is None, outsider


def test_every_file_judged_against_the_share(kset):
    refs = functools.partial(k8s_pki.kubeadm_reference, str(kset))
    share = k8s_pki.kubeadm_share(str(kset), "n1")
    checks = k8s_pki.verify_kubeadm_host(answer(kset, share), share, refs)
    seen = statuses(checks)
    assert set(seen) == set(k8s_pki.KUBEADM_HOST_FILES)
    assert seen["pki/ca.crt"] == seen["kubelet.conf"] == "match"
    assert {s for r, s in seen.items() if r not in share} == {"absent"}

    extra = {
        "pki/ca.key": (kset / "ca.key").read_bytes(),  # a CA key on a node
        "admin.conf": (kset / "admin.conf").read_bytes(),  # an admin identity on a node
        "pki/front-proxy-ca.crt": (kset / "front-proxy-ca.crt").read_bytes(),
    }
    seen = statuses(k8s_pki.verify_kubeadm_host(answer(kset, share, extra), share, refs))
    assert seen["pki/ca.key"] == "forbidden" and seen["admin.conf"] == "forbidden"
    assert seen["pki/front-proxy-ca.crt"] == "unexpected"

    master = k8s_pki.kubeadm_share(str(kset), "m0")
    wrong = answer(kset, master)
    wrong["files"]["pki/etcd/peer.key"] = {"path": "p", "exists": False}
    wrong["files"]["scheduler.conf"]["sha256"] = "0" * 64
    other = k8s_pki.cert_pem(k8s_pki.build_ca(k8s_pki.new_key("ecdsa-p256"), "x"))
    wrong["files"]["pki/ca.crt"]["base64"] = base64.b64encode(other).decode()
    wrong["files"]["pki/sa.pub"]["is_link"] = True
    seen = statuses(k8s_pki.verify_kubeadm_host(wrong, master, refs))
    assert seen["pki/etcd/peer.key"] == "missing"
    assert seen["scheduler.conf"] == "differs"
    assert seen["pki/ca.crt"] == "differs"
    assert seen["pki/sa.pub"] == "differs"
    assert seen["pki/ca.key"] == "match"

    # no host of the set: nothing expected, whatever it holds is found out
    seen = statuses(k8s_pki.verify_kubeadm_host(answer(kset, {}, extra), None, refs))
    assert seen["pki/ca.key"] == "forbidden" and seen["pki/ca.crt"] == "absent"


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda a: a.pop("files"), "answer.files: missing"),
        (lambda a: a.update(files=[]), "answer.files: unexpected list"),
        (lambda a: a["files"].pop("pki/ca.key"), "answer.files: pki/ca.key missing"),
        (lambda a: a["files"].update({"kubelet.conf": "x"}), "answer.files.kubelet.conf: expected"),
        (
            lambda a: a["files"]["pki/ca.crt"].update(exists="yes"),
            "answer.files.pki/ca.crt.exists: unexpected str",
        ),
        (lambda a: a.update(dir=None), "answer.dir: unexpected NoneType"),
    ],
)
def test_malformed_answer_is_named(kset, mangle, problem):
    observed = answer(kset, {})
    assert k8s_pki.kubeadm_probe_problem(observed, k8s_pki.KUBEADM_HOST_FILES) is None
    mangle(observed)
    found = k8s_pki.kubeadm_probe_problem(observed, k8s_pki.KUBEADM_HOST_FILES)
    assert found.startswith(problem), found
