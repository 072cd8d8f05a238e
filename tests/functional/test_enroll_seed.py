"""Enrollment in a seed set, through Salt's loaders: ``generate_certs masters= nodes=``
records the hosts, ``sign_csr`` signs for them with the options peer_run gives it, and the
k8s_certs ext_pillar with ``enrolled: true`` hands a node no key at all."""

import json

import pytest
import support
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

k8s_pki = support.k8s_pki

HOSTS = ("masters=[{name: m1, ip: 192.0.2.11}]", "nodes=[{name: n1}, {name: n2}]")


def _generate(runners, *args):
    kwargs = dict(arg.split("=", 1) for arg in args)
    for key in ("masters", "nodes"):
        if key in kwargs:
            kwargs[key] = yaml.safe_load(kwargs[key])
    return runners["k8s-helper.generate_certs"](**kwargs)


@pytest.fixture
def seed(runners, pki_root):
    ret = _generate(runners, "cluster_tag=s1", "key_type=ecdsa-p256", *HOSTS)
    assert "error" not in ret, ret
    return pki_root / "s1"


def _csr():
    return k8s_pki.csr_for(ec.generate_private_key(ec.SECP256R1()), "x").decode()


def test_generate_certs_records_seed_hosts_and_keeps_the_set(runners, seed):
    manifest = yaml.safe_load((seed / "cluster.yaml").read_text())
    assert manifest["masters"] == [{"name": "m1", "ip": "192.0.2.11"}]
    assert manifest["nodes"] == [{"name": "n1"}, {"name": "n2"}]
    # the seed's files, no per-host member: the hosts add nothing to issue
    assert sorted(p.name for p in seed.glob("*.crt")) == ["ca.crt", "kubecfg.crt", "server.crt"]
    # a re-run without the hosts keeps them (from the record) and reissues nothing
    ret = _generate(runners, "cluster_tag=s1")
    assert {info["action"] for info in ret["files"].values()} == {"reused"}, ret
    assert yaml.safe_load((seed / "cluster.yaml").read_text())["nodes"] == manifest["nodes"]


def test_bad_hosts_are_refused_with_a_retcode_and_nothing_written(runners, pki_root):
    ret = _generate(runners, "cluster_tag=s2", "masters=[{name: m1}]")
    assert ret["retcode"] == 2 and "masters[0]: 'ip' is missing for m1" in ret["error"], ret
    assert not (pki_root / "s2").exists()


def test_sign_csr_for_seed_hosts(master_conf, seed, pki_root):
    sign = support.sign_csr_as(master_conf, "n1")
    ret = sign(csr=_csr(), member="kubelet-client", cluster_tag="s1")
    cert = x509.load_pem_x509_certificate(ret["cert"].encode())
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    before = support.snapshot(pki_root)
    ret = support.sign_csr_as(master_conf, "n1")(csr=_csr(), member="kubecfg", cluster_tag="s1")
    assert (
        ret["retcode"] == 2
        and "may enroll kubelet-client, kubelet-serving, kube-proxy" in (ret["error"])
    )
    sign = support.sign_csr_as(master_conf, "x1")
    ret = sign(csr=_csr(), member="kubelet-client", cluster_tag="s1")
    assert ret["retcode"] == 2 and "x1: not a host of the set 's1'" in ret["error"]
    assert support.snapshot(pki_root) == before


def _pillar(tmp_path, pki, minion_id, **options):
    ext = [{"k8s_certs": {"cluster_tag": "s1", "masters": ["m*"], "nodes": ["n*"], **options}}]
    return support.compiled_pillar(tmp_path, pki, minion_id, ext)


def test_enrolled_seed_pillar_gives_a_node_no_key(tmp_path, runners, seed, pki_root):
    pillar = _pillar(tmp_path / "a", pki_root, "n1", enrolled=True)
    assert set(pillar["kubernetes"]["certs"]) == {"ca.crt"}
    assert "PRIVATE KEY" not in json.dumps(pillar)
    # without the option, the pillar way is unchanged: the shared admin pair
    pillar = _pillar(tmp_path / "b", pki_root, "n1")
    assert set(pillar["kubernetes"]["certs"]) == {"ca.crt", "kubecfg.crt", "kubecfg.key"}


def test_enrolled_seed_pillar_gives_a_master_the_admin_and_token_keys(tmp_path, runners, pki_root):
    made = _generate(runners, "cluster_tag=s1", "service_account_key=True", *HOSTS)
    assert "error" not in made, made
    pillar = _pillar(tmp_path / "a", pki_root, "m1", enrolled=True)["kubernetes"]
    assert set(pillar["certs"]) == {"ca.crt", "kubecfg.crt", "kubecfg.key"}
    assert set(pillar["service_account"]) == {"sa.key", "sa.pub"}


def test_enrolled_seed_pillar_refuses_a_master_without_a_token_key(tmp_path, seed, pki_root):
    pillar = _pillar(tmp_path / "a", pki_root, "m1", enrolled=True)
    (error,) = pillar["_errors"]
    assert "has no sa.key" in error and "service_account_key=True" in error
    assert "kubernetes" not in pillar
    pillar = _pillar(tmp_path / "b", pki_root, "m1", enrolled="maybe")
    assert "k8s_certs: enrolled" in pillar["_errors"][0]


def test_check_expiration_lists_what_seed_hosts_enrolled(master_conf, runners, seed):
    ret = support.sign_csr_as(master_conf, "n2")(csr=_csr(), member="kube-proxy", cluster_tag="s1")
    assert "error" not in ret, ret
    report = runners["k8s-helper.check_expiration"](cluster_tag="s1", table=False)
    rows = {entry["name"]: entry for entry in report["certificates"]}
    assert rows["enrolled/n2/kube-proxy.crt"]["subject"] == "CN=system:kube-proxy"
    assert rows["enrolled/n2/kube-proxy.crt"]["status"] == "ok"
    assert "kubecfg.crt" in rows and report["retcode"] == 0


def test_a_seed_host_taken_out_of_the_set_loses_its_copies(master_conf, runners, seed):
    for host in ("n1", "n2"):
        sign = support.sign_csr_as(master_conf, host)
        assert "error" not in sign(csr=_csr(), member="kubelet-client", cluster_tag="s1")
    ret = _generate(runners, "cluster_tag=s1", "nodes=[{name: n2}]")
    assert ret["removed"] == ["enrolled/n1/kubelet-client.crt"], ret
    assert not (seed / "enrolled/n1").exists()
    assert (seed / "enrolled/n2/kubelet-client.crt").is_file()
    assert (seed / "server.crt").is_file() and (seed / "kubecfg.key").is_file()
