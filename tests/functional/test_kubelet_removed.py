"""kubernetes.kubelet.removed applied for real: the kubelet stopped, every container gone.

Each apply is the real ``salt-call --local`` inside a sandbox (tests/support/sandbox.py)
where Salt drives a kubelet init script for real (tests/support/services.py).  The
containers are real: Debian's dockerd, and a standalone containerd driven with
``ctr``, started by the tests (tests/support/runtimes.py) with their own sockets and no
effect on the host's network.  ``crictl`` is not packaged for Debian or on PyPI
here, so the crictl path of the state is not exercised by these tests.

These tests skip (with the reason) only when a runtime cannot start here:
its Debian packages missing (``make system-deps`` installs them) or the daemon
not coming up.
"""

import os
import socket as socketlib

import pytest
from support import runtimes
from support.node import REMOVED, RUNNING, by_id, generate_sets, new_node, node_pillar

pytestmark = pytest.mark.sandbox

CONTAINERS = "kubernetes-kubelet-removed-containers-absent"
SERVICE = "kubernetes-kubelet-removed-service-dead"
RUNTIME_CLIS = ("docker", "ctr", "crictl")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("removed")


@pytest.fixture(scope="module")
def sets(work):
    return generate_sets(work, "a")


def _apply(node, *args):
    proc, states = node.call("state.apply", REMOVED, *args)
    assert states is not None, proc.stdout + proc.stderr
    return proc, by_id(states)


def _running_kubelet(node):
    proc = node.sysv.run(["service", "kubelet", "start"])
    assert proc.returncode == 0, proc.stderr
    assert node.sysv.actions("kubelet") == ["start"]


# --------------------------------------------------------------------------
# No runtime installed
# --------------------------------------------------------------------------


def _hide_runtime_clis(node):
    """Make the runtimes' tools absent inside this sandbox only.

    Copies under /usr/local (an overlay in the sandbox) are deleted there; the
    others are returned, to get /dev/null mounted over them (not executable:
    not found on PATH) in every call's namespace.
    """
    hidden = set()
    for folder in node.sysv.env()["PATH"].split(":"):
        for tool in RUNTIME_CLIS:
            path = os.path.realpath(os.path.join(folder, tool))
            if not os.path.isfile(path):
                continue
            if path.startswith("/usr/local/"):
                node.box.run(["rm", "-f", path], check=True)
            else:
                hidden.add(path)
    return sorted(hidden)


@pytest.fixture(scope="module")
def bare(new_sandbox, work):
    """A sandbox without docker, ctr or crictl (and, first, without a kubelet)."""
    node = new_node(new_sandbox, work, "bare", "k8s-node-1", kubelet=False)
    hidden = _hide_runtime_clis(node)
    prelude = "".join(f"mount --bind /dev/null {p}\n" for p in hidden)
    wrap = node.sysv.argv
    node.sysv.argv = lambda argv: ["sh", "-ec", prelude + 'exec "$@"', "bare", *wrap(argv)]
    proc = node.sysv.run(["sh", "-c", "command -v docker ctr crictl || true"])
    assert proc.stdout.strip() == "", f"still installed: {proc.stdout}"
    return node


@pytest.mark.parametrize(
    "runtime, tool",
    [("docker", "docker"), ("containerd", "crictl or ctr")],
    ids=["docker", "containerd"],
)
def test_no_runtime_installed_succeeds_without_changes(runtime, tool, bare, sets):
    bare.pillar(node_pillar(sets["a"], "node", container_runtime=runtime))
    proc, states = _apply(bare)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(not s["changes"] for s in states.values())
    assert states[CONTAINERS]["result"] is True
    assert states[CONTAINERS]["comment"] == (
        f"{runtime}'s command-line tool ({tool}) is not installed: no containers to remove"
    )
    # no kubelet either: nothing to stop
    assert states[SERVICE]["result"] is True and states[SERVICE]["changes"] == {}


def test_no_runtime_but_a_running_kubelet_stops_it(bare, sets):
    bare.sysv.install("kubelet")
    _running_kubelet(bare)
    bare.pillar(node_pillar(sets["a"], "node"))
    proc, states = _apply(bare)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert bare.sysv.actions("kubelet") == ["start", "stop"]
    assert states[SERVICE]["changes"] == {"kubelet": False}
    assert states[CONTAINERS]["changes"] == {}
    proc, states = _apply(bare)
    assert proc.returncode == 0
    assert all(not s["changes"] for s in states.values())
    assert bare.sysv.actions("kubelet") == ["start", "stop"]


# --------------------------------------------------------------------------
# docker
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerd(work, host_untouched):
    lacking = runtimes.missing("dockerd", "docker", "tini", "containerd", "runc")
    if lacking or not os.path.exists(runtimes.BUSYBOX):
        pytest.skip(
            f"docker runtime not installed ({', '.join(lacking) or runtimes.BUSYBOX}): "
            "make system-deps installs docker.io and busybox-static"
        )
    daemon = runtimes.Dockerd(work / "docker")
    why = daemon.start()
    if why:
        pytest.skip(f"dockerd cannot start here: {why}")
    try:
        daemon.import_busybox()
        yield daemon
    finally:
        daemon.stop()


