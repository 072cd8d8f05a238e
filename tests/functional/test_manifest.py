"""A set describes itself: cluster.yaml, re-runs that keep the settings, profiles kept apart.

In-process through Salt's loader, and the real salt-run for exit statuses and
one-line errors; sets made by the previous main's code (a real old-version
module, in a subprocess) are read and upgraded.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml
from support import REPO, event_sink, k8s_pki, salt_run, snapshot
from support import kubeadm as ks

TAG = "prod"
MASTERS = [{"name": "m1", "ip": "192.0.2.11"}]
NODES = [{"name": "n1", "ip": "192.0.2.21"}]
OLD_MAIN = "31179ba"  # the last main with _utils/k8s_pki.py as one module, before manifests


def _kubeadm(gen, **extra):
    args = dict(cluster_tag=TAG, profile="kubeadm", masters=MASTERS, nodes=NODES)
    return gen(**{**args, "key_type": "ecdsa-p256", **extra})


def _manifest(pki_root, tag=TAG):
    return yaml.safe_load((pki_root / tag / "cluster.yaml").read_text())


def test_kubeadm_rerun_keeps_recorded_settings(runners, pki_root):
    """Forgetting api_service_address (and the hosts) on a re-run reissues nothing."""
    gen = runners["k8s-helper.generate_certs"]
    first = _kubeadm(gen, api_service_address="10.96.0.1")
    assert first["changed"] and first["manifest"]["action"] == "written"
    manifest = _manifest(pki_root)
    assert manifest["format"] == 1 and manifest["profile"] == "kubeadm"
    assert manifest["api_service_address"] == "10.96.0.1"
    assert manifest["masters"] == MASTERS and manifest["nodes"] == NODES
    assert manifest["key_type"] == "ecdsa-p256" and manifest["cluster_name"] == "kubernetes"
    assert os.stat(pki_root / TAG / "cluster.yaml").st_mode & 0o777 == 0o644
    before = snapshot(pki_root)
    again = gen(cluster_tag=TAG, profile="kubeadm")
    assert again.get("retcode", 0) == 0, again
    assert again["changed"] is False and "settings_changed" not in again
    assert snapshot(pki_root) == before


def test_explicit_change_lists_each_reissued_file(runners, pki_root):
    gen = runners["k8s-helper.generate_certs"]
    _kubeadm(gen, api_service_address="10.96.0.1")
    ret = gen(cluster_tag=TAG, profile="kubeadm", api_service_address="10.96.0.2")
    change = ret["settings_changed"]["api_service_address"]
    assert (change["from"], change["to"]) == ("10.96.0.1", "10.96.0.2")
    assert change["reissues"] == ["hosts/m1/apiserver.crt"]
    reason = ret["files"]["hosts/m1/apiserver.crt"]["reason"]
    assert reason.startswith("api_service_address changed from '10.96.0.1' to '10.96.0.2'")
    assert ret["files"]["ca.crt"]["action"] == "reused"
    assert _manifest(pki_root)["api_service_address"] == "10.96.0.2"
    # A new node: only its kubelet.conf, and the record of nodes.
    ret = gen(cluster_tag=TAG, profile="kubeadm", nodes=[*NODES, {"name": "n2"}])
    assert ret["settings_changed"]["nodes"]["reissues"] == ["hosts/n2/kubelet.conf"]
    assert _manifest(pki_root)["nodes"] == [*NODES, {"name": "n2"}]
    # days only changes what comes next: recorded, nothing reissued.
    ret = gen(cluster_tag=TAG, profile="kubeadm", days=30)
    assert ret["settings_changed"]["days"] == {"from": 365, "to": 30, "reissues": []}
    assert {f["action"] for f in ret["files"].values()} == {"reused"}
    assert _manifest(pki_root)["days"] == 30


def test_seed_rerun_keeps_recorded_settings(runners, pki_root):
    gen = runners["k8s-helper.generate_certs"]
    gen(api_service_address="10.96.0.1", extra_sans="lb.example.com", key_type="ecdsa-p384")
    before = snapshot(pki_root)
    ret = gen()
    assert ret["changed"] is False and snapshot(pki_root) == before
    manifest = _manifest(pki_root, "default")
    assert manifest["extra_sans"] == ["lb.example.com"] and manifest["key_type"] == "ecdsa-p384"
    # a leaf reissued later gets the recorded key type, not the default rsa-2048
    os.unlink(pki_root / "default/kubecfg.crt")
    ret = gen()
    assert ret["files"]["kubecfg.crt"]["action"] == "generated"
    key = k8s_pki.load_key((pki_root / "default/kubecfg.key").read_bytes())
    assert k8s_pki.key_type_of(key) == "ecdsa-p384"


def _one_line_refusal(master_conf, pki_root, fun, *args):
    before = snapshot(pki_root)
    proc = salt_run(master_conf, fun, *args)
    assert proc.returncode != 0, (args, proc.stdout)
    error = json.loads(proc.stdout)["error"]
    assert "\n" not in error and "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(pki_root) == before, args
    return error


def test_other_profile_refused_through_salt_run(runners, master_conf, pki_root):
    """Seed calls on a kubeadm set (and the other way round): refused, the remedy named,
    nothing changed (today's main added a seed server.* and kubecfg.* with exit 0)."""
    _kubeadm(runners["k8s-helper.generate_certs"])
    runners["k8s-helper.generate_certs"](cluster_tag="seedset")
    remedy = "profile: this set is kubeadm; run salt-run k8s-helper.generate_certs "
    remedy += f"profile=kubeadm cluster_tag={TAG}"
    with event_sink(master_conf):
        for args in ([], ["profile=seed"], ["service_account_key=True"]):
            error = _one_line_refusal(
                master_conf, pki_root, "k8s-helper.generate_certs", f"cluster_tag={TAG}", *args
            )
            assert error.startswith(remedy), (args, error)
        error = _one_line_refusal(
            master_conf, pki_root, "k8s-helper.renew", f"cluster_tag={TAG}", "certs=server"
        )
        assert error.startswith("certs: 'server' is a certificate of the seed profile; this set")
        error = _one_line_refusal(
            master_conf,
            pki_root,
            "k8s-helper.generate_certs",
            "cluster_tag=seedset",
            "profile=kubeadm",
            f"masters={json.dumps(MASTERS)}",
        )
        assert error.startswith("profile: this set is seed; run salt-run k8s-helper.generate_")
    # verify handles both profiles: here it only finds no minion to ask
    verify = runners["k8s-helper.verify"](cluster_tag=TAG, tgt="*")
    assert verify["retcode"] == 2
    assert verify["error"].startswith("tgt: no minion matches '*'")
    # rotate_ca handles both profiles (tests/functional/test_kubeadm_rotation.py)
    status = runners["k8s-helper.rotate_ca"](cluster_tag=TAG)
    assert status["state"] == "idle" and status["profile"] == "kubeadm", status


def _write_manifest(pki_root, text, tag="default"):
    path = pki_root / tag / "cluster.yaml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


BAD_MANIFESTS = [
    ("unknown key", lambda m: {**m, "colour": "blue"}, "unknown key 'colour'"),
    ("wrong type", lambda m: {**m, "days": "365"}, "days: '365' is not a whole number"),
    ("bad value", lambda m: {**m, "api_service_address": "10.0.0.300"}, "api_service_address"),
    ("missing key", lambda m: {k: v for k, v in m.items() if k != "days"}, "'days' is missing"),
    ("unknown version", lambda m: {**m, "format": 2}, "format 2 is not one this k8s-helper"),
    ("no version", lambda m: {k: v for k, v in m.items() if k != "format"}, "format None"),
    ("other profile", lambda m: {**m, "profile": "kubeadm"}, "unknown key 'service_account_key'"),
]


@pytest.mark.parametrize(
    ("what", "change", "message"), BAD_MANIFESTS, ids=[b[0] for b in BAD_MANIFESTS]
)
def test_bad_manifest_refused(runners, pki_root, what, change, message):
    gen = runners["k8s-helper.generate_certs"]
    gen()
    path = _write_manifest(pki_root, yaml.safe_dump(change(_manifest(pki_root, "default"))))
    before = snapshot(pki_root)
    for call in (gen, runners["k8s-helper.renew"]):
        ret = call()
        assert ret["retcode"] == 2, (what, ret)
        assert ret["error"].startswith(f"{path}: ") and message in ret["error"], ret["error"]
        assert snapshot(pki_root) == before


def test_manifest_disagreeing_with_the_files(runners, pki_root):
    """A kubeadm manifest over seed files is refused; so is a folder of both profiles."""
    gen = runners["k8s-helper.generate_certs"]
    gen()
    _kubeadm(gen)
    kubeadm = _manifest(pki_root)
    path = _write_manifest(pki_root, yaml.safe_dump(kubeadm))
    before = snapshot(pki_root)
    ret = gen()
    assert ret["retcode"] == 2
    assert ret["error"].startswith(
        f"{path}: says profile kubeadm, but the files are those of a seed"
    )
    assert snapshot(pki_root) == before
    # seed files dropped into a kubeadm folder (what today's main did): refused
    for name in ("server.crt", "server.key"):
        (pki_root / TAG / name).write_bytes((pki_root / "default" / name).read_bytes())
        os.chmod(pki_root / TAG / name, 0o600)
    before = snapshot(pki_root)
    ret = gen(cluster_tag=TAG, profile="kubeadm")
    assert ret["retcode"] == 2 and "holds files of both profiles" in ret["error"]
    assert snapshot(pki_root) == before


def test_unsafe_manifest_refused_through_salt_run(runners, master_conf, pki_root, tmp_path):
    """Not YAML, not the master's user's, writable by others, a symlink: one line, exit 2."""
    runners["k8s-helper.generate_certs"]()
    path = pki_root / "default/cluster.yaml"
    good = path.read_bytes()
    cases = [
        ("not yaml", lambda: path.write_bytes(b"format: [1\n"), "not a YAML manifest"),
        ("other owner", lambda: os.chown(path, 4242, 4242), "owned by uid 4242"),
        ("writable", lambda: os.chmod(path, 0o666), "writable by group or others"),
        ("symlink", lambda: (path.unlink(), path.symlink_to(tmp_path / "elsewhere")), "symbolic"),
    ]
    with event_sink(master_conf):
        for what, spoil, message in cases:
            if path.is_symlink():
                path.unlink()
            path.write_bytes(good)
            os.chmod(path, 0o644)
            os.chown(path, os.geteuid(), os.getegid())
            spoil()
            error = _one_line_refusal(master_conf, pki_root, "k8s-helper.generate_certs")
            assert error.startswith(f"{path}: ") and message in error, (what, error)


# ---------------------------------------------------------------------------
# Sets made before the manifest: the previous main's own code makes them
# ---------------------------------------------------------------------------

_OLD_MAKER = """
import sys
sys.path.insert(0, sys.argv[1])
import k8s_pki
root = sys.argv[2]
k8s_pki.ensure_set(root, "legacy-seed", k8s_pki.seed_specs(
    api_server_fqdn="api.example.com", api_service_address="10.96.0.1",
    cluster_domain="corp.local", extra_sans=["lb.example.com", "192.0.2.99"],
    service_account_key=True), key_type="ecdsa-p256")
k8s_pki.ensure_set(root, "legacy-kubeadm", k8s_pki.kubeadm_specs(
    [{"name": "m1", "ip": "192.0.2.11"}, {"name": "m2", "ip": "192.0.2.12"}],
    [{"name": "n1"}], api_server_fqdn="api.example.com", api_service_address="10.96.0.1",
    control_plane_endpoint="lb.example.com:7443", extra_sans=["extra.example.com"]),
    key_type="ecdsa-p256")
"""


@pytest.fixture
def legacy_sets(tmp_path, pki_root):
    """A seed and a kubeadm set as the previous main's k8s_pki.py wrote them."""
    old = tmp_path / "old"
    old.mkdir()
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{OLD_MAIN}:_utils/k8s_pki.py"],
        capture_output=True,
        check=True,
    ).stdout
    (old / "k8s_pki.py").write_bytes(source)
    subprocess.run([sys.executable, "-c", _OLD_MAKER, str(old), str(pki_root)], check=True)
    assert not (pki_root / "legacy-seed/cluster.yaml").exists()
    return pki_root


