"""CA rotation of a kubeadm set (``rotate_ca ca=ca|etcd-ca|front-proxy-ca``), with real TLS.

A kubeadm set (three masters on 127.0.0.1-3, two nodes) is made by the runner
(loaded in-process the way salt-run loads it), once for each of its three CAs,
and that CA is taken through prepare -> trust -> reissue -> finish.  The
set's files are kept after each stage, and then:

- the chosen CA's file holds what the stage says (old; old + new; new + old;
  new), the kubeconfigs it signs embed exactly that while the bundle lasts,
  and every leaf of that CA verifies with ``openssl verify`` against it;
- every other file of the set (the other two CAs, their leaves, ``sa.key``)
  keeps its bytes *and its inode* through all four stages: only the chosen
  CA's leaves are reissued, and by the new CA;
- each host's share of every stage passes the minion-side check
  (``check_kubeadm_host``, what ``kubernetes.kubeadm.present`` runs first);
- TLS, with Python's ``ssl`` (and the real ``kubectl`` with kubeadm's own
  kubeconfigs for the cluster CA): a server and a client of the old CA and of
  the new CA, both trusting the stage's CA file: all four pairs get through
  at ``trust`` and ``reissue``; and for the roll-out of each stage, servers
  and clients holding the files from before and after the stage: every pair
  gets through.  Which TLS link each CA guards, as kubeadm wires it:
  ``ca``: kube-apiserver's serving certificate and its clients (the
  kubeconfigs, ``apiserver-kubelet-client``); ``front-proxy-ca``:
  ``front-proxy-client``, presented by kube-apiserver to an aggregated
  apiserver that trusts ``front-proxy-ca.crt`` (``--requestheader-client-ca-file``);
  ``etcd/ca``: etcd's serving certificate and ``apiserver-etcd-client``.

The real three-member etcd cluster through an etcd CA rotation is
tests/functional/test_kubeadm_rotation_etcd.py.  No kube-apiserver or
aggregated apiserver runs here: the servers are tests/support/tlsserver.py's
stand-ins presenting and trusting the same files.
"""

import json
import os
import pathlib
import shutil

import pytest
import support
from support import k8s_pki, tlsserver
from support import kubeadm as ks

STAGES = ("prepare", "trust", "reissue", "finish")
REACHED = {"prepare": "prepared", "trust": "trusted", "reissue": "reissued", "finish": "idle"}
BEFORE = {"prepare": "start", "trust": "prepare", "reissue": "trust", "finish": "reissue"}
#: ca= -> the CA's name in the set
CAS = {"ca": "ca", "etcd-ca": "etcd/ca", "front-proxy-ca": "front-proxy-ca"}
FQDN = "kubernetes.api"


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    base = tmp_path_factory.mktemp("krot")
    conf = support.write_master_config(base)
    return {"conf": conf, "run": support.load_runners(conf), "pki": base / "pki", "base": base}


def rotate(master, **kwargs):
    return master["run"]["k8s-helper.rotate_ca"](**kwargs)


def generate(master, tag, **kwargs):
    ret = master["run"]["k8s-helper.generate_certs"](
        cluster_tag=tag,
        profile="kubeadm",
        masters=ks.MASTERS,
        nodes=ks.NODES,
        key_type="ecdsa-p256",
        **kwargs,
    )
    assert ret.get("result") is not False, ret
    return master["pki"] / tag


def member_files(ca):
    """The files of the set a rotation of ``ca`` may touch: the CA, its next CA, what it signs."""
    specs = ks.specs()
    files = set()
    for name, spec in k8s_pki.rotation_members(specs, ca).items():
        files |= {rel for rel, _ in k8s_pki.spec_files(name, spec)}
    return files | {f"{ca}.next.crt", f"{ca}.next.key"}


def others(directory, ca):
    """Every file of the set a rotation of ``ca`` must leave alone: mode, inode, bytes."""
    touched = member_files(ca)
    snap = support.snapshot(directory)
    return {
        rel: state
        for rel, state in snap.items()
        if rel not in touched and not rel.startswith("backup") and state[2] is not None
    }


def keep(directory, target):
    shutil.copytree(directory, target, ignore=lambda _, names: ["backup"] * ("backup" in names))
    return target


