"""The orchestrations as Salt renders them: kubernetes.orch.replace_certs and
kubernetes.orch.rotate_ca, through the real ``state.orchestrate_show_sls``
runner loaded in this process (what ``salt-run`` calls), with the formula as
the master's file_roots.

What each setting turns into, the order of the steps and that every step
requires the one before it (so the first failure stops the rest), and every
refused setting with its message.  Running them against real minions:
tests/integration/test_replace_daemons.py.
"""

import gc
import logging
import warnings

import pytest
import salt.minion  # noqa: F401  (the runner uses salt.minion.MasterMinion)
import support

MASTERS = [{"name": "m1", "ip": "192.0.2.11"}, {"name": "m2", "ip": "192.0.2.12"}]


@pytest.fixture(scope="module")
def show(tmp_path_factory):
    base = tmp_path_factory.mktemp("orch-render")
    pillar = support.write_pillar(base / "pillar", {})
    conf = support.write_master_config(
        base,
        file_roots={"base": [str(support.formula_root(base))]},
        pillar_roots={"base": [str(pillar)]},
        k8s_helper={"pki_root": str(base / "pki")},
    )
    runners = support.load_runners(conf)
    runner = runners["state.orchestrate_show_sls"]
    # Sets on this master's disk: the orchestrations read a set's profile
    # (kubeadm: its cluster.yaml; "legacy": one made before manifests, hosts/ only)
    ret = runners["k8s-helper.generate_certs"](
        cluster_tag="kprod", profile="kubeadm", masters=MASTERS, key_type="ecdsa-p256"
    )
    assert ret.get("retcode", 0) == 0, ret
    support.k8s_pki.ensure_set(
        base / "pki", "legacy", support.k8s_pki.kubeadm_specs(MASTERS), key_type="ecdsa-p256"
    )
    assert not (base / "pki/legacy/cluster.yaml").exists()

    def render(sls, key, settings):
        # A failed render is logged at CRITICAL; the test reads the message
        # from the return value instead.
        salt_log = logging.getLogger("salt")
        level = salt_log.level
        salt_log.setLevel(logging.CRITICAL + 1)
        try:
            ret = runner(f"kubernetes.orch.{sls}", pillar={key: settings})
            # The runner leaves its MasterMinion to the garbage collector, whose
            # finalizer warns "unclosed MasterMinion"; collected here, quietly,
            # rather than at exit, after pytest's summary.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()
        finally:
            salt_log.setLevel(level)
        (out,) = ret.values()
        if isinstance(out, list):
            return out[0].split("\n")[0]
        return steps(out)

    return render


def steps(out):
    """[(id, function, {arg: value})] in execution order."""
    found = []
    for ident, body in out.items():
        items = body["salt"]
        args = {}
        fun = None
        for item in items:
            if isinstance(item, dict):
                args.update(item)
            else:
                fun = item
        found.append((args.pop("order"), ident, fun, args))
    return [(ident, fun, args) for _, ident, fun, args in sorted(found)]


def assert_chain(rendered):
    """Every step requires the one before it; the final verify, which runs
    after the clean-up whatever its result, requires the step before that."""
    for (before, _, _), (ident, _, args) in zip(rendered, rendered[1:], strict=False):
        if ident.endswith("-verify") and before.endswith("-cluster-cleanup"):
            cleanup = next(i for i, (name, _, _) in enumerate(rendered) if name == before)
            before = rendered[cleanup - 1][0]
        assert args.get("require") == [{"salt": before}], ident


R = "kubernetes-orch-replace"


