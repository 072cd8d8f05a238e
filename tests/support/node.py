"""Shared by the node life-cycle tests (kubernetes.running, kubernetes.kubelet.removed).

The masterless minion is tests/support/minion.py's ``Minion`` (salt-call
--local with this checkout as file_roots, every call inside a sandbox);
``Node`` adds what a service needs: Salt drives a real init script through
tests/support/services.py.
"""

import json
import logging
import os
import pathlib
import subprocess

import yaml
from cryptography.hazmat.primitives import serialization

import support
from support import k8s_pki, services
from support.minion import Minion, by_id, changed  # noqa: F401  (re-exported)

#: Minion options: no reverse-DNS lookups of the host's addresses for grains
#: (they cost ~0.5 s per salt-call here and the formula does not use them).
FAST = {"enable_fqdns_grains": False}

RUNNING = "kubernetes.running"
REMOVED = "kubernetes.kubelet.removed"
SRV = "/srv/kubernetes"
FQDN = "kubernetes.api"

KUBECONFIGS = {
    "kubelet": "/var/lib/kubelet/kubeconfig",
    "kube-proxy": "/var/lib/kube-proxy/kubeconfig",
    "admin": "/etc/kubernetes/admin.conf",
    "controller-manager": "/var/lib/kube-controller-manager/kubeconfig",
    "scheduler": "/var/lib/kube-scheduler/kubeconfig",
}
MASTER_KUBECONFIGS = ("admin", "controller-manager", "scheduler")
MANIFESTS = {
    name: f"/etc/kubernetes/manifests/{name}.yaml"
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
}
KUBELET_BINARY = "/usr/bin/kubelet"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBELET_ENV = "/etc/default/kubelet"
KUBELET_DROPIN = "/etc/systemd/system/kubelet.service.d/20-kubernetes-formula.conf"
SA_KEY = f"{SRV}/sa.key"
SA_PUB = f"{SRV}/sa.pub"

#: Everything the node states may write, compared before and after.
WATCHED = (
    "/srv",
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/var/lib/kube-controller-manager",
    "/var/lib/kube-scheduler",
    KUBELET_ENV,
    "/etc/systemd/system/kubelet.service.d",
)

#: What the kubelet service must watch: every file it reads.
SERVICE_WATCH = [
    {"k8s_certs": "kubernetes-certs-ca-crt-pem-managed"},
    {"k8s_certs": "kubernetes-certs-kubecfg-crt-pem-managed"},
    {"k8s_certs": "kubernetes-certs-kubecfg-key-pem-managed"},
    {"k8s_certs": "kubernetes-certs-kubelet-ca-crt-pem-managed"},
    {"file": "kubernetes-kubelet-kubeconfig-file-managed"},
    {"file": "kubernetes-kubelet-config-file-managed"},
    {"file": "kubernetes-kubelet-env-file-managed"},
    {"file": "kubernetes-kubelet-systemd-dropin-file-managed"},
]


def generate_sets(base, *tags):
    """Independent certificate sets (one CA each), minted by the real runner in-process."""
    conf = support.write_master_config(pathlib.Path(base) / "master")
    generate = support.load_runners(conf)["k8s-helper.generate_certs"]
    out = {}
    for tag in tags:
        ret = generate(cluster_tag=tag)
        assert ret.get("result") is not False, ret
        out[tag] = pathlib.Path(ret["directory"])
    return out


def sa_pair(key_type="rsa-2048"):
    """A fresh service-account pair: {"sa.key": PEM, "sa.pub": PEM}."""
    key = k8s_pki.new_key(key_type)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"sa.key": k8s_pki.key_pem(key).decode(), "sa.pub": pub.decode()}


def node_pillar(set_dir, role="master", port=None, lookup=None, **extra):
    """Pillar of one minion: certificates of ``set_dir`` (no server pair for nodes).

    ``port``: the apiserver is reached at https://127.0.0.1:<port> (a test TLS
    server), by every kubeconfig, with tls-server-name kubernetes.api.
    """
    kubernetes = {
        "k8s_env": "test",
        "role": role,
        "certs": support.pillar_certs(set_dir, server=role == "master"),
        "lookup": dict(lookup or {}),
        **extra,
    }
    if port is not None:
        kubernetes["lookup"].setdefault(
            "api_server", {"address": "127.0.0.1", "port": port, "local_address": "127.0.0.1"}
        )
        kubernetes["lookup"].setdefault("apiserver", {"secure_port": port})
    return {"kubernetes": kubernetes}


