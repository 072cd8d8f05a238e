"""The k8s_cluster execution module: apiserver health check and cluster clean-up.

Called through Salt's own minion loader in this process (``salt.client.Caller``,
what salt-call uses), with a minion config that loads the module from this
checkout; a real ``salt-call`` checks the exit status of a failure.  The
defaults come from the formula's map.jinja, rendered with this minion's pillar
(``kubernetes:lookup`` moves every path under a temporary folder).

- ``healthz`` talks TLS to tests/support/tlsserver.py, a stand-in for the apiserver's
  TLS endpoint (client certificates required);
- ``cleanup`` runs the real ``kubectl`` against tests/support/kubeapi.py, a stand-in
  for the few API endpoints it uses (discovery, list/delete Secrets, get/patch
  DaemonSets and Deployments).  kubectl is real; the cluster behind it is not.
"""

import json
import logging
import pathlib
import shutil
import socket
import subprocess
import threading
import time

import pytest
import support
from support import k8s_pki, kubeapi, tlsserver

FQDN = "kubernetes.api"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster-module")
    conf = support.write_master_config(base / "master")
    run = support.load_runners(conf)
    made = run["k8s-helper.generate_certs"](cluster_tag="c", key_type="ecdsa-p256")
    other = run["k8s-helper.generate_certs"](cluster_tag="other", key_type="ecdsa-p256")
    pki, foreign = pathlib.Path(made["directory"]), pathlib.Path(other["directory"])
    # What kubernetes.running lays down on a master, under a temporary root.
    srv = base / "srv"
    srv.mkdir()
    for name in ("ca.crt", "kubecfg.crt", "kubecfg.key"):
        shutil.copy(pki / name, srv / name)
    port, api_port = free_port(), free_port()
    admin = base / "admin.conf"
    tlsserver.kubeconfig(
        admin,
        f"https://127.0.0.1:{api_port}",
        srv / "ca.crt",
        srv / "kubecfg.crt",
        srv / "kubecfg.key",
        FQDN,
    )
    pillar = {
        "kubernetes": {
            "role": "node",
            "lookup": {
                "certs": {"dir": str(srv)},
                "api_server": {"local_address": "127.0.0.1"},
                "apiserver": {"secure_port": port},
                "admin": {"kubeconfig": str(admin)},
            },
        }
    }
    support.write_pillar(base / "pillar", pillar)
    mconf = support.write_minion_config(
        base / "minion",
        base / "pillar",
        "k8s-master-1",
        module_dirs=[str(support.REPO / "_modules")],
        utils_dirs=[str(support.REPO / "_utils")],
        enable_fqdns_grains=False,
    )
    import salt.client
    import salt.config

    opts = salt.config.minion_config(str(mconf / "minion"))
    caller = salt.client.Caller(mopts=opts)
    return {
        "call": caller.cmd,
        "conf": mconf,
        "pki": pki,
        "foreign": foreign,
        "port": port,
        "api_port": api_port,
        "admin": admin,
        "srv": srv,
    }


def apiserver(env, set_dir=None):
    """A stand-in apiserver on the port map.jinja names, presenting ``set_dir``'s
    server certificate and requiring clients of its CA."""
    set_dir = set_dir or env["pki"]
    return tlsserver.TLSServer(
        set_dir / "server.crt", set_dir / "server.key", set_dir / "ca.crt", port=env["port"]
    )


# --------------------------------------------------------------------------
# healthz
# --------------------------------------------------------------------------


def test_healthz_with_the_laid_down_files(env):
    with apiserver(env) as server:
        ret = env["call"]("k8s_cluster.healthz", wait=0)
    assert ret["result"] is True and ret["healthy"] is True, ret
    assert ret["url"] == f"https://127.0.0.1:{env['port']}/healthz"
    assert ret["ca"] == str(env["srv"] / "ca.crt") and ret["server_name"] == FQDN
    ca = k8s_pki.load_cert((env["pki"] / "ca.crt").read_bytes())
    served = k8s_pki.load_cert((env["pki"] / "server.crt").read_bytes())
    assert ret["verified_by"]["sha256"] == k8s_pki.fingerprint(ca)
    assert ret["server_certificate"]["sha256"] == k8s_pki.fingerprint(served)
    assert {"commonName": "kubecfg", "organizationName": "system:masters"} in server.clients


