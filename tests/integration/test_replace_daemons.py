"""The orchestrations with real daemons: kubernetes.orch.replace_certs and
kubernetes.orch.rotate_ca, run by ``salt-run state.orchestrate`` on a real
salt-master against four real salt-minions (two masters, two nodes).

Each minion daemon runs inside its own sandbox (tests/support/sandbox.py): a private
mount namespace with overlays over /etc, /var, /srv and /usr/local, so every
host writes the real paths of its own "machine" and the host stays untouched.
Inside, Salt drives a real init script standing in for the kubelet service
(tests/support/services.py: systemctl hidden, ``runlevel`` stand-in); the script
records each start, stop and restart with its time.  The hosts trust no public
CA (an empty /etc/ca-certificates.conf in each sandbox), so the real
``update-ca-certificates`` builds a system bundle of the cluster's CAs alone.  These hosts have no
container runtime (docker, ctr and crictl are hidden), so
``kubernetes.kubelet.removed`` stops the kubelet and finds no containers.

What cannot run here, and what stands in for it (no Kubernetes binary can be
installed on this machine):

- each master's kube-apiserver is tests/support/tlsserver.py on that master's
  ``secure_port``, presenting the ``server.cert``/``server.key`` on that
  master's disk and trusting its ``ca.crt``, read again whenever they change:
  what an apiserver restarted by its kubelet would serve.  The orchestration's
  health check (``k8s_cluster.healthz`` on the master) must get ``ok`` from it,
  verifying its certificate with the ``ca.crt`` just laid down;
- the cluster's API, reached through the masters' admin kubeconfig, is
  tests/support/kubeapi.py: the real ``kubectl`` of the clean-up step talks to a
  stand-in implementing only the endpoints it uses (discovery, list and delete
  Secrets, get and patch DaemonSets/Deployments).  When it is not running, the
  clean-up step must say "no cluster reachable" and fail.
"""

import contextlib
import json
import os
import re
import socket
import threading
import time

import attr
import pytest
import support
from saltfactories.daemons.minion import SaltMinion
from support import k8s_pki, kubeapi, sandbox, services, tlsserver

pytestmark = [pytest.mark.daemons, pytest.mark.sandbox]

MASTERS = ("k8s-master-1", "k8s-master-2")
NODES = ("k8s-node-1", "k8s-node-2")
TAG = "prod"
FQDN = "kubernetes.api"
SRV = "/srv/kubernetes"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ACTIONS = "/var/log/kubelet.actions"
RUNTIME_CLIS = ("docker", "ctr", "crictl")

# The kubelet stand-in: tests/support/services.py's script, each action with its time.
INIT_SCRIPT = (
    services.INIT_SCRIPT.replace(
        "start) echo start >> $ACTIONS", 'start) echo "start $(date +%s.%N)" >> $ACTIONS'
    )
    .replace("stop) echo stop >> $ACTIONS", 'stop) echo "stop $(date +%s.%N)" >> $ACTIONS')
    .replace(
        'restart|force-reload) echo "$1" >> $ACTIONS',
        'restart|force-reload) echo "$1 $(date +%s.%N)" >> $ACTIONS',
    )
)