def test_replace_defaults(show):
    rendered = show("replace_certs", "k8s_replace", {"masters": ["m1", "m2"]})
    assert [ident for ident, _, _ in rendered] == [
        f"{R}-set",
        f"{R}-masters-refresh-pillar",
        f"{R}-m1-kubelet-removed",
        f"{R}-m1-running",
        f"{R}-m1-healthz",
        f"{R}-m2-kubelet-removed",
        f"{R}-m2-running",
        f"{R}-m2-healthz",
        f"{R}-nodes-refresh-pillar",
        f"{R}-nodes-running",
        f"{R}-cluster-cleanup",
        f"{R}-verify",
    ]
    assert_chain(rendered)
    got = {ident: (fun, args) for ident, fun, args in rendered}
    # no generate: the prepared set, checked
    assert got[f"{R}-set"] == (
        "runner",
        {"name": "k8s-helper.check_expiration", "cluster_tag": "default", "table": False},
    )
    assert got[f"{R}-masters-refresh-pillar"][1]["tgt"] == ["m1", "m2"]
    assert got[f"{R}-masters-refresh-pillar"][1]["kwarg"] == {"wait": True}
    assert got[f"{R}-m1-kubelet-removed"][1]["sls"] == "kubernetes.kubelet.removed"
    assert got[f"{R}-m1-running"][1]["tgt"] == "m1"
    assert got[f"{R}-m2-healthz"][1]["kwarg"] == {"wait": 120, "interval": 2}
    members = "( I@kubernetes:k8s_env:default or I@kubernetes:kubeadm_pki:cluster_tag:default )"
    nodes = f"{members} and not L@m1,m2"
    running = got[f"{R}-nodes-running"][1]
    assert (running["tgt"], running["tgt_type"], running["batch"], running["failhard"]) == (
        nodes,
        "compound",
        "25%",
        True,
    )
    cleanup = got[f"{R}-cluster-cleanup"]
    assert cleanup[1]["name"] == "k8s_cluster.cleanup" and cleanup[1]["tgt"] == "m1"
    assert "kwarg" not in cleanup[1]
    assert got[f"{R}-verify"][1] == {
        "name": "k8s-helper.verify",
        "cluster_tag": "default",
        "tgt": f"L@m1,m2 or ( {nodes} )",
        "tgt_type": "compound",
        "table": False,
        # not the clean-up: verify runs (after it) even when the clean-up fails
        "require": [{"salt": f"{R}-nodes-running"}],
    }


def test_replace_settings(show):
    rendered = show(
        "replace_certs",
        "k8s_replace",
        {
            "cluster_tag": "prod",
            "generate": {"force_regen": True, "extra_sans": ["lb.example", "192.0.2.9"]},
            "masters": "m2, m1",
            "nodes": ["n1", "n2"],
            "batch": 1,
            "remove_containers": False,
            "health_wait": 30,
            "cleanup": {"restart": ["daemonset/calico-node"], "delete_token_secrets": False},
        },
    )
    assert_chain(rendered)
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert got[f"{R}-set"][1] == {
        "name": "k8s-helper.generate_certs",
        "cluster_tag": "prod",
        "extra_sans": ["lb.example", "192.0.2.9"],
        "force_regen": True,
    }
    assert [i for i in got if i.endswith(("-running", "-healthz"))][:4] == [
        f"{R}-m2-running",
        f"{R}-m2-healthz",
        f"{R}-m1-running",
        f"{R}-m1-healthz",
    ]
    assert not [i for i in got if i.endswith("kubelet-removed")]
    assert got[f"{R}-nodes-running"][1]["tgt"] == ["n1", "n2"]
    assert got[f"{R}-nodes-running"][1]["tgt_type"] == "list"
    assert got[f"{R}-nodes-running"][1]["batch"] == "1"
    assert got[f"{R}-m1-healthz"][1]["kwarg"]["wait"] == 30
    assert got[f"{R}-cluster-cleanup"][1]["tgt"] == "m2"
    assert got[f"{R}-cluster-cleanup"][1]["kwarg"] == {
        "restart": ["daemonset/calico-node"],
        "delete_token_secrets": False,
    }
    assert got[f"{R}-verify"][1]["tgt"] == "L@m2,m1 or L@n1,n2"


