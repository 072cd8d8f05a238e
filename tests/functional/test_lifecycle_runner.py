"""check_expiration, renew and generate_certs' drift through Salt: in-process and real salt-run.

The sets are made with past dates by the library (``now=``) in the throwaway
master's pki_root; the runner is then loaded by Salt's loader, or run by the
real ``salt-run`` whose output and exit status are what cron and operators see.
"""

import datetime
import json

import pytest
from support import event_sink, k8s_pki, openssl, salt_run, snapshot

DAY = datetime.timedelta(days=1)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def make_set(pki_root, age_days=0, tag="default", **kwargs):
    specs = k8s_pki.seed_specs(**kwargs)
    k8s_pki.ensure_set(pki_root, tag, specs, key_type="ecdsa-p256", now=now() - age_days * DAY)
    return pki_root / tag


def expire_server(directory, days_ago=3):
    """Replace server.crt by one from the same CA and key that expired ``days_ago``."""
    ca = k8s_pki.load_cert((directory / "ca.crt").read_bytes())
    ca_key = k8s_pki.load_key((directory / "ca.key").read_bytes())
    key = k8s_pki.load_key((directory / "server.key").read_bytes())
    spec = k8s_pki.seed_specs()["server"]
    cert = k8s_pki.issue_leaf(spec, key, ca, ca_key, days=30, now=now() - (30 + days_ago) * DAY)
    (directory / "server.crt").write_bytes(k8s_pki.cert_pem(cert))


@pytest.fixture
def sink(master_conf):
    with event_sink(master_conf):
        yield master_conf


def run_json(conf, fun, *args):
    proc = salt_run(conf, fun, *args)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


# -- in-process (Salt's loader) ------------------------------------------------


def test_check_expiration_in_process(runners, pki_root):
    make_set(pki_root, age_days=300)
    ret = runners["k8s-helper.check_expiration"]()
    assert ret["outputter"] == "k8s_table"
    data = ret["data"]
    assert data["cluster_tag"] == "default"
    assert data["retcode"] == 0
    assert {c["name"]: c["status"] for c in data["certificates"]} == {
        "ca.crt": "ok",
        "kubecfg.crt": "renew-soon",
        "server.crt": "renew-soon",
    }
    ret = runners["k8s-helper.check_expiration"](threshold_days=30)
    assert ret["data"]["summary"] == {"ok": 3, "renew-soon": 0, "expired": 0, "unreadable": 0}


def test_renew_in_process(runners, pki_root):
    directory = make_set(pki_root)
    before = (directory / "kubecfg.crt").read_bytes()
    ret = runners["k8s-helper.renew"](certs="kubecfg", keep_keys=True)
    assert ret["renewed"] == ["kubecfg"]
    assert ret["files"]["kubecfg.crt"]["action"] == "reissued"
    assert ret["files"]["kubecfg.key"]["action"] == "reused"
    assert ret["files"]["server.crt"]["action"] == "reused"
    assert (directory / "kubecfg.crt").read_bytes() != before
    assert "PRIVATE KEY" not in repr(ret)


# -- check_expiration through salt-run --------------------------------------------


def test_check_expiration_prints_a_table_and_exits_0_when_nothing_expired(sink, pki_root):
    make_set(pki_root, age_days=300)
    proc = salt_run(sink, "k8s-helper.check_expiration", out=None)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Certificates of cluster 'default' in {pki_root / 'default'}"
    header = next(line for line in lines if line.startswith("CERTIFICATE"))
    assert header.split() == [
        "CERTIFICATE", "STATUS", "DAYS", "LEFT", "NOT", "AFTER", "SUBJECT", "ISSUER",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines if line.endswith("CN=kubernetes-ca")}
    assert rows["ca.crt"][1:3] == ["ok", "3349"]
    assert rows["server.crt"][1:3] == ["renew-soon", "64"]
    assert rows["kubecfg.crt"][1:3] == ["renew-soon", "64"]
    assert lines[-1] == "3 certificates: 1 ok, 2 renew-soon, 0 expired, 0 unreadable"
    assert "PRIVATE KEY" not in proc.stdout