def test_legacy_seed_set_recognised_and_recorded(runners, legacy_sets):
    before = snapshot(legacy_sets / "legacy-seed")
    ret = runners["k8s-helper.generate_certs"](cluster_tag="legacy-seed")
    assert ret.get("retcode", 0) == 0, ret
    # no certificate or key changes: the settings came from the certificates
    assert {info["action"] for info in ret["files"].values()} == {"reused"}
    assert ret["manifest"]["action"] == "written"
    after = snapshot(legacy_sets / "legacy-seed")
    assert {k: v for k, v in after.items() if k != "cluster.yaml"} == before
    manifest = _manifest(legacy_sets, "legacy-seed")
    assert manifest["profile"] == "seed" and manifest["api_server_fqdn"] == "api.example.com"
    assert manifest["api_service_address"] == "10.96.0.1"
    assert manifest["cluster_domain"] == "corp.local"
    assert manifest["extra_sans"] == ["lb.example.com", "192.0.2.99"]
    assert manifest["key_type"] == "ecdsa-p256" and manifest["service_account_key"] is True
    # and from now on a plain re-run changes nothing at all
    before = snapshot(legacy_sets)
    assert runners["k8s-helper.generate_certs"](cluster_tag="legacy-seed")["changed"] is False
    assert snapshot(legacy_sets) == before


