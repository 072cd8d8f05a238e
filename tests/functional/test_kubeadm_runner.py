"""generate_certs profile=kubeadm through Salt: the loader in-process, and the real salt-run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import support
import yaml
from support import kubeadm as ks

k8s_pki = support.k8s_pki

MASTERS_CLI = "[{name: m1, ip: 10.0.0.11}, {name: m2, ip: 10.0.0.12}]"
NODES_CLI = "[{name: n1, ip: 10.0.0.21}, {name: n2}]"


@pytest.fixture
def pillar_conf(tmp_path):
    """A master config whose pillar gives every minion the cluster's hosts."""
    pillar = tmp_path / "pillar"
    pillar.mkdir()
    (pillar / "top.sls").write_text("base:\n  '*':\n    - cluster\n")
    (pillar / "cluster.sls").write_text(
        yaml.safe_dump(
            {
                "kubernetes": {
                    "kubeadm": {
                        "masters": [{"name": "pm1", "ip": "10.1.0.11"}],
                        "nodes": [{"name": "pn1"}, {"name": "pn2", "ip": "10.1.0.22"}],
                    }
                }
            }
        )
    )
    return support.write_master_config(tmp_path, pillar_roots={"base": [str(pillar)]})


def test_in_process(runners, pki_root):
    gen = runners["k8s-helper.generate_certs"]
    ret = gen(
        profile="kubeadm",
        masters=[{"name": "m1", "ip": "10.0.0.11"}],
        nodes=[{"name": "n1"}],
        key_type="ecdsa-p256",
        cluster_tag="prod",
    )
    assert "error" not in ret, ret
    assert ret["profile"] == "kubeadm" and ret["changed"]
    files = ret["files"]
    assert files["hosts/n1/kubelet.conf"]["subject"] == "CN=system:node:n1,O=system:nodes"
    assert files["admin.conf"]["server"] == "https://kubernetes.api:6443"
    assert files["sa.pub"]["public_key_sha256"] == files["sa.key"]["public_key_sha256"]
    assert files["hosts/m1/etcd/peer.crt"]["sans"] == [
        "m1",
        "localhost",
        "10.0.0.11",
        "127.0.0.1",
        "::1",
    ]
    text = json.dumps(ret)
    assert "PRIVATE KEY" not in text and "client-key-data" not in text
    assert "BEGIN" not in text
    again = gen(
        profile="kubeadm",
        masters=[{"name": "m1", "ip": "10.0.0.11"}],
        nodes=[{"name": "n1"}],
        key_type="ecdsa-p256",
        cluster_tag="prod",
    )
    assert not again["changed"]
    assert {f["action"] for f in again["files"].values()} == {"reused"}


def test_salt_run_end_to_end(master_conf, pki_root):
    with support.event_sink(master_conf):
        proc = support.salt_run(
            master_conf,
            "k8s-helper.generate_certs",
            "profile=kubeadm",
            f"masters={MASTERS_CLI}",
            f"nodes={NODES_CLI}",
            "control_plane_endpoint=lb.example.com:7443",
            "key_type=ecdsa-p256",
        )
        assert proc.returncode == 0, proc.stderr
        ret = json.loads(proc.stdout)
        assert "PRIVATE KEY" not in proc.stdout + proc.stderr
        d = pki_root / "default"
        assert ret["directory"] == str(d)
        for host in ("m1", "m2", "n1", "n2"):
            assert ks.kubeconfig(d / f"hosts/{host}/kubelet.conf")["server"] == (
                "https://lb.example.com:7443"
            )
        assert ks.verify(d / "etcd/ca.crt", d / "hosts/m2/etcd/server.crt")
        before = support.snapshot(pki_root)
        proc = support.salt_run(
            master_conf,
            "k8s-helper.generate_certs",
            "profile=kubeadm",
            f"masters={MASTERS_CLI}",
            f"nodes={NODES_CLI}",
            "control_plane_endpoint=lb.example.com:7443",
        )
        assert proc.returncode == 0, proc.stderr
        assert support.snapshot(pki_root) == before
        # the seed profile's own call is unchanged: default profile, seed files
        proc = support.salt_run(master_conf, "k8s-helper.generate_certs", "cluster_tag=seed")
        assert proc.returncode == 0, proc.stderr
        assert sorted(os.listdir(pki_root / "seed")) == sorted(
            [*support.SEED_FILES, "cluster.yaml"]
        )


