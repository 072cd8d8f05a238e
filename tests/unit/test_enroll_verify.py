"""verify on enrolled hosts: what a host holds against the master's copy of what it issued
(only public data travels: the certificate and the public key of the host's key file)."""

import base64

import pytest
import support
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support import kubeadm as ks

k8s_pki = support.k8s_pki


@pytest.fixture
def enrolled(tmp_path):
    """n1 enrolled its kubelet client certificate; the master keeps a copy."""
    directory = ks.make_set(tmp_path / "pki")
    key = ec.generate_private_key(ec.SECP256R1())
    ret = k8s_pki.sign_request(str(directory), "n1", "kubelet-client", k8s_pki.csr_for(key, "n1"))
    return directory, key, ret["cert"]


def _public(key):
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _answer(cert_pem, key, member="kubelet-client", exists=True):
    info = {"cert": f"/x/{member}.crt", "key": f"/x/{member}.key", "exists": exists}
    if exists:
        info["base64"] = base64.b64encode(cert_pem.encode()).decode()
        info["public_key"] = _public(key)
    return {"members": {member: info}, "kubeconfigs": ["/x/kubelet.conf"]}


def _status(directory, answer, minion="n1"):
    copies = k8s_pki.enrolled_copies(str(directory), minion)
    (check,) = k8s_pki.verify_enrolled_host(answer, str(directory), copies)
    return check["status"], check


def test_the_enrolled_certificate_matches_the_masters_copy(enrolled):
    directory, key, cert = enrolled
    assert k8s_pki.enrolled_copies(str(directory), "n1") == {
        "kubelet-client": "enrolled/n1/kubelet-client.crt"
    }
    status, check = _status(directory, _answer(cert, key))
    assert status == "match" and check["id"] == "enrolled kubelet-client"
    assert k8s_pki.enrolled_paths(_answer(cert, key)) == {
        "/x/kubelet-client.crt",
        "/x/kubelet-client.key",
        "/x/kubelet.conf",
    }


def test_problems_are_named(enrolled):
    directory, key, cert = enrolled
    other_key = ec.generate_private_key(ec.SECP256R1())
    # the host's key file is not the one its certificate certifies
    status, check = _status(directory, _answer(cert, other_key))
    assert status == "key does not match cert" and check["path"] == "/x/kubelet-client.key"
    # the host holds another certificate than the master issued last (e.g. an older one)
    other = k8s_pki.sign_request(
        str(ks.make_set(directory.parent.parent / "other")), "n1", "kubelet-client",
        k8s_pki.csr_for(other_key, "n1"),
    )["cert"]  # fmt: skip
    assert _status(directory, _answer(other, other_key))[0] == "differs"
    assert _status(directory, _answer(cert, key, exists=False))[0] == "missing"
    # a member the master issued nothing for
    assert _status(directory, _answer(cert, key, member="kubelet-serving"))[0] == "not enrolled"
    assert _status(directory, _answer(cert, key, "kubelet-serving", exists=False))[0] == "absent"
    # a minion with no copies at all, or an id no host could have
    assert k8s_pki.enrolled_copies(str(directory), "n2") == {}
    assert k8s_pki.enrolled_copies(str(directory), "../n1") == {}
    assert k8s_pki.enrolled_copies(str(directory), "N1") == {}


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("text", "no 'members' mapping"),
        ({"members": {"kubelet-client": {"cert": 1}}}, "not a mapping with 'cert' and 'key'"),
        ({"members": {}, "kubeconfigs": "x"}, "'kubeconfigs' is not a list"),
    ],
)
def test_a_malformed_probe_answer_is_named(answer, why):
    assert why in k8s_pki.enrolled_probe_problem(answer)