def test_legacy_kubeadm_set_recognised_and_recorded(runners, master_conf, legacy_sets):
    before = snapshot(legacy_sets)
    with event_sink(master_conf):
        error = _one_line_refusal(
            master_conf, legacy_sets, "k8s-helper.generate_certs", "cluster_tag=legacy-kubeadm"
        )
        assert error.startswith("profile: this set is kubeadm; run salt-run k8s-helper.generate_")
        error = _one_line_refusal(
            master_conf,
            legacy_sets,
            "k8s-helper.renew",
            "cluster_tag=legacy-kubeadm",
            "certs=kubecfg",
        )
        assert error.startswith("certs: 'kubecfg' is a certificate of the seed profile; this set")
    assert snapshot(legacy_sets) == before
    # no masters, no address given: all of it read from the certificates, nothing reissued
    ret = runners["k8s-helper.generate_certs"](cluster_tag="legacy-kubeadm", profile="kubeadm")
    assert ret.get("retcode", 0) == 0, ret
    # except each master's own controller-manager.conf/scheduler.conf, which an older
    # set did not have (they point at the master's own apiserver)
    made = {name for name, info in ret["files"].items() if info["action"] != "reused"}
    assert made == {f"hosts/{m}/{c}" for m in ("m1", "m2") for c in ks.LOCAL_CONFS}
    manifest = _manifest(legacy_sets, "legacy-kubeadm")
    assert manifest["masters"] == [
        {"name": "m1", "ip": "192.0.2.11"},
        {"name": "m2", "ip": "192.0.2.12"},
    ]
    assert manifest["nodes"] == [{"name": "n1"}]
    assert manifest["api_service_address"] == "10.96.0.1"
    assert manifest["control_plane_endpoint"] == "lb.example.com:7443"
    assert manifest["extra_sans"] == ["extra.example.com"]
    assert manifest["key_type"] == "ecdsa-p256"
