"""kubernetes.running applied for real, on a master and a node.

Every apply is the real ``salt-call --local`` with this checkout as file_roots,
inside a throwaway mount namespace (tests/support/sandbox.py), so the states write the
real /srv, /etc and /var/lib paths without touching the host.  Salt drives the
kubelet service through a real init script (tests/support/services.py): there is no
systemd here, so the "service" is a stand-in that records start, stop and
restart; what the real kubelet would do with the files is not exercised.

Independent checks: every static pod manifest is loaded into the ``kubernetes``
Python client's V1Pod model; every kubeconfig is read by the real ``kubectl
config view`` and used by the real ``kubectl`` against a TLS server presenting
the generated apiserver certificate and requiring a client certificate.
"""

import os
import shutil

import pytest
import support
from kubernetes.client import ApiClient
from support import tlsserver
from support.node import (
    KUBECONFIGS,
    KUBELET_CONFIG,
    KUBELET_DROPIN,
    KUBELET_ENV,
    MANIFESTS,
    MASTER_KUBECONFIGS,
    RUNNING,
    SA_KEY,
    SA_PUB,
    SRV,
    WATCHED,
    by_id,
    changed,
    data_of,
    generate_sets,
    keys_of,
    kubectl,
    new_node,
    node_pillar,
    sa_pair,
    yaml_of,
)

pytestmark = pytest.mark.sandbox

