"""Every kubeconfig of the kubeadm profile, used as it is by the real kubectl.

The server is a Python TLS stand-in for kube-apiserver (no apiserver binary is
available here): it presents a generated apiserver certificate and requires a
client certificate from the cluster CA, like kube-apiserver's --client-ca-file.
The set is made with control_plane_endpoint=127.0.0.1:<port>, so kubectl runs
each kubeconfig without any override.
"""

import json
import os
import shutil
import socket
import subprocess

import pytest
import support
from support import kubeadm as ks

k8s_pki = support.k8s_pki

pytestmark = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")

IDENTITIES = {
    "admin.conf": ("kubernetes-admin", ["kubeadm:cluster-admins"]),
    "super-admin.conf": ("kubernetes-super-admin", ["system:masters"]),
    **{
        f"hosts/{h}/kubelet.conf": (f"system:node:{h}", ["system:nodes"])
        for h in ("m1", "m2", "m3", "n1", "n2")
    },
}
LOCAL_IDENTITIES = {
    "controller-manager.conf": ("system:kube-controller-manager", []),
    "scheduler.conf": ("system:kube-scheduler", []),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = tmp_path_factory.mktemp("kubectl-pki")
    specs = ks.specs(control_plane_endpoint=f"127.0.0.1:{port}")
    k8s_pki.ensure_set(root, "c1", specs, key_type="ecdsa-p256")
    return root / "c1", port


def kubectl(home, kubeconfig, *args):
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        ["kubectl", "--request-timeout=5s", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("master", ["m1", "m3"])
def test_every_kubeconfig_with_kubectl(cluster, tmp_path, master):
    directory, port = cluster
    d = directory / "hosts" / master
    with ks.ApiServerStandIn(d / "apiserver.crt", d / "apiserver.key", directory / "ca.crt", port):
        for rel, (cn, orgs) in IDENTITIES.items():
            health = kubectl(tmp_path, directory / rel, "get", "--raw", "/healthz")
            assert health.returncode == 0, (rel, health.stderr)
            assert health.stdout.strip() == "ok"
            who = kubectl(tmp_path, directory / rel, "get", "--raw", "/whoami")
            assert who.returncode == 0, (rel, who.stderr)
            assert json.loads(who.stdout) == {"cn": cn, "o": orgs}, rel
        # The master's own components' kubeconfigs point at its own apiserver,
        # https://<its address>:6443 (kubeadm's choice: no load balancer needed);
        # the stand-in listens on 127.0.0.1:<port>, so kubectl is pointed there,
        # checking the master's name in the certificate.
        ip = next(m["ip"] for m in ks.MASTERS if m["name"] == master)
        for name, (cn, orgs) in LOCAL_IDENTITIES.items():
            rel = directory / "hosts" / master / name
            assert ks.kubeconfig(rel)["server"] == f"https://{ip}:6443", name
            local = ("--server", f"https://127.0.0.1:{port}", "--tls-server-name", master)
            who = kubectl(tmp_path, rel, *local, "get", "--raw", "/whoami")
            assert who.returncode == 0, (name, who.stderr)
            assert json.loads(who.stdout) == {"cn": cn, "o": orgs}, name


def test_kubectl_rejects_a_server_from_another_ca(cluster, tmp_path):
    """The etcd server certificate (etcd-ca, with a 127.0.0.1 SAN) is not the apiserver."""
    directory, port = cluster
    etcd = directory / "hosts/m1/etcd"
    with ks.ApiServerStandIn(etcd / "server.crt", etcd / "server.key", directory / "ca.crt", port):
        proc = kubectl(tmp_path, directory / "admin.conf", "get", "--raw", "/healthz")
    assert proc.returncode != 0
    assert "certificate signed by unknown authority" in proc.stderr


def test_server_rejects_a_client_from_another_ca(cluster, tmp_path):
    """A kubeconfig carrying front-proxy-client (front-proxy-ca) is refused by the server."""
    directory, port = cluster
    spec = k8s_pki.KubeconfigSpec("front-proxy-client", server=f"https://127.0.0.1:{port}")
    wrong = tmp_path / "wrong.conf"
    wrong.write_bytes(
        k8s_pki.render_kubeconfig(
            spec,
            (directory / "ca.crt").read_bytes(),
            (directory / "front-proxy-client.crt").read_bytes(),
            (directory / "front-proxy-client.key").read_bytes(),
        )
    )
    d = directory / "hosts/m1"
    ca = directory / "ca.crt"
    with ks.ApiServerStandIn(d / "apiserver.crt", d / "apiserver.key", ca, port) as server:
        proc = kubectl(tmp_path, wrong, "get", "--raw", "/healthz")
        assert proc.returncode != 0
        # kubectl sees the TLS alert, or (TLS 1.3) a reset when the alert loses the race
        assert "unknown certificate authority" in proc.stderr or "reset" in proc.stderr
        assert any("CERTIFICATE_VERIFY_FAILED" in why for why in server.refused), server.refused
        good = kubectl(tmp_path, directory / "admin.conf", "get", "--raw", "/healthz")
        assert good.returncode == 0, good.stderr