BAD = [
    (["profile=kubeadm"], "masters: the kubeadm profile needs"),
    (["profile=kubeadm", "masters=m1"], "masters: 'm1' is not a list"),
    (["profile=kubeadm", "masters=[{name: m1}]"], "masters[0]: 'ip' is missing"),
    (["profile=kubeadm", "masters=[{name: m_1, ip: 10.0.0.1}]"], "masters[0].name: 'm_1'"),
    (["profile=kubeadm", "masters=[{name: ../m, ip: 10.0.0.1}]"], "masters[0].name: '../m'"),
    (["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.300}]"], "masters[0].ip: '10.0.0.300'"),
    (
        ["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}, {name: m1, ip: 10.0.0.2}]"],
        "masters[1].name: 'm1' is listed twice",
    ),
    (
        ["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "nodes=[{name: m1}]"],
        "nodes[0].name: 'm1' is also listed in masters",
    ),
    (
        ["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "nodes=[{name: n1, ip: 1.2}]"],
        "nodes[0].ip: 1.2 is not",
    ),
    (
        ["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "control_plane_endpoint=a:b:c"],
        "control_plane_endpoint: 'a:b:c'",
    ),
    (["profile=kubeadm", "pillar_minion=nobody"], "pillar_minion: the pillar of 'nobody' has no"),
    (["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "flavour=x"], "flavour: unknown"),
    (["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "force_regen=maybe"], "force_regen"),
    (["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "key_type=dsa"], "key_type"),
    (["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "days=0"], "days"),
    (["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "cluster_tag=../x"], "cluster_tag"),
    (["profile=kubeadm", "masters=[{name: m1, ip: 10.0.0.1}]", "api_server_fqdn=a..b"], "api_"),
    (["profile=kube-up"], "profile: 'kube-up' is not one of seed, kubeadm"),
    # a seed set may record its hosts (enrollment), parsed as strictly
    (["masters=[{name: m1}]"], "masters[0]: 'ip' is missing for m1"),
    (["masters=[{name: m1, ip: 10.0.0.1}]", "nodes=[{name: m1}]"], "'m1' is also listed in"),
    (["control_plane_endpoint=lb:6443"], "control_plane_endpoint: only used with profile=kubeadm"),
]


def _kwargs(args):
    """salt-run's key=value arguments as the runner receives them (YAML-parsed values)."""
    return {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args)}


def test_bad_input_in_process(runners, pki_root):
    """Each refusal: a message naming the argument, retcode 2, nothing on disk."""
    gen = runners["k8s-helper.generate_certs"]
    for args, message in BAD:
        ret = gen(**_kwargs(args))
        assert ret["result"] is False and ret["retcode"] == 2, (args, ret)
        assert message in ret["error"], (args, ret)
        assert not pki_root.exists(), args


def test_bad_input_through_salt_run(master_conf, pki_root):
    """The real salt-run: one readable line, non-zero exit status, nothing on disk."""
    with support.event_sink(master_conf):
        for args, message in [BAD[i] for i in (1, 5, 7, 10, 11, 18)]:
            proc = support.salt_run(master_conf, "k8s-helper.generate_certs", *args)
            assert proc.returncode != 0, (args, proc.stdout)
            assert message in json.loads(proc.stdout)["error"], (args, proc.stdout)
            assert "Traceback" not in proc.stdout + proc.stderr
            assert not pki_root.exists(), args


def test_hosts_from_pillar(pillar_conf, tmp_path):
    pki_root = tmp_path / "pki"
    with support.event_sink(pillar_conf):
        proc = support.salt_run(
            pillar_conf,
            "k8s-helper.generate_certs",
            "profile=kubeadm",
            "pillar_minion=pm1",
            "key_type=ecdsa-p256",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        hosts = sorted(os.listdir(pki_root / "default/hosts"))
        assert hosts == ["pm1", "pn1", "pn2"]
        # an argument wins over the pillar for its own list
        proc = support.salt_run(
            pillar_conf,
            "k8s-helper.generate_certs",
            "profile=kubeadm",
            "pillar_minion=pm1",
            "cluster_tag=other",
            "nodes=[{name: x1}]",
            "key_type=ecdsa-p256",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sorted(os.listdir(pki_root / "other/hosts")) == ["pm1", "x1"]


def test_bad_hosts_in_pillar(tmp_path):
    pillar = tmp_path / "pillar"
    pillar.mkdir()
    (pillar / "top.sls").write_text("base:\n  '*':\n    - cluster\n")
    (pillar / "cluster.sls").write_text(
        "kubernetes:\n  kubeadm:\n    masters:\n      - {name: pm1, ip: 10.1.0.500}\n"
    )
    conf = support.write_master_config(tmp_path, pillar_roots={"base": [str(pillar)]})
    with support.event_sink(conf):
        proc = support.salt_run(
            conf, "k8s-helper.generate_certs", "profile=kubeadm", "pillar_minion=pm1"
        )
    assert proc.returncode != 0
    error = json.loads(proc.stdout)["error"]
    assert error.startswith("kubernetes:kubeadm:masters (pillar of pm1)[0].ip: '10.1.0.500'")
    assert not (tmp_path / "pki").exists()


def test_external_ca_force_regen_refused_through_salt_run(master_conf, pki_root):
    (pki_root / "default").mkdir(parents=True, mode=0o700)
    key = k8s_pki.new_key("ecdsa-p256")
    (pki_root / "default/ca.crt").write_bytes(k8s_pki.cert_pem(k8s_pki.build_ca(key, "corp")))
    (pki_root / "default/ca.key").write_bytes(k8s_pki.key_pem(key))
    os.chmod(pki_root / "default/ca.key", 0o600)
    args = ["profile=kubeadm", f"masters={MASTERS_CLI}", "key_type=ecdsa-p256"]
    with support.event_sink(master_conf):
        proc = support.salt_run(master_conf, "k8s-helper.generate_certs", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        ret = json.loads(proc.stdout)
        assert ret["files"]["ca.crt"]["external"] is True
        assert ret["files"]["etcd/ca.crt"]["action"] == "generated"
        before = support.snapshot(pki_root)
        proc = support.salt_run(master_conf, "k8s-helper.generate_certs", *args, "force_regen=True")
    assert proc.returncode != 0
    assert "ca.crt, a CA that k8s-helper did not create" in json.loads(proc.stdout)["error"]
    assert support.snapshot(pki_root) == before


CRASH_CHILD = """
import sys, os
sys.path.insert(0, {utils!r})
sys.path.insert(0, {tests!r})
import k8s_pki
from support import kubeadm as ks
nodes = [{{"name": f"n{{i}}"}} for i in range(30)]
specs = ks.specs(nodes=nodes)
os.write(1, b"ready\\n")
k8s_pki.ensure_set({root!r}, "c1", specs, key_type="ecdsa-p256", force_regen=True)
"""


def test_killed_writer_leaves_a_complete_set(tmp_path):
    """SIGKILL at random moments of a force_regen: the set is always complete and valid."""
    root = tmp_path / "pki"
    nodes = [{"name": f"n{i}"} for i in range(30)]
    specs = ks.specs(nodes=nodes)
    k8s_pki.ensure_set(root, "c1", specs, key_type="ecdsa-p256")
    code = CRASH_CHILD.format(
        utils=str(support.REPO / "_utils"), tests=str(support.REPO / "tests"), root=str(root)
    )

    def start():
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"
        return child

    started = time.perf_counter()
    start().wait(timeout=60)  # one whole run: how long the window to hit is
    window = time.perf_counter() - started
    rng = random.Random(7)
    seen = set()
    for _ in range(30):
        child = start()
        time.sleep(rng.uniform(0, window))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        plan = k8s_pki.plan_set(str(root / "c1"), specs)  # raises if incomplete or mixed
        assert not plan.changed, {n: i.reason for n, i in plan.items.items() if i.reason}
        seen.add((root / "c1/ca.crt").read_bytes())
    assert len(seen) > 1, "no kill landed after a commit: the trial proved nothing"


def test_check_expiration_on_a_kubeadm_set(master_conf, pki_root):
    """The real salt-run check_expiration lists the certificates embedded in kubeconfigs,
    by kubeadm's names (test_kubeadm_lifecycle_runner.py checks the tables)."""
    with support.event_sink(master_conf):
        proc = support.salt_run(
            master_conf,
            "k8s-helper.generate_certs",
            "profile=kubeadm",
            f"masters={MASTERS_CLI}",
            f"nodes={NODES_CLI}",
            "key_type=ecdsa-p256",
            "days=60",
        )
        assert proc.returncode == 0, proc.stderr
        proc = support.salt_run(master_conf, "k8s-helper.check_expiration")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    data = data.get("data", data)
    entries = {e["name"]: e for e in data["certificates"] + data["certificate_authorities"]}
    for host in ("m1", "m2", "n1", "n2"):
        entry = entries[f"kubelet.conf ({host})"]
        assert entry["file"] == f"hosts/{host}/kubelet.conf"
        assert entry["subject"] == f"CN=system:node:{host},O=system:nodes"
        assert entry["status"] == "ok" and entry["days_left"] in (59, 60)
    assert entries["super-admin.conf"]["days_left"] in (59, 60)
    assert entries["ca"]["days_left"] > 3600
