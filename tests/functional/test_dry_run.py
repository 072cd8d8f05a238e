"""Dry runs (test=True) of generate_certs, renew and rotate_ca: the plan, and nothing written.

Each case runs the runner twice on the same set: first with ``test=True``
(the folder, pki_root included, must be byte-, mode-, inode- and
mtime-identical afterwards, and no pki_root may appear where there was
none), then for real; the dry run's plan must name the same files with the
same actions and reasons as what the real run then did.  In-process through
Salt's loader, and through the real ``salt-run`` (exit status, output).
"""

import datetime
import json
import os
import pathlib

import pytest
import support
from support import event_sink, k8s_pki, salt_run
from support.kubeadm import MASTERS, NODES

DAY = datetime.timedelta(days=1)
KUBEADM = {
    "profile": "kubeadm",
    "api_service_address": "10.96.0.1",
    "masters": MASTERS,
    "nodes": NODES,
    "key_type": "ecdsa-p256",
}
SEED = {"key_type": "ecdsa-p256"}


def tree(root):
    """Every entry under ``root`` (and root itself): mode, inode, mtime, bytes."""
    root = pathlib.Path(root)
    if not os.path.lexists(root):
        return None
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = pathlib.Path(dirpath, name)
            st = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            state[str(path.relative_to(root))] = (
                st.st_mode,
                st.st_ino,
                st.st_uid,
                st.st_mtime_ns,
                st.st_size,
                data,
            )
    return state


def actions(ret):
    """{file: (action, reason)} of a real run's or a dry run's return; removals apart."""
    return {
        name: (info["action"], info.get("reason", ""))
        for name, info in ret["files"].items()
        if info["action"] != "removed"
    }


def dry_then_real(runners, pki_root, fun, **kwargs):
    """Run ``fun`` with test=True (nothing may change), then for real; returns both returns."""
    before = tree(pki_root)
    dry = runners[fun](test=True, **kwargs)
    assert tree(pki_root) == before, "the dry run changed the store"
    assert dry.get("retcode", 0) == 0, dry
    assert dry["test"] is True
    assert dry["comment"] == "dry run: nothing written"
    assert dry.get("backup") is None
    assert "PRIVATE KEY" not in repr(dry)
    real = runners[fun](**kwargs)
    assert real.get("retcode", 0) == 0, real
    assert "test" not in real
    if "files" in real:
        assert actions(dry) == actions(real)
        assert sorted(dry.get("removed", [])) == sorted(real.get("removed", []))
        assert dry["changed"] == real["changed"]
        assert dry["would_back_up"] == (real["backup"] is not None)
    return dry, real


def changes(ret):
    return {name: info["change"] for name, info in ret["files"].items()}


def now():
    return datetime.datetime.now(datetime.timezone.utc)


# -- generate_certs --------------------------------------------------------------


@pytest.mark.parametrize("profile", [SEED, KUBEADM], ids=["seed", "kubeadm"])
def test_generate_fresh_set_creates_nothing(runners, pki_root, profile):
    assert not pki_root.exists()
    dry, real = dry_then_real(runners, pki_root, "k8s-helper.generate_certs", **profile)
    assert set(changes(dry).values()) == {"create"}
    assert dry["files"]["ca.crt"]["reason"] == "new set"
    assert set(dry["files"]) == set(real["files"])
    assert all(line.startswith("create ") for line in dry["plan"])


@pytest.mark.parametrize("profile", [SEED, KUBEADM], ids=["seed", "kubeadm"])
def test_generate_unchanged_set_keeps_everything(runners, pki_root, profile):
    runners["k8s-helper.generate_certs"](**profile)
    dry, real = dry_then_real(runners, pki_root, "k8s-helper.generate_certs", **profile)
    assert set(changes(dry).values()) == {"keep"}
    assert dry["changed"] is False and real["changed"] is False