# Rendered on the master for each minion: the certificates straight from the
# set (masters get the apiserver's pair), the role, and where the apiservers
# listen: each master's own on its port, the cluster's API on another.
PILLAR = """\
{%- set pki = "@PKI@/" %}
{%- set ports = @PORTS@ %}
{%- set id = grains['id'] %}
kubernetes:
  k8s_env: @TAG@
  role: {{ 'master' if id in ports else 'node' }}
  lookup:
    api_server: {address: 127.0.0.1, port: @API@, local_address: 127.0.0.1}
{%- if id in ports %}
    apiserver: {secure_port: {{ ports[id] }} }
{%- endif %}
  certs:
    "ca.crt": {{ salt['file.read'](pki ~ 'ca.crt') | json }}
    "kubecfg.crt": {{ salt['file.read'](pki ~ 'kubecfg.crt') | json }}
    "kubecfg.key": {{ salt['file.read'](pki ~ 'kubecfg.key') | json }}
{%- if id in ports %}
    "server.cert": {{ salt['file.read'](pki ~ 'server.crt') | json }}
    "server.key": {{ salt['file.read'](pki ~ 'server.key') | json }}
{%- endif %}
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@attr.s(kw_only=True, slots=True)
class Host(SaltMinion):
    """A salt-minion daemon in its own sandbox, with init scripts driven for
    real and no container runtime tools."""

    sandbox = attr.ib(repr=False)
    prelude = attr.ib(repr=False)

    def cmdline(self, *args):
        inner = ["sh", "-ec", self.prelude + 'exec "$@"', "host", *SaltMinion.cmdline(self, *args)]
        return self.sandbox.wrap(inner)


def _host_prelude(box, bindir):
    """Inside the sandbox: systemctl hidden (Salt then drives init scripts), the
    runtimes' tools hidden, ``runlevel`` stand-in first on PATH."""
    hidden = set()
    for folder in os.environ["PATH"].split(":"):
        for tool in RUNTIME_CLIS:
            path = os.path.realpath(os.path.join(folder, tool))
            if not os.path.isfile(path):
                continue
            if path.startswith("/usr/local/"):
                box.run(["rm", "-f", path], check=True)  # in the overlay only
            else:
                hidden.add(path)
    lines = [f"mount --bind /dev/null {p}" for p in sorted(hidden)]
    lines += [
        "for f in /usr/bin/systemctl /bin/systemctl; do",
        '  if [ -e "$f" ] && [ ! -L "$f" ]; then mount --bind /dev/null "$f"; fi',
        "done",
        f'export PATH="{bindir}:$PATH"',
    ]
    return "\n".join(lines) + "\n"


def new_host(master, base, minion):
    """A salt-minion daemon (not started yet) in a sandbox of its own under ``base``,
    with the kubelet stand-in installed as an init script."""
    box = sandbox.Sandbox(base / minion)
    # A host that trusts no public CA: update-ca-certificates then
    # builds a bundle of the cluster's CAs alone, in 0.05 s instead of
    # ~1 s (the full system bundle: tests/functional/test_certs_states.py).
    box.upper("/etc/ca-certificates.conf").write_text("# no public CA here\n")
    sysv = services.SysV(box, base / f"{minion}-bin")
    script = box.upper("/etc/init.d/kubelet")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(INIT_SCRIPT.format(name="kubelet"))
    script.chmod(0o755)
    sysv.run(["update-rc.d", "kubelet", "defaults"], check=True)
    sysv.install_binary("/usr/bin/kubelet")  # kubernetes.running checks it is there
    return master.salt_minion_daemon(
        minion,
        factory_class=Host,
        sandbox=box,
        prelude=_host_prelude(box, sysv.bindir),
        overrides={
            "enable_fqdns_grains": False,
            # The formula's modules straight from the checkout (no
            # saltutil.sync_all: tests/integration/test_certs_daemons.py covers it).
            "module_dirs": [str(support.REPO / "_modules")],
            "states_dirs": [str(support.REPO / "_states")],
            "utils_dirs": [str(support.REPO / "_utils")],
        },
    )


