"""Real container runtimes for tests: Debian's dockerd and containerd, started by the test.

Each daemon runs inside its own sandbox (tests/support/sandbox.py: /etc, /var, /srv and
/usr/local overlaid) with a private tmpfs on /run, under ``tini -s`` (it reaps
the per-container shims).  Its sockets, data and state live in a pytest tmp
folder; nothing of it reaches the host's /etc, /run or /var.  Networking is
left alone: dockerd runs with --iptables=false --ip-forward=false
--ip-masq=false --bridge=none and containers with --network none; ctr
containers get a private network namespace holding only loopback.

There is no registry: images are made locally, from a folder holding a static
busybox (``docker import`` of a tarball for docker, an OCI archive for ctr).

    with Dockerd(tmp / "docker") as docker:
        docker.cli("run", "-d", "--network", "none", "--name", "c1", IMAGE, *SLEEP)
        docker.host            # unix:///.../docker.sock, for DOCKER_HOST or --host
"""

import contextlib
import hashlib
import io
import json
import pathlib
import platform
import shutil
import subprocess
import tarfile
import time

from support import sandbox

IMAGE = "local/busybox:latest"
SLEEP = ("/bin/busybox", "sleep", "3600")
BUSYBOX = "/bin/busybox"


def missing(*tools):
    """The tools of ``tools`` not installed (on PATH), e.g. ['dockerd']."""
    return [tool for tool in tools if not shutil.which(tool)]


def busybox_rootfs(path):
    """A folder with a static busybox at bin/busybox: the whole image."""
    path = pathlib.Path(path)
    (path / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, path / "bin/busybox")
    return path


def _daemon_argv(argv):
    """``argv`` under tini, in a new sandbox namespace with a private /run."""
    return [
        "sh",
        "-ec",
        'mount -t tmpfs -o mode=0755 tmpfs /run\nexec "$@"',
        "daemon",
        "tini",
        "-s",
        "--",
        *argv,
    ]


class _Daemon:
    name = "daemon"

    def __init__(self, base):
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.box = sandbox.Sandbox(self.base / "box")
        self.log_path = self.base / f"{self.name}.log"
        self.proc = None

    def argv(self):
        raise NotImplementedError

    def ready(self):
        raise NotImplementedError

    def clean(self):
        """Remove what runs, so that stopping is quick."""

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout=30):
        """Start the daemon; returns None when it answers, else why it could not start."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.box.wrap(_daemon_argv(self.argv())), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                status = self.proc.returncode
                return f"{self.name} exited with status {status}:\n{self.log()[-2000:]}"
            if self.ready():
                return None
            time.sleep(0.05)
        self.stop()
        return f"{self.name} did not answer within {timeout} s:\n{self.log()[-2000:]}"

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.clean()
        self.proc.terminate()  # tini passes it on to the daemon
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Dockerd(_Daemon):
    """Debian's dockerd (20.10) with its own containerd, socket under ``base``."""

    name = "dockerd"

    def __init__(self, base):
        super().__init__(base)
        self.socket = self.base / "docker.sock"
        self.host = f"unix://{self.socket}"

    def argv(self):
        return [
            "dockerd",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver=overlay2",
            f"--data-root={self.base / 'data'}",
            f"--exec-root={self.base / 'exec'}",
            f"--pidfile={self.base / 'dockerd.pid'}",
            "--host",
            self.host,
        ]

    def cli(self, *args, check=True, input=None):
        proc = subprocess.run(
            ["docker", "--host", self.host, *map(str, args)],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(map(str, args))}: {proc.stderr}")
        return proc

    def ready(self):
        return self.socket.exists() and self.cli("version", check=False).returncode == 0

    def import_busybox(self):
        """local/busybox:latest from a tarball of a busybox folder."""
        rootfs = busybox_rootfs(self.base / "rootfs")
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            tar.add(rootfs, arcname=".")
        proc = subprocess.run(
            ["docker", "--host", self.host, "import", "-", IMAGE],
            input=data.getvalue(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return IMAGE

    def containers(self):
        """{name: status} of every container."""
        out = self.cli("ps", "--all", "--format", "{{.Names}} {{.State}}").stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())

    def images(self):
        out = self.cli("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout
        return sorted(out.split())

    def volumes(self):
        return sorted(self.cli("volume", "ls", "--quiet").stdout.split())

    def clean(self):
        ids = self.cli("ps", "--all", "--quiet", check=False).stdout.split()
        if ids:
            self.cli("rm", "--force", *ids, check=False)


def _go_arch():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def oci_archive(path, rootfs, ref=IMAGE):
    """An OCI image archive (what ``ctr images import`` takes) of the folder ``rootfs``."""
    blobs = {}

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    layer_desc = blob(layer.getvalue())
    config = {
        "architecture": _go_arch(),
        "os": "linux",
        "config": {"Cmd": list(SLEEP)},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **blob(json.dumps(config).encode()),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **blob(json.dumps(manifest).encode()),
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        ],
    }
    with tarfile.open(path, mode="w") as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add(f"blobs/sha256/{digest.split(':', 1)[1]}", data)
    return path


class Containerd(_Daemon):
    """A standalone containerd (1.6) with its own socket, root and state under ``base``.

    The CRI plugin is disabled: ctr talks to the plain containerd API.
    """

    name = "containerd"

    def __init__(self, base):
        super().__init__(base)
        self.socket = self.base / "containerd.sock"
        self.config = self.base / "config.toml"
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.base / "root"}"\n'
            f'state = "{self.base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
        )

    def argv(self):
        return ["containerd", "--config", str(self.config)]

    def ctr(self, *args, namespace="k8s.io", check=True):
        proc = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", namespace, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(map(str, args))}: {proc.stderr}")
        return proc

    def ready(self):
        return self.socket.exists() and self.ctr("version", check=False).returncode == 0

    def import_busybox(self, namespace="k8s.io"):
        rootfs = busybox_rootfs(self.base / "rootfs")
        archive = oci_archive(self.base / "busybox-oci.tar", rootfs)
        self.ctr("images", "import", archive, namespace=namespace)
        return IMAGE

    def run(self, name, image=IMAGE, namespace="k8s.io"):
        """A running container (stdio to /dev/null: no fifos under the host's /run)."""
        self.ctr("run", "--detach", "--null-io", image, name, *SLEEP, namespace=namespace)

    def containers(self, namespace="k8s.io"):
        return sorted(self.ctr("containers", "ls", "--quiet", namespace=namespace).stdout.split())

    def tasks(self, namespace="k8s.io"):
        lines = self.ctr("tasks", "ls", namespace=namespace).stdout.splitlines()[1:]
        return {line.split()[0]: line.split()[2] for line in lines if line.strip()}

    def images(self, namespace="k8s.io"):
        return sorted(self.ctr("images", "ls", "--quiet", namespace=namespace).stdout.split())

    def clean(self):
        namespaces = self.ctr("namespaces", "ls", "--quiet", check=False).stdout.split()
        for namespace in namespaces:
            tasks = list(self.tasks(namespace))
            if tasks:
                self.ctr("tasks", "delete", "--force", *tasks, namespace=namespace, check=False)
            ids = self.containers(namespace)
            if ids:
                self.ctr("containers", "delete", *ids, namespace=namespace, check=False)