def test_generate_drifted_seed_set(runners, pki_root):
    runners["k8s-helper.generate_certs"](**SEED)
    dry, real = dry_then_real(
        runners, pki_root, "k8s-helper.generate_certs", api_server_fqdn="api.other", **SEED
    )
    assert changes(dry)["server.crt"] == "reissue"
    assert dry["files"]["server.crt"]["reason"] == (
        "api_server_fqdn changed from 'kubernetes.api' to 'api.other': "
        "names or usages differ from those requested"
    )
    assert changes(dry)["server.key"] == "keep"  # it signs the service-account tokens
    assert changes(dry)["kubecfg.crt"] == "keep"
    assert dry["would_back_up"] is True


def test_generate_drifted_kubeadm_set(runners, pki_root):
    runners["k8s-helper.generate_certs"](**KUBEADM)
    drifted = {**KUBEADM, "api_service_address": "10.96.0.10"}
    dry, _ = dry_then_real(runners, pki_root, "k8s-helper.generate_certs", **drifted)
    reissued = {n for n, c in changes(dry).items() if c == "reissue"}
    assert reissued == {
        f"hosts/{m['name']}/{f}" for m in MASTERS for f in ("apiserver.crt", "apiserver.key")
    }


def test_generate_added_node_kubeadm(runners, pki_root):
    runners["k8s-helper.generate_certs"](**KUBEADM)
    grown = {**KUBEADM, "nodes": [*NODES, {"name": "n3"}]}
    dry, _ = dry_then_real(runners, pki_root, "k8s-helper.generate_certs", **grown)
    created = {n: dry["files"][n].get("reason") for n, c in changes(dry).items() if c == "create"}
    assert created == {"hosts/n3/kubelet.conf": "nodes changed (added n3): missing"}


@pytest.mark.parametrize("profile", [SEED, KUBEADM], ids=["seed", "kubeadm"])
def test_generate_force_regen(runners, pki_root, profile):
    runners["k8s-helper.generate_certs"](**profile)
    dry, real = dry_then_real(
        runners, pki_root, "k8s-helper.generate_certs", force_regen=True, **profile
    )
    assert set(changes(dry).values()) == {"reissue"}
    assert dry["files"]["ca.crt"]["reason"] == "force_regen"
    assert real["backup"]


def test_generate_force_regen_mid_rotation_removes_next_ca(runners, pki_root):
    runners["k8s-helper.generate_certs"](**SEED)
    runners["k8s-helper.rotate_ca"](stage="prepare")
    dry, real = dry_then_real(
        runners, pki_root, "k8s-helper.generate_certs", force_regen=True, **SEED
    )
    assert changes(dry)["ca.next.crt"] == changes(dry)["ca.next.key"] == "remove"
    assert real["removed"] == ["ca.next.crt", "ca.next.key"]


# -- renew -------------------------------------------------------------------------


def aged_seed_set(pki_root, days):
    specs = k8s_pki.seed_specs()
    k8s_pki.ensure_set(pki_root, "default", specs, key_type="ecdsa-p256", now=now() - days * DAY)


def test_renew_named(runners, pki_root):
    runners["k8s-helper.generate_certs"](**SEED)
    dry, real = dry_then_real(runners, pki_root, "k8s-helper.renew", certs="kubecfg")
    assert changes(dry) == {
        "ca.crt": "keep",
        "ca.key": "keep",
        "server.crt": "keep",
        "server.key": "keep",
        "kubecfg.crt": "reissue",
        "kubecfg.key": "reissue",
    }
    assert dry["files"]["kubecfg.crt"]["reason"] == "renewal requested"
    assert dry["renewed"] == real["renewed"] == ["kubecfg"]
    assert dry["restart"] == real["restart"]


def test_renew_keep_keys(runners, pki_root):
    runners["k8s-helper.generate_certs"](**SEED)
    dry, _ = dry_then_real(
        runners, pki_root, "k8s-helper.renew", certs="server,kubecfg", keep_keys=True
    )
    assert changes(dry)["kubecfg.key"] == "keep"
    assert changes(dry)["server.crt"] == "reissue"


def test_renew_threshold(runners, pki_root):
    aged_seed_set(pki_root, 300)
    dry, real = dry_then_real(runners, pki_root, "k8s-helper.renew", threshold_days=30)
    assert dry["renewed"] == real["renewed"] == []
    assert set(changes(dry).values()) == {"keep"}
    dry, real = dry_then_real(runners, pki_root, "k8s-helper.renew", threshold_days=90)
    assert dry["renewed"] == real["renewed"] == ["server", "kubecfg"]
    assert dry["files"]["server.crt"]["reason"].startswith("expires in")


