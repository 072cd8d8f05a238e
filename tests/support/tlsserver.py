"""A small HTTPS server that stands in for kube-apiserver in TLS tests.

It presents a given certificate and key, *requires* a client certificate signed
by a given CA, and answers what ``kubectl get --raw /healthz`` asks for
(``GET /version?timeout=...`` first, then the path).  It records the subject
of every client certificate it accepted, so a test can tell who connected,
answers ``/whoami`` with the client certificate's CN and Os, and records why
it refused a handshake (``refused``).

    with TLSServer(cert_file, key_file, client_ca_file) as server:
        kubectl(..., server=server.url)
        server.clients   # [{'commonName': 'kubecfg', 'organizationName': 'system:masters'}]
"""

import http.server
import json
import os
import ssl
import threading

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "platform": "linux/amd64",
}


def _subject(peer):
    return {key: value for rdn in peer.get("subject", ()) for key, value in rdn}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status, body, content_type):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.owner.clients.append(_subject(self.connection.getpeercert()))
        path = self.path.split("?", 1)[0]
        if path == "/version":
            self._send(200, json.dumps(VERSION), "application/json")
        elif path in ("/healthz", "/livez", "/readyz"):
            self._send(200, "ok", "text/plain")
        elif path == "/whoami":  # which identity the client presented: its CN and Os
            subject = self.connection.getpeercert()["subject"]
            orgs = sorted(v for rdn in subject for k, v in rdn if k == "organizationName")
            who = {"cn": _subject({"subject": subject}).get("commonName"), "o": orgs}
            self._send(200, json.dumps(who), "application/json")
        else:
            self._send(404, json.dumps({"kind": "Status", "code": 404}), "application/json")


class _Server(http.server.ThreadingHTTPServer):
    def get_request(self):
        try:
            return super().get_request()
        except ssl.SSLError as err:  # why a handshake failed, as the server saw it
            self.owner.refused.append(str(err))
            raise


class TLSServer:
    """HTTPS on 127.0.0.1 (``port``, or a free one), client certificates required.

    With ``reload=True`` the three files are read again at each handshake when
    they changed (and kept as they were while they are missing or do not
    load): like an apiserver that its kubelet restarted with the files on its
    host's disk.
    """

    handler = _Handler

    def __init__(self, cert_file, key_file, client_ca_file, port=0, reload=False):
        self._files = tuple(str(f) for f in (cert_file, key_file, client_ca_file))
        self._stamp = self._stamps()
        context = self._context()
        if reload:
            context.sni_callback = self._sni
        self._current = context
        self.clients = []
        self.refused = []
        self.httpd = _Server(("127.0.0.1", port), self.handler)
        self.httpd.owner = self
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        # A short poll: shutdown() waits for it (0.5 s by default, per server).
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _stamps(self):
        try:
            return tuple(os.stat(f).st_mtime_ns for f in self._files)
        except FileNotFoundError:
            return None

    def _context(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._files[0], self._files[1])
        context.load_verify_locations(cafile=self._files[2])
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _sni(self, conn, server_name, context):
        stamp = self._stamps()
        if stamp is not None and stamp != self._stamp:
            try:
                fresh = self._context()
            except (OSError, ssl.SSLError):
                fresh = None  # half written: keep serving what was there
            if fresh is not None:
                fresh.sni_callback = self._sni
                self._current, self._stamp = fresh, stamp
        conn.context = self._current

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def kubeconfig(path, server, ca_file, cert_file, key_file, server_name):
    """Write a kubeconfig that points kubectl at ``server`` with file references."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "k8s",
                "cluster": {
                    "server": server,
                    "certificate-authority": str(ca_file),
                    "tls-server-name": server_name,
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate": str(cert_file), "client-key": str(key_file)},
            }
        ],
        "contexts": [{"name": "k8s", "context": {"cluster": "k8s", "user": "admin"}}],
        "current-context": "k8s",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def https_get(port, path, ca_file, cert_file, key_file, server_name, host="127.0.0.1"):
    """GET ``path`` from ``host:port`` with Python's ssl: the server's certificate
    checked against ``ca_file`` (one CA or a bundle) and ``server_name``, our
    client certificate presented.  Returns (status, body); raises ssl.SSLError /
    OSError when the handshake is refused."""
    import socket

    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    request = f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as conn,
    ):
        conn.sendall(request.encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()
