"""kubernetes.orch.replace_certs on a kubeadm-profile set, with real daemons.

A real salt-master with the formula's k8s_kubeadm ext_pillar and three real
salt-minions (two masters, one node), each in its own sandbox, as in
tests/integration/test_replace_daemons.py (whose host set-up this module reuses):
the kubelet is a recording init script, no container runtime tool is there.

What cannot run here: kube-apiserver.  Each master's apiserver is
tests/support/tlsserver.py on that master's ``secure_port``, presenting the
``/etc/kubernetes/pki/apiserver.crt`` on that master's disk and trusting its
``pki/ca.crt`` (read again whenever they change, as a restarted static pod
would).  The orchestration's health check (``k8s_cluster.healthz``) must get
``ok`` from it with kubeadm's files: the cluster CA laid down and the
apiserver-kubelet-client certificate, checking the master's own name.

Not run: the clean-up (``cleanup: false``): the cluster API it needs is
tests/integration/test_replace_daemons.py's business.  The final
``k8s-helper.verify`` runs: every host holds exactly its share of the new set.
"""

import contextlib
import json

import pytest
import support
from support import k8s_pki, sandbox, tlsserver
from test_replace_daemons import free_port, new_host, steps

pytestmark = [pytest.mark.daemons, pytest.mark.sandbox]

MASTERS = ("k8s-master-1", "k8s-master-2")
NODES = ("k8s-node-1",)
TAG = "kprod"
ETC = "/etc/kubernetes"
ACTIONS = "/var/log/kubelet.actions"
PREFIX = "kubernetes-orch-replace"

# The minions' own pillar: only where each master's apiserver listens (the
# files come from the k8s_kubeadm ext_pillar).
PILLAR = """\
{%- set ports = @PORTS@ %}
{%- if grains['id'] in ports %}
kubernetes:
  lookup:
    api_server: {local_address: 127.0.0.1}
    apiserver: {secure_port: {{ ports[grains['id']] }} }
{%- endif %}
"""