@pytest.fixture(scope="module")
def rotations(master):
    """For each CA: a set of its own taken through the four stages, the files kept after each."""
    done = {}
    for choice, name in CAS.items():
        tag = f"k-{choice}"
        directory = generate(master, tag)
        kept = master["base"] / "kept" / choice
        untouched = {"start": others(directory, name)}
        rets = {}
        keep(directory, kept / "start")
        for stage in STAGES:
            rets[stage] = rotate(master, cluster_tag=tag, ca=choice, stage=stage)
            assert rets[stage].get("result") is not False, rets[stage]
            untouched[stage] = others(directory, name)
            keep(directory, kept / stage)
        done[choice] = {"dir": directory, "kept": kept, "rets": rets, "untouched": untouched}
    return done


def certs(path):
    return k8s_pki.load_certs(pathlib.Path(path).read_bytes())


def fps(path):
    return [k8s_pki.fingerprint(cert) for cert in certs(path)]


# --------------------------------------------------------------------------
# What each stage does to the set
# --------------------------------------------------------------------------


@pytest.mark.parametrize("choice", CAS)
def test_each_stage_moves_the_chosen_cas_rotation_on(rotations, choice):
    rets = rotations[choice]["rets"]
    assert [(rets[s]["state_before"], rets[s]["state"]) for s in STAGES] == [
        ("idle", "prepared"),
        ("prepared", "trusted"),
        ("trusted", "reissued"),
        ("reissued", "idle"),
    ]
    assert all(rets[s]["changed"] and rets[s]["ca"] == CAS[choice] for s in STAGES)
    assert all(rets[s]["profile"] == "kubeadm" for s in STAGES)
    who = "every host" if choice == "ca" else "every master"
    assert rets["trust"]["message"].startswith(
        f"stage=trust: prepared -> trusted; hand pki/{CAS[choice]}.crt"
    )
    assert who in rets["trust"]["message"] and "next: stage=reissue" in rets["trust"]["message"]
    assert f"pki/{CAS[choice]}.crt changed" in rets["finish"]["message"]
    assert rets["trust"]["status"]["next_stage"] == "reissue"
    dumped = json.dumps(rets)
    assert "PRIVATE KEY" not in dumped and "client-key-data" not in dumped
    for conf in ks.set_confs():  # nor a line of the keys the kubeconfigs embed
        key = ks.kubeconfig(rotations[choice]["kept"] / "finish" / conf)["key"]
        assert not support.leaked(dumped, [key]), conf


@pytest.mark.parametrize("choice", CAS)
def test_the_ca_file_holds_each_stages_bundle(rotations, choice):
    name, kept = CAS[choice], rotations[choice]["kept"]
    old = fps(kept / "start" / f"{name}.crt")
    new = fps(kept / "prepare" / f"{name}.next.crt")
    assert len(old) == len(new) == 1 and old != new
    assert fps(kept / "prepare" / f"{name}.crt") == old
    assert fps(kept / "trust" / f"{name}.crt") == old + new
    assert fps(kept / "reissue" / f"{name}.crt") == new + old
    assert fps(kept / "finish" / f"{name}.crt") == new
    # the new CA's name tells it apart; its key took over at reissue, the next files left
    subject = certs(kept / "finish" / f"{name}.crt")[0].subject.rfc4514_string()
    assert subject.endswith("-2")
    assert (kept / "reissue" / f"{name}.key").read_bytes() == (
        kept / "trust" / f"{name}.next.key"
    ).read_bytes()
    assert not (kept / "reissue" / f"{name}.next.crt").exists()
    rets = rotations[choice]["rets"]
    assert rets["reissue"]["removed"] == [f"{name}.next.crt", f"{name}.next.key"]
    assert k8s_pki.fingerprint(certs(kept / "finish" / f"{name}.crt")[0]) in k8s_pki.created_cas(
        str(rotations[choice]["dir"])
    )


@pytest.mark.parametrize("choice", CAS)
def test_other_cas_and_their_leaves_are_untouched(rotations, choice):
    """Same mode, same inode, same bytes, at every stage: not even rewritten."""
    untouched = rotations[choice]["untouched"]
    start = untouched["start"]
    other_cas = [n for n in CAS.values() if n != CAS[choice]]
    assert {f"{n}.crt" for n in other_cas} | {f"{n}.key" for n in other_cas} <= set(start)
    assert {"sa.key", "sa.pub"} <= set(start)
    for stage in STAGES:
        assert untouched[stage] == start, stage
    kept = rotations[choice]["kept"]
    for name in other_cas:  # and by fingerprint, the way an operator would look
        assert fps(kept / "finish" / f"{name}.crt") == fps(kept / "start" / f"{name}.crt")


