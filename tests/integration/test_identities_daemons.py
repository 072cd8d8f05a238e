"""Identities through a real salt-master and real salt-minions (issue 10 items 6, 11).

Minion ids are what Salt authenticated, matched exactly: minions ``M1`` and
``m1.`` are other accepted keys than ``m1`` and must get nothing of master
``m1``'s share, from either ext_pillar, and ``verify`` reports them as minions
without certificates.  A minion whose answer to ``verify``'s probe is
malformed (a test-only ``slsutil`` module loaded through its ``module_dirs``)
is reported as a bad answer, and the others are still verified.

No state is applied: nothing is written outside the tests' temp folders.
"""

import contextlib
import json

import pytest
from support import REPO, formula_root, start_together

pytestmark = pytest.mark.daemons

SEED_TAG = "seed"
KUBEADM_TAG = "kadm"
LOOK_ALIKES = ("M1", "m1.")
BAD = "bad-1"


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    base = tmp_path_factory.mktemp("ids")
    pillar_root = base / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text("base: {}\n")
    master = salt_factories.salt_master_daemon(
        "ids-salt",
        overrides={
            "file_roots": {"base": [str(formula_root(base))]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "outputter_dirs": [str(REPO / "_output")],
            "k8s_helper": {"pki_root": str(base / "pki")},
            "gather_job_timeout": 3,
            "ext_pillar": [
                {"k8s_certs": {"cluster_tag": SEED_TAG, "masters": ["m1"], "nodes": ["n1"]}},
                {"k8s_kubeadm": {"cluster_tag": KUBEADM_TAG}},
            ],
        },
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(master.started())
        run = master.salt_run_cli(timeout=120)
        for args in (
            ["saltutil.sync_all"],
            ["k8s-helper.generate_certs", f"cluster_tag={SEED_TAG}"],
            [
                "k8s-helper.generate_certs",
                f"cluster_tag={KUBEADM_TAG}",
                "profile=kubeadm",
                "key_type=ecdsa-p256",
                "masters=[{name: m1, ip: 192.0.2.11}]",
                "nodes=[{name: n1}]",
            ],
        ):
            ret = run.run(*args)
            assert ret.returncode == 0, ret.stdout + ret.stderr
        minions = {}
        for minion_id in ("m1", *LOOK_ALIKES):
            minions[minion_id] = master.salt_minion_daemon(minion_id)
        minions[BAD] = master.salt_minion_daemon(
            BAD, overrides={"module_dirs": [str(REPO / "tests/integration/bad_probe")]}
        )
        start_together(stack, minions.values())
        yield {"master": master, "run": run, "cli": master.salt_cli(timeout=120)}


def pillar_of(cluster, minion_id):
    ret = cluster["cli"].run("pillar.item", "kubernetes", "unmask=True", minion_tgt=minion_id)
    assert ret.returncode == 0, ret.stdout + ret.stderr
    return ret.data["kubernetes"]


def test_master_m1_gets_its_share_from_both_ext_pillars(cluster):
    given = pillar_of(cluster, "m1")
    assert given["role"] == "master"
    assert sorted(given["certs"]) == [
        "ca.crt",
        "kubecfg.crt",
        "kubecfg.key",
        "server.cert",
        "server.key",
    ]
    assert given["kubeadm_pki"]["host"] == "m1" and "pki/ca.key" in given["kubeadm_pki"]["files"]


@pytest.mark.parametrize("minion_id", LOOK_ALIKES)
def test_a_look_alike_minion_id_gets_nothing(cluster, minion_id):
    assert not pillar_of(cluster, minion_id)


def test_verify_reports_look_alikes_and_a_bad_answer_and_verifies_the_rest(cluster):
    ret = cluster["run"].run(
        "k8s-helper.verify", f"cluster_tag={SEED_TAG}", "tgt=*", "timeout=20", "--out=json"
    )
    data = ret.data if isinstance(ret.data, dict) else json.loads(ret.stdout)
    assert ret.returncode == 1, ret.stdout  # problems, not an internal error
    hosts = data["hosts"]
    assert sorted(hosts) == sorted(["m1", *LOOK_ALIKES, BAD])
    assert hosts[BAD]["status"] == "bad answer"
    assert hosts[BAD]["error"] == (
        "malformed answer to the probe (answer.files.ca.crt: expected a mapping, got str)"
    )
    for minion_id in LOOK_ALIKES:
        checks = {c["id"]: c["status"] for c in hosts[minion_id]["checks"]}
        assert checks["pillar"] == "no pillar", checks
    # m1 was still verified, path by path (no state ran, so they are not all fine)
    m1 = {c["id"]: c["status"] for c in hosts["m1"]["checks"]}
    assert {"ca.crt", "server.key", "trust-bundle"} <= set(m1), m1
    assert data["summary"]["minions"]["with problems"] == 4
