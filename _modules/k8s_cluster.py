"""
Checks and clean-up steps run on a Kubernetes master during a certificate
replacement or a CA rotation (the ``kubernetes.orch.*`` orchestrations).

``k8s_cluster.healthz``
    Asks this master's own kube-apiserver for ``/healthz`` over TLS, checking
    its serving certificate against the ``ca.crt`` laid down here (one CA or a
    rotation's bundle) and the apiserver's DNS name, and presenting the
    ``kubecfg`` client certificate.  Retries until the apiserver answers
    ``ok`` or ``wait`` seconds have passed.

``k8s_cluster.cleanup``
    With ``kubectl`` and the admin kubeconfig: deletes the service-account
    token Secrets of a namespace (they embed the CA; their controller makes
    them again with the current one) and restarts the listed DaemonSets and
    Deployments with ``kubectl rollout restart`` (a rolling restart, not a
    deletion of pods by name).

Paths and addresses default to what the formula's ``map.jinja`` says for this
minion (its grains and pillar, ``kubernetes:lookup`` included), so they are
the files ``kubernetes.running`` lays down.  Both functions set a non-zero
return code when they fail, so ``salt.function`` in an orchestration stops
there; neither ever reports success it did not see.
"""

import http.client
import json
import logging
import os
import socket
import ssl
import time
import urllib.parse

import salt.exceptions
import salt.utils.path
import yaml

try:
    import k8s_pki

    HAS_PKI = True
    _IMPORT_ERROR = ""
except ImportError as _err:  # cryptography missing, or _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s_cluster"

#: workloads restarted by default: the network plugin, DNS, the dashboard
DEFAULT_RESTART = (
    "daemonset/canal",
    "deployment/coredns",
    "deployment/kube-dns",
    "deployment/kubernetes-dashboard",
)
ROLLOUT_KINDS = ("daemonset", "deployment", "statefulset")
TOKEN_TYPE = "kubernetes.io/service-account-token"  # noqa: S105 - a Secret type

# This minion's settings, rendered by slsutil.renderer from the SLS tree
# (file_roots or gitfs), where the formula's map.jinja lives too.
_MAP = "salt://kubernetes/files/cluster-settings.json.jinja"


def __virtual__():
    if not HAS_PKI:
        return (
            False,
            f"k8s_cluster needs the formula's _utils/k8s_pki package and python3-cryptography "
            f"({_IMPORT_ERROR}); run saltutil.sync_all",
        )
    return __virtualname__


def _settings():
    """This minion's paths and addresses, as the formula's map.jinja gives them."""
    if "k8s_cluster.settings" not in __context__:
        settings = __salt__["slsutil.renderer"](path=_MAP, default_renderer="jinja|json")
        # A file_roots without the formula's kubernetes/files renders nothing.
        if not isinstance(settings, dict) or not settings:
            raise salt.exceptions.CommandExecutionError(
                f"{_MAP} did not render: put the formula's kubernetes/ folder in file_roots"
            )
        __context__["k8s_cluster.settings"] = settings
    return __context__["k8s_cluster.settings"]


def _failed(ret, message):
    ret["result"] = False
    ret["error"] = message
    __context__["retcode"] = 1
    log.error("k8s_cluster: %s", message)
    return ret