@pytest.mark.parametrize("choice", CAS)
def test_reissue_signs_every_leaf_of_the_chosen_ca_again_and_nothing_else(rotations, choice):
    name, kept = CAS[choice], rotations[choice]["kept"]
    specs = ks.specs()
    leaves = [n for n in k8s_pki.rotation_members(specs, name) if n != name]
    assert leaves  # every CA of the profile signs something
    new = certs(kept / "prepare" / f"{name}.next.crt")[0]
    old = certs(kept / "start" / f"{name}.crt")[0]
    files = rotations[choice]["rets"]["reissue"]["files"]
    for leaf in leaves:
        spec = specs[leaf]
        if isinstance(spec, k8s_pki.KubeconfigSpec):
            was, now = (ks.kubeconfig(kept / s / leaf) for s in ("trust", "reissue"))
            before, after = k8s_pki.load_cert(was["cert"]), k8s_pki.load_cert(now["cert"])
            assert now["key"] == was["key"] and now["server"] == was["server"]
            assert files[leaf]["action"] == "reissued"
        else:
            before, after = (
                k8s_pki.load_cert((kept / s / f"{leaf}.crt").read_bytes())
                for s in ("trust", "reissue")
            )
            assert (kept / "reissue" / f"{leaf}.key").read_bytes() == (
                kept / "trust" / f"{leaf}.key"
            ).read_bytes()
            assert files[f"{leaf}.crt"]["reason"] == (
                "signed by the old CA; issued again by the new one (same key)"
            )
        assert k8s_pki.signed_by(before, old) and k8s_pki.signed_by(after, new), leaf
        assert k8s_pki.spec_from_cert(after) == k8s_pki.spec_from_cert(before), leaf
    # the plan named the chosen CA's members alone
    described = {rel for rel in files if not rel.startswith(name)}
    assert described <= member_files(name), described - member_files(name)


@pytest.mark.parametrize("stage", ["start", *STAGES])
def test_kubeconfigs_embed_the_cluster_ca_file_at_every_stage(rotations, stage):
    """kubeadm's kubeconfigs are their clients' only CA file: while the bundle lasts,
    they carry it (trust, reissue), and the new CA alone once finished."""
    here = rotations["ca"]["kept"] / stage
    ca_file = certs(here / "ca.crt")
    confs = ks.set_confs()
    for conf in confs:
        embedded = k8s_pki.load_certs(ks.kubeconfig(here / conf)["ca"])
        assert embedded == ca_file, (stage, conf)
    want = {"start": 1, "prepare": 1, "trust": 2, "reissue": 2, "finish": 1}[stage]
    assert len(ca_file) == want
    if stage in ("trust", "finish"):  # rewritten around the same certificate and key
        files = rotations["ca"]["rets"][stage]["files"]
        assert {files[c]["action"] for c in confs} == {"rebundled"}
        before = rotations["ca"]["kept"] / BEFORE[stage]
        for conf in confs:
            was, now = ks.kubeconfig(before / conf), ks.kubeconfig(here / conf)
            assert (now["cert"], now["key"], now["server"]) == (
                was["cert"],
                was["key"],
                was["server"],
            )


@pytest.mark.parametrize("choice", CAS)
@pytest.mark.parametrize("stage", ["start", *STAGES])
def test_openssl_verifies_the_chosen_cas_leaves_at_every_stage(rotations, choice, stage, tmp_path):
    name = CAS[choice]
    here = rotations[choice]["kept"] / stage
    for leaf, spec in k8s_pki.rotation_members(ks.specs(), name).items():
        if isinstance(spec, k8s_pki.CASpec):
            continue
        if isinstance(spec, k8s_pki.KubeconfigSpec):
            cert = ks.unpack_kubeconfig(here / leaf, tmp_path / leaf)["cert"]
        else:
            cert = here / f"{leaf}.crt"
        assert ks.verify(here / f"{name}.crt", cert), (stage, leaf)