def test_renew_token_key_warning(runners, pki_root):
    runners["k8s-helper.generate_certs"](**SEED)
    dry, real = dry_then_real(
        runners, pki_root, "k8s-helper.renew", certs="server", rotate_token_key=True
    )
    assert changes(dry)["server.key"] == "reissue"
    assert dry["warnings"] == real["warnings"]


def test_renew_kubeadm_set(runners, pki_root):
    runners["k8s-helper.generate_certs"](**KUBEADM)
    dry, real = dry_then_real(
        runners, pki_root, "k8s-helper.renew", certs="etcd-peer,admin.conf", hosts="m2"
    )
    assert dry["renewed"] == real["renewed"] == ["admin.conf", "etcd-peer (m2)"]
    assert changes(dry)["hosts/m2/etcd/peer.crt"] == changes(dry)["admin.conf"] == "reissue"
    assert changes(dry)["hosts/m1/etcd/peer.crt"] == changes(dry)["sa.key"] == "keep"
    assert dry["restart"] == real["restart"] == ["etcd (static pod) on m2"]


def test_renew_kubeadm_set_refused_as_without_test(runners, pki_root):
    runners["k8s-helper.generate_certs"](**KUBEADM)
    before = tree(pki_root)
    dry = runners["k8s-helper.renew"](certs="etcd-ca", test=True)
    real = runners["k8s-helper.renew"](certs="etcd-ca")
    assert tree(pki_root) == before
    assert dry == real
    assert dry["retcode"] == 2


# -- rotate_ca ---------------------------------------------------------------------


def rotate(runners, pki_root, stage, **kwargs):
    return dry_then_real(runners, pki_root, "k8s-helper.rotate_ca", stage=stage, **kwargs)


def test_rotate_every_stage(runners, pki_root):
    runners["k8s-helper.generate_certs"](**SEED)
    dry, real = rotate(runners, pki_root, "prepare")
    assert (dry["state_before"], dry["state"]) == (real["state_before"], real["state"])
    assert changes(dry)["ca.next.crt"] == changes(dry)["ca.next.key"] == "create"
    assert changes(dry)["ca.crt"] == "keep"

    dry, real = rotate(runners, pki_root, "trust")
    assert (
        (dry["state_before"], dry["state"])
        == ("prepared", "trusted")
        == (
            real["state_before"],
            real["state"],
        )
    )
    assert changes(dry)["ca.crt"] == "reissue"
    assert dry["files"]["ca.crt"]["reason"] == "trust bundle: the current CA, then the new one"
    assert changes(dry)["ca.key"] == "keep"

    dry, real = rotate(runners, pki_root, "reissue")
    assert dry["state"] == real["state"] == "reissued"
    assert changes(dry)["ca.next.crt"] == changes(dry)["ca.next.key"] == "remove"
    assert changes(dry)["ca.key"] == "reissue"
    assert changes(dry)["server.crt"] == changes(dry)["kubecfg.crt"] == "reissue"
    assert changes(dry)["server.key"] == changes(dry)["kubecfg.key"] == "keep"

    dry, real = rotate(runners, pki_root, "finish")
    assert dry["state"] == real["state"] == "idle"
    assert changes(dry)["ca.crt"] == "reissue"
    assert {c for n, c in changes(dry).items() if n != "ca.crt"} == {"keep"}


@pytest.mark.parametrize("after", ["prepare", "trust"])
def test_rotate_abort(runners, pki_root, after):
    runners["k8s-helper.generate_certs"](**SEED)
    for stage in ("prepare", "trust")[: 1 + (after == "trust")]:
        runners["k8s-helper.rotate_ca"](stage=stage)
    dry, real = rotate(runners, pki_root, "abort")
    assert dry["state"] == real["state"] == "idle"
    assert changes(dry)["ca.next.crt"] == "remove"
    assert changes(dry)["ca.crt"] == ("reissue" if after == "trust" else "keep")