def test_replace_without_nodes_cleanup_or_verify(show):
    rendered = show(
        "replace_certs",
        "k8s_replace",
        {"masters": ["m1"], "nodes": False, "cleanup": False, "verify": False},
    )
    assert [ident for ident, _, _ in rendered] == [
        f"{R}-set",
        f"{R}-masters-refresh-pillar",
        f"{R}-m1-kubelet-removed",
        f"{R}-m1-running",
        f"{R}-m1-healthz",
    ]


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("prepare", ["rotate-ca"]),
        ("trust", ["rotate-ca", "refresh", "m1-running", "m1-healthz", "nodes", "cleanup", "v"]),
        (
            "reissue",
            ["bundle-everywhere", "rotate-ca", "refresh", "m1-running", "m1-healthz", "nodes", "v"],
        ),
        ("finish", ["rotate-ca", "refresh", "m1-running", "m1-healthz", "nodes", "cleanup", "v"]),
        ("abort", ["rotate-ca", "refresh", "m1-running", "m1-healthz", "nodes", "v"]),
    ],
)
def test_rotate_each_stage(show, stage, expected):
    rendered = show(
        "rotate_ca", "k8s_rotate", {"cluster_tag": "prod", "stage": stage, "masters": ["m1"]}
    )
    prefix = f"kubernetes-orch-rotate-{stage}"
    names = {
        "refresh": "masters-refresh-pillar",
        "nodes": ["nodes-refresh-pillar", "nodes-running"],
        "cleanup": "cluster-cleanup",
        "v": "verify",
    }
    want = []
    for short in expected:
        full = names.get(short, short)
        want += [f"{prefix}-{f}" for f in (full if isinstance(full, list) else [full])]
    assert [ident for ident, _, _ in rendered] == want
    assert_chain(rendered)
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert got[f"{prefix}-rotate-ca"][1]["name"] == "k8s-helper.rotate_ca"
    assert got[f"{prefix}-rotate-ca"][1]["stage"] == stage
    if stage != "prepare":  # no kubelet.removed: the kubelet restarts, pods keep running
        assert got[f"{prefix}-m1-running"][1]["sls"] == "kubernetes.running"
        assert not [i for i in got if "kubelet-removed" in i]
    if "cleanup" in expected:  # token secrets kept by default during a rotation
        assert got[f"{prefix}-cluster-cleanup"][1]["kwarg"] == {"delete_token_secrets": False}


@pytest.mark.parametrize("tag", ["kprod", "legacy"])
def test_rotate_a_kubeadm_set_passes_the_ca_and_rolls_its_hosts(show, tag):
    rendered = show(
        "rotate_ca",
        "k8s_rotate",
        {"cluster_tag": tag, "stage": "trust", "ca": "etcd-ca", "masters": ["m1", "m2"]},
    )
    assert_chain(rendered)
    prefix = "kubernetes-orch-rotate-trust"
    got = {ident: (fun, args) for ident, fun, args in rendered}
    runner = got[f"{prefix}-rotate-ca"][1]
    assert (runner["name"], runner["cluster_tag"], runner["ca"]) == (
        "k8s-helper.rotate_ca",
        tag,
        "etcd-ca",
    )
    # the nodes: the set's hosts by either pillar, but the masters
    members = f"( I@kubernetes:k8s_env:{tag} or I@kubernetes:kubeadm_pki:cluster_tag:{tag} )"
    assert got[f"{prefix}-nodes-running"][1]["tgt"] == f"{members} and not L@m1,m2"
    assert got[f"{prefix}-m2-running"][1]["sls"] == "kubernetes.running"
    assert not [i for i in got if i.endswith("cluster-cleanup")]  # none by default
    assert f"{prefix}-verify" in got


def test_rotate_passes_the_runner_arguments_and_can_skip_the_cleanup(show):
    rendered = show(
        "rotate_ca",
        "k8s_rotate",
        {"stage": "trust", "masters": ["m1"], "cleanup": False, "keep_keys": False, "days": 90},
    )
    got = {ident: (fun, args) for ident, fun, args in rendered}
    runner = got["kubernetes-orch-rotate-trust-rotate-ca"][1]
    assert (runner["keep_keys"], runner["days"]) == (False, 90)
    assert not [i for i in got if i.endswith("cluster-cleanup")]
    settings = {"restart": ["daemonset/calico-node"], "delete_token_secrets": True}
    rendered = show(
        "rotate_ca", "k8s_rotate", {"stage": "finish", "masters": ["m1"], "cleanup": settings}
    )
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert got["kubernetes-orch-rotate-finish-cluster-cleanup"][1]["kwarg"] == settings
    settings = {"restart": ["daemonset/calico-node"]}
    rendered = show(
        "rotate_ca", "k8s_rotate", {"stage": "finish", "masters": ["m1"], "cleanup": settings}
    )
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert got["kubernetes-orch-rotate-finish-cluster-cleanup"][1]["kwarg"] == {
        "restart": ["daemonset/calico-node"],
        "delete_token_secrets": False,
    }


