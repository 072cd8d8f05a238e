"""An etcd CA rotation under a real three-member etcd cluster: quorum all the way.

A kubeadm set with three masters (127.0.0.1-3) is made by the runner, and each
master's share is laid out as kubeadm keeps it (``/etc/kubernetes/pki/etcd/...``,
one folder per master).  Debian's real etcd runs one member per master on
those files, peering over TLS with client-certificate auth on both sides.
Then ``rotate_ca ca=etcd-ca`` goes through prepare -> trust -> reissue ->
finish, and after each stage the masters are rolled one at a time, as an
operator (or kubeadm's static pods) would: the member stops, the master gets
the stage's files, the member starts again with them.  At every point of the
roll-out - each member down, each member back - etcdctl, presenting the
``apiserver-etcd-client`` certificate a master held before the stage and the
one it holds after it, writes through every running member and reads the
value back, linearizably, from another one: quorum and reads and writes never
stop, whichever certificates each side holds.  After each stage's roll-out
every member serves a certificate of the CA the stage says, and after
``finish`` a client of the old etcd CA is refused by every member.
"""

import json
import shutil
import socket
import ssl

import pytest
import support
from support import etcd as etc
from support import k8s_pki
from support import kubeadm as ks

pytestmark = pytest.mark.skipif(
    not etc.HAVE_ETCD,
    reason="Debian's etcd-server and etcd-client are not installed (make system-deps)",
)

STAGES = ("prepare", "trust", "reissue", "finish")
NAMES = [m["name"] for m in ks.MASTERS]


def served_cert(cluster, name, host_dir):
    """The certificate member ``name`` presents to a client (its etcd/server.crt in use)."""
    pki = host_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "etcd" / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(
        str(pki / "etcd" / "healthcheck-client.crt"), str(pki / "etcd" / "healthcheck-client.key")
    )
    member = cluster.members[name]
    with (
        socket.create_connection((member["ip"], member["client"]), timeout=10) as raw,
        context.wrap_socket(raw) as conn,
    ):
        return k8s_pki.load_cert(ssl.DER_cert_to_PEM_cert(conn.getpeercert(True)).encode())


def reads_and_writes(cluster, up, clients, key):
    """Through each running member, with each client, write; read it from the next member."""
    problems = []
    for index, client in enumerate(clients):
        for position, writer in enumerate(up):
            reader = up[(position + 1) % len(up)]
            value = f"{key}/{index}/{writer}"
            put = etc.etcdctl(client, [cluster.endpoint(writer)], "put", f"/{value}", value)
            if put.returncode != 0 or put.stdout.strip() != "OK":
                problems.append(f"put via {writer} with {client.name}: {put.stderr.strip()}")
                continue
            got = etc.etcdctl(
                client,
                [cluster.endpoint(reader)],
                "get",
                f"/{value}",
                "--print-value-only",
                "--consistency=l",
            )
            if got.stdout.strip() != value:
                problems.append(f"get via {reader} with {client.name}: {got.stderr.strip()}")
    return problems


def test_etcd_keeps_quorum_through_an_etcd_ca_rotation(tmp_path):
    conf = support.write_master_config(tmp_path)
    run = support.load_runners(conf)
    ret = run["k8s-helper.generate_certs"](
        cluster_tag="etcdrot", profile="kubeadm", masters=ks.MASTERS, key_type="ecdsa-p256"
    )
    assert ret.get("result") is not False, ret
    set_dir = tmp_path / "pki" / "etcdrot"
    old_ca = k8s_pki.load_cert((set_dir / "etcd" / "ca.crt").read_bytes())
    hosts = {n: etc.lay_out_host(set_dir, n, tmp_path / "start" / n) for n in NAMES}
    start = dict(hosts)
    cluster = etc.EtcdCluster(tmp_path / "etcd", ks.MASTERS)
    problems, rolled = [], []
    try:
        for name in NAMES:
            cluster.start(name, hosts[name])
        etc.wait_healthy(cluster, hosts[NAMES[0]], NAMES)
        problems += reads_and_writes(cluster, NAMES, [hosts[NAMES[0]]], "start")
        for stage in STAGES:
            ret = run["k8s-helper.rotate_ca"](cluster_tag="etcdrot", ca="etcd-ca", stage=stage)
            assert ret.get("result") is not False, ret
            after = {n: etc.lay_out_host(set_dir, n, tmp_path / stage / n) for n in NAMES}
            for name in NAMES:  # one master at a time
                clients = [hosts[name], after[name]]  # its apiserver's files, before and after
                cluster.stop_member(name)
                up = [n for n in NAMES if n != name]
                problems += reads_and_writes(cluster, up, clients, f"{stage}/{name}/down")
                hosts[name] = after[name]
                cluster.start(name, hosts[name])
                etc.wait_healthy(cluster, hosts[name], NAMES)
                problems += reads_and_writes(cluster, NAMES, clients, f"{stage}/{name}/up")
                rolled.append((stage, name))
            new_ca = k8s_pki.load_certs((hosts[NAMES[0]] / "pki/etcd/ca.crt").read_bytes())[0]
            issuer = new_ca if stage in ("reissue", "finish") else old_ca
            for name in NAMES:  # each member really runs with the stage's files
                assert k8s_pki.signed_by(served_cert(cluster, name, hosts[name]), issuer), (
                    stage,
                    name,
                )
        # finished: a client of the old etcd CA (trusting the new one) is refused by every member
        for name in NAMES:
            old_client = shutil.copytree(hosts[name], tmp_path / "old-client" / name)
            for rel in ("pki/etcd/healthcheck-client.crt", "pki/etcd/healthcheck-client.key"):
                shutil.copyfile(start[name] / rel, old_client / rel)
            refused = etc.etcdctl(
                old_client,
                [cluster.endpoint(name)],
                "endpoint",
                "health",
                client="etcd/healthcheck-client",
                wait=2,
            )
            assert refused.returncode != 0, name
        assert not problems, problems
        assert len(rolled) == len(STAGES) * len(NAMES)
        endpoints = [cluster.endpoint(n) for n in NAMES]
        status = etc.etcdctl(hosts[NAMES[0]], endpoints, "endpoint", "status", "--write-out=json")
        leaders = {s["Status"]["leader"] for s in json.loads(status.stdout)}
        assert len(leaders) == 1, status.stdout
    finally:
        cluster.stop()