def test_check_expiration_json_is_clean_and_exit_1_on_expired(sink, pki_root):
    directory = make_set(pki_root)
    expire_server(directory, days_ago=3)
    proc, data = run_json(sink, "k8s-helper.check_expiration")
    assert proc.returncode == 1, proc.stderr
    assert set(data) == {
        "cluster_tag", "directory", "checked_at", "renew_before_days",
        "certificates", "summary", "retcode",
    }  # fmt: skip
    server = next(c for c in data["certificates"] if c["name"] == "server.crt")
    assert server["status"] == "expired"
    assert server["days_left"] == -3
    # The same end date as openssl reads from the file.
    end = openssl("x509", "-in", directory / "server.crt", "-noout", "-enddate").stdout
    stamp = datetime.datetime.strptime(end.strip()[9:], "%b %d %H:%M:%S %Y GMT")
    assert stamp.strftime("%Y-%m-%dT%H:%M:%SZ") == server["not_after"]
    assert data["summary"]["expired"] == 1
    assert data["retcode"] == 1
    # The table says it too, with the same exit status.
    proc = salt_run(sink, "k8s-helper.check_expiration", out=None)
    assert proc.returncode == 1
    assert any(line.split()[:2] == ["server.crt", "expired"] for line in proc.stdout.splitlines())


def test_check_expiration_unreadable_file_and_ca_bundle(sink, pki_root):
    directory = make_set(pki_root)
    other = make_set(pki_root, tag="other")
    bundle = (directory / "ca.crt").read_bytes() + (other / "ca.crt").read_bytes()
    (directory / "ca.crt").write_bytes(bundle)
    proc, data = run_json(sink, "k8s-helper.check_expiration")
    assert proc.returncode == 0
    assert [c["name"] for c in data["certificates"]] == [
        "ca.crt #1",
        "ca.crt #2",
        "kubecfg.crt",
        "server.crt",
    ]
    (directory / "kubecfg.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    proc, data = run_json(sink, "k8s-helper.check_expiration")
    assert proc.returncode == 1
    bad = next(c for c in data["certificates"] if c["name"] == "kubecfg.crt")
    assert bad["status"] == "unreadable" and "not a PEM certificate" in bad["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cluster_tag=../etc"], "cluster_tag: '../etc' is not a safe folder name"),
        (["cluster_tag=nosuch"], "no certificate set here"),
        (["threshold_days=0"], "threshold_days: 0 must be a positive number of days"),
        (["threshold_days=soon"], "threshold_days: 'soon' is not a whole number of days"),
        (["fire_event=maybe"], "fire_event: 'maybe' is not a boolean"),
        (["threshold=30"], "threshold: unknown argument"),
    ],
)
def test_check_expiration_bad_input(sink, pki_root, args, message):
    make_set(pki_root)
    before = snapshot(pki_root)
    proc, data = run_json(sink, "k8s-helper.check_expiration", *args)
    assert proc.returncode == 2, proc.stdout
    assert message in data["error"]
    assert snapshot(pki_root) == before


# -- renew through salt-run -----------------------------------------------------------


def test_renew_through_salt_run(sink, pki_root):
    directory = make_set(pki_root, age_days=300, api_server_fqdn="api.example.com")
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    proc, data = run_json(sink, "k8s-helper.renew", "cluster_tag=default", "certs=server")
    assert proc.returncode == 0, proc.stderr
    assert data["renewed"] == ["server"]
    assert data["files"]["server.crt"]["reason"] == "renewal requested"
    assert "api.example.com" in data["files"]["server.crt"]["sans"]
    for name in ("ca.crt", "ca.key", "kubecfg.crt", "kubecfg.key"):
        assert (directory / name).read_bytes() == before[name], name
    # server.key also signs the service-account tokens (no sa.key): kept
    assert (directory / "server.key").read_bytes() == before["server.key"]
    openssl("verify", "-CAfile", directory / "ca.crt", directory / "server.crt")
    backup = data["backup"]
    assert {p.name for p in pki_root.joinpath(backup).iterdir()} == set(before)
    # check_expiration now sees a fresh server certificate.
    proc, report = run_json(sink, "k8s-helper.check_expiration")
    server = next(c for c in report["certificates"] if c["name"] == "server.crt")
    assert server["status"] == "ok" and server["days_left"] == 364


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certs=ca"], "certs: 'ca' is a CA; renew never touches a CA"),
        (["certs=[server, ca.crt]"], "certs: 'ca.crt' is a CA"),
        (["certs=etcd"], "certs: 'etcd' is not a certificate of this set"),
        (["keep_keys=perhaps"], "keep_keys: 'perhaps' is not a boolean"),
        (["key_type=dsa"], "key_type: 'dsa' is not one of"),
        (["days=-1"], "days: -1 must be a positive number of days"),
        (["cluster_tag=a/b"], "cluster_tag: 'a/b' is not a safe folder name"),
        (["cluster_tag=nosuch"], "no certificate set for cluster 'nosuch'"),
        (["force_regen=True"], "force_regen: unknown argument"),
        (["threshold_days=0"], "threshold_days: 0 must be a positive number of days"),
    ],
)
def test_renew_bad_input_changes_nothing(sink, pki_root, args, message):
    make_set(pki_root)
    before = snapshot(pki_root)
    proc, data = run_json(sink, "k8s-helper.renew", *args)
    assert proc.returncode == 2, proc.stdout
    assert message in data["error"]
    assert snapshot(pki_root) == before


