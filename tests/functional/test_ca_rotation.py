"""CA rotation (``salt-run k8s-helper.rotate_ca``), stage by stage, with real TLS.

One cluster set is taken through prepare -> trust -> reissue -> finish by the
runner (loaded in-process the way salt-run loads it; a few calls go through
the real ``salt-run`` for the exit status).  After every stage the set's
files are kept, and then:

- ``openssl verify`` checks the leaves against the then-current ``ca.crt``;
- TLS handshakes, with Python's ``ssl`` and with the real ``kubectl``: a
  server presenting the stage's ``server.crt`` and trusting the stage's
  ``ca.crt`` (client certificates required), against clients holding the
  files of the state before the stage and of the state after it (hosts not
  rolled yet and hosts already rolled: every pair must get through), and
  against a client holding a certificate of the old CA and one holding a
  certificate of the new CA, each trusting the stage's ``ca.crt``.  Two of
  those are refused on purpose, and the tests say so: a new-CA client before
  ``trust`` (nobody trusts the new CA yet) and an old-CA client after
  ``finish`` (that is what finishing means).

The same stages rolled out to real minions by the orchestration, with the
system trust stores following, are in tests/integration/test_replace_daemons.py.

The TLS server is tests/support/tlsserver.py, a stand-in for kube-apiserver's TLS
endpoint (no apiserver can be installed here).
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import support
from support import k8s_pki, tlsserver

FQDN = "kubernetes.api"
FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "kubecfg.crt", "kubecfg.key")
NEXT = ("ca.next.crt", "ca.next.key")
STAGES = ("prepare", "trust", "reissue", "finish")
#: the state each stage leaves the set in
REACHED = {"prepare": "prepared", "trust": "trusted", "reissue": "reissued", "finish": "idle"}
BEFORE = {"prepare": "start", "trust": "prepare", "reissue": "trust", "finish": "reissue"}


def certs_of(data):
    return k8s_pki.load_certs(data)


def fps(data):
    return [k8s_pki.fingerprint(cert) for cert in certs_of(data)]


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    base = tmp_path_factory.mktemp("rotation")
    conf = support.write_master_config(base)
    return {"conf": conf, "run": support.load_runners(conf), "pki": base / "pki", "base": base}


def rotate(master, **kwargs):
    return master["run"]["k8s-helper.rotate_ca"](**kwargs)


def generate(master, tag, **kwargs):
    ret = master["run"]["k8s-helper.generate_certs"](cluster_tag=tag, **kwargs)
    assert ret.get("result") is not False, ret
    return master["pki"] / tag


def keep(directory, target):
    """A copy of the set's files (no backups): what hosts get at this point."""
    shutil.copytree(directory, target, ignore=lambda _, names: ["backup"] * ("backup" in names))
    return {name: (target / name).read_bytes() for name in FILES + NEXT if (target / name).exists()}


@pytest.fixture(scope="module")
def rotation(master):
    """generate_certs, then the four stages; the set's files kept after each one."""
    directory = generate(master, "rot", extra_sans=["k8s-master-1"])
    kept = master["base"] / "kept"
    snaps = {"start": keep(directory, kept / "start")}
    rets = {}
    for stage in STAGES:
        rets[stage] = rotate(master, cluster_tag="rot", stage=stage)
        assert rets[stage].get("result") is not False, rets[stage]
        snaps[stage] = keep(directory, kept / stage)
    return {"dir": directory, "kept": kept, "snaps": snaps, "rets": rets}


# --------------------------------------------------------------------------
# What each stage does to the set
# --------------------------------------------------------------------------


def test_each_stage_moves_the_rotation_on(rotation):
    rets = rotation["rets"]
    assert [(rets[s]["state_before"], rets[s]["state"]) for s in STAGES] == [
        ("idle", "prepared"),
        ("prepared", "trusted"),
        ("trusted", "reissued"),
        ("reissued", "idle"),
    ]
    assert all(rets[s]["changed"] for s in STAGES)
    assert rets["trust"]["message"].startswith("stage=trust: prepared -> trusted; hand the new")
    assert rets["trust"]["status"]["next_stage"] == "reissue"
    assert "PRIVATE KEY" not in json.dumps(rets)