def test_healthz_refuses_a_server_of_another_ca(env):
    with apiserver(env, env["foreign"]):
        ret = env["call"]("k8s_cluster.healthz", wait=0)
    assert ret["result"] is False and ret["healthy"] is False
    assert "its certificate did not verify" in ret["error"]
    assert ret["error"].startswith(f"the apiserver at https://127.0.0.1:{env['port']}/healthz")


def test_healthz_nothing_listening(env):
    ret = env["call"]("k8s_cluster.healthz", wait=1, interval=0.4)
    assert ret["result"] is False
    assert "connection refused (nothing listening)" in ret["error"]
    assert ret["attempts"] >= 2


def test_healthz_wrong_answer_and_wrong_name(env):
    with apiserver(env):
        ret = env["call"](
            "k8s_cluster.healthz", url=f"https://127.0.0.1:{env['port']}/nothing", wait=0
        )
        assert ret["result"] is False and "answered 404" in ret["error"]
        ret = env["call"]("k8s_cluster.healthz", server_name="elsewhere.example", wait=0)
        assert ret["result"] is False and "did not verify" in ret["error"]


def test_healthz_waits_for_an_apiserver_that_comes_up_late(env):
    started = []
    timer = threading.Timer(0.8, lambda: started.append(apiserver(env).__enter__()))
    timer.start()  # nothing listens on the port for the first 0.8 s
    try:
        start = time.monotonic()
        ret = env["call"]("k8s_cluster.healthz", wait=20, interval=0.3)
        assert ret["result"] is True, ret
        assert ret["attempts"] > 1 and 0.8 < time.monotonic() - start < 10
    finally:
        timer.join()
        for server in started:
            server.__exit__(None, None, None)


def test_healthz_bad_arguments(env):
    ret = env["call"]("k8s_cluster.healthz", wait="soon")
    assert ret["result"] is False and ret["error"] == "wait: 'soon' is not a number of seconds"
    ret = env["call"]("k8s_cluster.healthz", ca="/nonexistent/ca.crt", wait=0)
    assert ret["error"] == "/nonexistent/ca.crt is not there: apply kubernetes.running first"


# --------------------------------------------------------------------------
# cleanup: the real kubectl against the API stand-in
# --------------------------------------------------------------------------


@pytest.fixture
def cluster_api(env):
    pki = env["pki"]
    api = kubeapi.KubeAPI(pki / "server.crt", pki / "server.key", pki / "ca.crt", env["api_port"])
    for name in ("default-token-abcde", "canal-token-fghij"):
        api.add(kubeapi.secret(name))
    api.add(kubeapi.secret("kept-opaque", kind="Opaque"))
    api.add(kubeapi.secret("other-token", namespace="default"))
    api.add(kubeapi.workload("daemonsets", "canal"))
    api.add(kubeapi.workload("deployments", "coredns"))
    with api:
        yield api