# -- generate_certs drift through salt-run ------------------------------------------


def test_generate_certs_drift_through_salt_run(sink, pki_root):
    proc, first = run_json(sink, "k8s-helper.generate_certs", "key_type=ecdsa-p256")
    assert proc.returncode == 0, proc.stderr
    directory = pki_root / "default"
    # Same arguments: nothing changes, byte for byte.
    before = snapshot(directory)
    proc, again = run_json(sink, "k8s-helper.generate_certs", "key_type=ecdsa-p256")
    assert proc.returncode == 0
    assert not again["changed"] and snapshot(directory) == before
    # A new extra SAN: the server certificate is reissued, and the return says why.
    proc, drift = run_json(
        sink, "k8s-helper.generate_certs", "key_type=ecdsa-p256", "extra_sans=[lb.example.com]"
    )
    assert proc.returncode == 0
    assert drift["files"]["server.crt"]["action"] == "reissued"  # same token-signing key
    assert drift["files"]["server.crt"]["reason"] == (
        "extra_sans changed (added lb.example.com): names or usages differ from those requested"
    )
    assert drift["files"]["kubecfg.crt"]["action"] == "reused"
    assert drift["files"]["ca.crt"]["action"] == "reused"
    assert drift["backup"]
    assert "lb.example.com" in drift["files"]["server.crt"]["sans"]
    san = openssl("x509", "-in", directory / "server.crt", "-noout", "-ext", "subjectAltName")
    assert "DNS:lb.example.com" in san.stdout
    assert (directory / "ca.crt").read_bytes() == before["ca.crt"][2]


def test_generate_certs_reissues_a_leaf_in_the_window_but_never_the_ca(sink, pki_root):
    directory = make_set(pki_root, age_days=300)
    ca = (directory / "ca.crt").read_bytes()
    proc, data = run_json(sink, "k8s-helper.generate_certs", "key_type=ecdsa-p256")
    assert proc.returncode == 0, proc.stderr
    for name in ("server.crt", "kubecfg.crt"):
        # 65 days minus the seconds since make_set
        assert data["files"][name]["reason"] == "expires in 64 days (renewal window: 90 days)"
    assert data["files"]["ca.crt"]["action"] == "reused"
    assert (directory / "ca.crt").read_bytes() == ca


def test_renew_threshold_days_renews_only_what_is_due(sink, pki_root):
    directory = make_set(pki_root, age_days=300)  # 64-65 days left
    proc, data = run_json(sink, "k8s-helper.renew", "threshold_days=30")
    assert proc.returncode == 0 and data["renewed"] == [] and not data["changed"]
    proc, data = run_json(sink, "k8s-helper.renew", "threshold_days=90")
    assert proc.returncode == 0 and data["renewed"] == ["server", "kubecfg"]
    before = snapshot(directory)
    proc, data = run_json(sink, "k8s-helper.renew", "threshold_days=90")
    assert proc.returncode == 0 and data["renewed"] == [] and data["backup"] is None
    assert snapshot(directory) == before


def test_fire_event_without_a_master_says_so(runners, pki_root):
    """No master daemon here: the event cannot be fired, and the report says it was not."""
    make_set(pki_root, age_days=300)
    data = runners["k8s-helper.check_expiration"](fire_event=True)["data"]
    sock_dir = data["event"].pop("why").split(" at ")[1].split(" ")[0]
    assert data["event"] == {"tag": "k8s-helper/expiry/default", "fired": False}
    assert sock_dir.endswith("/var/run/salt/master")
    data = runners["k8s-helper.check_expiration"](fire_event=True, threshold_days=30)["data"]
    assert data["event"] == {
        "tag": "k8s-helper/expiry/default",
        "fired": False,
        "why": "not fired: nothing is due (every certificate is ok)",
    }
    assert data["summary"]["renew-soon"] == 0  # nothing to say: nothing was tried