def test_prepare_makes_the_new_ca_beside_the_old_and_changes_nothing_else(rotation):
    start, after = rotation["snaps"]["start"], rotation["snaps"]["prepare"]
    assert {k: v for k, v in after.items() if k not in NEXT} == start
    new = k8s_pki.load_cert(after["ca.next.crt"])
    old = k8s_pki.load_cert(start["ca.crt"])
    assert k8s_pki.is_ca(new) and new != old
    assert new.subject.rfc4514_string() == "CN=kubernetes-ca-2"
    assert k8s_pki.key_matches(new, k8s_pki.load_key(after["ca.next.key"]))
    assert (rotation["kept"] / "prepare" / "ca.next.key").stat().st_mode & 0o777 == 0o600
    # recorded as a CA k8s-helper made (so that it may replace it one day)
    assert k8s_pki.fingerprint(new) in k8s_pki.created_cas(str(rotation["dir"]))


def test_trust_makes_ca_crt_a_bundle_old_then_new(rotation):
    snaps = rotation["snaps"]
    old, new = snaps["start"]["ca.crt"], snaps["prepare"]["ca.next.crt"]
    after = snaps["trust"]
    assert after["ca.crt"] == old + new
    # the old CA still signs: its key and every leaf are untouched
    for name in ("ca.key", "server.crt", "server.key", "kubecfg.crt", "kubecfg.key", *NEXT):
        assert after[name] == snaps["prepare"][name], name


def test_reissue_puts_the_new_ca_in_charge_and_reissues_every_leaf(rotation):
    snaps = rotation["snaps"]
    before, after = snaps["trust"], snaps["reissue"]
    new = k8s_pki.load_cert(before["ca.next.crt"])
    old = k8s_pki.load_cert(snaps["start"]["ca.crt"])
    assert fps(after["ca.crt"]) == [k8s_pki.fingerprint(new), k8s_pki.fingerprint(old)]
    assert after["ca.key"] == before["ca.next.key"]
    assert not set(NEXT) & set(after)
    for leaf in ("server", "kubecfg"):
        cert = k8s_pki.load_cert(after[f"{leaf}.crt"])
        was = k8s_pki.load_cert(before[f"{leaf}.crt"])
        assert k8s_pki.signed_by(cert, new) and not k8s_pki.signed_by(cert, old)
        assert k8s_pki.spec_from_cert(cert) == k8s_pki.spec_from_cert(was)  # same names
        assert after[f"{leaf}.key"] == before[f"{leaf}.key"]  # keep_keys: same key
    files = rotation["rets"]["reissue"]["files"]
    assert files["server.crt"]["reason"] == (
        "signed by the old CA; issued again by the new one (same key)"
    )
    assert files["ca.crt"]["bundle"] == fps(after["ca.crt"])
    assert (files["ca.crt"]["action"], files["ca.key"]["action"]) == ("rotated", "rotated")
    assert rotation["rets"]["reissue"]["removed"] == ["ca.next.crt", "ca.next.key"]
    assert "removed" not in rotation["rets"]["trust"]
    assert rotation["rets"]["trust"]["files"]["ca.crt"]["action"] == "rebundled"
    assert rotation["rets"]["trust"]["files"]["ca.key"]["action"] == "reused"


def test_finish_leaves_the_new_ca_alone(rotation):
    snaps = rotation["snaps"]
    after = snaps["finish"]
    assert after["ca.crt"] == snaps["prepare"]["ca.next.crt"]
    assert {k: v for k, v in after.items() if k != "ca.crt"} == {
        k: v for k, v in snaps["reissue"].items() if k != "ca.crt"
    }


