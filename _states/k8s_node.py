"""
States for taking a Kubernetes master or node down and bringing it up.

``k8s_node.containers_absent``
    Removes every container the host's container runtime holds, through the
    runtime's command-line tool: ``docker``, or for containerd ``crictl`` (pods
    are stopped and removed first) or ``ctr`` (tasks killed, then containers
    deleted, in one namespace). Images and volumes stay unless asked for. A
    host without the tool has no containers to remove: the state says so and
    succeeds without changes. ``kubernetes.kubelet.removed`` uses it after
    stopping the kubelet.

``k8s_node.prerequisites_met``
    Checks, before ``kubernetes.running`` writes anything, that the host can
    run a kubelet at all: the kubelet binary, its service known to the init
    system, and the container runtime's daemon. Fails naming what is missing
    and how to get it; changes nothing.

``k8s_node.key_pair_validated``
    Checks a private key and its public key given in pillar (the
    service-account pair ``sa.key``/``sa.pub``) before anything is written:
    both parse, the key is RSA or ECDSA, the two belong together. Changes
    nothing; comments name items and fingerprints, never key material.
"""

import logging
import os
import shlex

import salt.utils.path

try:
    import k8s_pki
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    HAS_PKI = True
    _IMPORT_ERROR = ""
except ImportError as _err:  # cryptography missing, or _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s_node"

RUNTIMES = ("docker", "containerd")
CONTAINERD_CLIS = ("auto", "crictl", "ctr")
#: The daemons of the container runtimes a kubelet can use, by runtime: what
#: the precheck looks for to say which runtime a host has.
RUNTIME_DAEMONS = {"containerd": "containerd", "docker": "dockerd", "cri-o": "crio"}


def __virtual__():
    return __virtualname__


def _ret(name):
    return {"name": name, "result": False, "changes": {}, "comment": ""}


class _Failed(Exception):
    """A runtime command failed; the message says which and why."""


def _run(argv):
    """stdout of ``argv``; raises _Failed with the command and its error output."""
    res = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if res["retcode"] != 0:
        output = (res.get("stderr") or res.get("stdout") or "").strip()
        shown = shlex.join(argv if len(argv) <= 8 else argv[:8] + ["..."])
        raise _Failed(f"{shown} failed with exit status {res['retcode']}: {output}")
    return res["stdout"]


