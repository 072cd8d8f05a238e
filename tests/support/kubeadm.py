"""Helpers for the kubeadm-profile tests: a reference topology, kubeconfig reading, openssl."""

import base64
import pathlib

import yaml

import support

k8s_pki = support.k8s_pki

MASTERS = [
    {"name": "m1", "ip": "127.0.0.1"},
    {"name": "m2", "ip": "127.0.0.2"},
    {"name": "m3", "ip": "127.0.0.3"},
]
NODES = [{"name": "n1", "ip": "192.0.2.21"}, {"name": "n2"}]

CONFS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")


def specs(masters=MASTERS, nodes=NODES, **kwargs):
    return k8s_pki.kubeadm_specs(masters, nodes, **kwargs)


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


def x509_text(path):
    return support.openssl("x509", "-in", path, "-noout", "-text").stdout


def subject(path):
    """openssl's one-line subject, e.g. 'O = system:nodes, CN = system:node:n1'."""
    out = support.openssl("x509", "-in", path, "-noout", "-subject", "-nameopt", "oneline")
    return out.stdout.strip().removeprefix("subject=").strip()


def verify(ca, cert):
    proc = support.openssl("verify", "-CAfile", ca, cert, check=False)
    return proc.returncode == 0 and proc.stdout.strip().endswith(": OK")


class ApiServerStandIn:
    """A TLS server on 127.0.0.1 standing in for kube-apiserver (no apiserver binary here).

    It presents ``cert``/``key``, requires a client certificate signed by
    ``client_ca`` (as kube-apiserver's --client-ca-file does), and answers
    ``/version`` (kubectl asks), ``/healthz``, and ``/whoami`` with the
    verified client certificate's CN and O, so a test sees which identity
    kubectl presented.
    """

    def __init__(self, cert, key, client_ca, port=0):
        import http.server
        import json
        import ssl
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path == "/version":
                    body = {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
                elif path == "/healthz":
                    body = "ok"
                elif path == "/whoami":
                    subject = dict(x[0] for x in self.connection.getpeercert()["subject"])
                    orgs = [
                        v
                        for rdn in self.connection.getpeercert()["subject"]
                        for k, v in rdn
                        if k == "organizationName"
                    ]
                    body = {"cn": subject.get("commonName"), "o": sorted(orgs)}
                else:
                    self.send_error(404)
                    return
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        context.load_verify_locations(str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
        refused = self.refused = []  # why handshakes failed, as the server saw it

        class Server(http.server.ThreadingHTTPServer):
            def get_request(self):
                try:
                    return super().get_request()
                except ssl.SSLError as err:
                    refused.append(str(err))
                    raise

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