def _docker_containers(docker):
    docker.cli("volume", "create", "keepme")
    docker.cli("run", "-d", "--network", "none", "--name", "c1", runtimes.IMAGE, *runtimes.SLEEP)
    docker.cli(
        "run", "-d", "--network", "none", "--name", "c2", "-v", "keepme:/data", "-v", "/anon",
        runtimes.IMAGE, *runtimes.SLEEP,
    )  # fmt: skip
    docker.cli("create", "--network", "none", "--name", "c3", runtimes.IMAGE, *runtimes.SLEEP)
    assert docker.containers() == {"c1": "running", "c2": "running", "c3": "created"}


@pytest.fixture(scope="module")
def docker_node(new_sandbox, work, sets, dockerd):
    node = new_node(new_sandbox, work, "docker-node", "k8s-node-2")
    lookup = {"runtime": {"docker": {"host": dockerd.host}}}
    node.pillar(node_pillar(sets["a"], "node", lookup=lookup))
    _running_kubelet(node)
    _docker_containers(dockerd)
    return node


def test_docker_test_mode_lists_and_keeps_everything(docker_node, dockerd):
    proc, states = _apply(docker_node, "test=True")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = states[CONTAINERS]
    assert state["result"] is None
    assert sorted(n.split()[0] for n in state["changes"]["would remove"]["containers"]) == [
        "c1",
        "c2",
        "c3",
    ]
    assert dockerd.containers() == {"c1": "running", "c2": "running", "c3": "created"}
    assert docker_node.sysv.actions("kubelet") == ["start"]


