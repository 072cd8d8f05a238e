"""A stand-in for the few kube-apiserver endpoints the clean-up step uses.

Not an apiserver: a Python HTTPS server (client certificates required, like
tests/support/tlsserver.py) that keeps a handful of objects in memory and answers the
real ``kubectl`` for exactly these commands:

- ``kubectl get --raw /version`` (and ``/healthz``);
- discovery: ``/api``, ``/apis`` (the plain, non-aggregated lists kubectl falls
  back to), ``/api/v1``, ``/apis/apps/v1``;
- ``kubectl -n NS get secrets --field-selector type=... -o json``;
- ``kubectl -n NS delete secret NAME ... --wait=false``;
- ``kubectl -n NS rollout restart daemonset|deployment|statefulset/NAME``
  (GET the object, then a strategic-merge PATCH of its pod template's
  ``kubectl.kubernetes.io/restartedAt`` annotation).

Everything kubectl sends is recorded in ``requests`` so a test can check what a
real kubectl asked for, and ``objects`` shows what is left.  Tests that use it
say so: kubectl is real, the cluster behind it is this stand-in.
"""

import http.server
import json
import threading
import urllib.parse

from support import tlsserver

WORKLOADS = {"daemonsets": "DaemonSet", "deployments": "Deployment", "statefulsets": "StatefulSet"}
SHORT = {"daemonsets": ["ds"], "deployments": ["deploy"], "statefulsets": ["sts"]}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource(name, kind, short=()):
    return {
        "name": name,
        "singularName": kind.lower(),
        "namespaced": True,
        "kind": kind,
        "verbs": VERBS,
        "shortNames": list(short),
    }


DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "apps",
                "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
            }
        ],
    },
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [_resource("secrets", "Secret")],
    },
    "/apis/apps/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "apps/v1",
        "resources": [_resource(n, k, SHORT[n]) for n, k in WORKLOADS.items()],
    },
}


def secret(name, namespace="kube-system", kind="kubernetes.io/service-account-token"):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "type": kind,
        "data": {"ca.crt": "b2xkIGNh", "token": TOKEN},
    }


#: the (base64) token every stand-in Secret carries: it must never reach a log
TOKEN = "c2VjcmV0LXRva2VuLW5ldmVyLWluLWEtbG9n"


def workload(plural, name, namespace="kube-system"):
    return {
        "apiVersion": "apps/v1",
        "kind": WORKLOADS[plural],
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": {"template": {"metadata": {"annotations": {}}, "spec": {"containers": []}}},
    }


def _not_found(what, name):
    return 404, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{what} "{name}" not found',
        "reason": "NotFound",
        "details": {"name": name, "kind": what},
        "code": 404,
    }


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self):
        api = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        body = json.loads(raw) if raw else None
        with api.lock:
            api.requests.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": query,
                    "body": body,
                    "content_type": self.headers.get("Content-Type"),
                    "client": tlsserver._subject(self.connection.getpeercert()),
                }
            )
            status, doc = api.handle(self.command, parts.path, query, body)
        data = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
        self.send_response(status)
        ctype = "text/plain" if isinstance(doc, str) else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_DELETE = do_PATCH = do_POST = do_PUT = _answer


class KubeAPI(tlsserver.TLSServer):
    """HTTPS on 127.0.0.1 (``port`` or a free one), client certificates required;
    ``reload=True`` follows the files as tlsserver.TLSServer does."""

    handler = _Handler

    def __init__(self, cert_file, key_file, client_ca_file, port=0, reload=False):
        super().__init__(cert_file, key_file, client_ca_file, port=port, reload=reload)
        self.lock = threading.Lock()
        self.requests = []
        self.objects = {}  # (plural, namespace, name) -> object

    def add(self, obj):
        plural = "secrets" if obj["kind"] == "Secret" else obj["kind"].lower() + "s"
        meta = obj["metadata"]
        self.objects[(plural, meta["namespace"], meta["name"])] = obj
        return obj

    def handle(self, method, path, query, body):
        if path in ("/version",):
            return 200, tlsserver.VERSION
        if path in ("/healthz", "/livez", "/readyz"):
            return 200, "ok"
        if path in DISCOVERY and method == "GET":
            return 200, DISCOVERY[path]
        segments = path.strip("/").split("/")
        # /api/v1/namespaces/NS/secrets[/NAME], /apis/apps/v1/namespaces/NS/PLURAL/NAME
        if segments[:3] == ["api", "v1", "namespaces"] and len(segments) in (5, 6):
            namespace, plural = segments[3], segments[4]
        elif segments[:4] == ["apis", "apps", "v1", "namespaces"] and len(segments) == 7:
            namespace, plural = segments[4], segments[5]
        else:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "status": "Failure"}
        name = segments[-1] if len(segments) in (6, 7) else None
        if name is None and method == "GET":
            return 200, self._list(plural, namespace, query.get("fieldSelector", ""))
        key = (plural, namespace, name)
        what = plural if plural == "secrets" else f"{plural}.apps"
        if key not in self.objects:
            return _not_found(what, name)
        obj = self.objects[key]
        if method == "GET":
            return 200, obj
        if method == "DELETE":
            del self.objects[key]
            return 200, obj
        if method == "PATCH":
            template = (body or {}).get("spec", {}).get("template", {})
            annotations = template.get("metadata", {}).get("annotations", {})
            obj["spec"]["template"]["metadata"]["annotations"].update(annotations)
            obj["metadata"]["generation"] += 1
            return 200, obj
        return 405, {"kind": "Status", "code": 405, "status": "Failure"}

    def _list(self, plural, namespace, selector):
        wanted = dict(s.split("=", 1) for s in selector.split(",") if "=" in s)
        items = [
            obj
            for (kind, ns, _), obj in sorted(self.objects.items())
            if kind == plural
            and ns == namespace
            and all(obj.get(k) == v for k, v in wanted.items())  # only "type=" is used
        ]
        kind = "SecretList" if plural == "secrets" else WORKLOADS[plural] + "List"
        version = "v1" if plural == "secrets" else "apps/v1"
        return {"kind": kind, "apiVersion": version, "metadata": {}, "items": items}
