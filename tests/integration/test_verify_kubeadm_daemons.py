"""k8s-helper.verify on a kubeadm set with real daemons: one salt-master, three salt-minions.

The whole chain runs for real: ``salt-run k8s-helper.generate_certs
profile=kubeadm`` on the master, the ``k8s_kubeadm`` ext_pillar hands each
host its share, ``state.apply kubernetes.kubeadm.present`` lays it down.
Each minion's pillar ``kubernetes:lookup:kubeadm:dir`` puts kubeadm's folder
under its own temp root: the host's /etc/kubernetes is never written.

Minion ``m0`` is a master of the set, ``node-a`` is host ``n1`` through the
ext_pillar's ``names``, ``x9`` is no host of the set.  Then the disk is
damaged (a CA key on the node, a foreign certificate, a lost key, an edited
kubeconfig) and ``salt-run k8s-helper.verify`` must say what is wrong where.
"""

import contextlib
import json
import shutil

import pytest
from support import REPO, formula_root, k8s_pki, start_together

pytestmark = pytest.mark.daemons

TAG = "kv"
MINIONS = ("m0", "node-a", "x9")

PILLAR = """\
{%- set root = "@HOSTS@/" ~ grains['id'] %}
kubernetes:
  lookup:
    kubeadm: {dir: "{{ root }}/etc/kubernetes"}
"""


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    base = tmp_path_factory.mktemp("kverify")
    hosts = base / "hosts"
    pillar_root = base / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text("base:\n  '*':\n    - k8s\n")
    (pillar_root / "k8s.sls").write_text(PILLAR.replace("@HOSTS@", str(hosts)))
    master = salt_factories.salt_master_daemon(
        "kv-salt",
        overrides={
            "runner_dirs": [str(REPO / "_runners")],
            "utils_dirs": [str(REPO / "_utils")],
            "outputter_dirs": [str(REPO / "_output")],
            "pillar_dirs": [str(REPO / "_pillar")],
            "file_roots": {"base": [str(formula_root(base))]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "k8s_helper": {"pki_root": str(base / "pki")},
            "gather_job_timeout": 3,
            "ext_pillar": [{"k8s_kubeadm": {"cluster_tag": TAG, "names": {"node-a": "n1"}}}],
        },
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(master.started())
        run = master.salt_run_cli(timeout=120)
        ret = run.run(
            "k8s-helper.generate_certs",
            f"cluster_tag={TAG}",
            "profile=kubeadm",
            "key_type=ecdsa-p256",
            "masters=[{name: m0, ip: 192.0.2.10}]",
            "nodes=[{name: n1}]",
        )
        assert ret.returncode == 0, ret.stdout + ret.stderr
        start_together(stack, (master.salt_minion_daemon(m) for m in MINIONS))
        cli = master.salt_cli(timeout=180)
        ret = cli.run("saltutil.sync_all", minion_tgt="*")
        assert ret.returncode == 0, ret.stderr
        for minion_id in ("m0", "node-a"):
            ret = cli.run("state.apply", "kubernetes.kubeadm.present", minion_tgt=minion_id)
            assert ret.returncode == 0, ret.stdout
        yield {"run": run, "pki": base / "pki" / TAG, "hosts": hosts}


def verify(cluster, *args):
    ret = cluster["run"].run("k8s-helper.verify", f"cluster_tag={TAG}", *args, "--out=json")
    data = ret.data if isinstance(ret.data, dict) else json.loads(ret.stdout)
    return ret, data


def statuses(data, minion):
    return {c["id"]: c["status"] for c in data["hosts"][minion]["checks"]}


def kdir(cluster, minion):
    return cluster["hosts"] / minion / "etc/kubernetes"


def test_each_host_holds_its_share_and_verify_agrees(cluster):
    ret, data = verify(cluster, "tgt=[m0, node-a]", "tgt_type=list")
    assert ret.returncode == 0, ret.stdout
    m0, node = statuses(data, "m0"), statuses(data, "node-a")
    assert set(m0) == set(k8s_pki.KUBEADM_HOST_FILES) == set(node)
    assert set(m0.values()) == {"match"}, m0
    assert data["hosts"]["m0"]["role"] == "master"
    assert data["hosts"]["node-a"]["host"] == "n1" and data["hosts"]["node-a"]["role"] == "node"
    assert {rel for rel, s in node.items() if s == "match"} == {"pki/ca.crt", "kubelet.conf"}
    assert {s for rel, s in node.items() if rel not in ("pki/ca.crt", "kubelet.conf")} == {"absent"}
    # the node's kubelet.conf is n1's, byte for byte
    assert (kdir(cluster, "node-a") / "kubelet.conf").read_bytes() == (
        cluster["pki"] / "hosts/n1/kubelet.conf"
    ).read_bytes()
    assert "PRIVATE" not in ret.stdout and "client-key-data" not in ret.stdout


def test_a_minion_outside_the_set_is_reported(cluster):
    ret, data = verify(cluster, "tgt=*")
    assert ret.returncode == 1, ret.stdout
    x9 = statuses(data, "x9")
    assert x9["host"] == "not in set"
    assert {s for rel, s in x9.items() if rel != "host"} == {"absent"}
    assert data["hosts"]["m0"]["status"] == "ok" and data["hosts"]["node-a"]["status"] == "ok"
    assert data["summary"]["problems"] == ["x9"]


def test_damage_is_found_where_it_is(cluster):
    node, m0 = kdir(cluster, "node-a"), kdir(cluster, "m0")
    pki = cluster["pki"]
    (node / "pki").mkdir(exist_ok=True)
    shutil.copy(pki / "ca.key", node / "pki/ca.key")  # a CA key on a node
    shutil.copy(pki / "hosts/m0/apiserver.crt", node / "pki/apiserver.crt")
    other = k8s_pki.build_ca(k8s_pki.new_key("ecdsa-p256"), "other-ca")
    (m0 / "pki/front-proxy-ca.crt").write_bytes(k8s_pki.cert_pem(other))
    (m0 / "pki/etcd/peer.key").unlink()
    with (m0 / "admin.conf").open("a") as handle:
        handle.write("# edited\n")
    ret, data = verify(cluster, "tgt=[m0, node-a]", "tgt_type=list")
    assert ret.returncode == 1, ret.stdout
    seen_node, seen_m0 = statuses(data, "node-a"), statuses(data, "m0")
    assert seen_node["pki/ca.key"] == "forbidden"
    assert seen_node["pki/apiserver.crt"] == "unexpected"
    assert seen_m0["pki/front-proxy-ca.crt"] == "differs"
    assert seen_m0["pki/etcd/peer.key"] == "missing"
    assert seen_m0["admin.conf"] == "differs"
    assert seen_m0["pki/ca.key"] == "match" and seen_node["kubelet.conf"] == "match"
    assert sorted(data["summary"]["problems"]) == ["m0", "node-a"]
    assert "PRIVATE" not in ret.stdout
    # the table names them too
    table = cluster["run"].run(
        "k8s-helper.verify",
        f"cluster_tag={TAG}",
        "tgt=[m0, node-a]",
        "tgt_type=list",
        "--out=k8s_table",
    )
    forbidden = [line for line in table.stdout.splitlines() if line.split()[2:3] == ["forbidden"]]
    assert (
        len(forbidden) == 1 and forbidden[0].startswith("node-a ") and "pki/ca.key" in forbidden[0]
    )
    assert "1 forbidden" in table.stdout.splitlines()[-1]
