"""k8s-helper.verify with real daemons: one salt-master, three salt-minions, real files.

The whole chain runs for real: ``salt-run k8s-helper.generate_certs`` on the
master, pillar read from the generated files, ``saltutil.sync_all`` and
``state.apply kubernetes.certs.present`` on every minion (the trust bundle is
rebuilt by the real ``update-ca-certificates``).  All minions run on this host,
so each one's pillar ``kubernetes:lookup`` puts its paths under its own temp
root: the host's /srv, /etc, /var and /usr/local are never written.

Then the disk is damaged minion by minion (a foreign CA, an expired
certificate, a key of another pair, a re-pointed link, deleted files) and
``salt-run k8s-helper.verify`` must say exactly what is wrong where.
"""

import contextlib
import datetime
import json
import os
import shutil
import time

import pytest
from support import REPO, formula_root, k8s_pki, start_together

pytestmark = pytest.mark.daemons

MINIONS = ("k8s-master-1", "k8s-master-2", "k8s-node-1")
FILES = {  # map.jinja id -> path under a minion's root
    "ca.crt": "srv/kubernetes/ca.crt",
    "kubecfg.crt": "srv/kubernetes/kubecfg.crt",
    "kubecfg.key": "srv/kubernetes/kubecfg.key",
    "server.cert": "srv/kubernetes/server.cert",
    "server.key": "srv/kubernetes/server.key",
    "kubelet-ca.crt": "var/lib/kubelet/ca.crt",
    "trust-anchor": "usr/local/share/ca-certificates/kubernetes-ca.crt",
}
LINK = "etc/ssl/certs/kubernetes.pem"
SCHEDULE_SECONDS = 4
BUNDLE = "etc/ssl/certs/ca-certificates.crt"

PILLAR_TOP = """\
base:
  'k8s-*':
    - k8s
"""

# Rendered on the master for each minion: the certificates read from the
# generated set (no process per file), and paths under the minion's own root.
PILLAR = """\
{%- set pki = "@PKI@/default/" %}
{%- set root = "@HOSTS@/" ~ grains['id'] %}
kubernetes:
  k8s_env: default
  lookup:
    certs: {dir: "{{ root }}/srv/kubernetes"}
    kubelet: {ca: "{{ root }}/var/lib/kubelet/ca.crt"}
    trust:
      anchor: "{{ root }}/usr/local/share/ca-certificates/kubernetes-ca.crt"
      link: "{{ root }}/etc/ssl/certs/kubernetes.pem"
      bundle: "{{ root }}/etc/ssl/certs/ca-certificates.crt"
      refresh: >-
        update-ca-certificates --certsconf /etc/ca-certificates.conf
        --localcertsdir {{ root }}/usr/local/share/ca-certificates
        --etccertsdir {{ root }}/etc/ssl/certs --hooksdir {{ root }}/hooks
  certs:
    "ca.crt": {{ salt['file.read'](pki ~ 'ca.crt') | json }}
    "kubecfg.crt": {{ salt['file.read'](pki ~ 'kubecfg.crt') | json }}
    "kubecfg.key": {{ salt['file.read'](pki ~ 'kubecfg.key') | json }}
{%- if grains['id'].startswith('k8s-master-') %}
    "server.cert": {{ salt['file.read'](pki ~ 'server.crt') | json }}
    "server.key": {{ salt['file.read'](pki ~ 'server.key') | json }}
{%- endif %}
"""


