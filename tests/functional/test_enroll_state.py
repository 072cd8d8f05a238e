"""k8s_enroll.certificate_enrolled through the real salt-call, where it needs no master:
what it says in test mode, without a master, on bad settings, and on a pair that is fine
(made here from a set's CA), each time leaving the disk as it was."""

import datetime
import json
import subprocess

import pytest
import support
from support import kubeadm as ks
from support.minion import Minion

k8s_pki = support.k8s_pki


@pytest.fixture(scope="module")
def minion(tmp_path_factory):
    return Minion(None, tmp_path_factory.mktemp("enroll-state"), minion_id="n1")


def _state(minion, out, *args):
    argv = support.salt_call_argv(
        minion.conf,
        "state.single",
        "k8s_enroll.certificate_enrolled",
        f"name={out}/kubelet-client.crt",
        f"key={out}/kubelet-client.key",
        f"ca={out}/ca.crt",
        "member=kubelet-client",
        *args,
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    result = next(iter(json.loads(proc.stdout)["local"].values()))
    return proc, result


def test_test_mode_says_what_it_would_do_and_makes_nothing(minion, tmp_path):
    proc, ret = _state(minion, tmp_path / "host", "test=True")
    assert ret["result"] is None, ret
    assert "kubelet-client.crt: missing: would make a new ecdsa-p256 key" in ret["comment"]
    assert not (tmp_path / "host").exists()


def test_without_a_master_it_fails_saying_so(minion, tmp_path):
    """salt-call --local has no master to ask: publish.runner answers with a sentence."""
    proc, ret = _state(minion, tmp_path / "host")
    assert proc.returncode != 0 and ret["result"] is False
    assert "no answer from the master's k8s-helper.sign_csr" in ret["comment"]
    assert "peer_run" in ret["comment"]
    assert not (tmp_path / "host").exists()
    assert "PRIVATE" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("arg", "why"),
    [
        ("key_type=rsa-1024", "key_type"),
        ("renew_before_days=soon", "renew_before_days"),
        ("cluster_tag=../x", "cluster_tag"),
    ],
)
def test_bad_settings_are_refused(minion, tmp_path, arg, why):
    proc, ret = _state(minion, tmp_path / "host", arg)
    assert proc.returncode != 0 and ret["result"] is False
    assert ret["comment"].startswith(why), ret["comment"]
    assert not (tmp_path / "host").exists()


def _lay_down(tmp_path, days):
    """A pair signed by a kubeadm set's CA, as an enrollment leaves it, ending in ``days``."""
    directory = ks.make_set(tmp_path / "pki")
    ca = k8s_pki.read_pair(str(directory), "ca")
    key = k8s_pki.new_key("ecdsa-p256")
    spec = k8s_pki.LeafSpec("system:node:n1", ("system:nodes",), ("client",))
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=365 - days)
    cert = k8s_pki.issue_leaf(spec, key, ca.cert, ca.key, days=365, now=now)
    host = tmp_path / "host"
    host.mkdir()
    (host / "kubelet-client.crt").write_bytes(k8s_pki.cert_pem(cert))
    (host / "kubelet-client.key").write_bytes(k8s_pki.key_pem(key))
    (host / "ca.crt").write_bytes(ca.cert_bytes)
    return host


def test_a_valid_pair_is_left_alone(minion, tmp_path):
    host = _lay_down(tmp_path, days=200)
    before = support.snapshot(host)
    proc, ret = _state(minion, host)
    assert proc.returncode == 0 and ret["result"] is True and not ret["changes"], ret
    assert "CN=system:node:n1" in ret["comment"] and "not due for renewal" in ret["comment"]
    assert support.snapshot(host) == before


def test_a_pair_in_its_renewal_window_is_due(minion, tmp_path):
    host = _lay_down(tmp_path, days=20)
    before = support.snapshot(host)
    proc, ret = _state(minion, host, "test=True")
    assert ret["result"] is None, ret
    assert "(renewal window: 90 days)" in ret["comment"]
    assert support.snapshot(host) == before