def test_cleanup_deletes_token_secrets_and_restarts_workloads(env, cluster_api, caplog):
    with caplog.at_level(logging.DEBUG):
        ret = env["call"]("k8s_cluster.cleanup")
    assert "kubectl" in caplog.text  # the commands are logged at debug level ...
    assert kubeapi.TOKEN not in caplog.text  # ... the Secrets' contents are not
    assert kubeapi.TOKEN not in json.dumps(ret)
    assert ret["result"] is True, ret
    assert ret["server"] == f"https://127.0.0.1:{env['api_port']}"
    assert ret["kubeconfig"] == str(env["admin"])
    assert ret["server_version"] == tlsserver.VERSION["gitVersion"]
    assert sorted(ret["deleted_secrets"]) == ["canal-token-fghij", "default-token-abcde"]
    assert ret["restarted"] == ["kube-system/daemonset/canal", "kube-system/deployment/coredns"]
    assert ret["not_found"] == [
        "kube-system/deployment/kube-dns",
        "kube-system/deployment/kubernetes-dashboard",
    ]
    left = sorted(name for kind, _, name in cluster_api.objects if kind == "secrets")
    assert left == ["kept-opaque", "other-token"]
    # What the real kubectl asked for.
    reqs = cluster_api.requests
    listing = [r for r in reqs if r["method"] == "GET" and r["path"].endswith("/secrets")]
    assert listing[0]["query"]["fieldSelector"] == "type=kubernetes.io/service-account-token"
    deletes = sorted(r["path"] for r in reqs if r["method"] == "DELETE")
    assert deletes == [
        "/api/v1/namespaces/kube-system/secrets/canal-token-fghij",
        "/api/v1/namespaces/kube-system/secrets/default-token-abcde",
    ]
    patches = [r for r in reqs if r["method"] == "PATCH"]
    assert [p["path"] for p in patches] == [
        "/apis/apps/v1/namespaces/kube-system/daemonsets/canal",
        "/apis/apps/v1/namespaces/kube-system/deployments/coredns",
    ]
    for patch in patches:
        assert patch["content_type"] == "application/strategic-merge-patch+json"
        annotations = patch["body"]["spec"]["template"]["metadata"]["annotations"]
        assert "kubectl.kubernetes.io/restartedAt" in annotations
    canal = cluster_api.objects[("daemonsets", "kube-system", "canal")]
    assert (
        "kubectl.kubernetes.io/restartedAt" in canal["spec"]["template"]["metadata"]["annotations"]
    )
    assert all(r["client"]["commonName"] == "kubecfg" for r in reqs)
    # kubectl kept its cache in the minion's cache folder, not in $HOME
    assert (pathlib.Path(env["conf"]).parent / "root/var/cache/salt/minion/kubectl").is_dir()


def test_cleanup_with_a_chosen_list_and_no_secrets(env, cluster_api):
    ret = env["call"](
        "k8s_cluster.cleanup",
        delete_token_secrets=False,
        restart=["kube-system/deployment/coredns", {"kind": "DaemonSet", "name": "canal"}],
    )
    assert ret["result"] is True, ret
    assert ret["deleted_secrets"] == []
    assert ret["restarted"] == ["kube-system/deployment/coredns", "kube-system/daemonset/canal"]
    assert not [r for r in cluster_api.requests if r["method"] == "DELETE"]


def test_cleanup_no_cluster_reachable(env):
    """Nothing answers at the kubeconfig's server: it says so and fails."""
    ret = env["call"]("k8s_cluster.cleanup")
    assert ret["result"] is False
    assert ret["error"].startswith(
        f"no cluster reachable at https://127.0.0.1:{env['api_port']} through {env['admin']}: "
    )
    assert f"The connection to the server 127.0.0.1:{env['api_port']} was refused" in ret["error"]
    assert "deleted_secrets" not in ret and "restarted" not in ret


def test_cleanup_refuses_bad_input_and_a_missing_kubeconfig(env):
    ret = env["call"]("k8s_cluster.cleanup", restart=["pod/canal-xyz"])
    assert ret["result"] is False
    assert ret["error"] == (
        "restart: 'pod/canal-xyz': kind must be one of daemonset, deployment, statefulset"
    )
    ret = env["call"]("k8s_cluster.cleanup", restart=["a/b/c/d"])
    assert "is not kind/name, namespace/kind/name" in ret["error"]
    ret = env["call"]("k8s_cluster.cleanup", kubeconfig="/nonexistent/admin.conf")
    assert ret["error"] == (
        "no cluster reachable: /nonexistent/admin.conf is not there (apply kubernetes.running)"
    )


def test_failures_exit_non_zero_through_the_real_salt_call(env):
    argv = support.salt_call_argv(env["conf"], "k8s_cluster.cleanup")
    argv.remove("--retcode-passthrough")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no cluster reachable at" in json.loads(proc.stdout)["local"]["error"]
