"""The commands of docs/troubleshooting.md marked ``<!-- test: NAME -->``, run verbatim.

- ``files``, ``chain``, ``keys``, ``trust``: on a host where the real
  ``kubernetes.certs.present`` was applied with ``salt-call --local``, inside a
  throwaway mount namespace (tests/support/sandbox.py), so /srv, /var/lib/kubelet,
  /usr/local/share/ca-certificates and /etc/ssl/certs are the real paths and
  the trust bundle is the one the real update-ca-certificates built;
- ``api``: the real kubectl against a small HTTPS stand-in for kube-apiserver
  that serves the ConfigMap and Secret objects the commands read (discovery,
  get, list); TLS with the set's own certificates, client certificate required;
- ``etcd``: the real etcd and etcdctl (Debian's 3.4), holding a value shaped
  like the apiserver's protobuf encoding (binary bytes around the PEM text):
  the real encoding needs a real apiserver, which is not available here.

What needs a live cluster (kubectl exec, crictl, docker inspect) is not run;
the guide says so.
"""

import base64
import json
import re
import shutil
import socket
import subprocess
import time

import pytest
import support
from support import k8s_pki, tlsserver

DOC = support.REPO / "docs" / "troubleshooting.md"


def blocks(name):
    """The code blocks of the guide that follow a ``<!-- test: name -->`` line."""
    text = DOC.read_text()
    found = re.findall(r"<!-- test: (\w+) -->\n```bash\n(.*?)```", text, flags=re.S)
    code = [body for tag, body in found if tag == name]
    assert code, f"no block marked test: {name} in {DOC}"
    return code