class Cluster:
    def __init__(self, master, hosts, pki, ports):
        self.master, self.hosts, self.pki, self.ports = master, hosts, pki, ports
        self.run = master.salt_run_cli(timeout=300)
        self.cli = master.salt_cli(timeout=180)
        self.apiservers = {}

    def file(self, minion, path):
        upper = self.hosts[minion].sandbox.upper(path)
        return upper.read_bytes() if upper.exists() else None

    def actions(self, minion):
        data = self.file(minion, ACTIONS) or b""
        return [(w, float(t)) for w, t in (line.split() for line in data.decode().splitlines())]

    def start_apiserver(self, minion):
        box = self.hosts[minion].sandbox
        server = tlsserver.TLSServer(
            box.upper(f"{ETC}/pki/apiserver.crt"),
            box.upper(f"{ETC}/pki/apiserver.key"),
            box.upper(f"{ETC}/pki/ca.crt"),
            port=self.ports[minion],
            reload=True,
        )
        self.apiservers[minion] = server.__enter__()

    def stop_apiservers(self):
        for minion in list(self.apiservers):
            self.apiservers.pop(minion).__exit__(None, None, None)

    def orchestrate(self, settings):
        ret = self.run.run(
            "state.orchestrate",
            "kubernetes.orch.replace_certs",
            f"pillar={json.dumps({'k8s_replace': settings})}",
        )
        data = ret.data if isinstance(ret.data, dict) else json.loads(ret.stdout)
        return ret, steps(data)


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory, host_untouched):
    reason = sandbox.available()
    if reason:
        pytest.skip(f"sandbox unavailable: {reason}")
    base = tmp_path_factory.mktemp("replace-kubeadm")
    pki = base / "pki"
    ports = {minion: free_port() for minion in MASTERS}
    pillar_root = base / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text("base:\n  'k8s-*':\n    - k8s\n")
    (pillar_root / "k8s.sls").write_text(PILLAR.replace("@PORTS@", json.dumps(ports)))
    master = salt_factories.salt_master_daemon(
        "k8s-salt-kubeadm",
        overrides={
            "runner_dirs": [str(support.REPO / "_runners")],
            "utils_dirs": [str(support.REPO / "_utils")],
            "pillar_dirs": [str(support.REPO / "_pillar")],
            "outputter_dirs": [str(support.REPO / "_output")],
            "file_roots": {"base": [str(support.formula_root(base))]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "ext_pillar": [{"k8s_kubeadm": {"cluster_tag": TAG}}],
            "k8s_helper": {"pki_root": str(pki)},
            "gather_job_timeout": 5,
        },
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(master.started())
        masters = json.dumps([{"name": m, "ip": f"127.0.0.{i + 1}"} for i, m in enumerate(MASTERS)])
        ret = master.salt_run_cli().run(
            "k8s-helper.generate_certs",
            f"cluster_tag={TAG}",
            "profile=kubeadm",
            f"masters={masters}",
            f"nodes={json.dumps([{'name': n} for n in NODES])}",
            "key_type=ecdsa-p256",
        )
        assert ret.returncode == 0, ret.stdout + ret.stderr
        hosts = {}
        for minion in MASTERS + NODES:
            hosts[minion] = new_host(master, base, minion)
        support.start_together(stack, hosts.values())
        c = Cluster(master, hosts, pki, ports)
        stack.callback(c.stop_apiservers)
        ret = c.cli.run("state.apply", "kubernetes.running", minion_tgt="k8s-*")
        assert ret.returncode == 0, ret.stdout
        c.set_a = {m: c.file(m, f"{ETC}/pki/ca.crt") for m in MASTERS + NODES}
        yield c


def test_replace_rolls_a_kubeadm_cluster(cluster):
    """force_regen makes new CAs; the masters (found by their kubeadm pillar) are
    taken down and up one at a time, each apiserver answering with the new files
    before the next; then the node."""
    for minion in MASTERS:
        cluster.start_apiserver(minion)
    marks = {m: len(cluster.actions(m)) for m in MASTERS + NODES}
    ret, done = cluster.orchestrate(
        {
            "cluster_tag": TAG,
            "generate": {"profile": "kubeadm", "force_regen": True},
            "health_wait": 30,
            "health_interval": 0.5,
            "cleanup": False,
        }
    )
    assert ret.returncode == 0, ret.stdout + ret.stderr
    rolled = [
        f"{PREFIX}-set",
        f"{PREFIX}-masters-refresh-pillar",
        *(f"{PREFIX}-{m}-{s}" for m in MASTERS for s in ("kubelet-removed", "running", "healthz")),
        f"{PREFIX}-nodes-refresh-pillar",
        f"{PREFIX}-nodes-running",
        f"{PREFIX}-verify",
    ]
    assert sorted(done) == sorted(rolled)
    assert all(done[step]["result"] is True for step in rolled)
    new_ca = (cluster.pki / TAG / "ca.crt").read_bytes()
    assert new_ca != cluster.set_a[MASTERS[0]]
    for minion in MASTERS + NODES:
        assert cluster.file(minion, f"{ETC}/pki/ca.crt") == new_ca, minion
        conf = cluster.file(minion, f"{ETC}/kubelet.conf")
        assert conf == (cluster.pki / TAG / f"hosts/{minion}/kubelet.conf").read_bytes()
    for minion in MASTERS:
        own = cluster.file(minion, f"{ETC}/pki/apiserver.crt")
        assert own == (cluster.pki / TAG / f"hosts/{minion}/apiserver.crt").read_bytes()
        # the health check verified the master's own apiserver with the new CA,
        # presenting kubeadm's apiserver-kubelet-client certificate
        health = json.dumps(done[f"{PREFIX}-{minion}-healthz"])
        assert k8s_pki.fingerprint(k8s_pki.load_cert(new_ca)) in health
        clients = cluster.apiservers[minion].clients
        assert {"commonName": "kube-apiserver-kubelet-client"} | {
            "organizationName": "kubeadm:cluster-admins"
        } in clients
        # the static pods' manifests changed with their certificates
        manifest = cluster.file(minion, f"{ETC}/manifests/kube-apiserver.yaml").decode()
        assert "kubernetes-formula/certificates-sha256" in manifest
    # one master at a time: master 2 stopped only after master 1 was healthy again
    first = [a for a in cluster.actions(MASTERS[0])[marks[MASTERS[0]] :]]
    second = [a for a in cluster.actions(MASTERS[1])[marks[MASTERS[1]] :]]
    assert [w for w, _ in first] == ["stop", "start"] and [w for w, _ in second] == [
        "stop",
        "start",
    ]
    assert first[-1][1] < second[0][1]
    node = [w for w, _ in cluster.actions(NODES[0])[marks[NODES[0]] :]]
    assert node == ["restart"]