def _seconds(value, name):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1
    if isinstance(value, bool) or seconds < 0:
        raise ValueError(f"{name}: {value!r} is not a number of seconds")
    return seconds


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an address, checking the certificate against another name
    (what kubeconfig's ``tls-server-name`` does)."""

    def __init__(self, host, port, server_name, context, timeout):
        super().__init__(host, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._tls_context = context

    def connect(self):
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._tls_context.wrap_socket(raw, server_hostname=self._server_name)
        except BaseException:
            raw.close()
            raise


def _describe_error(err):
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"its certificate did not verify: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return f"TLS failed: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (nothing listening)"
    if isinstance(err, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)


def _probe(url, ca, cert, key, server_name, timeout):
    """One GET; returns (status, body, peer certificate DER) or raises."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    conn = _Connection(parts.hostname, parts.port or 443, server_name, context, timeout)
    try:
        conn.request("GET", parts.path or "/healthz", headers={"Host": server_name})
        peer = conn.sock.getpeercert(binary_form=True)  # before the answer closes it
        answer = conn.getresponse()
        body = answer.read(4096).decode("utf-8", "replace").strip()
        return answer.status, body, peer
    finally:
        conn.close()


def healthz(
    url=None, ca=None, cert=None, key=None, server_name=None, wait=120, interval=2, timeout=5
):
    """
    Check that this master's kube-apiserver answers ``/healthz`` with ``ok``,
    its certificate verified with the CA laid down here.

    url : https://<lookup:api_server:local_address>:<lookup:apiserver:secure_port>/healthz
        What to ask.
    ca : the laid-down ca.crt
        The CA certificate(s) the serving certificate must chain to (a bundle
        during a CA rotation).
    cert, key : the laid-down kubecfg.crt and kubecfg.key
        The client certificate presented.
    server_name : lookup:api_server:fqdn
        The name the serving certificate must hold.
    wait : 120
        Seconds to keep trying (the kubelet may still be starting the
        apiserver's static pod). 0: one attempt.
    interval : 2
        Seconds between attempts.
    timeout : 5
        Seconds per attempt.

    Returns the answer, the serving certificate (subject, issuer, SHA-256)
    and which CA certificate of ``ca`` verified it; fails (non-zero return
    code) when no healthy answer came within ``wait`` seconds, saying what
    the last attempt got.

    CLI Example:

    .. code-block:: bash

        salt k8s-master-1 k8s_cluster.healthz
        salt k8s-master-1 k8s_cluster.healthz wait=0
    """
    wanted = {"url": url, "ca": ca, "cert": cert, "key": key, "server_name": server_name}
    if any(value in (None, "") for value in wanted.values()):
        settings = _settings()
        defaults = {
            "url": settings["local_api_url"] + "/healthz",
            "ca": settings["ca"],
            "cert": settings["cert"],
            "key": settings["key"],
            "server_name": settings["server_name"],
        }
        wanted = {k: v if v not in (None, "") else defaults[k] for k, v in wanted.items()}
    ret = {"url": wanted["url"], "ca": wanted["ca"], "server_name": wanted["server_name"]}
    try:
        wait, interval, timeout = (
            _seconds(wait, "wait"),
            _seconds(interval, "interval"),
            _seconds(timeout, "timeout"),
        )
    except ValueError as err:
        return _failed(ret, str(err))
    for path in (wanted["ca"], wanted["cert"], wanted["key"]):
        if not os.path.isfile(path):
            return _failed(ret, f"{path} is not there: apply kubernetes.running first")
    try:
        cas = k8s_pki.load_certs(open(wanted["ca"], "rb").read(), wanted["ca"])  # noqa: SIM115
    except (k8s_pki.PKIError, OSError) as err:
        return _failed(ret, f"{wanted['ca']}: {err}")
    start = time.monotonic()
    attempts, last = 0, ""
    while True:
        attempts += 1
        try:
            status, body, peer = _probe(
                wanted["url"],
                wanted["ca"],
                wanted["cert"],
                wanted["key"],
                wanted["server_name"],
                timeout,
            )
        except (OSError, ssl.SSLError, http.client.HTTPException) as err:
            last = _describe_error(err)
        else:
            if status == 200 and body == "ok":
                served = k8s_pki.load_der_cert(peer, "the served certificate")
                issuer = next((ca for ca in cas if k8s_pki.signed_by(served, ca)), None)
                ret.update(
                    result=True,
                    healthy=True,
                    answer=body,
                    attempts=attempts,
                    seconds=round(time.monotonic() - start, 1),
                    server_certificate=k8s_pki.describe_cert(served),
                    verified_by=k8s_pki.describe_cert(issuer) if issuer is not None else None,
                )
                return ret
            last = f"answered {status}: {body[:200]!r}"
        if time.monotonic() - start + interval > wait:
            break
        time.sleep(interval)
    ret.update(healthy=False, attempts=attempts)
    return _failed(
        ret,
        f"the apiserver at {wanted['url']} is not healthy: no 'ok' within {wait:g} s "
        f"({attempts} attempt(s)); last: {last}",
    )


def _workloads(restart, namespace):
    """[(namespace, kind, name)] from "kind/name", "namespace/kind/name" or mappings."""
    out = []
    for entry in DEFAULT_RESTART if restart is None else restart:
        if isinstance(entry, dict):
            parts = [entry.get("namespace", namespace), entry.get("kind"), entry.get("name")]
        else:
            parts = str(entry).split("/")
            parts = [namespace, *parts] if len(parts) == 2 else parts
        if len(parts) != 3 or not all(isinstance(p, str) and p for p in parts):
            raise ValueError(
                f"restart: {entry!r} is not kind/name, namespace/kind/name or "
                "{kind: ..., name: ..., namespace: ...}"
            )
        ns, kind, name = parts
        if kind.lower() not in ROLLOUT_KINDS:
            raise ValueError(f"restart: {entry!r}: kind must be one of {', '.join(ROLLOUT_KINDS)}")
        out.append((ns, kind.lower(), name))
    return out


def _server_of(kubeconfig):
    """The server URL of the kubeconfig's current context (for messages)."""
    try:
        with open(kubeconfig, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle) or {}
        context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
        return next(
            c["cluster"]["server"] for c in doc["clusters"] if c["name"] == context["cluster"]
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration):
        return "?"


def cleanup(
    kubeconfig=None,
    namespace="kube-system",
    delete_token_secrets=True,
    restart=None,
    kubectl="kubectl",
    request_timeout=20,
):
    """
    After new certificates: delete the service-account token Secrets of
    ``namespace`` and restart the given workloads, with ``kubectl``.

    kubeconfig : lookup:admin:kubeconfig (/etc/kubernetes/admin.conf)
        The admin kubeconfig ``kubernetes.running`` writes on masters.
    namespace : kube-system
        Where the token Secrets are deleted, and the namespace of workloads
        given as ``kind/name``.
    delete_token_secrets : True
        Delete every Secret of type ``kubernetes.io/service-account-token`` in
        ``namespace``; the token controller makes them again, holding the
        current CA.
    restart : canal, coredns, kube-dns and kubernetes-dashboard
        The default is ``daemonset/canal``, ``deployment/coredns``,
        ``deployment/kube-dns`` and ``deployment/kubernetes-dashboard``.
        Workloads for ``kubectl rollout restart``: ``kind/name``,
        ``namespace/kind/name`` or ``{kind, name, namespace}``; kinds
        daemonset, deployment, statefulset. One that does not exist is
        reported as ``not_found`` and is not an error.
    kubectl : kubectl
        The kubectl command.
    request_timeout : 20
        Seconds kubectl waits for each request.

    Fails (non-zero return code) when the cluster cannot be reached through
    the kubeconfig ("no cluster reachable ..."), or when a deletion or a
    restart fails; it then says which.

    CLI Example:

    .. code-block:: bash

        salt k8s-master-1 k8s_cluster.cleanup
        salt k8s-master-1 k8s_cluster.cleanup restart='[daemonset/calico-node, deployment/coredns]'
    """
    kubeconfig = kubeconfig or _settings()["admin_kubeconfig"]
    ret = {"kubeconfig": kubeconfig, "namespace": namespace}
    try:
        workloads = _workloads(restart, namespace)
        delete = k8s_pki.check_bool(delete_token_secrets, "delete_token_secrets")
        wait = int(_seconds(request_timeout, "request_timeout")) or 1
    except (ValueError, k8s_pki.PKIError) as err:
        return _failed(ret, str(err))
    binary = salt.utils.path.which(kubectl)
    if not binary:
        return _failed(ret, f"{kubectl} is not installed here: the clean-up needs kubectl")
    if not os.path.isfile(kubeconfig):
        return _failed(
            ret, f"no cluster reachable: {kubeconfig} is not there (apply kubernetes.running)"
        )
    ret["server"] = _server_of(kubeconfig)
    cache = os.path.join(__opts__["cachedir"], "kubectl")
    base = [
        binary,
        "--kubeconfig",
        kubeconfig,
        "--cache-dir",
        cache,
        f"--request-timeout={wait}s",
    ]

    def run(*args, loglevel="debug"):
        res = __salt__["cmd.run_all"](
            [*base, *args], python_shell=False, ignore_retcode=True, output_loglevel=loglevel
        )
        return res["retcode"], res.get("stdout") or "", (res.get("stderr") or "").strip()

    code, out, err = run("get", "--raw", "/version")
    if code != 0:
        return _failed(
            ret, f"no cluster reachable at {ret['server']} through {kubeconfig}: {err or out}"
        )
    try:
        ret["server_version"] = json.loads(out).get("gitVersion")
    except ValueError:
        ret["server_version"] = None

    ret["deleted_secrets"] = []
    if delete:
        # Names only (-o name), and nothing of it in the log: the Secrets hold tokens.
        code, out, err = run(
            "-n",
            namespace,
            "get",
            "secrets",
            f"--field-selector=type={TOKEN_TYPE}",
            "-o",
            "name",
            loglevel="quiet",
        )
        if code != 0:
            return _failed(ret, f"listing the token secrets of {namespace} failed: {err}")
        names = [line.split("/", 1)[-1] for line in out.split() if line.startswith("secret/")]
        if names:
            code, out, err = run(
                "-n", namespace, "delete", "secret", *names, "--ignore-not-found", "--wait=false"
            )
            if code != 0:
                return _failed(ret, f"deleting the token secrets of {namespace} failed: {err}")
        ret["deleted_secrets"] = names

    ret["restarted"], ret["not_found"] = [], []
    errors = []
    for ns, kind, name in workloads:
        code, out, err = run("-n", ns, "rollout", "restart", f"{kind}/{name}")
        label = f"{ns}/{kind}/{name}"
        if code == 0:
            ret["restarted"].append(label)
        elif "NotFound" in err or "not found" in err:
            ret["not_found"].append(label)
        else:
            errors.append(f"{label}: {err}")
    if errors:
        return _failed(ret, "rollout restart failed: " + "; ".join(errors))
    ret["result"] = True
    return ret