def test_fire_event_table_says_why_not(master_conf, pki_root):
    """The table says why: something due but no master (no one listens on its socket)."""
    make_set(pki_root, age_days=300)
    proc = salt_run(master_conf, "k8s-helper.check_expiration", "fire_event=True", out=None)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.splitlines()[-1]
    assert line.startswith(
        "event k8s-helper/expiry/default: not fired: no master event bus answered at "
    ), line
    assert line.endswith("/var/run/salt/master (is the salt-master running?)")


def test_fire_event_table_says_fired_or_nothing_due(sink, pki_root):
    """With something listening on the master's event socket: fired, or nothing due."""
    make_set(pki_root, age_days=300)
    proc = salt_run(sink, "k8s-helper.check_expiration", "fire_event=True", out=None)
    assert proc.stdout.splitlines()[-1] == (
        "event k8s-helper/expiry/default: fired: kubecfg, server need attention"
    )
    proc = salt_run(
        sink, "k8s-helper.check_expiration", "fire_event=True", "threshold_days=30", out=None
    )
    assert proc.stdout.splitlines()[-1] == (
        "event k8s-helper/expiry/default: not fired: nothing is due (every certificate is ok)"
    )


def test_check_expiration_header_states_the_window_applied(sink, pki_root):
    """threshold_days 90 and leaves valid 30 days: their window is the last third (10 days)."""
    specs = k8s_pki.seed_specs()
    k8s_pki.ensure_set(pki_root, "default", specs, key_type="ecdsa-p256", leaf_days=30)
    proc = salt_run(sink, "k8s-helper.check_expiration", out=None)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[1]
    assert header.endswith(
        "; renew-soon: fewer than 90 days left, or for a certificate valid 90 days or less, "
        "the last third of its lifetime (kubecfg.crt 10 days, server.crt 10 days))"
    ), header
    # 30 days left, a 10-day window: ok (not "fewer than 90 days left")
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[4:7]}
    assert rows == {"ca.crt": "ok", "kubecfg.crt": "ok", "server.crt": "ok"}
    proc = salt_run(sink, "k8s-helper.check_expiration", "threshold_days=20", out=None)
    assert proc.stdout.splitlines()[1].endswith("; renew-soon: fewer than 20 days left)")


KUBECFG_READERS = [
    "kubelet (every host: its kubeconfig)",
    "kube-proxy (every host: its kubeconfig)",
    "kube-controller-manager (masters: its kubeconfig)",
    "kube-scheduler (masters: its kubeconfig)",
]
APISERVER = "kube-apiserver (masters: server.cert, server.key)"
SIGNER = "kube-controller-manager (masters: server.key signs service-account tokens)"


def test_renew_says_what_must_restart(runners, pki_root):
    directory = make_set(pki_root)
    renew = runners["k8s-helper.renew"]
    ret = renew(certs="kubecfg")
    assert ret["restart"] == KUBECFG_READERS
    assert ret["next"].endswith("; kube-proxy is not run by the formula: restart it yourself")
    # renewal keeps server.key (it signs the service-account tokens: no sa.key in the set)
    assert renew(certs="server")["restart"] == [APISERVER]
    # a new token-signing key, asked for: its signer must restart too
    assert renew(certs="server", rotate_token_key=True)["restart"] == [APISERVER, SIGNER]
    ret = renew(rotate_token_key=True)
    assert ret["renewed"] == ["server", "kubecfg"]
    # kube-controller-manager twice: it reads its kubeconfig and signs with server.key
    assert ret["restart"] == [APISERVER, *KUBECFG_READERS, SIGNER]
    assert renew()["restart"] == [APISERVER, *KUBECFG_READERS]
    nothing = renew(threshold_days=1)
    assert nothing["renewed"] == [] and nothing["restart"] == []
    assert nothing["next"] == "nothing renewed: nothing to hand out or restart"
    assert (directory / "ca.crt").is_file()


def test_renew_with_a_dedicated_token_key_restarts_only_the_apiserver(runners, pki_root):
    ret = runners["k8s-helper.generate_certs"](service_account_key=True, key_type="ecdsa-p256")
    assert ret["files"]["sa.key"]["action"] == "generated"
    assert runners["k8s-helper.renew"](certs="server")["restart"] == [APISERVER]


def test_renew_output_ends_with_what_must_restart(sink, pki_root):
    make_set(pki_root)
    proc = salt_run(sink, "k8s-helper.renew", "certs=server", "keep_keys=True", out=None)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-2:] == ["restart:", f"    - {APISERVER}"], lines[-6:]