KUBECFG = {"commonName": "kubecfg", "organizationName": "system:masters"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("running")


@pytest.fixture(scope="module")
def sets(work):
    return generate_sets(work, "a", "b")


@pytest.fixture(scope="module")
def apiserver(sets):
    """A stand-in apiserver on 127.0.0.1: set a's server pair, client certs of set a's CA."""
    a = sets["a"]
    with tlsserver.TLSServer(a / "server.crt", a / "server.key", a / "ca.crt") as server:
        yield server


# --------------------------------------------------------------------------
# A master's life: apply, again, new certificates, again, become a node
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def master(new_sandbox, work, sets, apiserver):
    """Runs the whole master life cycle once and records what each step did."""
    node = new_node(new_sandbox, work, "master", "k8s-master-1")
    box, sysv = node.box, node.sysv
    rec = {"node": node, "box": box, "before": box.tree(*WATCHED)}
    home = work / "kubectl-home"
    home.mkdir()

    def step(name, pillar=None, *args):
        if pillar is not None:
            node.pillar(pillar)
        rec[name] = node.call("state.apply", RUNNING, *args)
        rec[f"{name}-tree"] = box.tree(*WATCHED)
        rec[f"{name}-actions"] = sysv.actions("kubelet")

    pillar_a = node_pillar(sets["a"], "master", port=apiserver.port)
    step("test", pillar_a, "test=True")
    step("apply1")
    rec["view"] = {
        name: kubectl(box, path, "config", "view", "-o", "json", home=home)
        for name, path in KUBECONFIGS.items()
    }
    before = len(apiserver.clients)
    rec["kubectl"] = {
        name: kubectl(box, path, "get", "--raw", "/healthz", home=home)
        for name, path in KUBECONFIGS.items()
    }
    rec["clients"] = apiserver.clients[before:]
    step("apply2")
    step("apply3", node_pillar(sets["b"], "master", port=apiserver.port))
    rec["kubectl-b"] = kubectl(box, KUBECONFIGS["admin"], "get", "--raw", "/healthz", home=home)
    step("apply4")
    step("to-node", node_pillar(sets["b"], "node", port=apiserver.port))
    return rec


def test_test_mode_writes_nothing_and_touches_no_service(master):
    proc, states = master["test"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert master["test-tree"] == master["before"]
    assert master["test-actions"] == []
    assert by_id(states)["kubernetes-kubelet-service-running"]["result"] is None


def test_apply_lays_down_every_file_with_its_mode(master):
    proc, states = master["apply1"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["result"] is True for r in states.values())
    tree = master["apply1-tree"]
    expect = {
        **{path: 0o600 for path in KUBECONFIGS.values()},
        **{path: 0o600 for path in MANIFESTS.values()},
        KUBELET_CONFIG: 0o644,
        KUBELET_ENV: 0o644,
        KUBELET_DROPIN: 0o644,
        f"{SRV}/server.key": 0o600,
        f"{SRV}/kubecfg.key": 0o600,
        f"{SRV}/ca.crt": 0o644,
    }
    for path, mode in expect.items():
        entry = tree[path]
        assert entry["kind"] == "file", path
        assert (entry["uid"], entry["gid"]) == (0, 0), path
        assert entry["mode"] == mode, f"{path}: {oct(entry['mode'])}"
    # the dedicated service-account pair is not given: none on disk
    assert SA_KEY not in tree and SA_PUB not in tree


def test_kubelet_was_started_once(master):
    assert master["apply1-actions"] == ["start"]
    state = by_id(master["apply1"][1])["kubernetes-kubelet-service-running"]
    assert state["changes"] == {"kubelet": True}
    assert "already enabled" in state["comment"]


def test_kubelet_files_point_at_each_other(master):
    tree = master["apply1-tree"]
    env = data_of(tree, KUBELET_ENV).decode()
    assert (
        f'KUBELET_EXTRA_ARGS="--kubeconfig={KUBECONFIGS["kubelet"]} --config={KUBELET_CONFIG}"'
        in env
    )
    dropin = data_of(tree, KUBELET_DROPIN).decode()
    assert f"EnvironmentFile=-{KUBELET_ENV}" in dropin
    assert "ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_EXTRA_ARGS" in dropin
    config = yaml_of(tree, KUBELET_CONFIG)
    assert config["kind"] == "KubeletConfiguration"
    assert config["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert config["authentication"]["x509"]["clientCAFile"] == "/var/lib/kubelet/ca.crt"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["staticPodPath"] == "/etc/kubernetes/manifests"
    assert config["containerRuntimeEndpoint"] == "unix:///run/cri-dockerd.sock"
    assert tree["/var/lib/kubelet/ca.crt"]["data"] == tree[f"{SRV}/ca.crt"]["data"]


def test_every_kubeconfig_loads_in_kubectl_config_view(master, apiserver):
    import json

    for name, path in KUBECONFIGS.items():
        proc = master["view"][name]
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        view = json.loads(proc.stdout)
        cluster = view["clusters"][0]["cluster"]
        user = view["users"][0]["user"]
        assert cluster["server"] == f"https://127.0.0.1:{apiserver.port}", name
        assert cluster["tls-server-name"] == "kubernetes.api", name
        assert cluster["certificate-authority"] == f"{SRV}/ca.crt", name
        assert user["client-certificate"] == f"{SRV}/kubecfg.crt", name
        assert user["client-key"] == f"{SRV}/kubecfg.key", name
        assert view["current-context"] == f"{name}@test", name
        # file references only: no certificate or key inside the kubeconfig
        text = data_of(master["apply1-tree"], path).decode()
        assert "-----BEGIN" not in text and "-data" not in text, name


def test_every_kubeconfig_authenticates_with_real_kubectl(master, sets):
    # the server presents the generated (set a) certificate the minion laid down
    laid = data_of(master["apply1-tree"], f"{SRV}/server.cert")
    assert laid == (sets["a"] / "server.crt").read_bytes()
    for name in KUBECONFIGS:
        proc = master["kubectl"][name]
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        assert proc.stdout.strip() == "ok", name
    # kubectl asks /version then /healthz: two requests per kubeconfig, each
    # with the laid-down kubecfg client certificate
    assert len(master["clients"]) >= len(KUBECONFIGS)
    assert all(client == KUBECFG for client in master["clients"])


def _pod(data):
    """The manifest as the Kubernetes client's V1Pod (raises on a malformed object)."""
    return ApiClient()._ApiClient__deserialize(data, "V1Pod")


def test_manifests_are_kubernetes_pods(master):
    client = ApiClient()
    for name, path in MANIFESTS.items():
        data = yaml_of(master["apply1-tree"], path)
        pod = _pod(data)
        assert (pod.kind, pod.api_version) == ("Pod", "v1")
        assert pod.metadata.name == name and pod.metadata.namespace == "kube-system"
        assert pod.spec.host_network is True
        (container,) = pod.spec.containers
        assert container.image == f"registry.k8s.io/{name}:v1.32.4"
        assert container.command[0] == name
        # Every field is one the model knows: it serialises back to the same
        # object (a misspelt field would be dropped on the way in).
        assert client.sanitize_for_serialization(pod) == data, name


def _referenced(pod):
    """Absolute paths in the container's flags and the pod's hostPath volumes."""
    (container,) = pod.spec.containers
    flags = {}
    for arg in container.command[1:]:
        flag, _, value = arg.partition("=")
        flags[flag] = value
    paths = {v for v in flags.values() if v.startswith("/")}
    return flags, paths


def test_manifests_reference_only_files_the_formula_lays_down(master):
    tree = master["apply1-tree"]
    for name, path in MANIFESTS.items():
        pod = _pod(yaml_of(tree, path))
        flags, paths = _referenced(pod)
        (container,) = pod.spec.containers
        volumes = {v.name: v.host_path.path for v in pod.spec.volumes}
        mounts = {m.mount_path: volumes[m.name] for m in container.volume_mounts}
        assert all(m.read_only for m in container.volume_mounts), name
        assert all(host == inside for inside, host in mounts.items()), name
        # a kubeconfig in a flag brings the files it references along
        for value in list(paths):
            if value in KUBECONFIGS.values():
                view = yaml_of(tree, value)
                paths.add(view["clusters"][0]["cluster"]["certificate-authority"])
                paths.add(view["users"][0]["user"]["client-certificate"])
                paths.add(view["users"][0]["user"]["client-key"])
        assert paths, name
        for used in sorted(paths):
            assert tree.get(used, {}).get("kind") == "file", f"{name}: {used} not laid down"
            assert any(used == m or used.startswith(m + "/") for m in mounts), (
                f"{name}: {used} is not mounted into the pod"
            )
        for host in volumes.values():
            assert host in tree, f"{name}: hostPath {host} not laid down"


def test_apiserver_is_wired_to_the_certificates(master):
    pod = _pod(yaml_of(master["apply1-tree"], MANIFESTS["kube-apiserver"]))
    flags, _ = _referenced(pod)
    assert flags["--client-ca-file"] == f"{SRV}/ca.crt"
    assert flags["--tls-cert-file"] == f"{SRV}/server.cert"
    assert flags["--tls-private-key-file"] == f"{SRV}/server.key"
    assert flags["--service-account-key-file"] == f"{SRV}/server.key"
    assert flags["--service-account-signing-key-file"] == f"{SRV}/server.key"
    assert flags["--secure-port"] == str(pod.spec.containers[0].liveness_probe.http_get.port)


def test_second_apply_changes_nothing(master):
    proc, states = master["apply2"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert changed(states) == []
    assert master["apply2-tree"] == master["apply1-tree"]
    assert master["apply2-actions"] == ["start"]  # not restarted


def test_new_certificates_restart_the_kubelet_and_roll_the_static_pods(master):
    proc, states = master["apply3"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert master["apply3-actions"] == ["start", "restart"]
    service = by_id(states)["kubernetes-kubelet-service-running"]
    assert service["comment"] == "Service restarted"
    did = changed(states)
    assert "kubernetes-certs-kubecfg-key-pem-managed" in did
    # kubeconfigs reference the files: they stay; manifests carry the
    # certificates' digest: they change, so the kubelet recreates the pods
    assert not [s for s in did if s.endswith("-kubeconfig-file-managed")]
    before, after = master["apply2-tree"], master["apply3-tree"]
    for path in MANIFESTS.values():
        old, new = yaml_of(before, path), yaml_of(after, path)
        assert old["metadata"]["annotations"] != new["metadata"]["annotations"], path
        old["metadata"].pop("annotations")
        new["metadata"].pop("annotations")
        assert old == new, path


def test_kubectl_no_longer_trusts_the_old_apiserver(master):
    proc = master["kubectl-b"]
    assert proc.returncode != 0
    assert "certificate" in proc.stderr, proc.stderr


def test_idempotent_after_the_change(master):
    proc, states = master["apply4"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert changed(states) == []
    assert master["apply4-actions"] == ["start", "restart"]


def test_master_turned_node_loses_the_control_plane(master):
    proc, states = master["to-node"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = master["to-node-tree"]
    for path in [*MANIFESTS.values(), *(KUBECONFIGS[n] for n in MASTER_KUBECONFIGS)]:
        assert path not in tree, path
    assert f"{SRV}/server.key" not in tree and f"{SRV}/server.cert" not in tree
    for name in ("kubelet", "kube-proxy"):
        assert tree[KUBECONFIGS[name]]["mode"] == 0o600
    assert "staticPodPath" not in yaml_of(tree, KUBELET_CONFIG)
    # the kubelet's configuration changed: restarted
    assert master["to-node-actions"] == ["start", "restart", "restart"]


def test_no_key_material_in_output_logs_or_caches(master, sets):
    keys = keys_of(sets["a"], sets["b"])
    for step in ("test", "apply1", "apply2", "apply3", "to-node"):
        proc, _ = master[step]
        assert support.leaked(proc.stdout, keys) is None, f"{step}: key in stdout"
        assert support.leaked(proc.stderr, keys) is None, f"{step}: key in info log"
    node = master["node"]
    assert support.leaked(node.log(), keys) is None
    for path in (node.base / "root").rglob("*"):
        if path.is_file():
            assert support.leaked(path.read_bytes().decode("latin-1"), keys) is None, path


# --------------------------------------------------------------------------
# A node from scratch
# --------------------------------------------------------------------------


def test_node_gets_kubelet_and_proxy_only(new_sandbox, work, sets, apiserver):
    node = new_node(new_sandbox, work, "node", "k8s-node-1")
    node.pillar(node_pillar(sets["a"], "node", port=apiserver.port))
    proc, states = node.call("state.apply", RUNNING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = node.box.tree(*WATCHED)
    ours = sorted(p for p, e in tree.items() if e["kind"] == "file")
    assert ours == sorted(
        [
            f"{SRV}/ca.crt",
            f"{SRV}/kubecfg.crt",
            f"{SRV}/kubecfg.key",
            "/var/lib/kubelet/ca.crt",
            KUBECONFIGS["kubelet"],
            KUBECONFIGS["kube-proxy"],
            KUBELET_CONFIG,
            KUBELET_ENV,
            KUBELET_DROPIN,
        ]
    )
    assert node.sysv.actions("kubelet") == ["start"]
    # the node's kubelet reaches the apiserver with the laid-down files
    home = work / "node-home"
    home.mkdir()
    answer = kubectl(node.box, KUBECONFIGS["kubelet"], "get", "--raw", "/healthz", home=home)
    assert answer.returncode == 0, answer.stderr
    proc, states = node.call("state.apply", RUNNING)
    assert proc.returncode == 0 and changed(states) == []
    assert node.box.tree(*WATCHED) == tree


# --------------------------------------------------------------------------
# A dedicated service-account key pair
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sa_master(new_sandbox, work, sets):
    node = new_node(new_sandbox, work, "sa", "k8s-master-2")
    pair = sa_pair()
    node.pillar(node_pillar(sets["a"], "master", service_account=pair))
    proc, states = node.call("state.apply", RUNNING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return node, pair


def test_dedicated_pair_is_laid_down_and_used(sa_master):
    node, pair = sa_master
    tree = node.box.tree(*WATCHED)
    assert data_of(tree, SA_KEY).decode() == pair["sa.key"]
    assert data_of(tree, SA_PUB).decode() == pair["sa.pub"]
    assert (tree[SA_KEY]["mode"], tree[SA_PUB]["mode"]) == (0o600, 0o644)
    flags, _ = _referenced(_pod(yaml_of(tree, MANIFESTS["kube-apiserver"])))
    assert flags["--service-account-key-file"] == SA_PUB
    assert flags["--service-account-signing-key-file"] == SA_KEY
    flags, _ = _referenced(_pod(yaml_of(tree, MANIFESTS["kube-controller-manager"])))
    assert flags["--service-account-private-key-file"] == SA_KEY


def _bad_pair(case):
    pair = sa_pair("ecdsa-p256")
    if case == "pub-of-another-key":
        pair["sa.pub"] = sa_pair("ecdsa-p256")["sa.pub"]
        return pair, "kubernetes:service_account:sa.pub: does not belong to sa.key"
    if case == "garbage-key":
        pair["sa.key"] = "cat: /var/salt/sa.key: No such file or directory"
        return pair, "kubernetes:service_account:sa.key: not a PEM private key: line 1"
    if case == "two-keys-in-sa-key":  # strict PEM: one block, nothing else
        pair["sa.key"] += sa_pair("ecdsa-p256")["sa.key"]
        return pair, "kubernetes:service_account:sa.key: holds 2 PEM blocks, expected 1"
    if case == "garbage-pub":
        pair["sa.pub"] = "not a key"
        return pair, "kubernetes:service_account:sa.pub: not a PEM public key"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["pub-of-another-key", "garbage-key", "two-keys-in-sa-key", "garbage-pub"]
)
def test_bad_pair_is_refused_and_nothing_changes(case, sa_master, sets):
    node, _ = sa_master
    before = node.box.tree(*WATCHED)
    actions = node.sysv.actions("kubelet")
    pair, message = _bad_pair(case)
    # with new certificates too: the refusal must hold those back as well
    node.pillar(node_pillar(sets["b"], "master", service_account=pair))
    proc, states = node.call("state.apply", RUNNING)
    assert proc.returncode != 0
    check = by_id(states)["kubernetes-controlplane-service-account-validated"]
    assert check["result"] is False
    assert message in check["comment"], check["comment"]
    assert changed(states) == []
    assert node.box.tree(*WATCHED) == before
    assert node.sysv.actions("kubelet") == actions
    assert support.leaked(proc.stdout + proc.stderr, [pair["sa.key"]]) is None


def test_dropping_the_pair_goes_back_to_server_key(sa_master, sets):
    node, pair = sa_master
    node.pillar(node_pillar(sets["a"], "master"))
    proc, states = node.call("state.apply", RUNNING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = node.box.tree(*WATCHED)
    assert SA_KEY not in tree and SA_PUB not in tree
    flags, _ = _referenced(_pod(yaml_of(tree, MANIFESTS["kube-apiserver"])))
    assert flags["--service-account-signing-key-file"] == f"{SRV}/server.key"
    log = node.log()
    assert support.leaked(log + proc.stdout + proc.stderr, [pair["sa.key"]]) is None


# --------------------------------------------------------------------------
# A bad role changes nothing
# --------------------------------------------------------------------------


def test_bad_role_writes_nothing(new_sandbox, work, sets):
    node = new_node(new_sandbox, work, "badrole", "k8s-master-3")
    before = node.box.tree(*WATCHED)
    pillar = node_pillar(sets["a"], "master")
    pillar["kubernetes"]["role"] = "controlplane"
    node.pillar(pillar)
    proc, _ = node.call("state.apply", RUNNING)
    assert proc.returncode != 0
    assert 'kubernetes:role must be master or node, not "controlplane"' in proc.stdout + proc.stderr
    assert node.box.tree(*WATCHED) == before
    assert node.sysv.actions("kubelet") == []


# --------------------------------------------------------------------------
# Prerequisites: a host that cannot run a kubelet is told why, nothing written
# --------------------------------------------------------------------------

PREREQ = "kubernetes-kubelet-prerequisites-met"


def _hide(node, *names):
    """Make ``names`` (binaries on the host's PATH) absent inside this node's sandbox:
    /dev/null, not executable, bound over each in every call's namespace."""
    paths = sorted({os.path.realpath(p) for p in map(shutil.which, names) if p})
    prelude = "".join(f"mount --bind /dev/null {p}\n" for p in paths)
    wrap = node.sysv.argv
    node.sysv.argv = lambda argv: ["sh", "-ec", prelude + 'exec "$@"', "hide", *wrap(argv)]
    proc = node.sysv.run(["sh", "-c", f"command -v {' '.join(names)} || true"])
    assert proc.stdout.strip() == "", f"still installed: {proc.stdout}"


def _refused(node, pillar, *args):
    """Apply kubernetes.running, expecting the precheck to stop it: its comment."""
    before = node.box.tree(*WATCHED)
    node.pillar(pillar)
    proc, states = node.call("state.apply", RUNNING, *args)
    assert proc.returncode != 0, proc.stdout
    states = by_id(states)
    if not args:  # failhard: the run stops at the precheck (test mode goes on, writing nothing)
        assert list(states) == [PREREQ], list(states)
    assert states[PREREQ]["result"] is False
    assert states[PREREQ]["changes"] == {}
    assert node.box.tree(*WATCHED) == before
    assert node.sysv.actions("kubelet") == []
    return states[PREREQ]["comment"]


@pytest.mark.parametrize("args", [(), ("test=True",)], ids=["apply", "test"])
def test_no_kubelet_installed_says_so_and_writes_nothing(new_sandbox, work, sets, args):
    name = "nokubelet-" + ("test" if args else "apply")
    node = new_node(new_sandbox, work, name, "k8s-node-7", kubelet=False)
    comment = _refused(node, node_pillar(sets["a"], "node"), *args)
    assert comment.startswith("This host cannot run a kubelet: ")
    assert "kubelet binary not found at /usr/bin/kubelet: install the kubelet package" in comment
    assert "the kubelet service is unknown to the init system" in comment
    assert "container runtime" not in comment  # the host has docker.io


def test_no_container_runtime_says_so_and_writes_nothing(new_sandbox, work, sets):
    node = new_node(new_sandbox, work, "noruntime", "k8s-node-8")
    _hide(node, "dockerd", "containerd", "crio")
    comment = _refused(node, node_pillar(sets["a"], "node"))
    assert comment == (
        "This host cannot run a kubelet: no container runtime (containerd, docker, cri-o) "
        "found: install one (containerd, or docker with cri-dockerd) and set "
        "kubernetes:container_runtime (now docker, which needs dockerd)"
    )


def test_other_runtime_installed_names_it(new_sandbox, work, sets):
    if not shutil.which("containerd"):
        pytest.skip("containerd not installed: make system-deps installs docker.io")
    node = new_node(new_sandbox, work, "otherruntime", "k8s-node-9")
    _hide(node, "dockerd")
    comment = _refused(node, node_pillar(sets["a"], "node"))
    assert "kubernetes:container_runtime is docker, but its daemon dockerd is not installed" in (
        comment
    )
    assert f"found containerd ({shutil.which('containerd')})" in comment
    # with the runtime it has, the same host comes up
    node.pillar(node_pillar(sets["a"], "node", container_runtime="containerd"))
    proc, states = node.call("state.apply", RUNNING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert by_id(states)[PREREQ]["comment"] == (
        f"kubelet /usr/bin/kubelet, service kubelet, container runtime containerd "
        f"({shutil.which('containerd')})"
    )
    assert node.sysv.actions("kubelet") == ["start"]