@pytest.mark.parametrize(
    ("sls", "key", "settings", "message"),
    [
        (
            "replace_certs",
            "k8s_replace",
            {"masters": ["m1"], "bacth": 1},
            "k8s_replace:bacth: unknown setting (known: cluster_tag, generate, masters,",
        ),
        (
            "replace_certs",
            "k8s_replace",
            {"masters": ["m1"], "generate": "yes"},
            "k8s_replace:generate must be false or a mapping of generate_certs arguments",
        ),
        (
            "replace_certs",
            "k8s_replace",
            {"cluster_tag": "prod"},
            "k8s_replace: no masters: no minion in the pillar cache has kubernetes:role: master "
            "and kubernetes:k8s_env: prod, nor kubernetes:kubeadm_pki:role: master and "
            "kubernetes:kubeadm_pki:cluster_tag: prod; give k8s_replace:masters",
        ),
        ("replace_certs", "k8s_replace", ["m1"], "k8s_replace must be a mapping, not"),
        (
            "renew",
            "k8s_renew",
            {"cluster_tag": "kprod", "masters": ["m1"], "tgt": "m*"},
            "k8s_renew:tgt: unknown setting for a kubeadm set (known: cluster_tag, threshold_days,",
        ),
        (
            "renew",
            "k8s_renew",
            {"cluster_tag": "kprod"},
            "k8s_renew: no masters: no minion in the pillar cache has kubernetes:kubeadm_pki:role: "
            "master and kubernetes:kubeadm_pki:cluster_tag: kprod; give k8s_renew:masters",
        ),
        (
            "renew",
            "k8s_renew",
            {"cluster_tag": "prod", "batch": 1},
            "k8s_renew:batch: unknown setting for a seed set (known: cluster_tag, threshold_days, "
            "tgt, tgt_type)",
        ),
        (
            "rotate_ca",
            "k8s_rotate",
            {"masters": ["m1"]},
            'k8s_rotate:stage must be one of prepare, trust, reissue, finish, abort, not ""',
        ),
        (
            "rotate_ca",
            "k8s_rotate",
            {"stage": "rollback"},
            "k8s_rotate:stage must be one of prepare, trust, reissue, finish, abort, "
            'not "rollback"',
        ),
        (
            "rotate_ca",
            "k8s_rotate",
            {"stage": "trust", "keepkeys": True},
            "k8s_rotate:keepkeys: unknown setting",
        ),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(show, sls, key, settings, message):
    error = show(sls, key, settings)
    assert isinstance(error, str), error
    assert message in error


def _known(sls):
    """The settings an orchestration accepts (its `known` list)."""
    import re

    text = (support.REPO / "kubernetes/orch" / f"{sls}.sls").read_text()
    found = re.findall(
        r"'(\w+)'",
        text[text.index("{%- set known") : text.index("%}", text.index("{%- set known"))],
    )
    if sls == "rotate_ca":
        found += ["keep_keys", "key_type", "ca_days", "days"]
    return set(found)


def test_the_docs_name_every_setting_and_no_other():
    import re

    doc = (support.REPO / "docs/replace-certs.md").read_text()
    table = doc[doc.index("## Settings") : doc.index("An unknown key is refused")]
    assert set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M)) == _known("replace_certs")
    rotation = (support.REPO / "docs/ca-rotation.md").read_text()
    for key in _known("rotate_ca"):
        assert f"`{key}`" in rotation, key