def fingerprint(pem_path):
    out = support.openssl("x509", "-in", pem_path, "-noout", "-fingerprint", "-sha256").stdout
    return out.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def cluster_set(tmp_path_factory):
    pki = tmp_path_factory.mktemp("pki")
    k8s_pki.ensure_set(pki, "default", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    return pki / "default"


# --------------------------------------------------------------------------
# Files on a host (sandbox)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(new_sandbox, tmp_path_factory, cluster_set):
    base = tmp_path_factory.mktemp("doc-minion")
    pillar_root = support.write_pillar(
        base / "pillar",
        {"kubernetes": {"k8s_env": "default", "certs": support.pillar_certs(cluster_set)}},
    )
    conf = support.write_minion_config(base, pillar_root, "k8s-master-1")
    sync = subprocess.run(
        support.salt_call_argv(conf, "saltutil.sync_all"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert sync.returncode == 0, sync.stderr
    box = new_sandbox("doc")
    proc = box.run(support.salt_call_argv(conf, "state.apply", "kubernetes.certs.present"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return box


def run_in(box, code):
    proc = box.run(["bash", "-euo", "pipefail", "-c", code])
    assert proc.returncode == 0, f"{code}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_copy_of_the_ca_has_one_fingerprint(host, cluster_set):
    (code,) = blocks("files")
    lines = run_in(host, code).splitlines()
    assert len(lines) == 4
    want = fingerprint(cluster_set / "ca.crt")
    assert all(line.split()[-1] == f"Fingerprint={want}" for line in lines), lines
    # A copy replaced by another CA shows up as another fingerprint.
    other = k8s_pki.build_ca(k8s_pki.new_key("ecdsa-p256"), "kubernetes-ca")
    stash = host.base / "other-ca.crt"
    stash.write_bytes(k8s_pki.cert_pem(other))
    backup = host.base / "kubelet-ca.bak"
    run_in(host, f"cp /var/lib/kubelet/ca.crt {backup} && cp {stash} /var/lib/kubelet/ca.crt")
    try:
        lines = run_in(host, code).splitlines()
        odd = [line for line in lines if not line.endswith(want)]
        assert [line.split()[0] for line in odd] == ["/var/lib/kubelet/ca.crt"]
    finally:
        run_in(host, f"cp {backup} /var/lib/kubelet/ca.crt")


def test_chain_and_names(host):
    (code,) = blocks("chain")
    out = run_in(host, code)
    assert "subject=CN = kube-apiserver" in out
    assert "issuer=CN = kubernetes-ca" in out
    assert "DNS:kubernetes.default.svc.cluster.local" in out
    assert "server.cert: OK" in out and "kubecfg.crt: OK" in out


def test_keys_match_and_a_foreign_key_is_caught(host):
    (code,) = blocks("keys")
    assert run_in(host, code).splitlines() == [
        "server.key matches server.cert",
        "kubecfg.key matches kubecfg.crt",
    ]
    stash = host.base / "other.key"
    stash.write_bytes(k8s_pki.key_pem(k8s_pki.new_key("ecdsa-p256")))
    keep = host.base / "kubecfg.key.bak"
    run_in(host, f"cp /srv/kubernetes/kubecfg.key {keep} && cp {stash} /srv/kubernetes/kubecfg.key")
    try:
        assert "kubecfg.key DOES NOT match kubecfg.crt" in run_in(host, code)
    finally:
        run_in(host, f"cp {keep} /srv/kubernetes/kubecfg.key")


def test_trust_link_and_bundle(host):
    (code,) = blocks("trust")
    out = run_in(host, code).splitlines()
    assert out == ["/usr/local/share/ca-certificates/kubernetes-ca.crt", "1"]


# --------------------------------------------------------------------------
# The API (kubectl against a stand-in apiserver)
# --------------------------------------------------------------------------

SECRET = "default-token-x7k2p"


def api_objects(ca_pem):
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "kube-system"},
        "data": {"ca.crt": ca_pem},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": SECRET, "namespace": "kube-system", "creationTimestamp": None},
        "data": {
            "ca.crt": base64.b64encode(ca_pem.encode()).decode(),
            "namespace": base64.b64encode(b"kube-system").decode(),
            "token": base64.b64encode(b"not-a-real-token").decode(),
        },
    }
    resources = [
        {"name": name, "singularName": single, "namespaced": True, "kind": kind,
         "verbs": ["get", "list"], "shortNames": short}
        for name, single, kind, short in (
            ("configmaps", "configmap", "ConfigMap", ["cm"]),
            ("secrets", "secret", "Secret", []),
        )
    ]  # fmt: skip
    listing = {"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": [secret]}
    ns = "/api/v1/namespaces/kube-system"
    return {
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
        "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources},
        f"{ns}/configmaps/kube-root-ca.crt": cm,
        f"{ns}/secrets/{SECRET}": secret,
        f"{ns}/secrets": listing,
    }


class _APIHandler(tlsserver._Handler):
    def do_GET(self):  # noqa: N802
        path, _, query = self.path.partition("?")
        self.server.owner.requests.append(self.path)
        obj = self.server.owner.objects.get(path)
        if obj is None:
            return super().do_GET()
        if path.endswith("/secrets") and "fieldSelector=type%3Dkubernetes.io" not in query:
            return self._send(400, json.dumps({"kind": "Status", "code": 400}), "application/json")
        self._send(200, json.dumps(obj), "application/json")


class APIServer(tlsserver.TLSServer):
    def __init__(self, objects, *args):
        super().__init__(*args)
        self.objects = objects
        self.requests = []
        self.httpd.RequestHandlerClass = _APIHandler


@pytest.fixture(scope="module")
def api(cluster_set, tmp_path_factory):
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed (no Debian package carries it)")
    work = tmp_path_factory.mktemp("api")
    ca_pem = (cluster_set / "ca.crt").read_text()
    files = {n: cluster_set / n for n in ("ca.crt", "server.crt", "server.key")}
    tls = (files["server.crt"], files["server.key"], files["ca.crt"])
    with APIServer(api_objects(ca_pem), *tls) as server:
        config = tlsserver.kubeconfig(
            work / "kubeconfig",
            server.url,
            files["ca.crt"],
            cluster_set / "kubecfg.crt",
            cluster_set / "kubecfg.key",
            "kubernetes.api",
        )
        yield server, {"KUBECONFIG": str(config), "SECRET": SECRET, "HOME": str(work)}


def run_here(code, env):
    full = {"PATH": "/usr/local/bin:/usr/bin:/bin", **env}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{code}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_configmap_and_secret_decoding_with_kubectl(api, cluster_set):
    server, env = api
    configmap, secrets = blocks("api")
    want = f"sha256 Fingerprint={fingerprint(cluster_set / 'ca.crt')}"
    out = run_here(configmap, env)
    assert "subject=CN = kubernetes-ca" in out
    assert want in out
    out = run_here(secrets, env)
    assert SECRET in out.splitlines()[1]  # the listing: NAME column
    assert want in out
    # kubectl really asked the server for those objects.
    asked = [p.split("?")[0] for p in server.requests]
    assert "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt" in asked
    assert f"/api/v1/namespaces/kube-system/secrets/{SECRET}" in asked


# --------------------------------------------------------------------------
# etcd
# --------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    if not (shutil.which("etcd") and shutil.which("etcdctl")):
        pytest.skip("etcd/etcdctl missing: apt-get install etcd-server etcd-client")
    data = tmp_path_factory.mktemp("etcd")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [
            "etcd",
            "--data-dir", str(data / "data"),
            "--listen-client-urls", url,
            "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(data / "etcd.log").open("w"),
    )  # fmt: skip
    env = {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_API": "3"}
    try:
        for _ in range(100):
            ok = subprocess.run(["etcdctl", "endpoint", "health"], env=env, capture_output=True)
            if ok.returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"etcd did not start: {(data / 'etcd.log').read_text()[-2000:]}")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ca_out_of_an_etcd_value(etcd, cluster_set):
    ca_pem = (cluster_set / "ca.crt").read_bytes()
    # Shaped like the apiserver's protobuf: magic, type meta, then the data map
    # entry whose value is the PEM text, then more fields (all binary framing).
    value = (
        b"k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\xa2\x06\n\x1c\n\x10kube-root-ca.crt"
        b"\x12\x0bkube-system\x1a\x8b\x05\n\x06ca.crt\x12\x80\x05" + ca_pem + b'\x1a\x00"\x00'
    )
    key = "/registry/configmaps/kube-system/kube-root-ca.crt"
    put = subprocess.run(["etcdctl", "put", key], input=value, env=etcd, capture_output=True)
    assert put.returncode == 0, put.stderr
    (code,) = blocks("etcd")
    out = run_here(code, etcd)
    assert key in out.splitlines()
    assert f"sha256 Fingerprint={fingerprint(cluster_set / 'ca.crt')}" in out
    assert "subject=CN = kubernetes-ca" in out


def test_guide_names_only_existing_state_and_runner_functions():
    """The functions the guide tells operators to run exist in this formula."""
    text = DOC.read_text()
    for name in re.findall(r"k8s-helper\.(\w+)", text):
        assert f"def {name}(" in (support.REPO / "_runners/k8s_helper.py").read_text(), name
    states = set(re.findall(r"`(kubernetes(?:\.\w+)+)`", text))
    assert "kubernetes.certs.present" in states
    for sls in states:
        assert (support.REPO / (sls.replace(".", "/") + ".sls")).exists(), sls