def test_rotate_done_already_and_status(runners, pki_root):
    runners["k8s-helper.generate_certs"](**SEED)
    dry, real = rotate(runners, pki_root, "finish")  # nothing to finish
    assert dry["changed"] is real["changed"] is False
    assert dry["message"].startswith("dry run, nothing written: ")


@pytest.mark.parametrize(
    ("fun", "kwargs"),
    [
        ("k8s-helper.rotate_ca", {"stage": "reissue"}),  # too early
        ("k8s-helper.rotate_ca", {"stage": "bogus"}),
        ("k8s-helper.generate_certs", {"key_type": "rsa-1"}),
        ("k8s-helper.generate_certs", {"profile": "kubeadm"}),  # no masters
        ("k8s-helper.renew", {"certs": "ca"}),
        ("k8s-helper.renew", {"certs": "nope"}),
        ("k8s-helper.renew", {"days": 0}),
    ],
)
def test_bad_input_refused_as_without_test(runners, pki_root, fun, kwargs):
    runners["k8s-helper.generate_certs"](**SEED)
    before = tree(pki_root)
    dry = runners[fun](test=True, **kwargs)
    real = runners[fun](**kwargs)
    assert dry == real
    assert dry["retcode"] == 2 and dry["result"] is False
    assert tree(pki_root) == before


def test_bad_test_value(runners, pki_root):
    ret = runners["k8s-helper.generate_certs"](test="maybe")
    assert ret["retcode"] == 2
    assert ret["error"].startswith("test:")
    assert not pki_root.exists()


@pytest.mark.parametrize("ca", ["ca", "etcd-ca", "front-proxy-ca"])
def test_rotate_kubeadm_dry_run_plans_and_refuses_as_without_test(runners, pki_root, ca):
    runners["k8s-helper.generate_certs"](**KUBEADM)
    before = tree(pki_root)
    dry = runners["k8s-helper.rotate_ca"](stage="trust", ca=ca, test=True)
    assert dry == runners["k8s-helper.rotate_ca"](stage="trust", ca=ca)
    assert dry["retcode"] == 2 and "run stage=prepare first" in dry["error"]
    planned = runners["k8s-helper.rotate_ca"](stage="prepare", ca=ca, test=True)
    assert planned["test"] is True and planned["changed"] is True, planned
    name = k8s_pki.ROTATION_CAS[ca]
    assert planned["files"][f"{name}.next.crt"]["change"] == "create"
    assert tree(pki_root) == before


def test_missing_set_refused_without_creating_pki_root(runners, pki_root):
    for fun, kwargs in (("k8s-helper.renew", {}), ("k8s-helper.rotate_ca", {"stage": "prepare"})):
        ret = runners[fun](test=True, **kwargs)
        assert ret["retcode"] == 2
        assert not pki_root.exists()


# -- the real salt-run -------------------------------------------------------------


def run(conf, *args, out="json"):
    proc = salt_run(conf, *args, out=out)
    data = json.loads(proc.stdout) if out == "json" and proc.stdout.strip() else None
    return proc, data


def test_salt_run_dry_runs(master_conf, pki_root):
    with event_sink(master_conf):
        proc, dry = run(
            master_conf, "k8s-helper.generate_certs", "test=True", "key_type=ecdsa-p256"
        )
        assert proc.returncode == 0, proc.stderr
        assert dry["test"] is True and dry["comment"] == "dry run: nothing written"
        assert set(changes(dry).values()) == {"create"}
        assert not pki_root.exists()

        proc, real = run(master_conf, "k8s-helper.generate_certs", "key_type=ecdsa-p256")
        assert proc.returncode == 0 and actions(dry) == actions(real)

        before = tree(pki_root)
        proc, _ = run(master_conf, "k8s-helper.renew", "certs=server", "test=True", out=None)
        assert proc.returncode == 0, proc.stderr
        assert "dry run: nothing written" in proc.stdout
        assert "reissue  server.crt: renewal requested" in proc.stdout  # the plan, one line a file
        proc, dry = run(master_conf, "k8s-helper.rotate_ca", "stage=prepare", "test=True")
        assert proc.returncode == 0 and dry["state"] == "prepared" and dry["test"] is True
        proc, dry = run(master_conf, "k8s-helper.rotate_ca", "stage=trust", "test=True")
        assert proc.returncode == 2
        assert "stage=trust: there is no new CA yet" in proc.stdout
        proc, _ = run(master_conf, "k8s-helper.renew", "certs=ca", "test=True")
        assert proc.returncode == 2
        assert tree(pki_root) == before