@pytest.mark.parametrize("choice", CAS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_hosts_share_passes_the_minion_check_at_every_stage(rotations, choice, stage):
    """What kubernetes.kubeadm.present checks before it writes anything: each host's
    files of the stage (bundles included) are accepted."""
    here = rotations[choice]["kept"] / stage
    for host, master in [(h["name"], True) for h in ks.MASTERS] + [
        (h["name"], False) for h in ks.NODES
    ]:
        share = {
            dest: (here / rel).read_text()
            for dest, rel in k8s_pki.kubeadm_host_files(host, master).items()
        }
        role = "master" if master else "node"
        assert k8s_pki.check_kubeadm_host(share, role=role), (stage, host)


@pytest.mark.parametrize("choice", CAS)
def test_status_names_the_ca_and_who_signed_each_leaf(master, rotations, choice):
    tag = f"k-{choice}"
    ret = rotate(master, cluster_tag=tag, ca=choice)
    assert (ret["stage"], ret["state"], ret["changed"], ret["ca"]) == (
        "status",
        "idle",
        False,
        CAS[choice],
    )
    leaves = ret["status"]["leaves"]
    assert set(leaves) == {
        leaf if isinstance(spec, k8s_pki.KubeconfigSpec) else f"{leaf}.crt"
        for leaf, spec in k8s_pki.rotation_members(ks.specs(), CAS[choice]).items()
        if not isinstance(spec, k8s_pki.CASpec)
    }
    assert {info["signed_by"] for info in leaves.values()} == {"current CA"}


# --------------------------------------------------------------------------
# Re-running, generate_certs in the middle, one rotation at a time, refusals
# --------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["etcd-ca", "front-proxy-ca"])
def test_every_stage_run_again_changes_nothing(master, choice):
    tag = f"again-{choice}"
    directory = generate(master, tag)
    for stage in STAGES:
        assert rotate(master, cluster_tag=tag, ca=choice, stage=stage)["changed"] is True
        before = support.snapshot(directory)
        ret = rotate(master, cluster_tag=tag, ca=choice, stage=stage)
        assert ret["changed"] is False, ret
        assert ret["message"] == f"stage={stage}: nothing to do, the rotation is {REACHED[stage]}"
        assert support.snapshot(directory) == before


def test_generate_certs_between_stages_changes_nothing(master):
    """A re-run of generate_certs in the middle of a cluster-CA rotation keeps every
    file (the kubeconfigs holding the bundle included)."""
    tag = "mid"
    directory = generate(master, tag)
    for stage in STAGES:
        rotate(master, cluster_tag=tag, stage=stage)
        before = support.snapshot(directory)
        ret = master["run"]["k8s-helper.generate_certs"](cluster_tag=tag, profile="kubeadm")
        assert ret["changed"] is False, (stage, ret)
        assert support.snapshot(directory) == before, stage


@pytest.mark.parametrize(("first", "second"), [("ca", "etcd-ca"), ("etcd-ca", "front-proxy-ca")])
@pytest.mark.parametrize(
    "done", [("prepare",), ("prepare", "trust"), ("prepare", "trust", "reissue")]
)
def test_a_second_rotation_is_refused_while_one_is_in_progress(master, first, second, done):
    tag = f"two-{first}-{second}-{len(done)}"
    directory = generate(master, tag)
    for stage in done:
        rotate(master, cluster_tag=tag, ca=first, stage=stage)
    before = support.snapshot(directory)
    state = REACHED[done[-1]]
    for stage in ("prepare", "trust", "finish", "abort"):
        ret = rotate(master, cluster_tag=tag, ca=second, stage=stage)
        assert ret["result"] is False and ret["retcode"] == 2, ret
        assert ret["error"] == (
            f"stage={stage}: a rotation of {CAS[first]} is in progress ({state}); one CA is "
            f"rotated at a time: finish it (or abort it) first, with ca={first}"
        )
    status = rotate(master, cluster_tag=tag, ca=second)  # status still answers, and says why
    assert status["status"]["other_rotations"] == {CAS[first]: state}
    assert support.snapshot(directory) == before
    # once the first is over, the second may start
    for stage in STAGES[len(done) :]:
        rotate(master, cluster_tag=tag, ca=first, stage=stage)
    assert rotate(master, cluster_tag=tag, ca=second, stage="prepare")["state"] == "prepared"


@pytest.mark.parametrize("choice", CAS)
@pytest.mark.parametrize(
    ("done", "stage", "message"),
    [
        ((), "trust", "stage=trust: there is no new CA yet; run stage=prepare first"),
        ((), "reissue", "stage=reissue: no rotation in progress; start with stage=prepare"),
        (("prepare",), "reissue", "stage=reissue: the new CA is not in {file} yet"),
        (("prepare",), "finish", "stage=finish: the rotation is only prepared"),
        (("prepare", "trust"), "finish", "Next: stage=reissue"),
        (("prepare", "trust", "reissue"), "abort", "stage=abort: the leaves are already signed"),
    ],
)
def test_stages_out_of_order_are_refused_and_change_nothing(master, choice, done, stage, message):
    tag = f"order-{choice}-{len(done)}-{stage}"
    directory = generate(master, tag)
    for step in done:
        rotate(master, cluster_tag=tag, ca=choice, stage=step)
    before = support.snapshot(directory)
    ret = rotate(master, cluster_tag=tag, ca=choice, stage=stage)
    assert ret["result"] is False and ret["retcode"] == 2
    assert message.format(file=f"{CAS[choice]}.crt") in ret["error"], ret["error"]
    assert support.snapshot(directory) == before


@pytest.mark.parametrize("choice", CAS)
@pytest.mark.parametrize("done", [("prepare",), ("prepare", "trust")])
def test_abort_before_reissue_puts_every_file_back(master, choice, done):
    """Every file as it was before prepare (the kubeconfigs too), only the backups added;
    and the set may start another rotation, of any CA."""
    tag = f"abort-{choice}-{len(done)}"
    directory = generate(master, tag)
    start = {rel: state[2] for rel, state in support.snapshot(directory).items()}
    for step in done:
        rotate(master, cluster_tag=tag, ca=choice, stage=step)
    ret = rotate(master, cluster_tag=tag, ca=choice, stage="abort")
    assert (ret["state_before"], ret["state"]) == (REACHED[done[-1]], "idle")
    assert rotate(master, cluster_tag=tag, ca=choice, stage="abort")["changed"] is False
    now = {rel: state[2] for rel, state in support.snapshot(directory).items()}
    assert {r: d for r, d in now.items() if not r.startswith("backup")} == {
        r: d for r, d in start.items() if not r.startswith("backup")
    }
    other = next(c for c in CAS if c != choice)
    assert rotate(master, cluster_tag=tag, ca=other, stage="prepare")["state"] == "prepared"


def test_keep_keys_false_gives_the_chosen_cas_leaves_new_keys(master):
    tag = "newkeys"
    directory = generate(master, tag)
    for stage in ("prepare", "trust"):
        rotate(master, cluster_tag=tag, ca="etcd-ca", stage=stage)
    before = support.snapshot(directory)
    ret = rotate(master, cluster_tag=tag, ca="etcd-ca", stage="reissue", keep_keys=False)
    after = support.snapshot(directory)
    assert "warnings" not in ret  # kubeadm signs tokens with sa.key, which stays
    for leaf in ("apiserver-etcd-client", "etcd/healthcheck-client", "hosts/m2/etcd/peer"):
        assert after[f"{leaf}.key"][2] != before[f"{leaf}.key"][2]
        assert ret["files"][f"{leaf}.key"]["action"] == "generated"
    assert after["sa.key"] == before["sa.key"] and after["ca.key"] == before["ca.key"]


def _seed(master):
    master["run"]["k8s-helper.generate_certs"](cluster_tag="seed", key_type="ecdsa-p256")
    return "seed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ca": "bogus"}, "ca: 'bogus' is not one of ca, etcd-ca, front-proxy-ca"),
        ({"ca": "etcd-ca", "stage": "rollback"}, "stage: 'rollback' is not one of status"),
        ({"ca": "etcd", "stage": "prepare"}, "ca: 'etcd' is not one of"),
        ({"ca": "", "stage": "prepare"}, "ca: '' is not one of"),
        ({"ca": ["ca"], "stage": "prepare"}, "ca: ['ca'] is not one of"),
        ({"ca": "front-proxy-ca", "stage": "prepare", "key_type": "dsa"}, "key_type: 'dsa'"),
        ({"cas": "ca"}, "cas: unknown argument"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(master, kwargs, message):
    generate(master, "bad")
    before = support.snapshot(master["pki"])
    ret = rotate(master, cluster_tag="bad", **kwargs)
    assert ret["result"] is False and ret["retcode"] == 2, ret
    assert ret["error"].startswith(message), ret["error"]
    assert "\n" not in ret["error"]
    assert support.snapshot(master["pki"]) == before


@pytest.mark.parametrize("choice", ["etcd-ca", "front-proxy-ca", "etcd/ca"])
def test_a_seed_set_has_only_ca(master, choice):
    tag = _seed(master)
    before = support.snapshot(master["pki"])
    for stage in ("status", "prepare"):
        ret = rotate(master, cluster_tag=tag, ca=choice, stage=stage)
        assert ret["retcode"] == 2
        assert ret["error"] == (
            f"ca: {choice!r} is a CA of kubeadm sets; this set is seed and has one CA, ca "
            "(leave ca= out)"
        )
    assert support.snapshot(master["pki"]) == before
    assert "ca" not in rotate(master, cluster_tag=tag)  # a seed return is as it was


@pytest.mark.parametrize("choice", ["etcd-ca", "front-proxy-ca"])
def test_no_set_is_refused_creating_nothing(master, choice):
    before = support.snapshot(master["pki"])
    for stage in ("status", "prepare"):
        ret = rotate(master, cluster_tag="nosuch", ca=choice, stage=stage)
        assert ret["retcode"] == 2
        assert ret["error"].endswith("nosuch: no certificate set here; run generate_certs first")
    assert support.snapshot(master["pki"]) == before


def test_an_external_kubeadm_ca_is_not_rotated(master):
    """A front-proxy CA the operator placed (k8s-helper did not make it) is theirs to rotate."""
    directory = master["pki"] / "extfp"
    directory.mkdir(parents=True)
    key = k8s_pki.new_key("ecdsa-p256")
    (directory / "front-proxy-ca.crt").write_bytes(
        k8s_pki.cert_pem(k8s_pki.build_ca(key, "corp-front-proxy"))
    )
    (directory / "front-proxy-ca.key").write_bytes(k8s_pki.key_pem(key))
    os.chmod(directory / "front-proxy-ca.key", 0o600)
    generate(master, "extfp")
    before = support.snapshot(directory)
    ret = rotate(master, cluster_tag="extfp", ca="front-proxy-ca", stage="prepare")
    assert ret["retcode"] == 2
    assert "front-proxy-ca.crt is a CA k8s-helper did not create" in ret["error"]
    assert support.snapshot(directory) == before
    assert rotate(master, cluster_tag="extfp", ca="etcd-ca", stage="prepare")["changed"]


def test_the_real_salt_run_exit_status(master):
    generate(master, "cli")
    conf = master["conf"]
    before = support.snapshot(master["pki"] / "cli")
    with support.event_sink(conf):
        bad = support.salt_run(conf, "k8s-helper.rotate_ca", "cluster_tag=cli", "ca=etcd")
        early = support.salt_run(
            conf, "k8s-helper.rotate_ca", "cluster_tag=cli", "ca=etcd-ca", "stage=trust"
        )
        unchanged = support.snapshot(master["pki"] / "cli")
        done = support.salt_run(
            conf, "k8s-helper.rotate_ca", "cluster_tag=cli", "ca=etcd-ca", "stage=prepare"
        )
        other = support.salt_run(
            conf, "k8s-helper.rotate_ca", "cluster_tag=cli", "ca=front-proxy-ca", "stage=prepare"
        )
        status = support.salt_run(conf, "k8s-helper.rotate_ca", "cluster_tag=cli", "ca=etcd-ca")
    assert unchanged == before
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"].startswith("ca: 'etcd' is not")
    assert early.returncode == 2
    assert json.loads(early.stdout)["error"].startswith("stage=trust: there is no new CA yet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "prepared"
    assert other.returncode == 2
    assert "a rotation of etcd/ca is in progress" in json.loads(other.stdout)["error"]
    assert status.returncode == 0 and json.loads(status.stdout)["status"]["next_stage"] == "trust"


# --------------------------------------------------------------------------
# TLS through every stage
# --------------------------------------------------------------------------

#: ca= -> (server pair, the CA file the server trusts for clients, client pair,
#:         the CA file the client checks the server with, the name it checks)
LINKS = {
    "ca": ("hosts/m1/apiserver", "ca.crt", "apiserver-kubelet-client", "ca.crt", FQDN),
    "etcd-ca": (
        "hosts/m1/etcd/server",
        "etcd/ca.crt",
        "apiserver-etcd-client",
        "etcd/ca.crt",
        "m1",
    ),
    # kube-apiserver presents front-proxy-client to an aggregated apiserver,
    # which trusts front-proxy-ca.crt for it; the aggregated apiserver's own
    # certificate is not the front-proxy CA's (here: the apiserver's stand-in).
    "front-proxy-ca": (
        "hosts/m1/apiserver",
        "front-proxy-ca.crt",
        "front-proxy-client",
        "ca.crt",
        FQDN,
    ),
}


def python_ok(port, client):
    try:
        status, body = tlsserver.https_get(
            port, "/healthz", client["trust"], client["cert"], client["key"], client["name"]
        )
    except OSError:  # ssl.SSLError included: the handshake was refused
        return False
    return status == 200 and body == "ok"


def early_pair(kept, choice, leaf, work):
    """A certificate of the new CA for ``leaf`` before reissue made one (the test signs it
    with <ca>.next.key, as reissue will): what a host that got ahead would present."""
    name = CAS[choice]
    new_cert = certs(kept / "prepare" / f"{name}.next.crt")[0]
    new_key = k8s_pki.load_key((kept / "prepare" / f"{name}.next.key").read_bytes())
    old = k8s_pki.load_cert((kept / "start" / f"{leaf}.crt").read_bytes())
    key = k8s_pki.load_key((kept / "start" / f"{leaf}.key").read_bytes())
    cert = k8s_pki.issue_leaf(k8s_pki.spec_from_cert(old), key, new_cert, new_key, days=1)
    out = work / choice / leaf.replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tls.crt").write_bytes(k8s_pki.cert_pem(cert))
    (out / "tls.key").write_bytes(k8s_pki.key_pem(key))
    return out / "tls.crt", out / "tls.key"


def pair(kept, choice, leaf, which, stage, work):
    """The old CA's pair (as generated), or the new CA's (reissued, or signed early)."""
    if which == "old":
        return kept / "start" / f"{leaf}.crt", kept / "start" / f"{leaf}.key"
    if stage in ("reissue", "finish"):
        return kept / "reissue" / f"{leaf}.crt", kept / "reissue" / f"{leaf}.key"
    return early_pair(kept, choice, leaf, work)


#: stage -> what gets through, for (server of the old/new CA, client of the old/new CA),
#: both trusting the stage's CA file
EXPECTED = {
    "prepare": {
        ("old", "old"): True,
        ("old", "new"): False,
        ("new", "old"): False,
        ("new", "new"): False,
    },
    "trust": {
        pair_: True for pair_ in [("old", "old"), ("old", "new"), ("new", "old"), ("new", "new")]
    },
    "reissue": {
        pair_: True for pair_ in [("old", "old"), ("old", "new"), ("new", "old"), ("new", "new")]
    },
    "finish": {
        ("old", "old"): False,
        ("old", "new"): False,
        ("new", "old"): False,
        ("new", "new"): True,
    },
}


@pytest.mark.parametrize("choice", CAS)
@pytest.mark.parametrize("stage", STAGES)
def test_old_and_new_ca_servers_and_clients_at_each_stage(rotations, choice, stage, tmp_path):
    """During trust and reissue a server and a client of either CA, each trusting the
    stage's file, get through to each other: no host is cut off whichever it holds.
    Before trust the new CA is trusted by nobody (its certificates exist nowhere yet);
    after finish the old one is not (that is what finishing means)."""
    kept = rotations[choice]["kept"]
    server_leaf, server_trust, client_leaf, client_trust, name = LINKS[choice]
    # The aggregated apiserver's own certificate is no front-proxy CA's: only its
    # clients are of the old or the new CA (its certificate stays the stage's).
    server_of_ca = choice != "front-proxy-ca"
    expected = (
        EXPECTED[stage]
        if server_of_ca
        else {(s, c): EXPECTED[stage][(c, c)] for s, c in EXPECTED[stage]}
    )
    seen = {}
    for server_ca in ("old", "new"):
        if server_of_ca:
            cert, key = pair(kept, choice, server_leaf, server_ca, stage, tmp_path)
        else:
            cert, key = (kept / stage / f"{server_leaf}.{ext}" for ext in ("crt", "key"))
        trust = kept / stage / server_trust
        with tlsserver.TLSServer(cert, key, trust) as server:
            for client_ca in ("old", "new"):
                ccert, ckey = pair(kept, choice, client_leaf, client_ca, stage, tmp_path)
                client = {"cert": ccert, "key": ckey, "trust": kept / stage / client_trust}
                client["name"] = name
                seen[(server_ca, client_ca)] = python_ok(server.port, client)
    assert seen == expected, seen


@pytest.mark.parametrize("choice", CAS)
@pytest.mark.parametrize("stage", STAGES)
def test_tls_during_the_rollout_of_each_stage(rotations, choice, stage):
    """While a stage is rolled out, hosts hold the files from before it or after it:
    every client gets through to every server."""
    kept = rotations[choice]["kept"]
    server_leaf, server_trust, client_leaf, client_trust, name = LINKS[choice]
    results = {}
    for server_state in (BEFORE[stage], stage):
        here = kept / server_state
        with tlsserver.TLSServer(
            here / f"{server_leaf}.crt", here / f"{server_leaf}.key", here / server_trust
        ) as server:
            for client_state in (BEFORE[stage], stage):
                there = kept / client_state
                client = {
                    "cert": there / f"{client_leaf}.crt",
                    "key": there / f"{client_leaf}.key",
                    "trust": there / client_trust,
                    "name": name,
                }
                results[(server_state, client_state)] = python_ok(server.port, client)
    assert all(results.values()), results


@pytest.mark.parametrize("stage", STAGES)
def test_kubectl_with_kubeadms_kubeconfigs_during_the_rollout(rotations, stage, tmp_path):
    """admin.conf and a node's kubelet.conf from before and after the stage, against
    apiservers presenting and trusting the files from before and after it."""
    kept = rotations["ca"]["kept"]
    results = {}
    for server_state in (BEFORE[stage], stage):
        here = kept / server_state
        with ks.ApiServerStandIn(
            here / "hosts/m1/apiserver.crt", here / "hosts/m1/apiserver.key", here / "ca.crt"
        ) as server:
            for client_state in (BEFORE[stage], stage):
                for conf in ("admin.conf", "hosts/n1/kubelet.conf"):
                    key = (server_state, client_state, conf)
                    results[key] = ks.kubectl_healthz(server, kept / client_state / conf, tmp_path)
    assert all(results.values()), results


@pytest.mark.parametrize("choice", ["etcd-ca", "front-proxy-ca"])
def test_force_regen_in_the_middle_starts_over_without_the_rotation(master, choice):
    """force_regen makes a whole new set: the rotation's new CA is not carried along
    (it stays in the backup only), and every CA of the new set is idle."""
    tag, name = f"regen-{choice}", CAS[choice]
    directory = generate(master, tag)
    for stage in ("prepare", "trust"):
        rotate(master, cluster_tag=tag, ca=choice, stage=stage)
    next_ca = (directory / f"{name}.next.crt").read_bytes()
    ret = master["run"]["k8s-helper.generate_certs"](
        cluster_tag=tag, profile="kubeadm", force_regen=True
    )
    assert ret.get("result") is not False, ret
    assert ret["removed"] == [f"{name}.next.crt", f"{name}.next.key"]
    assert not (directory / f"{name}.next.crt").exists()
    assert (pathlib.Path(ret["backup"]) / f"{name}.next.crt").read_bytes() == next_ca
    for other in CAS:
        assert rotate(master, cluster_tag=tag, ca=other)["state"] == "idle"


@pytest.mark.parametrize("stage", ["trust", "reissue", "finish"])
def test_a_dry_run_plans_what_the_stage_then_does(master, stage):
    """test=True names every file the stage writes, with the action the real run
    reports (the kubeconfigs rewritten around the bundle included), and writes nothing."""
    tag = f"dry-{stage}"
    directory = generate(master, tag)
    for step in STAGES[: STAGES.index(stage)]:
        rotate(master, cluster_tag=tag, stage=step)
    before = support.snapshot(directory)
    dry = rotate(master, cluster_tag=tag, stage=stage, test=True)
    assert support.snapshot(directory) == before
    real = rotate(master, cluster_tag=tag, stage=stage)
    planned = {
        rel: info["action"]
        for rel, info in dry["files"].items()
        if info["change"] not in ("keep", "remove")
    }
    assert dry.get("removed") == real.get("removed")
    written = {
        rel: info["action"] for rel, info in real["files"].items() if info["action"] != "reused"
    }
    assert planned == written, (planned, written)
    assert (dry["state"], dry["state_before"]) == (real["state"], real["state_before"])
    assert planned["admin.conf"] == ("reissued" if stage == "reissue" else "rebundled")
    assert planned["hosts/n2/kubelet.conf"] == planned["admin.conf"]