def test_old_ca_and_keys_stay_in_the_backups(rotation):
    backups = sorted((rotation["dir"] / "backup").iterdir())
    assert len(backups) == 3  # trust, reissue and finish replaced files; prepare only added
    old_key = rotation["snaps"]["start"]["ca.key"]
    assert (backups[1] / "ca.key").read_bytes() == old_key  # the one reissue replaced
    assert (backups[2] / "ca.crt").read_bytes() == rotation["snaps"]["reissue"]["ca.crt"]
    for backup in backups:
        assert (backup / "ca.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("stage", ["start", *STAGES])
def test_openssl_verifies_the_leaves_against_that_stages_ca_crt(rotation, stage):
    here = rotation["kept"] / stage
    proc = support.openssl(
        "verify", "-CAfile", here / "ca.crt", here / "server.crt", here / "kubecfg.crt"
    )
    assert proc.stdout.count(": OK") == 2


def test_status_says_where_the_rotation_stands(master, rotation):
    ret = rotate(master, cluster_tag="rot")
    assert ret["stage"] == "status" and ret["state"] == "idle" and ret["changed"] is False
    status = ret["status"]
    assert status["next_stage"] is None
    assert [ca["subject"] for ca in status["trusted_cas"]] == ["CN=kubernetes-ca-2"]
    assert status["leaves"]["server.crt"]["signed_by"] == "current CA"


# --------------------------------------------------------------------------
# Re-running, order, aborting, refusals
# --------------------------------------------------------------------------


def test_every_stage_run_again_changes_nothing(master):
    directory = generate(master, "again", key_type="ecdsa-p256")
    for stage in STAGES:
        assert rotate(master, cluster_tag="again", stage=stage)["changed"] is True
        before = support.snapshot(directory)
        ret = rotate(master, cluster_tag="again", stage=stage)
        assert ret["changed"] is False, ret
        assert ret["message"] == f"stage={stage}: nothing to do, the rotation is {REACHED[stage]}"
        assert support.snapshot(directory) == before  # same bytes, same inodes


def test_generate_certs_and_renew_between_stages_respect_the_rotation(master):
    """A re-run of generate_certs in the middle of a rotation changes nothing; a
    renewal issues from whichever CA signs at that point."""
    directory = generate(master, "mid", key_type="ecdsa-p256")
    gen = master["run"]["k8s-helper.generate_certs"]
    for stage in STAGES:
        rotate(master, cluster_tag="mid", stage=stage)
        before = support.snapshot(directory)
        ret = gen(cluster_tag="mid", key_type="ecdsa-p256")
        assert ret["changed"] is False, (stage, ret)
        assert support.snapshot(directory) == before, stage
        if stage == "trust":  # the old CA still signs
            renewed = master["run"]["k8s-helper.renew"](cluster_tag="mid", certs="server")
            assert renewed["renewed"] == ["server"]
            signer = certs_of((directory / "ca.crt").read_bytes())[0]
            server = k8s_pki.load_cert((directory / "server.crt").read_bytes())
            assert k8s_pki.signed_by(server, signer)
            assert rotate(master, cluster_tag="mid")["state"] == "trusted"


@pytest.mark.parametrize(
    ("done", "stage", "message"),
    [
        ((), "trust", "stage=trust: there is no new CA yet; run stage=prepare first"),
        ((), "reissue", "stage=reissue: no rotation in progress; start with stage=prepare"),
        (("prepare",), "reissue", "stage=reissue: the new CA is not in ca.crt yet"),
        (("prepare",), "finish", "stage=finish: the rotation is only prepared"),
        (("prepare", "trust"), "finish", "Next: stage=reissue"),
        (("prepare", "trust", "reissue"), "abort", "stage=abort: the leaves are already signed"),
    ],
)
def test_stages_out_of_order_are_refused_and_change_nothing(master, done, stage, message):
    tag = f"order-{len(done)}-{stage}"
    directory = generate(master, tag, key_type="ecdsa-p256")
    for step in done:
        rotate(master, cluster_tag=tag, stage=step)
    before = support.snapshot(directory)
    ret = rotate(master, cluster_tag=tag, stage=stage)
    assert ret["result"] is False and ret["retcode"] == 2
    assert message in ret["error"]
    assert support.snapshot(directory) == before


@pytest.mark.parametrize("done", [("prepare",), ("prepare", "trust")])
def test_abort_before_reissue_goes_back_to_the_old_ca_alone(master, done):
    tag = f"abort-{len(done)}"
    directory = generate(master, tag, key_type="ecdsa-p256")
    start = read_files(directory)
    for step in done:
        rotate(master, cluster_tag=tag, stage=step)
    ret = rotate(master, cluster_tag=tag, stage="abort")
    assert (ret["state_before"], ret["state"], ret["changed"]) == (REACHED[done[-1]], "idle", True)
    assert read_files(directory) == start
    assert not (directory / "ca.next.crt").exists()
    assert rotate(master, cluster_tag=tag, stage="abort")["changed"] is False


def read_files(directory):
    return {n: (directory / n).read_bytes() for n in FILES + NEXT if (directory / n).exists()}


def test_reissue_with_new_keys(master):
    """keep_keys=False: new keys, each of the type of the key it replaces; the
    key type asked for at prepare is the new CA's alone."""
    directory = generate(master, "newkeys", key_type="ecdsa-p256")
    renewed = master["run"]["k8s-helper.renew"](
        cluster_tag="newkeys", key_type="ecdsa-p384", rotate_token_key=True
    )
    assert renewed["changed"], renewed
    rotate(master, cluster_tag="newkeys", stage="prepare", key_type="rsa-2048")
    new_ca_key = k8s_pki.load_key((directory / "ca.next.key").read_bytes())
    assert k8s_pki.key_type_of(new_ca_key) == "rsa-2048"
    rotate(master, cluster_tag="newkeys", stage="trust")
    before = read_files(directory)
    ret = rotate(master, cluster_tag="newkeys", stage="reissue", keep_keys=False)
    after = read_files(directory)
    # server.key signs the service-account tokens (no sa.key): the return says so
    assert "service-account tokens" in ret["warnings"][0]
    for leaf in ("server", "kubecfg"):
        assert after[f"{leaf}.key"] != before[f"{leaf}.key"]
        assert ret["files"][f"{leaf}.key"]["action"] == "generated"
        cert = k8s_pki.load_cert(after[f"{leaf}.crt"])
        key = k8s_pki.load_key(after[f"{leaf}.key"])
        assert k8s_pki.key_matches(cert, key)
        assert k8s_pki.key_type_of(key) == "ecdsa-p384"
        assert k8s_pki.signed_by(cert, k8s_pki.load_cert(before["ca.next.crt"]))


def test_check_expiration_lists_every_ca_of_the_bundle(master):
    generate(master, "exp", key_type="ecdsa-p256")
    rotate(master, cluster_tag="exp", stage="prepare")
    rotate(master, cluster_tag="exp", stage="trust")
    ret = master["run"]["k8s-helper.check_expiration"](cluster_tag="exp")["data"]
    names = {entry["name"]: entry for entry in ret["certificates"]}
    assert {"ca.crt #1", "ca.crt #2", "ca.next.crt", "server.crt", "kubecfg.crt"} <= set(names)
    assert names["ca.crt #2"]["subject"] == "CN=kubernetes-ca-2"
    assert names["ca.crt #2"]["kind"] == "ca"
    assert ret["retcode"] == 0


def _external_ca(master):
    """A set whose CA the operator brought (k8s-helper did not make it)."""
    directory = master["pki"] / "ext"
    directory.mkdir(parents=True)
    key = k8s_pki.new_key("ecdsa-p256")
    (directory / "ca.crt").write_bytes(k8s_pki.cert_pem(k8s_pki.build_ca(key, "corp-ca")))
    (directory / "ca.key").write_bytes(k8s_pki.key_pem(key))
    os.chmod(directory / "ca.key", 0o600)  # a key readable by others is refused
    generate(master, "ext", key_type="ecdsa-p256")
    return "ext", "a CA k8s-helper did not create"


def _half_next(master):
    directory = generate(master, "half", key_type="ecdsa-p256")
    rotate(master, cluster_tag="half", stage="prepare")
    (directory / "ca.next.key").unlink()
    return "half", "ca.next.key is missing while the other half of the new CA is there"


def _no_set(master):
    return "nosuch", "no certificate set here; run generate_certs first"


# A kubeadm set's three CAs rotate: tests/functional/test_kubeadm_rotation.py.
@pytest.mark.parametrize("case", [_external_ca, _half_next, _no_set])
def test_sets_that_cannot_be_rotated_are_refused(master, case):
    tag, message = case(master)
    directory = master["pki"] / tag
    before = support.snapshot(directory)
    for stage in ("status", "prepare"):
        ret = rotate(master, cluster_tag=tag, stage=stage)
        assert ret["result"] is False and ret["retcode"] == 2, ret
        assert message in ret["error"]
    assert support.snapshot(directory) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage": "rollback"}, "stage: 'rollback' is not one of status, prepare, trust"),
        ({"stage": "reissue", "keep_keys": "maybe"}, "keep_keys: 'maybe' is not a boolean"),
        ({"stage": "prepare", "key_type": "dsa"}, "key_type: 'dsa' is not one of"),
        ({"stage": "prepare", "ca_days": 0}, "ca_days: 0 must be a positive number"),
        ({"stage": "reissue", "days": "x"}, "days: 'x' is not a whole number"),
        ({"cluster_tag": "../etc"}, "cluster_tag: '../etc' is not a safe folder name"),
        ({"stages": "prepare"}, "stages: unknown argument"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(master, kwargs, message):
    directory = generate(master, "bad", key_type="ecdsa-p256")
    before = support.snapshot(master["pki"])
    ret = rotate(master, **{"cluster_tag": "bad", **kwargs})
    assert ret["result"] is False and ret["retcode"] == 2
    assert message in ret["error"], ret["error"]
    assert support.snapshot(master["pki"]) == before
    assert directory.exists()


def test_the_real_salt_run_exit_status(master):
    """Through the real salt-run: a stage done (0), refused (2), status (0), table-free JSON."""
    generate(master, "cli", key_type="ecdsa-p256")
    conf = master["conf"]
    with support.event_sink(conf):
        done = support.salt_run(conf, "k8s-helper.rotate_ca", "cluster_tag=cli", "stage=prepare")
        refused = support.salt_run(conf, "k8s-helper.rotate_ca", "cluster_tag=cli", "stage=finish")
        status = support.salt_run(conf, "k8s-helper.rotate_ca", "cluster_tag=cli")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "prepared"
    assert refused.returncode == 2
    assert "stage=finish: the rotation is only prepared" in json.loads(refused.stdout)["error"]
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"]["next_stage"] == "trust"


# --------------------------------------------------------------------------
# TLS through every stage: Python ssl and the real kubectl
# --------------------------------------------------------------------------


def python_ok(server, client):
    try:
        status, body = tlsserver.https_get(
            server.port, "/healthz", client["ca.crt"], client["cert"], client["key"], FQDN
        )
    except OSError:  # ssl.SSLError included: the handshake was refused
        return False
    return status == 200 and body == "ok"


def kubectl_ok(server, client, workdir):
    config = tlsserver.kubeconfig(
        workdir / f"kc-{os.urandom(4).hex()}",
        server.url,
        client["ca.crt"],
        client["cert"],
        client["key"],
        FQDN,
    )
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(config), "get", "--raw", "/healthz"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(workdir)},
    )
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