# -- state.orchestrate ... test=True: the plan step ---------------------------------


@pytest.fixture
def orch_conf(tmp_path):
    pillar = support.write_pillar(tmp_path / "pillar", {})
    return support.write_master_config(
        tmp_path,
        file_roots={"base": [str(support.formula_root(tmp_path))]},
        pillar_roots={"base": [str(pillar)]},
    )


def orchestrate(conf, sls, pillar, *extra):
    proc = salt_run(
        conf, "state.orchestrate", f"kubernetes.orch.{sls}", f"pillar={json.dumps(pillar)}", *extra
    )
    data = json.loads(proc.stdout)
    (steps,) = data["data"].values()
    return proc, {body["__id__"]: body for body in steps.values()}


def test_orchestrations_in_test_mode_show_the_plan(orch_conf, tmp_path):
    pki_root = tmp_path / "pki"
    with event_sink(orch_conf):
        aged_seed_set(pki_root, 300)  # its leaves are due within 90 days
        before = tree(pki_root)

        # rotate_ca stage=prepare: the runner step alone, so the whole run is clean
        pillar = {"k8s_rotate": {"stage": "prepare"}}
        proc, steps = orchestrate(orch_conf, "rotate_ca", pillar, "test=True")
        assert proc.returncode == 0, proc.stderr
        plan = steps["kubernetes-orch-rotate-prepare-rotate-ca-plan"]
        assert plan["result"] is True
        assert plan["comment"].startswith("k8s-helper.rotate_ca test=True: dry run, nothing")
        assert "create   ca.next.crt: the new CA of a rotation" in plan["comment"]
        runner = steps["kubernetes-orch-rotate-prepare-rotate-ca"]
        assert runner["result"] is None  # Salt's own salt.runner state in test mode

        # a stage asked for too early: the plan step fails with the runner's refusal
        pillar = {"k8s_rotate": {"stage": "trust", "masters": ["m1"], "verify": False}}
        _, steps = orchestrate(orch_conf, "rotate_ca", pillar, "test=True")
        plan = steps["kubernetes-orch-rotate-trust-rotate-ca-plan"]
        assert plan["result"] is False
        assert plan["comment"] == (
            "k8s-helper.rotate_ca refuses: stage=trust: there is no new CA yet; "
            "run stage=prepare first"
        )

        # replace_certs with generate arguments (the minion steps fail here: no master runs)
        generate = {"api_server_fqdn": "api.new", "key_type": "ecdsa-p256"}
        pillar = {
            "k8s_replace": {
                "generate": generate,
                "masters": ["m1"],
                "nodes": False,
                "cleanup": False,
                "verify": False,
            }
        }
        _, steps = orchestrate(orch_conf, "replace_certs", pillar, "test=True")
        plan = steps["kubernetes-orch-replace-set-plan"]
        assert plan["result"] is True
        server = (
            "reissue  server.crt: api_server_fqdn changed from 'kubernetes.api' to 'api.new': "
            "names or usages differ from those requested"
        )
        assert server in plan["comment"]
        assert "reissue  kubecfg.crt: expires in" in plan["comment"]
        assert "keep     ca.crt" in plan["comment"]
        assert plan["__run_num__"] == 0

        # renew: the leaves due within 90 days (the default threshold)
        pillar = {"k8s_renew": {"tgt": "m1", "tgt_type": "glob"}}
        _, steps = orchestrate(orch_conf, "renew", pillar, "test=True")
        plan = steps["kubernetes-orch-renew-due-leaves-plan"]
        assert plan["result"] is True
        assert "reissue  server.crt: expires in" in plan["comment"]

        # the formula's summary outputter prints the plan, one line a file
        pillar = json.dumps({"k8s_rotate": {"stage": "prepare"}})
        args = ("kubernetes.orch.rotate_ca", f"pillar={pillar}", "test=True")
        proc = salt_run(orch_conf, "state.orchestrate", *args, out="k8s_orch")
        assert proc.returncode == 0, proc.stderr
        assert "  ok       kubernetes-orch-rotate-prepare-rotate-ca-plan\n" in proc.stdout
        assert "    create   ca.next.key\n" in proc.stdout

        assert tree(pki_root) == before

        # without test=True there is no plan step, and the real runner step runs
        proc, steps = orchestrate(orch_conf, "rotate_ca", {"k8s_rotate": {"stage": "prepare"}})
        assert proc.returncode == 0, proc.stderr
        assert list(steps) == ["kubernetes-orch-rotate-prepare-rotate-ca"]
        assert steps["kubernetes-orch-rotate-prepare-rotate-ca"]["result"] is True
        assert (pki_root / "default/ca.next.crt").exists()