class Cluster:
    """The daemons, the stand-ins and what the tests look at."""

    def __init__(self, master, hosts, pki, ports, api_port, events):
        self.master, self.hosts, self.pki, self.events = master, hosts, pki, events
        self.returns = []
        self.ports, self.api_port = ports, api_port
        self.run = master.salt_run_cli(timeout=300)
        self.cli = master.salt_cli(timeout=180)
        self.apiservers = {}
        self.api = None
        self.outputs = []

    # -- each host's disk, from its sandbox's upper layer (a plain host folder)

    def file(self, minion, path):
        upper = self.hosts[minion].sandbox.upper(path)
        return upper.read_bytes() if upper.exists() else None

    def actions(self, minion):
        data = self.file(minion, ACTIONS) or b""
        return [(w, float(t)) for w, t in (line.split() for line in data.decode().splitlines())]

    def disk(self, minion):
        box = self.hosts[minion].sandbox
        return {
            path: box.upper(path).read_bytes()
            for path in (
                f"{SRV}/ca.crt",
                f"{SRV}/kubecfg.crt",
                f"{SRV}/server.cert",
                "/var/lib/kubelet/ca.crt",
                "/usr/local/share/ca-certificates/kubernetes-ca.crt",
                "/etc/kubernetes/manifests/kube-apiserver.yaml",
                BUNDLE,
            )
            if box.upper(path).exists()
        }

    # -- stand-ins

    def start_apiserver(self, minion):
        box = self.hosts[minion].sandbox
        server = tlsserver.TLSServer(
            box.upper(f"{SRV}/server.cert"),
            box.upper(f"{SRV}/server.key"),
            box.upper(f"{SRV}/ca.crt"),
            port=self.ports[minion],
            reload=True,
        )
        self.apiservers[minion] = server.__enter__()

    def stop_apiserver(self, minion):
        self.apiservers.pop(minion).__exit__(None, None, None)

    def start_api(self):
        """The cluster's API (behind the admin kubeconfig), with the first
        master's files, and the objects the clean-up acts on."""
        box = self.hosts[MASTERS[0]].sandbox
        api = kubeapi.KubeAPI(
            box.upper(f"{SRV}/server.cert"),
            box.upper(f"{SRV}/server.key"),
            box.upper(f"{SRV}/ca.crt"),
            port=self.api_port,
            reload=True,
        )
        for name in ("default-token-aaaaa", "canal-token-bbbbb"):
            api.add(kubeapi.secret(name))
        api.add(kubeapi.secret("opaque-kept", kind="Opaque"))
        api.add(kubeapi.workload("daemonsets", "canal"))
        api.add(kubeapi.workload("deployments", "coredns"))
        self.api = api.__enter__()

    def stop_api(self):
        if self.api is not None:
            self.api.__exit__(None, None, None)
            self.api = None

    # -- running the orchestrations

    def orchestrate(self, sls, key, settings, out=None):
        """Run the orchestration; with ``out`` (an outputter), salt-run prints
        what an operator sees, and the return itself is read from the runner's
        return event on the master's bus (``salt/run/<jid>/ret``)."""
        args = [
            "state.orchestrate",
            f"kubernetes.orch.{sls}",
            f"pillar={json.dumps({key: settings})}",
        ]
        if out is None:
            ret = self.run.run(*args)
            self.outputs.append(ret.stdout + ret.stderr)
            return ret, steps(ret.data if isinstance(ret.data, dict) else json.loads(ret.stdout))
        started = time.time()
        # salt-run's own console log level (factories would make it critical)
        ret = self.run.run(*args, f"--out={out}", "--log-level=warning")
        self.outputs.append(ret.stdout + ret.stderr)
        data = self._orchestrate_return(started)
        self.returns.append(data)
        return ret, steps(data)

    def _orchestrate_return(self, after):
        """The return of the state.orchestrate run started after ``after``, from
        its ``salt/run/<jid>/ret`` event (salt-run fires it as it exits; the
        master relays it to the tests' event listener a moment later)."""
        deadline = time.time() + 60
        while time.time() < deadline:
            found = [
                event.data["return"]
                for event in self.events.get_events([(self.master.id, "salt/run/*/ret")], after)
                if event.data.get("fun") == "runner.state.orchestrate"
            ]
            if found:
                (data,) = found
                return data
            time.sleep(0.2)
        raise AssertionError("no salt/run/<jid>/ret event of state.orchestrate reached the tests")


def steps(data):
    """{state id: {result, comment, changes}} of a state.orchestrate return."""
    data = data.get("data", data)
    found = {}
    for per_minion in data.values():
        if not isinstance(per_minion, dict):
            continue
        for key, step in per_minion.items():
            if isinstance(step, dict) and "_|-" in key:
                found[key.split("_|-")[1]] = step
    return found