def keys_of(*set_dirs, extra=()):
    """Every private key text of the given sets (to look for leaks)."""
    keys = list(extra)
    for set_dir in set_dirs:
        keys += [(pathlib.Path(set_dir) / n).read_text() for n in ("kubecfg.key", "server.key")]
    return keys


class Node(Minion):
    """A Minion whose salt-call runs with services.SysV: service states run init scripts."""

    def __init__(self, box, base, sysv, minion_id="k8s-master-1", **extra):
        super().__init__(box, base, minion_id=minion_id, **{**FAST, **extra})
        self.sysv = sysv

    def call(self, *args):
        proc = self.sysv.run(support.salt_call_argv(self.conf, "-l", "info", *args))
        try:
            data = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            data = None
        return proc, data


def show_sls(minion, sls):
    """(process, {state id: {arg: value, "fun": "module.function"}}) of the real
    ``salt-call state.show_sls``; a list of error strings instead when the render fails."""
    proc = subprocess.run(
        support.salt_call_argv(minion.conf, "state.show_sls", sls),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        raw = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError, TypeError):
        return proc, None
    return proc, flatten(raw)


class Renderer:
    """state.show_sls through Salt's own Caller in this process, with a pillar override.

    The same loader, renderers and state compiler as salt-call, without a new
    process per render (~0.3 s instead of ~1.2 s here): for the many renders
    of the render tests.  The exit status of a failed render is checked with
    the real salt-call (``show_sls``).
    """

    def __init__(self, minion):
        import salt.client
        import salt.config

        opts = salt.config.minion_config(str(pathlib.Path(minion.conf) / "minion"))
        self.caller = salt.client.Caller(mopts=opts)

    def __call__(self, sls, pillar):
        # Salt logs a failed render at CRITICAL, through a handler that holds
        # records until the process exits and then prints them after pytest's
        # summary; the test reads the error from the return value instead.
        salt_log = logging.getLogger("salt")
        level = salt_log.level
        salt_log.setLevel(logging.CRITICAL + 1)
        try:
            return flatten(self.caller.cmd("state.show_sls", sls, pillar=pillar))
        finally:
            salt_log.setLevel(level)


def flatten(raw):
    """{state id: {arg: value, "fun": "module.function"}} of state.show_sls output
    (errors, a list of strings, pass through)."""
    if not isinstance(raw, dict):
        return raw
    states = {}
    for state_id, body in raw.items():
        module = next(k for k in body if not k.startswith("__") and k != "order")
        args = {"fun": module}
        for item in body[module]:
            if isinstance(item, dict):
                args.update(item)
            else:
                args["fun"] = f"{module}.{item}"
        states[state_id] = args
    return states


def kubectl(box, kubeconfig, *args, home):
    """The real kubectl inside ``box`` (the kubeconfig's file references resolve there)."""
    env = {**os.environ, "HOME": str(home)}
    return box.run(["kubectl", "--kubeconfig", kubeconfig, *args], env=env, timeout=60)


def data_of(tree, path):
    return bytes.fromhex(tree[path]["data"])


def yaml_of(tree, path):
    return yaml.safe_load(data_of(tree, path))


def new_node(make_sandbox, base, name, minion_id, kubelet=True):
    """A fresh sandbox with (optionally) the kubelet installed (an init script and a
    stand-in binary at /usr/bin/kubelet), and a Node minion in it."""
    box = make_sandbox(name)
    sysv = services.SysV(box, pathlib.Path(base) / f"{name}-bin")
    if kubelet:
        sysv.install("kubelet")
        sysv.install_binary(KUBELET_BINARY)
    return Node(box, pathlib.Path(base) / f"{name}-minion", sysv, minion_id=minion_id)