# --------------------------------------------------------------------------
# kubernetes.orch.renew: a seed set as before; a kubeadm set rolled
# --------------------------------------------------------------------------

N = "kubernetes-orch-renew"


def test_renew_seed_set_lays_down_certificates_everywhere(show):
    rendered = show("renew", "k8s_renew", {"cluster_tag": "prod", "threshold_days": 30})
    assert [ident for ident, _, _ in rendered] == [
        f"{N}-due-leaves-salt-runner",
        f"{N}-refresh-pillar-salt-function",
        f"{N}-certs-present-salt-state",
    ]
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert got[f"{N}-due-leaves-salt-runner"][1]["threshold_days"] == 30
    assert got[f"{N}-certs-present-salt-state"][1]["tgt"] == "kubernetes:k8s_env:prod"


@pytest.mark.parametrize("tag", ["kprod", "legacy"])
def test_renew_kubeadm_set_rolls_masters_then_nodes_then_verifies(show, tag):
    rendered = show("renew", "k8s_renew", {"cluster_tag": tag, "masters": ["m1", "m2"]})
    assert [ident for ident, _, _ in rendered] == [
        f"{N}-due-leaves-salt-runner",
        f"{N}-masters-refresh-pillar",
        f"{N}-m1-running",
        f"{N}-m1-healthz",
        f"{N}-m2-running",
        f"{N}-m2-healthz",
        f"{N}-nodes-refresh-pillar",
        f"{N}-nodes-running",
        f"{N}-verify",
    ]
    assert_chain(rendered)
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert got[f"{N}-due-leaves-salt-runner"][1] == {
        "name": "k8s-helper.renew",
        "cluster_tag": tag,
        "threshold_days": 90,
    }
    # the static pods read the files: kubernetes.running rewrites their manifests
    assert got[f"{N}-m1-running"][1]["sls"] == "kubernetes.running"
    assert got[f"{N}-m2-healthz"][1]["name"] == "k8s_cluster.healthz"
    members = f"( I@kubernetes:k8s_env:{tag} or I@kubernetes:kubeadm_pki:cluster_tag:{tag} )"
    running = got[f"{N}-nodes-running"][1]
    assert (running["tgt"], running["tgt_type"], running["batch"], running["failhard"]) == (
        f"{members} and not L@m1,m2",
        "compound",
        "25%",
        True,
    )
    assert got[f"{N}-verify"][1]["tgt"] == f"L@m1,m2 or ( {members} and not L@m1,m2 )"


def test_renew_kubeadm_settings(show):
    rendered = show(
        "renew",
        "k8s_renew",
        {
            "cluster_tag": "kprod",
            "masters": "m2,m1",
            "nodes": ["n1"],
            "batch": 1,
            "health_wait": 30,
            "verify": False,
        },
    )
    assert_chain(rendered)
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert [i for i in got if i.endswith("-healthz")] == [f"{N}-m2-healthz", f"{N}-m1-healthz"]
    assert got[f"{N}-m1-healthz"][1]["kwarg"]["wait"] == 30
    assert got[f"{N}-nodes-running"][1]["tgt"] == ["n1"]
    assert got[f"{N}-nodes-running"][1]["batch"] == "1"
    assert f"{N}-verify" not in got


def test_replace_kubeadm_set(show):
    """replace_certs finds a kubeadm set's hosts by its pillar; generate passes profile."""
    rendered = show(
        "replace_certs",
        "k8s_replace",
        {"cluster_tag": "kprod", "masters": ["m1"], "generate": {"profile": "kubeadm"}},
    )
    assert_chain(rendered)
    got = {ident: (fun, args) for ident, fun, args in rendered}
    assert got[f"{R}-set"][1]["profile"] == "kubeadm"
    members = "( I@kubernetes:k8s_env:kprod or I@kubernetes:kubeadm_pki:cluster_tag:kprod )"
    assert got[f"{R}-nodes-running"][1]["tgt"] == f"{members} and not L@m1"
    assert [i for i, _, _ in rendered][2:5] == [
        f"{R}-m1-kubelet-removed",
        f"{R}-m1-running",
        f"{R}-m1-healthz",
    ]
