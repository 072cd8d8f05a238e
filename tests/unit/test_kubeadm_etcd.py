"""The kubeadm profile's etcd certificates, proven with Debian's real etcd and etcdctl.

A single member with client-certificate auth, and a three-member cluster on
127.0.0.1-3 peering over TLS with the generated peer certificates.  Every etcd
runs from a temporary data dir, on free loopback ports, and is killed in
teardown; every wait is bounded.
"""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import support
from support import kubeadm as ks

k8s_pki = support.k8s_pki

pytestmark = pytest.mark.skipif(
    not (shutil.which("etcd") and shutil.which("etcdctl")),
    reason="Debian's etcd-server and etcd-client are not installed (make system-deps)",
)


def free_port(ip):
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("etcd-pki")
    k8s_pki.ensure_set(root, "c1", ks.specs(), key_type="ecdsa-p256")
    return root / "c1"


class Etcd:
    """etcd processes started by a test; all killed at the end."""

    def __init__(self, base, pki):
        self.base, self.pki, self.procs = base, pki, []

    def start(self, name, ip, client_port, peer_port, cluster):
        here = self.pki / "hosts" / name / "etcd"
        data = self.base / f"{name}.data"
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            "etcd",
            f"--name={name}",
            f"--data-dir={data}",
            f"--listen-client-urls=https://{ip}:{client_port}",
            f"--advertise-client-urls=https://{ip}:{client_port}",
            f"--listen-peer-urls=https://{ip}:{peer_port}",
            f"--initial-advertise-peer-urls=https://{ip}:{peer_port}",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=issue7",
            f"--cert-file={here / 'server.crt'}",
            f"--key-file={here / 'server.key'}",
            f"--trusted-ca-file={self.pki / 'etcd/ca.crt'}",
            "--client-cert-auth",
            f"--peer-cert-file={here / 'peer.crt'}",
            f"--peer-key-file={here / 'peer.key'}",
            f"--peer-trusted-ca-file={self.pki / 'etcd/ca.crt'}",
            "--peer-client-cert-auth",
            "--listen-metrics-urls=",
        ]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.base)
        self.procs.append((proc, log))
        return proc

    def log(self, name):
        return (self.base / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self):
        # SIGKILL: the data dirs are thrown away, and a clean cluster shutdown
        # (leadership transfer) only costs seconds.
        for proc, log in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            log.close()


@pytest.fixture
def etcd(tmp_path, pki):
    runner = Etcd(tmp_path, pki)
    try:
        yield runner
    finally:
        runner.stop()


def etcdctl(pki, endpoints, *args, client="etcd/healthcheck-client", wait=4):
    """etcdctl v3 with the etcd CA and a client pair of the set; gives up after ``wait`` s."""
    cmd = [
        "etcdctl",
        f"--endpoints={','.join(endpoints)}",
        f"--cacert={pki / 'etcd/ca.crt'}",
        f"--dial-timeout={min(wait, 2)}s",
        f"--command-timeout={wait}s",
    ]
    if client:
        cmd += [f"--cert={pki / (client + '.crt')}", f"--key={pki / (client + '.key')}"]
    env = {**os.environ, "ETCDCTL_API": "3"}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=wait + 10, check=False
    )


def wait_healthy(pki, endpoints, etcd, names, deadline=30):
    end = time.monotonic() + deadline
    while True:
        proc = etcdctl(pki, endpoints, "endpoint", "health")
        if proc.returncode == 0:
            return proc
        if time.monotonic() > end:
            logs = "\n".join(f"--- {n}\n{etcd.log(n)}" for n in names)
            pytest.fail(f"etcd not healthy in {deadline}s: {proc.stderr}\n{logs}")
        for proc_, _ in etcd.procs:
            if proc_.poll() is not None:
                pytest.fail(f"an etcd exited ({proc_.returncode}):\n{etcd.log(names[0])}")
        time.sleep(0.2)


