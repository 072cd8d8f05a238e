"""Benchmark: enrollment (a host's CSR signed on the master under the set's policy).

  a) in-process: k8s_pki.sign_request for ECDSA P-256 CSRs of the 100 nodes of
     a kubeadm set, two members each (kubelet-client, kubelet-serving), first
     enrollment then renewal: policy from cluster.yaml, CSR checks, key claim,
     signature, the master's copy written (new, then replaced) under the set's
     lock; with an ECDSA P-256 CA and an RSA-2048 CA; next to the floor: bare
     cryptography calls (parse the CSR, check its signature, build and sign
     the certificate; no policy, no file).  Target: >= 500 signatures a second.
  b) end to end through real daemons (a salt-master with peer_run, one
     salt-minion, on loopback): one enrollment (the minion makes a key, sends
     the CSR through publish.runner, the master signs, the minion writes the
     files: the state k8s_enroll.certificate_enrolled with state.single) next to
     a test.ping round trip, both through the same in-process LocalClient.
     Target: <= 3x the round trip.

Usage: .venv/bin/python bench/bench_enroll.py [--quick] [--no-daemons]
"""

import argparse
import datetime
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import support  # noqa: E402
import yaml  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from support import kubeadm as ks  # noqa: E402

k8s_pki = support.k8s_pki

NODES = [{"name": f"n{i}"} for i in range(100)]


def _csrs(count):
    return [k8s_pki.csr_for(k8s_pki.new_key("ecdsa-p256"), f"n{i}") for i in range(count)]


MEMBERS = ("kubelet-client", "kubelet-serving")


def policy_rates(work, ca_type):
    """Signatures a second of sign_request, each CSR with a key of its own: the first
    enrollment of 100 nodes (2 members each: the master's copies are new files), then
    their renewal (the copies are replaced)."""
    root = work / f"pki-{ca_type}"
    directory = ks.make_set(root, masters=ks.MASTERS[:1], nodes=NODES, key_type=ca_type)
    k8s_pki.sign_request(str(directory), "m1", "kubelet-client", _csrs(1)[0])  # warm caches
    rates = []
    for _ in ("first", "renewal"):
        requests = [
            (node["name"], member, csr)
            for (node, member), csr in zip(
                [(n, m) for n in NODES for m in MEMBERS],
                _csrs(len(NODES) * len(MEMBERS)),
                strict=True,
            )
        ]
        start, cpu = time.perf_counter(), time.process_time()
        for minion, member, csr in requests:
            k8s_pki.sign_request(str(directory), minion, member, csr)
        # wall clock, and this process's CPU time (what the code costs, without the
        # waits for a disk other processes keep busy)
        rates.append(len(requests) / (time.perf_counter() - start))
        rates.append(len(requests) / (time.process_time() - cpu))
    return rates


def floor_rate(work, ca_type, count):
    """The same signatures with bare cryptography: parse, check, build, sign; nothing else."""
    directory = work / f"pki-{ca_type}" / "c1"
    ca = k8s_pki.read_pair(str(directory), "ca")
    ca_key = k8s_pki.load_key(ca.key_bytes)
    csrs = _csrs(count)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    for data in csrs:
        csr = x509.load_pem_x509_csr(data)
        assert csr.is_signature_valid
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "system:node:n1")]))
            .issuer_name(ca.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(ca_key, hashes.SHA256())
        )
        assert cert
    return count / (time.perf_counter() - start)


# --------------------------------------------------------------------------
# b) end to end through real daemons
# --------------------------------------------------------------------------