def test_master_option_test_makes_dry_runs(tmp_path):
    """``test: True`` in the master config (Salt's own dry-run switch) is honoured too."""
    conf = support.write_master_config(tmp_path, test=True)
    runners = support.load_runners(conf)
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
    assert ret["test"] is True and set(changes(ret).values()) == {"create"}
    assert not (tmp_path / "pki").exists()


def test_kubeadm_external_ca_certificate_only(runners, pki_root, tmp_path):
    """A CA brought without its key: its leaves are checked, kept, never issued."""
    elsewhere = tmp_path / "elsewhere"
    specs = k8s_pki.kubeadm_specs(MASTERS, NODES, api_service_address="10.96.0.1")
    k8s_pki.ensure_set(elsewhere, "default", specs, key_type="ecdsa-p256")
    signed_by_ca = [n for n, s in specs.items() if getattr(s, "issuer", None) == "ca"]
    for name in ["ca", *signed_by_ca]:
        for rel, _ in k8s_pki.spec_files(name, specs[name]):
            if rel != "ca.key":
                target = pki_root / "default" / rel
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                target.write_bytes((elsewhere / "default" / rel).read_bytes())
                target.chmod((elsewhere / "default" / rel).stat().st_mode & 0o777)
    pki_root.chmod(0o700)
    dry, real = dry_then_real(runners, pki_root, "k8s-helper.generate_certs", **KUBEADM)
    assert "ca.key" not in dry["files"] and "ca.key" not in real["files"]
    assert changes(dry)["ca.crt"] == "keep"
    assert changes(dry)["hosts/m1/apiserver.crt"] == "keep"
    assert changes(dry)["etcd/ca.crt"] == "create"


def test_the_orchestrate_wrapper_prints_the_summary_by_default(orch_conf, tmp_path):
    """k8s-helper.orchestrate: the same run, the short summary without --out."""
    pki_root = tmp_path / "pki"
    with event_sink(orch_conf):
        aged_seed_set(pki_root, 300)
        before = tree(pki_root)
        pillar = f"pillar={json.dumps({'k8s_rotate': {'stage': 'prepare'}})}"
        args = ("k8s-helper.orchestrate", "rotate_ca", pillar, "test=True")
        proc = salt_run(orch_conf, *args, out=None)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert "  ok       kubernetes-orch-rotate-prepare-rotate-ca-plan" in lines, proc.stdout
        assert any("create   ca.next.crt: the new CA of a rotation" in x for x in lines)
        assert len(lines) < 40, proc.stdout
        # the whole return is still there for --out=json
        proc = salt_run(orch_conf, *args)
        (steps,) = json.loads(proc.stdout)["data"].values()
        assert any(body["__id__"].endswith("-plan") for body in steps.values())
        # refused: an unknown orchestration, a pillar that is not a mapping
        for args in (("nosuch",), ("renew", "pillar=[1]")):
            proc = salt_run(orch_conf, "k8s-helper.orchestrate", *args, out=None)
            assert proc.returncode == 2, proc.stdout
        assert tree(pki_root) == before