def host(kept, state):
    """What a host holds in ``state``: its ca.crt, and the kubecfg pair as its client."""
    here = kept / state
    return {"ca.crt": here / "ca.crt", "cert": here / "kubecfg.crt", "key": here / "kubecfg.key"}


def serve(kept, state):
    here = kept / state
    return tlsserver.TLSServer(here / "server.crt", here / "server.key", here / "ca.crt")


@pytest.fixture(scope="module")
def probes(rotation, tmp_path_factory):
    """Clients of the old CA and of the new CA, for every stage.

    The old-CA client holds the kubecfg pair from before the rotation.  The
    new-CA client holds a kubecfg certificate the new CA signed: after reissue
    that is the set's own; before it, the test signs one with ca.next.key (no
    host has such a certificate yet).  Each trusts the ca.crt of the stage it
    is used in (see ``client_of``).
    """
    work = tmp_path_factory.mktemp("probes")
    snaps = rotation["snaps"]
    new_cert = k8s_pki.load_cert(snaps["prepare"]["ca.next.crt"])
    new_key = k8s_pki.load_key(snaps["prepare"]["ca.next.key"])
    key = k8s_pki.new_key("ecdsa-p256")
    early = k8s_pki.issue_leaf(k8s_pki.seed_specs()["kubecfg"], key, new_cert, new_key, days=1)
    (work / "early.crt").write_bytes(k8s_pki.cert_pem(early))
    (work / "early.key").write_bytes(k8s_pki.key_pem(key))
    start = rotation["kept"] / "start"
    reissued = rotation["kept"] / "reissue"
    return {
        "old": {"cert": start / "kubecfg.crt", "key": start / "kubecfg.key"},
        "new-early": {"cert": work / "early.crt", "key": work / "early.key"},
        "new": {"cert": reissued / "kubecfg.crt", "key": reissued / "kubecfg.key"},
        "work": work,
    }