def _start_daemons(work, master_extra=None):
    """A salt-master and a salt-minion 'n1' on loopback, configs under ``work``."""
    formula = support.formula_root(work)
    master_root, minion_root = work / "master", work / "minion"
    for path in (master_root / "var/cache/salt/master/proc", minion_root):
        path.mkdir(parents=True, exist_ok=True)
    port = 45000 + os.getpid() % 5000
    master_conf = work / "conf-master"
    master_conf.mkdir()
    (master_conf / "master").write_text(
        yaml.safe_dump(
            {
                "root_dir": str(master_root),
                "interface": "127.0.0.1",
                "publish_port": port,
                "ret_port": port + 1,
                "auto_accept": True,
                "file_roots": {"base": [str(formula)]},
                "k8s_helper": {"pki_root": str(work / "pki")},
                "peer_run": {".*": ["k8s-helper.sign_csr"]},
                "runner_dirs": [str(support.REPO / "_runners")],
                "utils_dirs": [str(support.REPO / "_utils")],
                "user": "root",
                **(master_extra or {}),
            }
        )
    )
    minion_conf = work / "conf-minion"
    minion_conf.mkdir()
    (minion_conf / "minion").write_text(
        yaml.safe_dump(
            {
                "id": "n1",
                "root_dir": str(minion_root),
                "master": "127.0.0.1",
                "master_port": port + 1,
                "publish_port": port,
                "user": "root",
                "enable_fqdns_grains": False,
            }
        )
    )
    bin_dir = support.VENV_BIN
    procs = [
        subprocess.Popen(
            [str(bin_dir / "salt-master"), "-c", str(master_conf), "-l", "quiet"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,  # the master prints each peer_run call's return
        )
    ]
    time.sleep(3)
    procs.append(
        subprocess.Popen(
            [str(bin_dir / "salt-minion"), "-c", str(minion_conf), "-l", "quiet"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
    )
    return master_conf, minion_conf, procs


def _stop(procs):
    for proc in reversed(procs):
        os.killpg(proc.pid, signal.SIGTERM)  # the daemon's own process group, started here
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def end_to_end(work, runs):
    import salt.client  # noqa: PLC0415
    import salt.config  # noqa: PLC0415

    ks.make_set(work / "pki", tag="c1", masters=ks.MASTERS[:1], nodes=[{"name": "n1"}])
    master_conf, _, procs = _start_daemons(work)
    try:
        opts = salt.config.client_config(str(master_conf / "master"))
        client = salt.client.LocalClient(mopts=opts)
        for _ in range(60):
            if client.cmd("n1", "test.ping", timeout=5).get("n1"):
                break
            time.sleep(1)
        else:
            raise SystemExit("the minion did not answer")
        assert client.cmd("n1", "saltutil.sync_all", timeout=120)["n1"]
        out = work / "host"
        ping, enroll, nop, peer, refused = [], [], [], [], []
        for index in range(runs):
            start = time.perf_counter()
            assert client.cmd("n1", "test.ping", timeout=30)["n1"] is True
            ping.append(time.perf_counter() - start)
            state = [
                "k8s_enroll.certificate_enrolled",
                f"name={out}/{index}/kubelet-client.crt",
                f"key={out}/{index}/kubelet-client.key",
                f"ca={out}/{index}/ca.crt",
                "member=kubelet-client",
                "cluster_tag=c1",
            ]
            start = time.perf_counter()
            ret = client.cmd("n1", "state.single", state, timeout=60)["n1"]
            enroll.append(time.perf_counter() - start)
            result = next(iter(ret.values()))
            assert result["result"] is True and result["changes"], result
            # where the time goes: a state that does nothing, and the peer_run call alone
            start = time.perf_counter()
            client.cmd("n1", "state.single", ["test.succeed_without_changes", "name=x"])
            nop.append(time.perf_counter() - start)
            csr = k8s_pki.csr_for(k8s_pki.new_key("ecdsa-p256"), "n1").decode()
            request = [{"__kwarg__": True, "csr": csr, "member": "kubelet-serving"}]
            request[0]["cluster_tag"] = "c1"
            start = time.perf_counter()
            got = client.cmd("n1", "publish.runner", ["k8s-helper.sign_csr", request])["n1"]
            peer.append(time.perf_counter() - start)
            assert "cert" in got, got
            # the same round trip to the master, for a function peer_run does not allow:
            # what the transport costs, without a runner run
            start = time.perf_counter()
            assert not client.cmd("n1", "publish.runner", ["test.arg"])["n1"]
            refused.append(time.perf_counter() - start)
        return {
            "test.ping": statistics.median(ping),
            "enrollment (state.single k8s_enroll.certificate_enrolled)": statistics.median(enroll),
            "state.single test.succeed_without_changes": statistics.median(nop),
            "publish.runner k8s-helper.sign_csr alone": statistics.median(peer),
            "publish.runner of a function peer_run refuses (no runner run)": statistics.median(
                refused
            ),
        }
    finally:
        _stop(procs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-daemons", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else 7
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-enroll-"))
    try:
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        for ca_type in ("ecdsa-p256", "rsa-2048"):
            rates = [policy_rates(work / f"run{i}", ca_type) for i in range(runs)]
            floors = [floor_rate(work / f"run{i}", ca_type, 200) for i in range(runs)]
            first, first_cpu, renewal, renewal_cpu = (
                statistics.median(r[i] for r in rates) for i in range(4)
            )
            print(
                f"a) sign_request, {ca_type} CA, ECDSA P-256 CSRs, 100 nodes x 2 members: "
                f"first enrollment {first:.0f}/s, renewal {renewal:.0f}/s (per CPU second: "
                f"{first_cpu:.0f}/s, {renewal_cpu:.0f}/s; floor, bare cryptography: "
                f"{statistics.median(floors):.0f}/s), median of {runs} runs"
            )
        if not args.no_daemons:
            runs = 5 if args.quick else 15
            times = end_to_end(work / "e2e", runs)
            ping = times["test.ping"]
            print(f"b) through a real master and minion, LocalClient.cmd, median of {runs}:")
            for what, seconds in times.items():
                print(f"   {what}: {seconds * 1000:.0f} ms ({seconds / ping:.1f}x test.ping)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