def _lines(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


def _finish(ret, removed, what, extra):
    """Fill ret from ``removed`` ({kind: [items]}) after a removal or a test-mode look."""
    removed = {kind: items for kind, items in removed.items() if items}
    notes = [note for note in extra if note]
    if not removed:
        ret["result"] = True
        ret["comment"] = "; ".join([f"No containers to remove ({what})", *notes])
        return ret
    counts = ", ".join(f"{len(items)} {kind}" for kind, items in removed.items())
    if __opts__.get("test"):
        ret["result"] = None
        ret["changes"] = {"would remove": removed}
        ret["comment"] = "; ".join([f"Would remove {counts} ({what})", *notes])
    else:
        ret["result"] = True
        ret["changes"] = {"removed": removed}
        ret["comment"] = "; ".join([f"Removed {counts} ({what})", *notes])
    return ret


def _no_daemon(ret, runtime, binary, socket):
    """The tool is there but its daemon is not running: ``ret`` saying so, or None.

    Only a unix socket that does not exist counts (nothing listens there, so no
    container runs through it); a daemon that exists but fails to answer is an
    error the caller reports.  Nothing can be listed without the daemon, so the
    comment says plainly that nothing was removed rather than "no containers".
    """
    if not socket.startswith("/") or os.path.exists(socket):
        return None
    ret["result"] = True
    ret["comment"] = (
        f"{runtime}'s command-line tool is installed ({binary}), but no {runtime} daemon "
        f"is running: its socket {socket} does not exist. Nothing was removed; containers "
        f"it keeps on disk stay until it runs again (then apply this again to remove them)"
    )
    return ret


def _docker_socket(host):
    """The unix socket the docker CLI talks to, or "" when it is not a unix socket."""
    host = host or os.environ.get("DOCKER_HOST", "") or "unix:///var/run/docker.sock"
    return host[len("unix://") :] if host.startswith("unix://") else ""


def _docker(ret, cli, host, images, volumes):
    binary = salt.utils.path.which(cli)
    if not binary:
        ret["result"] = True
        ret["comment"] = (
            f"docker's command-line tool ({cli}) is not installed: no containers to remove"
        )
        return ret
    if _no_daemon(ret, "docker", binary, _docker_socket(host)):
        return ret
    base = [binary] + (["--host", host] if host else [])
    what = f"docker through {binary}" + (f" at {host}" if host else "")
    test = __opts__.get("test")

    def containers():
        listed = _run(base + ["ps", "--all", "--no-trunc", "--format", "{{.ID}} {{.Names}}"])
        return [tuple((line.split(None, 1) + [""])[:2]) for line in _lines(listed)]

    found = containers()
    removed = {"containers": [f"{cname} ({cid[:12]})" for cid, cname in found]}
    if found and not test:
        _run(base + ["rm", "--force"] + (["--volumes"] if volumes else []) + [c[0] for c in found])
        left = containers()
        if left:
            raise _Failed(f"still there after docker rm: {', '.join(n for _, n in left)}")
    if volumes:
        names = _lines(_run(base + ["volume", "ls", "--quiet"]))
        if names and not test:
            _run(base + ["volume", "rm", "--force"] + names)
        removed["volumes"] = names
    if images:
        ids = list(dict.fromkeys(_lines(_run(base + ["image", "ls", "--all", "--quiet"]))))
        if ids and not test:
            _run(base + ["image", "rm", "--force"] + ids)
        removed["images"] = ids
    kept = [k for k, asked in (("images", images), ("volumes", volumes)) if not asked]
    note = f"{' and '.join(kept)} kept" if kept else ""
    return _finish(ret, removed, what, [note])


def _crictl(ret, binary, address, images, volumes):
    base = [binary] + (["--runtime-endpoint", f"unix://{address}"] if address else [])
    what = f"containerd through {binary}" + (f" at {address}" if address else "")
    test = __opts__.get("test")
    pods = _lines(_run(base + ["pods", "--quiet"]))
    if pods and not test:
        _run(base + ["stopp"] + pods)
        _run(base + ["rmp", "--force"] + pods)
    containers = _lines(_run(base + ["ps", "--all", "--quiet"]))
    if containers and not test:
        _run(base + ["rm", "--force"] + containers)
    removed = {"pods": pods, "containers": containers}
    if not test:
        left = _lines(_run(base + ["ps", "--all", "--quiet"]))
        if left:
            raise _Failed(f"still there after crictl rm: {', '.join(left)}")
    if images:
        refs = _lines(_run(base + ["images", "--quiet"]))
        if refs and not test:
            _run(base + ["rmi", "--all"])
        removed["images"] = refs
    notes = ["images kept" if not images else ""]
    if volumes:
        notes.append("containerd has no volumes to remove")
    return _finish(ret, removed, what, notes)


def _ctr(ret, binary, address, namespace, images, volumes):
    base = [binary] + (["--address", address] if address else []) + ["--namespace", namespace]
    what = f"containerd through {binary}, namespace {namespace}" + (
        f" at {address}" if address else ""
    )
    test = __opts__.get("test")
    containers = _lines(_run(base + ["containers", "ls", "--quiet"]))
    if containers and not test:
        tasks = set(_lines(_run(base + ["tasks", "ls", "--quiet"])))
        running = [c for c in containers if c in tasks]
        if running:
            _run(base + ["tasks", "delete", "--force"] + running)
        _run(base + ["containers", "delete"] + containers)
        left = _lines(_run(base + ["containers", "ls", "--quiet"]))
        if left:
            raise _Failed(f"still there after ctr containers delete: {', '.join(left)}")
    removed = {"containers": containers}
    if images:
        refs = _lines(_run(base + ["images", "ls", "--quiet"]))
        if refs and not test:
            _run(base + ["images", "rm"] + refs)
        removed["images"] = refs
    notes = ["images kept" if not images else ""]
    if volumes:
        notes.append("containerd has no volumes to remove")
    return _finish(ret, removed, what, notes)


def containers_absent(
    name,
    cli="",
    host="",
    address="",
    namespace="k8s.io",
    images=False,
    volumes=False,
):
    """
    Remove every container of the host's container runtime.

    name
        The runtime: ``docker`` or ``containerd``.
    cli : docker (docker) / auto (containerd)
        The command-line tool. For containerd: ``crictl``, ``ctr``, or
        ``auto`` (crictl when installed, else ctr).
    host : ''
        docker only: the daemon's address (``--host``), e.g.
        ``unix:///run/docker.sock``; empty for the tool's default.
    address : ''
        containerd only: the socket path, e.g. ``/run/containerd/containerd.sock``.
    namespace : k8s.io
        ctr only: the containerd namespace (crictl always sees Kubernetes').
    images : False
        Also remove every image.
    volumes : False
        docker only: also remove the containers' anonymous volumes and every
        volume.

    Succeeds without changes when the tool is not installed, and when its
    daemon is not running (its unix socket does not exist: the comment says
    so, and that nothing was removed). Fails, naming the command and its
    error, when a daemon is there but does not answer, or a container is
    still there afterwards.

    .. code-block:: yaml

        kubernetes-kubelet-removed-containers-absent:
          k8s_node.containers_absent:
            - name: docker
            - images: False
    """
    ret = _ret(name)
    if name not in RUNTIMES:
        ret["comment"] = f"name must be one of {', '.join(RUNTIMES)}, not {name!r}"
        return ret
    try:
        if name == "docker":
            return _docker(ret, cli or "docker", host, bool(images), bool(volumes))
        choice = cli or "auto"
        if choice not in CONTAINERD_CLIS:
            ret["comment"] = f"cli must be one of {', '.join(CONTAINERD_CLIS)}, not {choice!r}"
            return ret
        tools = ("crictl", "ctr") if choice == "auto" else (choice,)
        found = {tool: salt.utils.path.which(tool) for tool in tools}
        if not any(found.values()):
            ret["result"] = True
            ret["comment"] = (
                f"containerd's command-line tool ({' or '.join(tools)}) is not installed: "
                "no containers to remove"
            )
            return ret
        tool = found.get("crictl") or found["ctr"]
        # ctr's default socket; crictl without an address tries several itself
        socket = address or ("" if found.get("crictl") else "/run/containerd/containerd.sock")
        if _no_daemon(ret, "containerd", tool, socket):
            return ret
        if found.get("crictl"):
            return _crictl(ret, found["crictl"], address, bool(images), bool(volumes))
        return _ctr(ret, found["ctr"], address, namespace, bool(images), bool(volumes))
    except _Failed as err:
        ret["result"] = False
        ret["comment"] = f"Could not remove the containers: {err}"
        return ret


def _kubelet_problems(binary, service):
    problems = []
    if not os.path.isfile(binary):
        problems.append(
            f"kubelet binary not found at {binary}: install the kubelet package "
            "(or set kubernetes:lookup:kubelet:binary to where it is)"
        )
    elif not os.access(binary, os.X_OK):
        problems.append(f"kubelet binary {binary} is not executable")
    if not __salt__["service.available"](service):
        problems.append(
            f"the {service} service is unknown to the init system: install the kubelet "
            "package, which brings its unit (or set kubernetes:lookup:kubelet:service)"
        )
    return problems


def _runtime_problems(container_runtime, daemon):
    """What is wrong with the runtime (list) and what was found (text)."""
    found = {runtime: salt.utils.path.which(name) for runtime, name in RUNTIME_DAEMONS.items()}
    wanted = salt.utils.path.which(daemon)
    if wanted:
        return [], f"container runtime {container_runtime} ({wanted})"
    others = [f"{runtime} ({path})" for runtime, path in found.items() if path]
    if others:
        return [
            f"kubernetes:container_runtime is {container_runtime}, but its daemon {daemon} "
            f"is not installed; found {', '.join(others)}: install {container_runtime} or "
            "set kubernetes:container_runtime to the runtime this host has"
        ], ""
    return [
        f"no container runtime ({', '.join(RUNTIME_DAEMONS)}) found: install one "
        f"(containerd, or docker with cri-dockerd) and set kubernetes:container_runtime "
        f"(now {container_runtime}, which needs {daemon})"
    ], ""


def prerequisites_met(
    name="kubelet", binary="/usr/bin/kubelet", container_runtime="docker", daemon=""
):
    """
    Check that this host can run a kubelet; changes nothing.

    name : kubelet
        The kubelet's service: the init system must know it (its unit or init
        script comes with the kubelet package).
    binary : /usr/bin/kubelet
        Where the kubelet binary must be (the service's drop-in runs it).
    container_runtime : docker
        The runtime pillar ``kubernetes:container_runtime`` names.
    daemon : ''
        Its daemon, looked up on PATH; empty: dockerd for docker, containerd
        for containerd.

    Fails, saying what is missing and how to get it, when the binary, the
    service or the runtime's daemon is not there (also in test mode):
    otherwise the kubelet's service would fail to start with no reason given.
    Whether the runtime runs is not checked: the kubelet waits for it.

    .. code-block:: yaml

        kubernetes-kubelet-prerequisites-met:
          k8s_node.prerequisites_met:
            - name: kubelet
            - binary: /usr/bin/kubelet
            - container_runtime: containerd
    """
    ret = _ret(name)
    daemon = daemon or RUNTIME_DAEMONS.get(container_runtime, container_runtime)
    problems = _kubelet_problems(binary, name)
    runtime_problems, runtime_found = _runtime_problems(container_runtime, daemon)
    problems += runtime_problems
    if problems:
        ret["comment"] = "This host cannot run a kubelet: " + "; ".join(problems)
        return ret
    ret["result"] = True
    ret["comment"] = f"kubelet {binary}, service {name}, {runtime_found}"
    return ret


def key_pair_validated(name="kubernetes:service_account", key="sa.key", pub="sa.pub"):
    """
    Check a private key and its public key in pillar; changes nothing.

    name : kubernetes:service_account
        Pillar path of the mapping holding the pair.
    key, pub : sa.key, sa.pub
        The items holding the private key and the public key (PEM).

    Fails, naming the item, when one is missing, is not strictly one PEM
    block of its type (nothing around it), does not parse, is not an RSA or
    ECDSA key, or when the two do not belong together.

    .. code-block:: yaml

        kubernetes-controlplane-service-account-validated:
          k8s_node.key_pair_validated:
            - name: kubernetes:service_account
    """
    ret = _ret(name)
    if not HAS_PKI:
        ret["comment"] = (
            f"k8s_node.key_pair_validated needs the formula's _utils/k8s_pki package and "
            f"python3-cryptography ({_IMPORT_ERROR}); run saltutil.sync_all"
        )
        return ret
    data = __salt__["pillar.get"](name, None, unmask=True)
    if not isinstance(data, dict):
        ret["comment"] = f"{name}: expected a mapping with {key} and {pub}"
        return ret
    problems = []
    for item in (key, pub):
        if not isinstance(data.get(item), str):
            problems.append(f"{name}:{item}: missing (expected PEM text)")
    if problems:
        ret["comment"] = "; ".join(problems)
        return ret
    private = public = None
    try:  # strictly one PEM block each, as for the certificates
        k8s_pki.strict_pem(data[key], k8s_pki.PRIVATE_KEY_LABELS, f"{name}:{key}", 1)
        private = k8s_pki.load_key(k8s_pki.normalize_pem(data[key]).encode(), f"{name}:{key}")
    except k8s_pki.PKIError as err:
        problems.append(str(err))
    try:
        k8s_pki.strict_pem(data[pub], k8s_pki.PUBLIC_KEY_LABELS, f"{name}:{pub}", 1)
        public = serialization.load_pem_public_key(k8s_pki.normalize_pem(data[pub]).encode())
    except k8s_pki.PKIError as err:
        problems.append(str(err))
    except (ValueError, TypeError) as err:
        problems.append(f"{name}:{pub}: not a PEM public key ({type(err).__name__})")
    if private is not None and not isinstance(
        private, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)
    ):
        problems.append(f"{name}:{key}: kube-apiserver signs tokens with RSA or ECDSA keys only")
    if private is not None and public is not None:
        want = k8s_pki.public_key_fingerprint(private.public_key())
        if k8s_pki.public_key_fingerprint(public) != want:
            problems.append(f"{name}:{pub}: does not belong to {key}")
    if problems:
        ret["comment"] = "Refusing to lay down the key pair: " + "; ".join(problems)
        return ret
    ret["result"] = True
    ret["comment"] = (
        f"{name}: {key} and {pub} belong together, public key sha256 "
        f"{k8s_pki.public_key_fingerprint(public)}"
    )
    return ret