def highstate_lines(master, data):
    """How many lines salt-run prints for ``data`` (a state.orchestrate
    return) without --out: Salt's highstate outputter, the one the return
    names, with the master's options (colour off, as in a pipe)."""
    import salt.output  # noqa: PLC0415

    opts = {**master.config, "color": False}
    return len(salt.output.out_format(data["data"], data["outputter"], opts).splitlines())


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory, host_untouched, event_listener):
    reason = sandbox.available()
    if reason:
        pytest.skip(f"sandbox unavailable: {reason}")
    base = tmp_path_factory.mktemp("replace")
    pki = base / "pki"
    ports = {minion: free_port() for minion in MASTERS}
    api_port = free_port()
    pillar_root = base / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text("base:\n  'k8s-*':\n    - k8s\n")
    (pillar_root / "k8s.sls").write_text(
        PILLAR.replace("@PKI@", str(pki / TAG))
        .replace("@PORTS@", json.dumps(ports))
        .replace("@TAG@", TAG)
        .replace("@API@", str(api_port))
    )
    master = salt_factories.salt_master_daemon(
        "k8s-salt",
        overrides={
            "runner_dirs": [str(support.REPO / "_runners")],
            "utils_dirs": [str(support.REPO / "_utils")],
            "outputter_dirs": [str(support.REPO / "_output")],
            "file_roots": {"base": [str(support.formula_root(base))]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "k8s_helper": {"pki_root": str(pki)},
            "gather_job_timeout": 5,
        },
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(master.started())
        # The cluster as it runs before the replacement: set A, made first (the
        # pillar reads it as soon as a minion connects).
        ret = master.salt_run_cli().run(
            "k8s-helper.generate_certs", f"cluster_tag={TAG}", "key_type=ecdsa-p256"
        )
        assert ret.returncode == 0, ret.stderr
        hosts = {}
        for minion in MASTERS + NODES:
            hosts[minion] = new_host(master, base, minion)
        support.start_together(stack, hosts.values())
        c = Cluster(master, hosts, pki, ports, api_port, event_listener)
        stack.callback(c.stop_api)
        stack.callback(lambda: [c.stop_apiserver(m) for m in list(c.apiservers)])
        ret = c.cli.run("state.apply", "kubernetes.running", minion_tgt="k8s-*")
        assert ret.returncode == 0, ret.stdout
        c.set_a = {name: (pki / TAG / name).read_bytes() for name in support.SEED_FILES}
        yield c


def run_span(states):
    """(first start, last end) in seconds of the day, of one minion's state run."""

    def seconds(clock):
        h, m, sec = clock.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)

    starts = [seconds(r["start_time"]) for r in states.values()]
    ends = [seconds(r["start_time"]) + r["duration"] / 1000 for r in states.values()]
    return min(starts), max(ends)


def fps_of(data):
    return [k8s_pki.fingerprint(c) for c in k8s_pki.load_certs(data)]


# --------------------------------------------------------------------------
# replace_certs
# --------------------------------------------------------------------------


def test_an_unhealthy_master_stops_the_run_and_the_rest_is_untouched(cluster):
    """k8s-master-1's apiserver does not come up: after its removal and
    restart the health check fails, and k8s-master-2 and the nodes are not
    touched (their kubelets and disks as they were)."""
    before = {m: (cluster.actions(m), cluster.disk(m)) for m in MASTERS[1:] + NODES}
    first_actions = cluster.actions(MASTERS[0])
    ret, done = cluster.orchestrate(
        "replace_certs",
        "k8s_replace",
        {
            "cluster_tag": TAG,
            "generate": {"force_regen": True},
            "health_wait": 2,
            "health_interval": 0.5,
        },
        out="k8s_orch",
    )
    assert ret.returncode != 0
    prefix = "kubernetes-orch-replace"
    # What the operator reads (--out=k8s_orch): the failed step, the host and
    # the health check's reason, each on one line; the steps after it skipped.
    lines = ret.stdout.splitlines()
    assert f"  FAILED   {prefix}-{MASTERS[0]}-healthz" in lines, ret.stdout + ret.stderr
    failed = lines.index(f"  FAILED   {prefix}-{MASTERS[0]}-healthz")
    assert lines[failed + 1].startswith(
        f"    {MASTERS[0]}: the apiserver at https://127.0.0.1:{cluster.ports[MASTERS[0]]}/healthz "
        "is not healthy: "
    )
    assert lines[failed + 1].endswith("connection refused (nothing listening)")
    assert f"  skipped  {prefix}-{MASTERS[1]}-running" in lines
    assert lines[-1].startswith("10 steps: 1 FAILED, 2 changed, 2 ok, 5 skipped")
    assert len(lines) < 30, ret.stdout
    assert highstate_lines(cluster.master, cluster.returns[-1]) > 400
    assert done[f"{prefix}-set"]["result"] is True
    assert done[f"{prefix}-{MASTERS[0]}-kubelet-removed"]["result"] is True
    assert done[f"{prefix}-{MASTERS[0]}-running"]["result"] is True
    health = done[f"{prefix}-{MASTERS[0]}-healthz"]
    assert health["result"] is False
    text = json.dumps(health)
    assert (
        f"the apiserver at https://127.0.0.1:{cluster.ports[MASTERS[0]]}/healthz is not healthy"
        in text
    )
    assert "connection refused (nothing listening)" in text
    # Nothing after the failed check ran (the orchestration stops at the first
    # failure: the node batches run with failhard, which ends the whole run).
    for later in (
        f"{prefix}-{MASTERS[1]}-kubelet-removed",
        f"{prefix}-{MASTERS[1]}-running",
        f"{prefix}-{MASTERS[1]}-healthz",
        f"{prefix}-nodes-refresh-pillar",
        f"{prefix}-nodes-running",
    ):
        assert done[later]["result"] is False
        assert "One or more requisite failed" in done[later]["comment"], later
    assert f"{prefix}-cluster-cleanup" not in done and f"{prefix}-verify" not in done
    # k8s-master-1 was taken down and brought up with the new set ...
    new_ca = (cluster.pki / TAG / "ca.crt").read_bytes()
    assert fps_of(new_ca) != fps_of(cluster.set_a["ca.crt"])
    assert cluster.file(MASTERS[0], f"{SRV}/ca.crt") == new_ca
    assert [w for w, _ in cluster.actions(MASTERS[0])[len(first_actions) :]] == ["stop", "start"]
    # ... and nobody else was touched.
    for minion, (actions, disk) in before.items():
        assert cluster.actions(minion) == actions, minion
        assert cluster.disk(minion) == disk, minion
        assert cluster.file(minion, f"{SRV}/ca.crt") == cluster.set_a["ca.crt"]


def test_replace_with_the_prepared_set_rolls_everything(cluster):
    """The set generated by the failed run is taken as it is (generate: false);
    both apiservers come up with it; the nodes follow in batches of one.  The
    cluster's API is not reachable, so the clean-up step says so and fails;
    the final verify runs all the same and passes on every host."""
    for minion in MASTERS:
        cluster.start_apiserver(minion)
    marks = {m: len(cluster.actions(m)) for m in MASTERS + NODES}
    prepared = {n: (cluster.pki / TAG / n).read_bytes() for n in support.SEED_FILES}
    ret, done = cluster.orchestrate(
        "replace_certs",
        "k8s_replace",
        {"cluster_tag": TAG, "batch": 1, "health_wait": 30, "health_interval": 0.5},
        out="k8s_orch",
    )
    assert ret.returncode != 0
    prefix = "kubernetes-orch-replace"
    # The summary: the failed clean-up and the verify that ran after it, both
    # reported; per host what changed and what the kubelet did.
    lines = ret.stdout.splitlines()
    assert f"  FAILED   {prefix}-cluster-cleanup" in lines, ret.stdout + ret.stderr
    failed = lines.index(f"  FAILED   {prefix}-cluster-cleanup")
    assert lines[failed + 1].startswith(
        f"    {MASTERS[0]}: no cluster reachable at https://127.0.0.1:{cluster.api_port} "
    )
    verified = lines.index(f"  ok       {prefix}-verify")
    assert lines[verified + 1].startswith(
        "    4 minion(s): 4 consistent, 0 with problems, 0 not answering; paths: "
    ), ret.stdout
    # (how many states run is the formula's business; that some changed is the point)
    assert any(re.fullmatch(rf"    {NODES[0]}: \d+ states, [1-9]\d* changed", x) for x in lines)
    assert "      service kubelet: Service restarted" in lines
    health = lines[lines.index(f"  ok       {prefix}-{MASTERS[1]}-healthz") + 1]
    assert f"{MASTERS[1]}: https://127.0.0.1:{cluster.ports[MASTERS[1]]}/healthz answered 'ok'" in (
        health
    )
    assert lines[-1].startswith("12 steps: 1 FAILED, 5 changed, 6 ok")
    # Salt's default (highstate) output of the same return, for comparison.
    default = highstate_lines(cluster.master, cluster.returns[-1])
    print(f"replace_certs, 4 hosts: {default} lines by default, {len(lines)} with --out=k8s_orch")
    assert len(lines) < 80 < 1000 < default, (len(lines), default)
    rolled = [
        f"{prefix}-set",
        f"{prefix}-masters-refresh-pillar",
        *(f"{prefix}-{m}-{s}" for m in MASTERS for s in ("kubelet-removed", "running", "healthz")),
        f"{prefix}-nodes-refresh-pillar",
        f"{prefix}-nodes-running",
    ]
    assert [done[step]["result"] for step in rolled] == [True] * len(rolled), [
        (step, done[step]["comment"]) for step in rolled if not done[step]["result"]
    ]
    cleanup = done[f"{prefix}-cluster-cleanup"]
    assert cleanup["result"] is False
    assert (
        f"no cluster reachable at https://127.0.0.1:{cluster.api_port} through "
        "/etc/kubernetes/admin.conf" in json.dumps(cleanup)
    )
    # verify ran all the same (it requires the roll-out, not the clean-up)
    assert done[f"{prefix}-verify"]["result"] is True
    assert done[f"{prefix}-verify"]["__run_num__"] > cleanup["__run_num__"]
    # the prepared set, unchanged: taken, not generated again
    assert {n: (cluster.pki / TAG / n).read_bytes() for n in support.SEED_FILES} == prepared
    # each master's apiserver was checked with the new CA
    new_ca = k8s_pki.load_cert(prepared["ca.crt"])
    for minion in MASTERS:
        health = json.dumps(done[f"{prefix}-{minion}-healthz"])
        assert k8s_pki.fingerprint(new_ca) in health
        assert {"commonName": "kubecfg", "organizationName": "system:masters"} in (
            cluster.apiservers[minion].clients
        )
    # order: master 1 down and up, then master 2, then the nodes
    new = {m: cluster.actions(m)[marks[m] :] for m in MASTERS + NODES}
    assert [w for w, _ in new[MASTERS[0]]] == ["stop", "start"]
    assert [w for w, _ in new[MASTERS[1]]] == ["stop", "start"]
    for node in NODES:  # kubernetes.running only: the kubelet restarts with the new files
        assert [w for w, _ in new[node]] == ["restart"]
    times = [t for m in MASTERS for _, t in new[m]]
    times.append(min(t for node in NODES for _, t in new[node]))
    assert times == sorted(times), new
    # one node per batch: Salt's own timings of the two state runs do not overlap
    spans = sorted(
        run_span(run) for run in done[f"{prefix}-nodes-running"]["changes"]["ret"].values()
    )
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans
    # every host holds the new set; the old CA left every trust store
    for minion in MASTERS + NODES:
        assert cluster.file(minion, f"{SRV}/ca.crt") == prepared["ca.crt"]
        assert k8s_pki.bundle_has(cluster.file(minion, BUNDLE), new_ca)
        assert not k8s_pki.bundle_has(
            cluster.file(minion, BUNDLE), k8s_pki.load_cert(cluster.set_a["ca.crt"])
        )
    # the same verify, by hand: every host consistent
    ret = cluster.run.run("k8s-helper.verify", f"cluster_tag={TAG}", "tgt=k8s-*", "--out=json")
    assert ret.returncode == 0, ret.stdout
    cluster.set_b = prepared


# --------------------------------------------------------------------------
# rotate_ca: four stages, no downtime
# --------------------------------------------------------------------------


class Prober:
    """TLS handshakes, all through the rotation, from every host's current
    files (its ca.crt and kubecfg pair) to both masters' apiservers (which
    serve the current files of their own host).  Any refused handshake is a
    moment in which that host could not reach that apiserver."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.ok, self.failures, self.served = 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        pairs = [(c, s) for c in MASTERS + NODES for s in MASTERS]
        n = 0
        while not self._stop.is_set():
            client, server = pairs[n % len(pairs)]
            n += 1
            box = self.cluster.hosts[client].sandbox
            try:
                status, body, issuer = _probe(
                    self.cluster.ports[server],
                    box.upper(f"{SRV}/ca.crt"),
                    box.upper(f"{SRV}/kubecfg.crt"),
                    box.upper(f"{SRV}/kubecfg.key"),
                )
            except (OSError, ValueError) as err:
                self.failures.append((client, server, repr(err)))
                continue
            if (status, body) != (200, "ok"):
                self.failures.append((client, server, status, body))
            else:
                self.ok += 1
                self.served.add(issuer)
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def _probe(port, ca, cert, key):
    """One GET /healthz with Python's ssl; returns (status, body, issuer of the
    served certificate)."""
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=FQDN) as conn,
    ):
        served = k8s_pki.load_der_cert(conn.getpeercert(binary_form=True))
        conn.sendall(f"GET /healthz HTTP/1.1\r\nHost: {FQDN}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(), served.issuer.rfc4514_string()


@pytest.fixture(scope="module")
def rotation(cluster):
    """The prober, running from the first stage to the last; the cluster API up."""
    cluster.start_api()
    marks = {m: len(cluster.actions(m)) for m in MASTERS + NODES}
    with Prober(cluster) as prober:
        yield {"prober": prober, "marks": marks, "results": {}}


def rotate(cluster, stage):
    return cluster.orchestrate(
        "rotate_ca",
        "k8s_rotate",
        {"cluster_tag": TAG, "stage": stage, "batch": 2, "health_wait": 30, "health_interval": 0.5},
    )


def test_rotation_prepare_touches_no_host(cluster, rotation):
    before = {m: (cluster.actions(m), cluster.disk(m)) for m in MASTERS + NODES}
    ret, done = rotate(cluster, "prepare")
    assert ret.returncode == 0, done
    assert list(done) == ["kubernetes-orch-rotate-prepare-rotate-ca"]
    assert (cluster.pki / TAG / "ca.next.crt").exists()
    assert {m: (cluster.actions(m), cluster.disk(m)) for m in MASTERS + NODES} == before


def _rolled(cluster, done, stage, cleanup):
    prefix = f"kubernetes-orch-rotate-{stage}"
    expected = [
        f"{prefix}-rotate-ca",
        f"{prefix}-masters-refresh-pillar",
        *(f"{prefix}-{m}-{s}" for m in MASTERS for s in ("running", "healthz")),
        f"{prefix}-nodes-refresh-pillar",
        f"{prefix}-nodes-running",
        *([f"{prefix}-cluster-cleanup"] if cleanup else []),
        f"{prefix}-verify",
    ]
    if stage == "reissue":
        expected.insert(0, f"{prefix}-bundle-everywhere")
    assert list(done) == expected
    assert all(step["result"] is True for step in done.values()), [
        (k, v["comment"]) for k, v in done.items() if not v["result"]
    ]
    set_ca = (cluster.pki / TAG / "ca.crt").read_bytes()
    for minion in MASTERS + NODES:
        assert cluster.file(minion, f"{SRV}/ca.crt") == set_ca, minion
        bundle = cluster.file(minion, BUNDLE)
        assert all(k8s_pki.bundle_has(bundle, ca) for ca in k8s_pki.load_certs(set_ca))
    return prefix


def test_rotation_trust_hands_the_bundle_out(cluster, rotation):
    ret, done = rotate(cluster, "trust")
    assert ret.returncode == 0
    prefix = _rolled(cluster, done, "trust", cleanup=True)
    assert len(k8s_pki.load_certs((cluster.pki / TAG / "ca.crt").read_bytes())) == 2
    # the clean-up, by the real kubectl through k8s-master-1's admin kubeconfig:
    # rolling restarts; the token secrets are kept during a rotation
    cleanup = json.dumps(done[f"{prefix}-cluster-cleanup"])
    assert "kube-system/daemonset/canal" in cleanup and "kube-system/deployment/coredns" in cleanup
    secrets = sorted(n for kind, _, n in cluster.api.objects if kind == "secrets")
    assert secrets == ["canal-token-bbbbb", "default-token-aaaaa", "opaque-kept"]
    patched = sorted(r["path"] for r in cluster.api.requests if r["method"] == "PATCH")
    assert patched == [
        "/apis/apps/v1/namespaces/kube-system/daemonsets/canal",
        "/apis/apps/v1/namespaces/kube-system/deployments/coredns",
    ]
    assert not [r for r in cluster.api.requests if r["method"] == "DELETE"]


def test_rotation_reissue_puts_the_new_ca_in_use(cluster, rotation):
    ret, done = rotate(cluster, "reissue")
    assert ret.returncode == 0
    prefix = _rolled(cluster, done, "reissue", cleanup=False)
    new_ca = k8s_pki.load_certs((cluster.pki / TAG / "ca.crt").read_bytes())[0]
    assert new_ca.subject.rfc4514_string() == "CN=kubernetes-ca-2"
    for minion in MASTERS:  # each apiserver now serves a certificate of the new CA
        health = json.dumps(done[f"{prefix}-{minion}-healthz"])
        assert '"verified_by": {"subject": "CN=kubernetes-ca-2"' in health
        served = k8s_pki.load_cert(cluster.file(minion, f"{SRV}/server.cert"))
        assert k8s_pki.signed_by(served, new_ca)


def test_rotation_finish_drops_the_old_ca_everywhere(cluster, rotation):
    ret, done = rotate(cluster, "finish")
    assert ret.returncode == 0
    _rolled(cluster, done, "finish", cleanup=True)
    old = k8s_pki.load_cert(cluster.set_b["ca.crt"])
    for minion in MASTERS + NODES:
        assert len(k8s_pki.load_certs(cluster.file(minion, f"{SRV}/ca.crt"))) == 1
        assert not k8s_pki.bundle_has(cluster.file(minion, BUNDLE), old), minion
    # Every CA left in the anchor was in the system bundle already: the store
    # was rebuilt because the anchor changed after it (the old CA had to go).
    prefix = "kubernetes-orch-rotate-finish"
    runs = {m: done[f"{prefix}-{m}-running"]["changes"]["ret"][m] for m in MASTERS}
    runs.update(done[f"{prefix}-nodes-running"]["changes"]["ret"])
    for minion, states in runs.items():
        trusted = next(r for k, r in states.items() if "trust-store-trusted" in k)
        assert "(a CA may have left it)" in trusted["comment"], (minion, trusted["comment"])


def test_rotation_had_no_downtime(cluster, rotation):
    """All through the four stages: no refused handshake, served certificates of
    both CAs seen, and no kubelet ever stopped (only restarted)."""
    prober = rotation["prober"]
    time.sleep(0.5)
    assert prober.failures == []
    assert prober.ok > 50
    assert prober.served == {"CN=kubernetes-ca", "CN=kubernetes-ca-2"}
    for minion in MASTERS + NODES:
        actions = [w for w, _ in cluster.actions(minion)[rotation["marks"][minion] :]]
        assert actions and set(actions) == {"restart"}, (minion, actions)


def test_no_key_material_in_what_the_orchestrations_printed(cluster):
    """Every private key the master ever held for this cluster (backups
    included) against everything the orchestrations printed."""
    keys = [path.read_text() for path in (cluster.pki / TAG).rglob("*.key")]
    assert len(keys) > 6 and len(cluster.outputs) >= 6
    for output in cluster.outputs:
        assert support.leaked(output, keys) is None
