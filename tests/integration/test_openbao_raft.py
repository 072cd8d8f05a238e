"""The OpenBao client layer against a 3-node Raft cluster: the leader stops.

The client is given the three nodes' URLs.  When the active node stops in the
middle of the work, the client either completes on the new leader (it resends
what surely was not processed, and idempotent requests) or fails with one
clean line; a re-run then completes, with the same CA.
"""

import json
import pathlib

import pytest
from cryptography import x509
from support import openbao as bs
from support import openssl
from support.openbao import k8s_openbao

YEAR = 365 * 86400
KEY_TYPE = "ecdsa-p256"
ADMIN = k8s_openbao.LeafRequest("kubecfg", ("system:masters",), ("client",))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with bs.raft_cluster(tmp_path_factory.mktemp("raft")) as raft:
        raft.bao("policy", "write", bs.POLICY_NAME, bs.POLICY_FILE)
        yield raft


def cluster_client(cluster, base):
    token = json.loads(
        cluster.bao(
            "token", "create", f"-policy={bs.POLICY_NAME}", "-no-default-policy", "-ttl=1h"
        ).stdout
    )["auth"]["client_token"]
    token_file = bs.write_secret(pathlib.Path(base) / "token", token)
    opts = bs.master_opts(
        [node.addr for node in cluster.nodes],
        {"method": "token", "token_file": token_file},
        timeout=5,
        retry_seconds=60,
    )
    client = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(opts))
    client.login()
    return client, token


def renew_admin(client, mount):
    """What a renew does through the backend: the role again, then a new leaf."""
    client.ensure_role(mount, "kubecfg", ADMIN, YEAR, KEY_TYPE)
    return client.new_leaf(mount, "kubecfg", ADMIN, 3600, KEY_TYPE)[1]


def test_the_leader_stops_in_the_middle_of_a_renew(cluster, tmp_path):
    client, token = cluster_client(cluster, tmp_path)
    mount = k8s_openbao.mount_path(client.config, "ha", "ca")
    client.ensure_mount(mount, 10 * YEAR)
    ca = client.ensure_root_ca(mount, "kubernetes-ca", 10 * YEAR, KEY_TYPE)
    renew_admin(client, mount)

    # In the middle of a renew: the role is written, then the active node stops
    # before the leaf is signed.  The first URL given is the stopped node.
    client.ensure_role(mount, "kubecfg", ADMIN, YEAR, KEY_TYPE)
    old_leader = cluster.stop_leader()
    assert old_leader is cluster.nodes[0]
    try:
        leaf = client.new_leaf(mount, "kubecfg", ADMIN, 3600, KEY_TYPE)[1]
        client.revoke(mount, leaf["serial_number"])  # idempotent writes go through too
        leaf = renew_admin(client, mount)
    except k8s_openbao.BackendError as err:  # a clean failure is allowed, once
        message = str(err)
        assert "\n" not in message and token not in message
        cluster.wait_new_leader(old_leader)
        leaf = renew_admin(client, mount)  # the re-run completes
    new_leader = cluster.wait_new_leader(old_leader)
    assert new_leader is not old_leader

    # One CA, the same as before the failover, and the leaf chains to it.
    assert client.ensure_root_ca(mount, "kubernetes-ca", 10 * YEAR, KEY_TYPE) == {
        **ca,
        "action": "adopted",
        "issuer_name": "ca",
        "ca_chain": [ca["certificate"]],
        "revoked": False,
    }
    assert set(client.list_issuers(mount)) == {ca["issuer_id"]}
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(ca["certificate"])
    leaf_file = tmp_path / "leaf.crt"
    leaf_file.write_text(leaf["certificate"])
    assert openssl("verify", "-CAfile", ca_file, leaf_file).returncode == 0
    cert = x509.load_pem_x509_certificate(leaf["certificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=kubecfg,O=system:masters"


# --------------------------------------------------------------------------
# The same through the formula's set writer: a renew whose leader stops midway
# --------------------------------------------------------------------------


class _LeaderStopsAfterFirstLeaf(k8s_openbao.OpenBaoSigner):
    """The OpenBao signer, with the active node stopped right after the first leaf is signed."""

    def __init__(self, cluster, *args):
        super().__init__(*args)
        self.raft, self.stopped = cluster, None

    def sign(self, *args):
        cert = super().sign(*args)
        if self.stopped is None:
            self.stopped = self.raft.stop_leader()
        return cert


def test_a_renew_whose_leader_stops_midway_completes_or_writes_nothing(cluster, tmp_path):
    from support import k8s_pki, snapshot

    for node in cluster.nodes:  # a node an earlier test stopped is started again
        if not node.running():
            cluster.restart(node)
    client, token = cluster_client(cluster, tmp_path)
    leader = cluster.leader()
    # the active node first: the client meets the stopped node before the others
    urls = [leader.addr] + [n.addr for n in cluster.nodes if n is not leader]
    config = k8s_openbao.parse_config(
        bs.master_opts(urls, {"method": "token", "token_file": str(tmp_path / "token")}, timeout=5)
    )
    pki_root, specs = tmp_path / "pki", k8s_pki.seed_specs()
    signer = k8s_openbao.OpenBaoSigner(config, "hafs")
    k8s_pki.ensure_set(pki_root, "hafs", specs, key_type=KEY_TYPE, signer=signer)
    folder = pki_root / "hafs"
    before = snapshot(folder)
    midway = _LeaderStopsAfterFirstLeaf(cluster, config, "hafs")
    try:
        plan, _ = k8s_pki.renew_set(pki_root, "hafs", specs, signer=midway)
        assert sorted(n for n, i in plan.items.items() if i.action != "reused") == [
            "kubecfg",
            "server",
        ]
    except k8s_openbao.BackendError as err:  # a clean failure: one line, nothing written
        assert "\n" not in str(err) and token not in str(err)
        assert snapshot(folder) == before
        cluster.wait_new_leader(midway.stopped)
        k8s_pki.renew_set(pki_root, "hafs", specs, signer=k8s_openbao.OpenBaoSigner(config, "hafs"))
    assert midway.stopped is leader
    # one CA, the one the set holds; both leaves new and chained to it
    mount = k8s_openbao.mount_path(config, "hafs", "ca")
    assert len(client.list_issuers(mount)) == 1
    assert (folder / "ca.crt").read_text() == client.read_issuer(mount, "default")["certificate"]
    assert not (folder / "ca.key").exists()
    for leaf in ("server.crt", "kubecfg.crt"):
        assert (folder / leaf).read_bytes() != before[leaf][2]
        assert openssl("verify", "-CAfile", folder / "ca.crt", folder / leaf).returncode == 0
