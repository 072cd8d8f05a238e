"""Real etcd members on loopback, wired the way kubeadm wires them, for rolling tests.

Each member reads its certificates from a host folder laid out like a master's
/etc/kubernetes (``pki/etcd/ca.crt``, ``pki/etcd/server.crt``, ``pki/etcd/peer.crt``,
...), made from a set by :func:`lay_out_host` with the formula's own map of what
a master receives (``kubeadm_host_files``).  A member can be stopped and started
again with another host folder (a rolling restart); its data dir stays.  Every
etcd listens on 127.0.0.x only and is killed by :meth:`EtcdCluster.stop`; every
wait is bounded.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import support

k8s_pki = support.k8s_pki

HAVE_ETCD = bool(shutil.which("etcd") and shutil.which("etcdctl"))


def free_port(ip):
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def lay_out_host(set_dir, host, into, ca_keys=True):
    """A master's files of the set at ``set_dir``, where kubeadm keeps them, under ``into``.

    ``ca_keys=False``: a set whose CA keys are kept elsewhere (the openbao
    backend), so the master has none.
    """
    for dest, rel in k8s_pki.kubeadm_host_files(host, True).items():
        if not ca_keys and rel.removesuffix(".key") in k8s_pki.profiles.KUBEADM_CAS:
            continue
        path = into / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(set_dir / rel, path)
        os.chmod(path, k8s_pki.kubeadm_file_mode(dest))
    return into


class EtcdCluster:
    """A cluster of real etcd processes on loopback (one member per master)."""

    def __init__(self, base, masters, token="rotation"):
        self.base, self.token = base, token
        base.mkdir(parents=True, exist_ok=True)
        self.members = {
            m["name"]: {"ip": m["ip"], "client": free_port(m["ip"]), "peer": free_port(m["ip"])}
            for m in masters
        }
        self.initial = ",".join(
            f"{name}=https://{m['ip']}:{m['peer']}" for name, m in self.members.items()
        )
        self.procs = {}

    def endpoint(self, name):
        member = self.members[name]
        return f"https://{member['ip']}:{member['client']}"

    def start(self, name, host_dir):
        """Start (or start again) member ``name`` with the certificates under ``host_dir``."""
        member, pki = self.members[name], host_dir / "pki" / "etcd"
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_member()
        cmd = [
            "etcd",
            f"--name={name}",
            f"--data-dir={self.base / f'{name}.data'}",
            f"--listen-client-urls={self.endpoint(name)}",
            f"--advertise-client-urls={self.endpoint(name)}",
            f"--listen-peer-urls=https://{member['ip']}:{member['peer']}",
            f"--initial-advertise-peer-urls=https://{member['ip']}:{member['peer']}",
            f"--initial-cluster={self.initial}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.token}",
            f"--cert-file={pki / 'server.crt'}",
            f"--key-file={pki / 'server.key'}",
            f"--trusted-ca-file={pki / 'ca.crt'}",
            "--client-cert-auth",
            f"--peer-cert-file={pki / 'peer.crt'}",
            f"--peer-key-file={pki / 'peer.key'}",
            f"--peer-trusted-ca-file={pki / 'ca.crt'}",
            "--peer-client-cert-auth",
            "--listen-metrics-urls=",
        ]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.base)
        self.procs[name] = (proc, log)
        return proc

    def stop_member(self, name):
        """Stop one member the way a restart does (SIGTERM, then SIGKILL after 20 s)."""
        proc, log = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()

    def log(self, name):
        return (self.base / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self):
        for name in list(self.procs):
            proc, log = self.procs.pop(name)
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            log.close()


def etcdctl(host_dir, endpoints, *args, client="apiserver-etcd-client", wait=10):
    """etcdctl v3 as a master's ``client`` (under pki/) would call, trusting its pki/etcd/ca.crt."""
    pki = host_dir / "pki"
    cmd = [
        "etcdctl",
        f"--endpoints={','.join(endpoints)}",
        f"--cacert={pki / 'etcd' / 'ca.crt'}",
        f"--cert={pki / (client + '.crt')}",
        f"--key={pki / (client + '.key')}",
        f"--dial-timeout={min(wait, 3)}s",
        f"--command-timeout={wait}s",
    ]
    env = {**os.environ, "ETCDCTL_API": "3"}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=wait + 20, check=False
    )


def wait_healthy(cluster, host_dir, names, deadline=60):
    """Wait until every member of ``names`` answers ``endpoint health``; fail after ``deadline``."""
    endpoints = [cluster.endpoint(n) for n in names]
    end = time.monotonic() + deadline
    while True:
        proc = etcdctl(host_dir, endpoints, "endpoint", "health", client="etcd/healthcheck-client")
        if proc.returncode == 0 and proc.stdout.count("is healthy") + proc.stderr.count(
            "is healthy"
        ) == len(names):
            return proc
        for name in names:
            member = cluster.procs.get(name)
            if member is not None and member[0].poll() is not None:
                raise AssertionError(
                    f"etcd {name} exited ({member[0].returncode}):\n{cluster.log(name)}"
                )
        if time.monotonic() > end:
            logs = "\n".join(f"--- {n}\n{cluster.log(n)}" for n in names)
            raise AssertionError(f"etcd not healthy in {deadline}s: {proc.stderr}\n{logs}")
        time.sleep(0.2)