def host_tree(*roots):
    """Every file and link under the host paths the states would write without lookup."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                state[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


HOST_PATHS = ("/srv", "/var/lib/kubelet", "/usr/local/share/ca-certificates", "/etc/ssl/certs")


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    host_before = host_tree(*HOST_PATHS)
    base = tmp_path_factory.mktemp("verify")
    pki = base / "pki"
    hosts = base / "hosts"
    pillar_root = base / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text(PILLAR_TOP)
    (pillar_root / "k8s.sls").write_text(
        PILLAR.replace("@PKI@", str(pki)).replace("@HOSTS@", str(hosts))
    )
    for minion in MINIONS:
        # What any Debian host has before the formula runs.
        for folder in ("etc/ssl/certs", "hooks"):
            (hosts / minion / folder).mkdir(parents=True)
    master = salt_factories.salt_master_daemon(
        "k8s-salt",
        overrides={
            "runner_dirs": [str(REPO / "_runners")],
            "utils_dirs": [str(REPO / "_utils")],
            "outputter_dirs": [str(REPO / "_output")],
            "file_roots": {"base": [str(formula_root(base))]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "k8s_helper": {"pki_root": str(pki)},
            # How long the master waits for a silent minion's job lookup once
            # the call's own timeout passed (Salt's default: 10 s).
            "gather_job_timeout": 3,
            # The expiry recipe of docs/lifecycle.md, with a short interval:
            # the master's scheduler checks the set and fires the event, the
            # reactor starts the renewal orchestration.
            "schedule": {
                "k8s-helper-expiry-default": {
                    "function": "k8s-helper.check_expiration",
                    "kwargs": {"cluster_tag": "default", "fire_event": True},
                    "seconds": SCHEDULE_SECONDS,
                }
            },
            "reactor": [{"k8s-helper/expiry/*": ["salt://kubernetes/reactor/expiry.sls"]}],
        },
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(master.started())
        run = master.salt_run_cli(timeout=120)
        ret = run.run("k8s-helper.generate_certs", "extra_sans=[k8s-master-1, k8s-master-2]")
        assert ret.returncode == 0, ret.stderr
        minions = {minion_id: master.salt_minion_daemon(minion_id) for minion_id in MINIONS}
        start_together(stack, minions.values())
        cli = master.salt_cli(timeout=180)
        ret = cli.run("saltutil.sync_all", minion_tgt="k8s-*")
        assert ret.returncode == 0, ret.stderr
        ret = cli.run("state.apply", "kubernetes.certs.present", minion_tgt="k8s-*")
        assert ret.returncode == 0, ret.stdout
        yield {
            "master": master,
            "minions": minions,
            "run": run,
            "cli": cli,
            "pki": pki / "default",
            "hosts": hosts,
        }
    assert host_tree(*HOST_PATHS) == host_before, "the host's own paths changed"


def verify(cluster, *args):
    ret = cluster["run"].run("k8s-helper.verify", *args, "--out=json")
    data = ret.data if isinstance(ret.data, dict) else json.loads(ret.stdout)
    return ret, data


def statuses(data, minion):
    return {c["id"]: c["status"] for c in data["hosts"][minion]["checks"]}


def path(cluster, minion, rel):
    return cluster["hosts"] / minion / rel


def test_the_states_laid_everything_down_per_minion(cluster):
    for minion in MINIONS:
        root = cluster["hosts"] / minion
        for ident, rel in FILES.items():
            present = (root / rel).exists()
            assert present == (minion.startswith("k8s-master") or "server" not in ident), (
                minion,
                rel,
            )
        assert os.readlink(root / LINK) == str(root / FILES["trust-anchor"])
        ca = (cluster["pki"] / "ca.crt").read_bytes()
        cert = k8s_pki.load_cert(ca)
        assert k8s_pki.bundle_has((root / BUNDLE).read_bytes(), cert)
        assert len((root / BUNDLE).read_bytes()) > 100_000  # the Mozilla roots too: the real tool


def test_consistent_cluster_passes(cluster):
    ret, data = verify(cluster, "tgt=k8s-*")
    assert ret.returncode == 0, ret.stdout
    assert data["retcode"] == 0
    assert sorted(data["hosts"]) == list(MINIONS)
    for minion in MINIONS:
        seen = statuses(data, minion)
        assert data["hosts"][minion]["status"] == "ok", seen
        expect_server = "match" if minion.startswith("k8s-master") else "absent"
        assert seen == {
            "ca.crt": "match",
            "kubecfg.crt": "match",
            "kubecfg.key": "match",
            "server.cert": expect_server,
            "server.key": expect_server,
            "kubelet-ca.crt": "match",
            "trust-anchor": "match",
            "trust-link": "match",
            "trust-bundle": "match",
        }
        for check in data["hosts"][minion]["checks"]:
            assert check["path"].startswith(str(cluster["hosts"] / minion)), check
    assert data["summary_line"].startswith("3 minion(s): 3 consistent, 0 with problems")
    assert "PRIVATE KEY" not in json.dumps(data)


def test_damage_is_reported_per_host_and_path(cluster):
    pki = cluster["pki"]
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = k8s_pki.load_cert((pki / "ca.crt").read_bytes())
    ca_key = k8s_pki.load_key((pki / "ca.key").read_bytes())

    # k8s-master-1 stays consistent.
    # k8s-node-1, tampered: a foreign CA for the kubelet; an expired kubecfg.crt
    # (same CA, same key) beside a key of another pair; the trust link
    # re-pointed; the apiserver's key, which a node must not have.
    foreign = k8s_pki.build_ca(k8s_pki.new_key("ecdsa-p256"), "kubernetes-ca")
    path(cluster, "k8s-node-1", FILES["kubelet-ca.crt"]).write_bytes(k8s_pki.cert_pem(foreign))
    kubecfg_key = k8s_pki.load_key((pki / "kubecfg.key").read_bytes())
    expired = k8s_pki.issue_leaf(
        k8s_pki.seed_specs()["kubecfg"],
        kubecfg_key,
        ca,
        ca_key,
        days=10,
        now=now - datetime.timedelta(days=20),
    )
    path(cluster, "k8s-node-1", FILES["kubecfg.crt"]).write_bytes(k8s_pki.cert_pem(expired))
    other_key = k8s_pki.key_pem(k8s_pki.new_key("ecdsa-p256"))
    path(cluster, "k8s-node-1", FILES["kubecfg.key"]).write_bytes(other_key)
    link = path(cluster, "k8s-node-1", LINK)
    link.unlink()
    link.symlink_to("/etc/ssl/certs/ca-certificates.crt")
    shutil.copy(pki / "server.key", path(cluster, "k8s-node-1", FILES["server.key"]))
    # k8s-master-2, missing files: the apiserver's key (a master needs it), the
    # kubelet's CA and the trust anchor.
    for ident in ("server.key", "kubelet-ca.crt", "trust-anchor"):
        path(cluster, "k8s-master-2", FILES[ident]).unlink()

    ret, data = verify(cluster, "cluster_tag=default", "tgt=k8s-*")
    assert ret.returncode == 1, ret.stdout
    hosts = data["hosts"]
    assert {h: i["status"] for h, i in hosts.items()} == {
        "k8s-master-1": "ok",
        "k8s-master-2": "problems",
        "k8s-node-1": "problems",
    }

    n1 = {c["id"]: c for c in hosts["k8s-node-1"]["checks"]}
    assert n1["kubelet-ca.crt"]["status"] == "differs"
    assert n1["kubelet-ca.crt"]["minion_sha256"] == [k8s_pki.fingerprint(foreign)]
    assert n1["kubelet-ca.crt"]["master_sha256"] == [k8s_pki.fingerprint(ca)]
    assert k8s_pki.fingerprint(foreign) in n1["kubelet-ca.crt"]["detail"]
    assert k8s_pki.fingerprint(ca) in n1["kubelet-ca.crt"]["detail"]
    assert n1["kubecfg.crt"]["status"] == "expired"
    assert "differs from the master's" in n1["kubecfg.crt"]["detail"]
    assert n1["kubecfg.key"]["status"] == "key does not match cert"
    assert n1["trust-link"]["status"] == "differs"
    assert "points to /etc/ssl/certs/ca-certificates.crt" in n1["trust-link"]["detail"]
    assert n1["server.key"]["status"] == "unexpected"
    assert n1["server.cert"]["status"] == "absent"
    assert n1["ca.crt"]["status"] == "match"
    assert n1["trust-bundle"]["status"] == "match"

    m2 = statuses(data, "k8s-master-2")
    assert m2["server.key"] == "missing"
    assert m2["kubelet-ca.crt"] == "missing"
    assert m2["trust-anchor"] == "missing"
    assert m2["server.cert"] == "match"
    assert m2["trust-bundle"] == "match"  # the bundle was built before the anchor went
    assert m2["trust-link"] == "match"  # a link to a missing anchor: the anchor is reported

    line = data["summary_line"]
    assert line.startswith("3 minion(s): 1 consistent, 2 with problems, 0 not answering")
    assert line.endswith("check k8s-master-2, k8s-node-1")
    assert "PRIVATE KEY" not in json.dumps(data)
    assert other_key.decode().splitlines()[1] not in json.dumps(data)

    # The table, as an operator sees it.
    ret = cluster["run"].run("k8s-helper.verify", "tgt=k8s-*", "--out=k8s_table")
    assert ret.returncode == 1
    rows = [row.split(None, 3) for row in ret.stdout.splitlines()]
    server_key = str(path(cluster, "k8s-master-2", FILES["server.key"]))
    assert ["k8s-master-2", server_key, "missing"] in [r[:3] for r in rows]
    kubecfg_key_path = str(path(cluster, "k8s-node-1", FILES["kubecfg.key"]))
    assert any(
        r[:2] == ["k8s-node-1", kubecfg_key_path] and " ".join(r[2:]).startswith("key does not")
        for r in rows
    )
    assert ret.stdout.rstrip().splitlines()[-1] == line


def test_bad_key_file_and_a_garbage_certificate(cluster):
    path(cluster, "k8s-master-1", FILES["kubecfg.key"]).write_text("not a key\n")
    path(cluster, "k8s-master-1", FILES["ca.crt"]).write_bytes(os.urandom(300))
    ret, data = verify(cluster, "tgt=k8s-master-1")
    assert ret.returncode == 1
    m1 = {c["id"]: c for c in data["hosts"]["k8s-master-1"]["checks"]}
    assert m1["kubecfg.key"]["status"] == "unreadable"
    assert m1["ca.crt"]["status"] == "unreadable"
    assert m1["server.cert"]["status"] == "match"
    assert list(data["hosts"]) == ["k8s-master-1"]


def test_reapplying_the_state_repairs_what_verify_found(cluster):
    cli = cluster["cli"]
    # Put back what the state does not manage the content of by itself.
    ret = cli.run("state.apply", "kubernetes.certs.present", minion_tgt="k8s-*")
    assert ret.returncode == 0, ret.stdout
    link = path(cluster, "k8s-node-1", LINK)
    assert os.readlink(link).endswith("kubernetes-ca.crt")
    ret, data = verify(cluster, "tgt=k8s-*")
    assert ret.returncode == 0, data["summary_line"]
    assert all(info["status"] == "ok" for info in data["hosts"].values())


def test_expiry_schedule_event_reactor_renew_and_hand_out(cluster, event_listener):
    """The whole recipe: scheduler -> check_expiration -> event -> reactor -> orchestration."""
    pki = cluster["pki"]
    master_id = cluster["master"].id
    ca_before = (pki / "ca.crt").read_bytes()
    # Put the master's server certificate in its renewal window: the same
    # names and key, issued 300 days ago (65 days left).
    current = k8s_pki.load_cert((pki / "server.crt").read_bytes())
    aged = k8s_pki.issue_leaf(
        k8s_pki.spec_from_cert(current),
        k8s_pki.load_key((pki / "server.key").read_bytes()),
        k8s_pki.load_cert(ca_before),
        k8s_pki.load_key((pki / "ca.key").read_bytes()),
        days=365,
        now=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=300),
    )
    planted = k8s_pki.cert_pem(aged)
    start = time.time()
    (pki / "server.crt").write_bytes(planted)

    # The scheduler (every SCHEDULE_SECONDS) notices and fires the event.
    events = event_listener.wait_for_events(
        [(master_id, "k8s-helper/expiry/default")], timeout=60, after_time=start
    )
    assert events.found_all_events, "no expiry event from the master's schedule"
    event = next(iter(events.matches))
    assert event.data["renew"] == ["server"]
    assert event.data["cas"] == []
    assert [c["status"] for c in event.data["certificates"]] == ["renew-soon"]

    # The reactor's orchestration renews it and the minions get it.
    deadline = time.time() + 180
    while True:
        renewed = (pki / "server.crt").read_bytes() != planted
        ret, data = verify(cluster, "tgt=k8s-*")
        if renewed and ret.returncode == 0:
            break
        assert time.time() < deadline, data.get("summary_line")
        time.sleep(2)
    fresh = k8s_pki.load_cert((pki / "server.crt").read_bytes())
    assert k8s_pki.days_left(fresh) > 364
    assert k8s_pki.spec_from_cert(fresh) == k8s_pki.spec_from_cert(current)
    assert k8s_pki.signed_by(fresh, k8s_pki.load_cert(ca_before))
    assert (pki / "ca.crt").read_bytes() == ca_before
    backups = sorted((pki / "backup").iterdir())
    assert any((b / "server.crt").read_bytes() == planted for b in backups)
    for minion in ("k8s-master-1", "k8s-master-2"):
        on_disk = path(cluster, minion, FILES["server.cert"]).read_bytes()
        assert k8s_pki.fingerprint(k8s_pki.load_cert(on_disk)) == k8s_pki.fingerprint(fresh)
    # Nothing is due any more: the scheduled checks stay quiet, nothing renews twice.
    time.sleep(SCHEDULE_SECONDS + 1)
    assert (pki / "server.crt").read_bytes() == k8s_pki.cert_pem(fresh)


def test_orchestration_stops_when_renew_is_refused(cluster):
    ret = cluster["run"].run(
        "state.orchestrate",
        "kubernetes.orch.renew",
        'pillar={"k8s_renew": {"cluster_tag": "nosuch"}}',
    )
    assert ret.returncode != 0
    text = json.dumps(ret.data) if ret.data else ret.stdout
    assert "no certificate set for cluster 'nosuch'" in text
    assert "One or more requisite failed" in text


def test_a_minion_that_does_not_answer_is_not_fine(cluster):
    cluster["minions"]["k8s-master-2"].terminate()
    ret, data = verify(cluster, "tgt=k8s-*", "timeout=3")
    assert ret.returncode == 1
    assert data["hosts"]["k8s-master-2"]["status"] == "no answer"
    assert data["hosts"]["k8s-master-2"]["error"].startswith("did not answer [")
    assert "checks" not in data["hosts"]["k8s-master-2"]
    assert data["summary"]["minions"] == {
        "consistent": 2,
        "with problems": 0,
        "not answering": 1,
    }
    assert "1 not answering" in data["summary_line"]
    assert data["summary_line"].endswith("check k8s-master-2")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "tgt: give the minions to check"),
        (["tgt=nobody-*"], "tgt: no minion matches 'nobody-*'"),
        (["tgt=k8s-*", "tgt_type=regex"], "tgt_type: 'regex' is not one of"),
        (["tgt=k8s-*", "timeout=0"], "timeout: 0 is not a positive whole number"),
        (["tgt=k8s-*", "cluster_tag=prod"], "no certificate set here"),
        (["tgt=k8s-*", "cluster_tag=../x"], "cluster_tag: '../x' is not a safe folder name"),
        (["tgt=k8s-*", "target=x"], "target: unknown argument"),
    ],
)
def test_verify_bad_input(cluster, args, message):
    ret, data = verify(cluster, *args)
    assert ret.returncode == 2, ret.stdout
    assert message in data["error"]