def test_docker_containers_removed_images_and_volumes_kept(docker_node, dockerd):
    volumes = dockerd.volumes()
    assert "keepme" in volumes and len(volumes) == 2  # keepme and c2's anonymous one
    proc, states = _apply(docker_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert docker_node.sysv.actions("kubelet") == ["start", "stop"]
    # the kubelet was stopped first
    assert states[SERVICE]["__run_num__"] < states[CONTAINERS]["__run_num__"]
    state = states[CONTAINERS]
    assert state["result"] is True
    assert sorted(n.split()[0] for n in state["changes"]["removed"]["containers"]) == [
        "c1",
        "c2",
        "c3",
    ]
    assert "images and volumes kept" in state["comment"]
    assert dockerd.containers() == {}
    assert dockerd.images() == [runtimes.IMAGE]
    assert dockerd.volumes() == volumes


def test_docker_again_changes_nothing(docker_node, dockerd):
    proc, states = _apply(docker_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(not s["changes"] for s in states.values())
    assert states[CONTAINERS]["comment"].startswith("No containers to remove")


def test_seed_procedure_kubernetes_running_brings_the_kubelet_back(docker_node, dockerd):
    """The seed's replacement order on one host: kubelet.removed, then kubernetes.running."""
    proc, states = docker_node.call("state.apply", RUNNING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert docker_node.sysv.actions("kubelet") == ["start", "stop", "start"]
    assert by_id(states)["kubernetes-kubelet-service-running"]["changes"] == {"kubelet": True}


def test_docker_images_and_volumes_go_when_pillar_asks(docker_node, dockerd, sets):
    dockerd.cli("run", "-d", "--network", "none", "--name", "c4", runtimes.IMAGE, *runtimes.SLEEP)
    lookup = {
        "runtime": {"docker": {"host": dockerd.host}},
        "cleanup": {"images": True, "volumes": True},
    }
    docker_node.pillar(node_pillar(sets["a"], "node", lookup=lookup))
    proc, states = _apply(docker_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    removed = states[CONTAINERS]["changes"]["removed"]
    assert [n.split()[0] for n in removed["containers"]] == ["c4"]
    assert "keepme" in removed["volumes"] and len(removed["images"]) == 1
    assert dockerd.containers() == {}
    assert dockerd.images() == []
    assert dockerd.volumes() == []
    dockerd.import_busybox()  # for whoever comes next


def _dead_socket(path):
    """A unix socket file nothing listens on: a daemon that is there but does not answer."""
    sock = socketlib.socket(socketlib.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the file stays; connecting to it is refused
    return path


def test_docker_daemon_not_running_says_so_and_removes_nothing(docker_node, dockerd, sets, work):
    """The docker CLI is installed, no daemon runs (its socket does not exist)."""
    dockerd.cli("run", "-d", "--network", "none", "--name", "c9", runtimes.IMAGE, *runtimes.SLEEP)
    socket = work / "no-such-docker.sock"
    lookup = {"runtime": {"docker": {"host": f"unix://{socket}"}}}
    docker_node.pillar(node_pillar(sets["a"], "node", lookup=lookup))
    proc, states = _apply(docker_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = states[CONTAINERS]
    assert state["result"] is True and state["changes"] == {}
    assert state["comment"].startswith("docker's command-line tool is installed (/")
    assert (
        f"), but no docker daemon is running: its socket {socket} does not exist. "
        "Nothing was removed;"
    ) in state["comment"]
    # another daemon's containers are not touched
    assert dockerd.containers() == {"c9": "running"}
    dockerd.cli("rm", "--force", "c9")


def test_docker_daemon_unreachable_fails_naming_it(docker_node, sets, work):
    socket = _dead_socket(work / "dead-docker.sock")
    lookup = {"runtime": {"docker": {"host": f"unix://{socket}"}}}
    docker_node.pillar(node_pillar(sets["a"], "node", lookup=lookup))
    proc, states = _apply(docker_node)
    assert proc.returncode != 0
    state = states[CONTAINERS]
    assert state["result"] is False
    assert state["comment"].startswith("Could not remove the containers: ")
    assert str(socket) in state["comment"]


# --------------------------------------------------------------------------
# containerd through ctr
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd(work, host_untouched):
    lacking = runtimes.missing("containerd", "ctr", "tini", "runc", "containerd-shim-runc-v2")
    if lacking or not os.path.exists(runtimes.BUSYBOX):
        pytest.skip(
            f"containerd not installed ({', '.join(lacking) or runtimes.BUSYBOX}): "
            "make system-deps installs docker.io (it brings containerd) and busybox-static"
        )
    daemon = runtimes.Containerd(work / "containerd")
    why = daemon.start()
    if why:
        pytest.skip(f"containerd cannot start here: {why}")
    try:
        daemon.import_busybox("k8s.io")
        daemon.import_busybox("default")
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def ctr_node(new_sandbox, work, sets, containerd):
    node = new_node(new_sandbox, work, "ctr-node", "k8s-node-3")
    lookup = {"runtime": {"containerd": {"cli": "ctr", "address": str(containerd.socket)}}}
    node.pillar(node_pillar(sets["a"], "node", container_runtime="containerd", lookup=lookup))
    _running_kubelet(node)
    containerd.run("c1")
    containerd.run("c2")
    containerd.ctr("containers", "create", runtimes.IMAGE, "c3", *runtimes.SLEEP)
    containerd.run("other", namespace="default")  # not Kubernetes': left alone
    assert containerd.containers() == ["c1", "c2", "c3"]
    assert containerd.tasks() == {"c1": "RUNNING", "c2": "RUNNING"}
    return node


def test_ctr_removes_every_container_of_the_kubernetes_namespace(ctr_node, containerd):
    proc, states = _apply(ctr_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ctr_node.sysv.actions("kubelet") == ["start", "stop"]
    state = states[CONTAINERS]
    assert state["result"] is True
    assert state["changes"] == {"removed": {"containers": ["c1", "c2", "c3"]}}
    assert "namespace k8s.io" in state["comment"] and "images kept" in state["comment"]
    assert containerd.containers() == []
    assert containerd.tasks() == {}
    assert containerd.images() == [runtimes.IMAGE]
    assert containerd.containers("default") == ["other"]
    assert containerd.tasks("default") == {"other": "RUNNING"}


def test_ctr_again_changes_nothing(ctr_node):
    proc, states = _apply(ctr_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(not s["changes"] for s in states.values())


def test_ctr_removes_images_when_pillar_asks(ctr_node, containerd, sets):
    containerd.run("c5")
    lookup = {
        "runtime": {"containerd": {"cli": "ctr", "address": str(containerd.socket)}},
        "cleanup": {"images": True},
    }
    ctr_node.pillar(node_pillar(sets["a"], "node", container_runtime="containerd", lookup=lookup))
    proc, states = _apply(ctr_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert states[CONTAINERS]["changes"] == {
        "removed": {"containers": ["c5"], "images": [runtimes.IMAGE]}
    }
    assert containerd.containers() == [] and containerd.images() == []
    assert containerd.images("default") == [runtimes.IMAGE]


def test_ctr_daemon_not_running_says_so(ctr_node, containerd, sets, work):
    socket = work / "no-such-containerd.sock"
    lookup = {"runtime": {"containerd": {"cli": "ctr", "address": str(socket)}}}
    ctr_node.pillar(node_pillar(sets["a"], "node", container_runtime="containerd", lookup=lookup))
    proc, states = _apply(ctr_node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = states[CONTAINERS]
    assert state["result"] is True and state["changes"] == {}
    assert "containerd's command-line tool is installed (" in state["comment"]
    assert (
        f"no containerd daemon is running: its socket {socket} does not exist" in (state["comment"])
    )
    assert "Nothing was removed" in state["comment"]


def test_ctr_daemon_unreachable_fails_naming_it(ctr_node, sets, work):
    socket = _dead_socket(work / "dead-containerd.sock")
    lookup = {"runtime": {"containerd": {"cli": "ctr", "address": str(socket)}}}
    ctr_node.pillar(node_pillar(sets["a"], "node", container_runtime="containerd", lookup=lookup))
    proc, states = _apply(ctr_node)
    assert proc.returncode != 0
    state = states[CONTAINERS]
    assert state["result"] is False
    assert state["comment"].startswith("Could not remove the containers: ")
    assert str(socket) in state["comment"]
