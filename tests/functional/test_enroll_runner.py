"""k8s-helper.sign_csr through Salt's loader, with the options peer_run gives it.

``salt.daemons.masterapi.RemoteFuncs.minion_runner`` runs a minion's runner
call with the master's options and ``id`` set to the authenticated minion id;
these tests load the runner the same way.  The daemons' own proof (a real
minion through peer_run) is tests/integration/test_enroll_daemons.py.
"""

import pytest
import support
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from support import kubeadm as ks

k8s_pki = support.k8s_pki


@pytest.fixture
def made(master_conf, pki_root):
    return ks.make_set(pki_root)


def _csr(cn="system:node:m1"):
    return k8s_pki.csr_for(ec.generate_private_key(ec.SECP256R1()), cn).decode()


def test_the_caller_is_the_authenticated_id_not_an_argument(master_conf, made):
    sign = support.sign_csr_as(master_conf, "n1")
    # what a minion could pass: Salt's publish keys, never read
    ret = sign(csr=_csr(), member="kubelet-client", cluster_tag="c1", __pub_id="m1")
    assert "error" not in ret, ret
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    assert ret["minion"] == "n1" and (made / "enrolled/n1/kubelet-client.crt").is_file()
    ret = sign(csr=_csr(), member="kubelet-client", cluster_tag="c1", minion_id="m1")
    assert ret == {"result": False, "retcode": 2, "error": ret["error"]}
    assert "minion_id: unknown argument" in ret["error"]


@pytest.mark.parametrize(
    ("caller", "kwargs", "why"),
    [
        ("n9", {"member": "kubelet-client"}, "minion 'n9': n9: not a host of the set 'c1'"),
        ("n1", {"member": "apiserver"}, "a node of 'c1' may enroll"),
        ("n1", {"member": None}, "member: which certificate"),
        ("n1", {"member": "kubelet-client", "csr": "garbage"}, "csr: not a PEM"),
        ("n1", {"member": "kubelet-client", "cluster_tag": "../c1"}, "cluster_tag"),
        ("n1", {"member": "kubelet-client", "cluster_tag": "nope"}, "no certificate set 'nope'"),
    ],
)
def test_refusals_are_one_line_with_retcode_and_change_nothing(
    master_conf, made, pki_root, caller, kwargs, why
):
    sign = support.sign_csr_as(master_conf, caller)
    before = support.snapshot(pki_root)
    ret = sign(**{"csr": _csr(), "cluster_tag": "c1", **kwargs})
    assert ret["result"] is False and ret["retcode"] == 2, ret
    assert why in ret["error"] and "\n" not in ret["error"]
    assert support.snapshot(pki_root) == before


def test_refused_when_the_master_accepts_unbound_minion_ids(master_conf, made, pki_root):
    sign = support.sign_csr_as(master_conf, "n1", minimum_auth_version=2)
    before = support.snapshot(pki_root)
    ret = sign(csr=_csr(), member="kubelet-client", cluster_tag="c1")
    assert ret["retcode"] == 2 and "minimum_auth_version: 3" in ret["error"], ret
    assert support.snapshot(pki_root) == before


def test_salt_run_on_the_master_signs_for_no_one(master_conf, made, pki_root):
    """An operator's salt-run has the master's own id: no host of the set, a non-zero exit."""
    with support.event_sink(master_conf):
        proc = support.salt_run(
            master_conf, "k8s-helper.sign_csr", "member=kubelet-client", "cluster_tag=c1"
        )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not a host of the set 'c1'" in proc.stdout