def client_of(probes, which, kept, stage):
    new = "new" if stage in ("reissue", "finish") else "new-early"
    pair = probes["old" if which == "old" else new]
    return {"ca.crt": kept / stage / "ca.crt", **pair}


#: stage -> (old-CA client gets in, new-CA client gets in), against the stage's server
EXPECTED = {
    "prepare": (True, False),  # nobody trusts the new CA yet: it is handed to no host
    "trust": (True, True),
    "reissue": (True, True),
    "finish": (False, True),  # the point of finishing: the old CA is trusted no more
}


@pytest.mark.parametrize("stage", STAGES)
def test_tls_during_the_rollout_of_each_stage(rotation, probes, stage):
    """While a stage is rolled out, some hosts hold the files from before it and
    some the files after it: every client gets through to every server."""
    kept, work = rotation["kept"], probes["work"]
    before, after = BEFORE[stage], stage
    results = {}
    for server_state in (before, after):
        with serve(kept, server_state) as server:
            for client_state in (before, after):
                client = host(kept, client_state)
                results[(server_state, client_state)] = (
                    python_ok(server, client),
                    # kubectl too where both CAs sign live certificates (the
                    # old/new-CA test below runs kubectl at every stage)
                    kubectl_ok(server, client, work) if stage == "reissue" else True,
                )
            assert server.clients, "the server saw no client certificate"
    assert all(ok == (True, True) for ok in results.values()), results


