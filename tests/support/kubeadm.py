"""Helpers for the kubeadm-profile tests: a reference topology, kubeconfig reading, openssl."""

import base64
import os
import pathlib
import subprocess

import yaml

import support
from support import tlsserver

k8s_pki = support.k8s_pki

MASTERS = [
    {"name": "m1", "ip": "127.0.0.1"},
    {"name": "m2", "ip": "127.0.0.2"},
    {"name": "m3", "ip": "127.0.0.3"},
]
NODES = [{"name": "n1", "ip": "192.0.2.21"}, {"name": "n2"}]

CONFS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")
#: each master has its own (hosts/<master>/...), pointing at its own apiserver
LOCAL_CONFS = ("controller-manager.conf", "scheduler.conf")


def specs(masters=MASTERS, nodes=NODES, **kwargs):
    return k8s_pki.kubeadm_specs(masters, nodes, **kwargs)


def set_confs(masters=MASTERS, nodes=NODES):
    """Every kubeconfig of the set's folder (the shared ones, then each host's own)."""
    return [name for name, spec in specs(masters, nodes).items() if spec.kind.embeds_ca]


def kubeconfig(path):
    """The kubeconfig's current context: server, CA PEM, client cert PEM, key PEM."""
    doc = yaml.safe_load(pathlib.Path(path).read_text())
    context = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])["context"]
    cluster = next(c for c in doc["clusters"] if c["name"] == context["cluster"])["cluster"]
    user = next(u for u in doc["users"] if u["name"] == context["user"])["user"]
    return {
        "server": cluster["server"],
        "ca": base64.b64decode(cluster["certificate-authority-data"]),
        "cert": base64.b64decode(user["client-certificate-data"]),
        "key": base64.b64decode(user["client-key-data"]),
        "user": context["user"],
    }


def unpack_kubeconfig(path, into):
    """Write a kubeconfig's embedded PEMs to files (for openssl); returns their paths."""
    into = pathlib.Path(into)
    into.mkdir(parents=True, exist_ok=True)
    conf = kubeconfig(path)
    paths = {}
    for part in ("ca", "cert", "key"):
        paths[part] = into / f"{part}.pem"
        paths[part].write_bytes(conf[part])
        paths[part].chmod(0o600)
    return paths


def kubectl_healthz(server, conf, home, server_name="kubernetes.api"):
    """Whether the real kubectl, with the kubeconfig ``conf`` as it is (its embedded CA
    data, client certificate and key), gets ``ok`` from ``server``'s /healthz: only the
    address (and the name checked in the server's certificate) is the stand-in's."""
    proc = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(conf),
            "--server",
            server.url,
            "--tls-server-name",
            server_name,
            "get",
            "--raw",
            "/healthz",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(home)},
    )
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


def x509_text(path):
    return support.openssl("x509", "-in", path, "-noout", "-text").stdout


def subject(path):
    """openssl's one-line subject, e.g. 'O = system:nodes, CN = system:node:n1'."""
    out = support.openssl("x509", "-in", path, "-noout", "-subject", "-nameopt", "oneline")
    return out.stdout.strip().removeprefix("subject=").strip()


def verify(ca, cert):
    proc = support.openssl("verify", "-CAfile", ca, cert, check=False)
    return proc.returncode == 0 and proc.stdout.strip().endswith(": OK")


class ApiServerStandIn(tlsserver.TLSServer):
    """A TLS server on 127.0.0.1 standing in for kube-apiserver (no apiserver binary here):
    tests/support/tlsserver.py's, under the name the kubeadm tests use.

    It presents ``cert``/``key``, requires a client certificate signed by
    ``client_ca`` (as kube-apiserver's --client-ca-file does), and answers
    ``/version`` (kubectl asks), ``/healthz``, and ``/whoami`` with the
    verified client certificate's CN and O, so a test sees which identity
    kubectl presented; ``refused`` says why handshakes failed.
    """


def make_set(root, tag="c1", masters=MASTERS, nodes=NODES, key_type="ecdsa-p256"):
    """A kubeadm set under ``root`` with its cluster.yaml (the record enrollment reads)."""
    return support.make_recorded_set(
        root, tag, "kubeadm", key_type=key_type, masters=masters, nodes=nodes
    )