def test_single_member_client_cert_auth(etcd, pki):
    client, peer = free_port("127.0.0.1"), free_port("127.0.0.1")
    etcd.start("m1", "127.0.0.1", client, peer, f"m1=https://127.0.0.1:{peer}")
    endpoint = [f"https://127.0.0.1:{client}"]
    health = wait_healthy(pki, endpoint, etcd, ["m1"])
    assert "is healthy" in health.stdout + health.stderr

    # kube-apiserver's own identity towards etcd writes and reads
    put = etcdctl(pki, endpoint, "put", "/registry/x", "1", client="apiserver-etcd-client")
    assert put.returncode == 0 and put.stdout.strip() == "OK", put.stderr
    got = etcdctl(
        pki, endpoint, "get", "/registry/x", "--print-value-only", client="apiserver-etcd-client"
    )
    assert got.stdout.strip() == "1"

    # client-certificate auth is on: no certificate, or one from another CA, is refused
    for client in (None, "apiserver-kubelet-client", "front-proxy-client"):
        refused = etcdctl(pki, endpoint, "endpoint", "health", client=client, wait=1)
        assert refused.returncode != 0, client
    log = etcd.log("m1")
    assert "bad certificate" in log or "certificate signed by unknown authority" in log


def test_three_members_peer_over_tls(etcd, pki):
    members = []
    for host in ks.MASTERS:
        ip = host["ip"]
        members.append((host["name"], ip, free_port(ip), free_port(ip)))
    cluster = ",".join(f"{n}=https://{ip}:{p}" for n, ip, _, p in members)
    for name, ip, client, peer in members:
        etcd.start(name, ip, client, peer, cluster)
    endpoints = [f"https://{ip}:{client}" for _, ip, client, _ in members]
    names = [m[0] for m in members]
    health = wait_healthy(pki, endpoints, etcd, names)
    assert (health.stdout + health.stderr).count("is healthy") == 3

    listing = etcdctl(pki, endpoints[:1], "member", "list", "--write-out=json")
    assert listing.returncode == 0, listing.stderr
    found = json.loads(listing.stdout)["members"]
    assert sorted(m["name"] for m in found) == names
    for member in found:  # each member is reached by its peers over https
        assert all(url.startswith("https://") for url in member["peerURLs"])

    # a write on one member is read on another: replication went over the peer TLS links
    put = etcdctl(pki, endpoints[:1], "put", "k", "v", client="apiserver-etcd-client")
    assert put.returncode == 0, put.stderr
    got = etcdctl(
        pki,
        endpoints[2:],
        "get",
        "k",
        "--print-value-only",
        "--consistency=l",
        client="apiserver-etcd-client",
    )
    assert got.stdout.strip() == "v", got.stderr
    status = etcdctl(pki, endpoints, "endpoint", "status", "--write-out=json")
    leaders = {s["Status"]["leader"] for s in json.loads(status.stdout)}
    assert len(leaders) == 1


def test_peer_with_a_foreign_certificate_is_refused(etcd, pki, tmp_path):
    """--peer-client-cert-auth bites: a member whose peer cert is not from etcd/ca cannot join."""
    other = tmp_path / "other"
    k8s_pki.ensure_set(other, "c1", ks.specs(), key_type="ecdsa-p256")  # another etcd-ca
    members = [(h["name"], h["ip"], free_port(h["ip"]), free_port(h["ip"])) for h in ks.MASTERS[:2]]
    cluster = ",".join(f"{n}=https://{ip}:{p}" for n, ip, _, p in members)
    etcd.start(*members[0], cluster)
    impostor = Etcd(tmp_path / "impostor", other / "c1")  # its m2 certificates and etcd-ca
    impostor.base.mkdir()
    try:
        impostor.start(*members[1], cluster)
        end = time.monotonic() + 20
        logs = ""
        while time.monotonic() < end:
            logs = etcd.log("m1") + impostor.log("m2")
            if "bad certificate" in logs or "unknown authority" in logs:
                break
            time.sleep(0.2)
        assert "bad certificate" in logs or "unknown authority" in logs, logs
        endpoints = [f"https://{members[0][1]}:{members[0][2]}"]
        health = etcdctl(pki, endpoints, "endpoint", "health", wait=1)
        assert health.returncode != 0  # two members, no peer link: no quorum, not healthy
    finally:
        impostor.stop()