@pytest.mark.parametrize("stage", STAGES)
def test_tls_old_ca_and_new_ca_clients_at_each_stage(rotation, probes, stage):
    """A client with a certificate of the old CA and one with a certificate of the
    new CA, each trusting the stage's ca.crt, against a server presenting the
    stage's server certificate and trusting the stage's ca.crt."""
    kept, work = rotation["kept"], probes["work"]
    seen = []
    with serve(kept, stage) as server:
        for which in ("old", "new"):
            client = client_of(probes, which, kept, stage)
            seen.append((python_ok(server, client), kubectl_ok(server, client, work)))
    old_ok, new_ok = EXPECTED[stage]
    assert seen == [(old_ok, old_ok), (new_ok, new_ok)], seen
    if stage == "finish":
        # A host not yet rolled (still in the reissued state) still lets the old client in:
        with serve(kept, "reissue") as server:
            client = client_of(probes, "old", kept, "reissue")
            assert python_ok(server, client) and kubectl_ok(server, client, work)


def test_check_expiration_as_plain_data_for_orchestrations(master):
    """table=False: the report itself (what a salt.runner step judges by its
    retcode), not wrapped for the table outputter."""
    generate(master, "plain", key_type="ecdsa-p256")
    check = master["run"]["k8s-helper.check_expiration"]
    tabled = check(cluster_tag="plain")
    plain = check(cluster_tag="plain", table=False)
    assert set(tabled) == {"outputter", "data"}
    assert "outputter" not in plain and plain["summary"] == tabled["data"]["summary"]
    assert plain["retcode"] == 0
    refused = check(cluster_tag="plain", table="maybe")
    assert refused["retcode"] == 2 and "table: 'maybe' is not a boolean" in refused["error"]


@pytest.mark.parametrize("done", [("prepare",), ("prepare", "trust")])
def test_force_regen_in_the_middle_starts_over_without_the_rotation(master, done):
    """force_regen makes a whole new set: the rotation's new CA is not carried along
    (it stays in the backup), and the new set is idle."""
    tag = f"regen-{len(done)}"
    directory = generate(master, tag, key_type="ecdsa-p256")
    for step in done:
        rotate(master, cluster_tag=tag, stage=step)
    next_ca = (directory / "ca.next.crt").read_bytes()
    ret = master["run"]["k8s-helper.generate_certs"](cluster_tag=tag, force_regen=True)
    assert ret.get("result") is not False, ret
    assert not (directory / "ca.next.crt").exists() and not (directory / "ca.next.key").exists()
    assert (pathlib.Path(ret["backup"]) / "ca.next.crt").read_bytes() == next_ca
    assert len(certs_of((directory / "ca.crt").read_bytes())) == 1
    assert rotate(master, cluster_tag=tag)["state"] == "idle"
