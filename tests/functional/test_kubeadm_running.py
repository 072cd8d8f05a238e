"""kubernetes.running on a kubeadm-profile set: kubeadm's layout and its static pods.

The set is made by the real runner (``generate_certs profile=kubeadm``), pillar comes
from the formula's k8s_kubeadm ext_pillar, and every apply is the real ``salt-call
--local`` inside a throwaway mount namespace (tests/support/sandbox.py), with the
kubelet service a recording init script (tests/support/services.py: no systemd here).

Independent checks: every manifest is loaded into the ``kubernetes`` client's V1Pod
model; the real etcd runs with the flags of the laid-down etcd manifest and the real
etcdctl talks to it with the kube-apiserver manifest's etcd client flags; the real
kubectl uses the laid-down kubeconfigs against a TLS stand-in serving the laid-down
apiserver certificate with the apiserver manifest's client CA. No kube-apiserver,
controller-manager, scheduler or kubelet binary exists here: whether those would start
with these flags is not exercised (the flags are compared with kubeadm's instead).
"""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import support
import yaml
from kubernetes.client import ApiClient
from support import kubeadm as ks
from support import services
from support.minion import Minion
from support.node import KUBELET_BINARY, KUBELET_CONFIG, KUBELET_ENV, Node, by_id, changed

pytestmark = pytest.mark.sandbox

ETC = "/etc/kubernetes"
PKI = f"{ETC}/pki"
MANIFESTS = {
    name: f"{ETC}/manifests/{name}.yaml"
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
}
MASTERS = [{"name": "m1", "ip": "127.0.0.1"}]
NODES = [{"name": "n1", "ip": "192.0.2.21"}]
WATCHED = (ETC, "/srv", "/var/lib/kubelet", KUBELET_ENV, "/etc/systemd/system/kubelet.service.d")
#: states that own a path (their ``name``)
PATH_STATES = {
    ("file", "managed"),
    ("file", "absent"),
    ("file", "directory"),
    ("file", "symlink"),
    ("k8s_certs", "pem_managed"),
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("kubeadm-running")


@pytest.fixture(scope="module")
def sets(work):
    """A kubeadm set (one master on 127.0.0.1, one node) and a seed set, by the real runner."""
    conf = support.write_master_config(work / "master")
    generate = support.load_runners(conf)["k8s-helper.generate_certs"]
    ret = generate(
        cluster_tag="c1", profile="kubeadm", masters=MASTERS, nodes=NODES, key_type="ecdsa-p256"
    )
    assert ret.get("retcode", 0) == 0, ret
    seed = generate(cluster_tag="s1", key_type="ecdsa-p256")
    assert seed.get("retcode", 0) == 0, seed
    kubeadm_dir = support.pathlib.Path(ret["directory"])
    return {"root": kubeadm_dir.parent, "kubeadm": kubeadm_dir, "seed": seed["directory"]}


@pytest.fixture(scope="module")
def ports():
    return {"client_port": free_port(), "peer_port": free_port(), "metrics_port": free_port()}


def ext_pillar(sets):
    return [{"k8s_kubeadm": {"cluster_tag": "c1", "pki_root": str(sets["root"])}}]


def kubeadm_pillar(ports, **extra):
    """The minion's own pillar on a kubeadm host: only settings (the files come from the
    ext_pillar); etcd on free loopback ports so the real etcd can run its manifest."""
    return {"kubernetes": {"k8s_env": "c1", "lookup": {"kubeadm": {"etcd": ports}}, **extra}}


def seed_pillar(sets):
    return {
        "kubernetes": {
            "k8s_env": "s1",
            "role": "master",
            "certs": support.pillar_certs(sets["seed"], server=True),
        }
    }


def new_node(new_sandbox, work, name, minion_id, sets):
    box = new_sandbox(name)
    sysv = services.SysV(box, work / f"{name}-bin")
    sysv.install("kubelet")
    sysv.install_binary(KUBELET_BINARY)
    return Node(
        box, work / f"{name}-minion", sysv, minion_id=minion_id, ext_pillar=ext_pillar(sets)
    )


def pod(tree, path):
    data = yaml.safe_load(bytes.fromhex(tree[path]["data"]))
    model = ApiClient()._ApiClient__deserialize(data, "V1Pod")
    # every field is one the model knows: it serialises back to the same object
    assert ApiClient().sanitize_for_serialization(model) == data, path
    return model


def flags_of(model):
    (container,) = model.spec.containers
    flags = {}
    for arg in container.command[1:]:
        flag, _, value = arg.partition("=")
        flags[flag.removeprefix("--")] = value
    return flags


# --------------------------------------------------------------------------
# One owner per path: the highstate of a host with both states in its top
# --------------------------------------------------------------------------


def owners(highstate):
    """{path: [state ids]} of every state that lays down or removes a path."""
    found = {}
    for sid, body in highstate.items():
        module = next(k for k in body if not k.startswith("__") and k != "order")
        fun = next(item for item in body[module] if isinstance(item, str))
        if (module, fun) not in PATH_STATES:
            continue
        name = next((i["name"] for i in body[module] if isinstance(i, dict) and "name" in i), sid)
        found.setdefault(name, []).append(sid)
    return found


def show_highstate(minion, top):
    (minion.base / "formula/top.sls").write_text(
        yaml.safe_dump({"base": {"*": [f"kubernetes.{sls}" for sls in top]}})
    )
    proc = subprocess.run(
        support.salt_call_argv(minion.conf, "state.show_highstate"),
        capture_output=True,
        text=True,
        check=False,
    )
    data = json.loads(proc.stdout)["local"]
    assert proc.returncode == 0 and isinstance(data, dict), proc.stdout + proc.stderr
    return data


@pytest.fixture(scope="module")
def renderer(work, sets):
    """A synced masterless minion (no sandbox: rendering writes nothing)."""

    made = {}

    def make(minion_id, pillar):
        if minion_id not in made:
            made[minion_id] = Minion(
                None,
                work / f"render-{minion_id}",
                minion_id=minion_id,
                ext_pillar=ext_pillar(sets),
                enable_fqdns_grains=False,
            )
        made[minion_id].pillar(pillar)
        return made[minion_id]

    return make


@pytest.mark.parametrize(
    "minion_id, profile, top, admin_owner",
    [
        (
            "m1",
            "kubeadm",
            ["running", "kubeadm.present"],
            "kubernetes-kubeadm-admin-conf-file-managed",
        ),
        (
            "n1",
            "kubeadm",
            ["running", "kubeadm.present"],
            "kubernetes-kubeadm-admin-conf-file-absent",
        ),
        (
            "s1",
            "seed",
            ["running", "kubeadm.present"],
            "kubernetes-controlplane-admin-kubeconfig-file-managed",
        ),
        (
            "s1",
            "seed",
            ["running", "kubeadm.removed"],
            "kubernetes-controlplane-admin-kubeconfig-file-managed",
        ),
    ],
)
def test_every_path_has_one_owner(renderer, sets, ports, minion_id, profile, top, admin_owner):
    pillar = kubeadm_pillar(ports) if profile == "kubeadm" else seed_pillar(sets)
    highstate = show_highstate(renderer(minion_id, pillar), top)
    found = owners(highstate)
    shared = {path: ids for path, ids in found.items() if len(ids) > 1}
    assert shared == {}, f"paths with more than one owner: {shared}"
    assert found[f"{ETC}/admin.conf"] == [admin_owner]
    if profile == "kubeadm" and minion_id == "m1":
        # the layout is kubeadm's, wired to /etc/kubernetes, and nothing of the seed's
        assert {MANIFESTS[n] for n in MANIFESTS} <= set(found)
        assert not any(path.startswith("/srv/kubernetes") for path in found)
        assert "/var/lib/kubelet/kubeconfig" not in found


# --------------------------------------------------------------------------
# A kubeadm master, applied for real, twice
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def master(new_sandbox, work, sets, ports):
    node = new_node(new_sandbox, work, "kubeadm-m1", "m1", sets)
    node.pillar(kubeadm_pillar(ports))
    rec = {"node": node, "box": node.box}
    rec["apply1"] = node.call("state.apply", "kubernetes.running")
    rec["tree1"] = node.box.tree(*WATCHED)
    rec["actions1"] = node.sysv.actions("kubelet")
    # kubernetes.kubeadm.present in the same top as kubernetes.running: one owner per path
    rec["apply2"] = node.call("state.apply", "kubernetes.running,kubernetes.kubeadm.present")
    rec["tree2"] = node.box.tree(*WATCHED)
    rec["actions2"] = node.sysv.actions("kubelet")
    return rec


def test_master_apply_succeeds_and_a_second_apply_changes_nothing(master):
    proc, states = master["apply1"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["result"] is True for r in states.values())
    proc, states = master["apply2"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert changed(states) == []
    assert master["tree2"] == master["tree1"]
    assert master["actions1"] == ["start"] and master["actions2"] == ["start"]
    text = proc.stdout + proc.stderr
    assert "PRIVATE KEY" not in text and "client-key-data" not in text


def test_master_gets_kubeadm_layout_and_no_seed_files(master, sets):
    tree = master["tree1"]
    expected = k8s_pki.kubeadm_host_files("m1", master=True)
    for rel, src in expected.items():
        entry = tree[f"{ETC}/{rel}"]
        assert bytes.fromhex(entry["data"]) == (sets["kubeadm"] / src).read_bytes(), rel
        assert entry["mode"] == k8s_pki.kubeadm_file_mode(rel), rel
    for path in MANIFESTS.values():
        assert tree[path]["mode"] == 0o600 and tree[path]["uid"] == 0, path
    assert not any(path.startswith("/srv/kubernetes") for path in tree)
    assert "/var/lib/kubelet/kubeconfig" not in tree


def test_kubeconfigs_point_where_kubeadm_points_them(master):
    tree = master["tree1"]
    upper = master["box"].upper
    # the master's own components reach its own apiserver; admin at the endpoint
    for conf in ("controller-manager.conf", "scheduler.conf"):
        assert ks.kubeconfig(upper(f"{ETC}/{conf}"))["server"] == "https://127.0.0.1:6443"
    for conf in ("admin.conf", "super-admin.conf", "kubelet.conf"):
        assert ks.kubeconfig(upper(f"{ETC}/{conf}"))["server"] == "https://kubernetes.api:6443"
    assert ks.kubeconfig(upper(f"{ETC}/kubelet.conf"))["user"] == "system:node:m1"
    assert f"{ETC}/kubelet.conf" in tree


k8s_pki = support.k8s_pki


def test_manifests_are_kubeadm_pods_wired_to_etc_kubernetes_pki(master):
    tree = master["tree1"]
    pods = {name: pod(tree, path) for name, path in MANIFESTS.items()}
    flags = {name: flags_of(model) for name, model in pods.items()}
    api = flags["kube-apiserver"]
    assert api["client-ca-file"] == f"{PKI}/ca.crt"
    assert (api["tls-cert-file"], api["tls-private-key-file"]) == (
        f"{PKI}/apiserver.crt",
        f"{PKI}/apiserver.key",
    )
    assert api["kubelet-client-certificate"] == f"{PKI}/apiserver-kubelet-client.crt"
    assert api["kubelet-client-key"] == f"{PKI}/apiserver-kubelet-client.key"
    assert api["etcd-cafile"] == f"{PKI}/etcd/ca.crt"
    assert api["etcd-certfile"] == f"{PKI}/apiserver-etcd-client.crt"
    assert api["etcd-keyfile"] == f"{PKI}/apiserver-etcd-client.key"
    assert api["requestheader-client-ca-file"] == f"{PKI}/front-proxy-ca.crt"
    assert api["proxy-client-cert-file"] == f"{PKI}/front-proxy-client.crt"
    assert api["proxy-client-key-file"] == f"{PKI}/front-proxy-client.key"
    assert api["requestheader-allowed-names"] == "front-proxy-client"
    assert api["service-account-key-file"] == f"{PKI}/sa.pub"
    assert api["service-account-signing-key-file"] == f"{PKI}/sa.key"
    assert api["advertise-address"] == "127.0.0.1"
    cm = flags["kube-controller-manager"]
    assert cm["kubeconfig"] == f"{ETC}/controller-manager.conf"
    assert cm["authentication-kubeconfig"] == cm["authorization-kubeconfig"] == cm["kubeconfig"]
    assert cm["cluster-signing-cert-file"] == f"{PKI}/ca.crt"
    assert cm["cluster-signing-key-file"] == f"{PKI}/ca.key"
    assert cm["root-ca-file"] == f"{PKI}/ca.crt"
    assert cm["service-account-private-key-file"] == f"{PKI}/sa.key"
    assert cm["requestheader-client-ca-file"] == f"{PKI}/front-proxy-ca.crt"
    assert flags["kube-scheduler"]["kubeconfig"] == f"{ETC}/scheduler.conf"
    etcd = flags["etcd"]
    assert (etcd["cert-file"], etcd["key-file"]) == (
        f"{PKI}/etcd/server.crt",
        f"{PKI}/etcd/server.key",
    )
    assert (etcd["peer-cert-file"], etcd["peer-key-file"]) == (
        f"{PKI}/etcd/peer.crt",
        f"{PKI}/etcd/peer.key",
    )
    assert etcd["trusted-ca-file"] == etcd["peer-trusted-ca-file"] == f"{PKI}/etcd/ca.crt"
    assert etcd["client-cert-auth"] == etcd["peer-client-cert-auth"] == "true"
    assert etcd["name"] == "m1" and etcd["initial-cluster"].startswith("m1=https://127.0.0.1:")
    # every file a flag names is laid down, and mounted into its pod at the same path
    for name, model in pods.items():
        (container,) = model.spec.containers
        volumes = {v.name: v.host_path.path for v in model.spec.volumes}
        mounts = {m.mount_path: (volumes[m.name], m.read_only) for m in container.volume_mounts}
        assert all(host == inside for inside, (host, _) in mounts.items()), name
        for flag, value in flags[name].items():
            if value.startswith(f"{ETC}/"):
                assert tree.get(value, {}).get("kind") == "file", f"{name} --{flag}: {value}"
                assert any(value.startswith(m + "/") or value == m for m in mounts), (name, flag)
        # only etcd's data folder is writable
        writable = sorted(path for path, (_, ro) in mounts.items() if not ro)
        assert writable == (["/var/lib/etcd"] if name == "etcd" else []), name


def test_kubelet_reads_kubeadm_files(master):
    tree = master["tree1"]
    env = bytes.fromhex(tree[KUBELET_ENV]["data"]).decode()
    assert f"--kubeconfig={ETC}/kubelet.conf --config={KUBELET_CONFIG}" in env
    config = yaml.safe_load(bytes.fromhex(tree[KUBELET_CONFIG]["data"]))
    assert config["authentication"]["x509"]["clientCAFile"] == f"{PKI}/ca.crt"
    assert config["staticPodPath"] == f"{ETC}/manifests"
    watch = by_id(master["apply1"][1])["kubernetes-kubelet-service-running"]
    assert watch["result"] is True


def test_real_etcd_runs_the_etcd_manifest_and_takes_the_apiservers_client(master, tmp_path):
    """The flags of both manifests, run by Debian's etcd and etcdctl on the host with the
    files the sandbox laid down (paths mapped to the sandbox's upper layer)."""
    if not (shutil.which("etcd") and shutil.which("etcdctl")):
        pytest.skip("Debian's etcd-server and etcd-client are not installed (make system-deps)")
    tree, upper = master["tree1"], master["box"].upper
    etcd = flags_of(pod(tree, MANIFESTS["etcd"]))
    api = flags_of(pod(tree, MANIFESTS["kube-apiserver"]))

    def host(value):
        return str(upper(value)) if value.startswith(f"{ETC}/") else value

    args = {flag: host(value) for flag, value in etcd.items()}
    args["data-dir"] = str(tmp_path / "data")
    log = open(tmp_path / "etcd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["etcd", *(f"--{flag}={value}" for flag, value in sorted(args.items()))],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ctl = [
            "etcdctl",
            f"--endpoints={api['etcd-servers']}",
            f"--cacert={host(api['etcd-cafile'])}",
            f"--cert={host(api['etcd-certfile'])}",
            f"--key={host(api['etcd-keyfile'])}",
            "--dial-timeout=2s",
            "--command-timeout=3s",
        ]
        env = {**os.environ, "ETCDCTL_API": "3"}
        for _ in range(60):  # bounded: up to ~30 s
            health = subprocess.run(
                [*ctl, "endpoint", "health"], capture_output=True, text=True, env=env, check=False
            )
            if health.returncode == 0 or proc.poll() is not None:
                break
            time.sleep(0.5)
        assert health.returncode == 0, health.stderr + (tmp_path / "etcd.log").read_text()[-2000:]
        put = subprocess.run(
            [*ctl, "put", "/registry/probe", "ok"], capture_output=True, text=True, env=env
        )
        assert put.returncode == 0, put.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_kubeconfigs_reach_an_apiserver_with_the_manifests_files(master, tmp_path):
    """kubectl with the laid-down kubeconfigs against a stand-in presenting the manifest's
    --tls-cert-file and checking clients with its --client-ca-file (no apiserver binary)."""
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed")
    tree, upper = master["tree1"], master["box"].upper
    api = flags_of(pod(tree, MANIFESTS["kube-apiserver"]))
    cert, key, ca = (
        upper(api[f]) for f in ("tls-cert-file", "tls-private-key-file", "client-ca-file")
    )
    with ks.ApiServerStandIn(cert, key, ca) as server:
        for conf, cn in [
            ("controller-manager.conf", "system:kube-controller-manager"),
            ("scheduler.conf", "system:kube-scheduler"),
            ("admin.conf", "kubernetes-admin"),
            ("kubelet.conf", "system:node:m1"),
        ]:
            proc = subprocess.run(
                [
                    "kubectl",
                    f"--kubeconfig={upper(f'{ETC}/{conf}')}",
                    f"--server=https://127.0.0.1:{server.port}",
                    "--tls-server-name=m1",
                    "--request-timeout=5s",
                    "get",
                    "--raw",
                    "/whoami",
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "HOME": str(tmp_path)},
                check=False,
            )
            assert proc.returncode == 0, (conf, proc.stderr)
            assert json.loads(proc.stdout)["cn"] == cn, conf


# --------------------------------------------------------------------------
# A kubeadm node; a seed master whose admin.conf kubeadm.removed leaves alone
# --------------------------------------------------------------------------


def test_node_runs_a_kubelet_and_no_control_plane(new_sandbox, work, sets, ports):
    node = new_node(new_sandbox, work, "kubeadm-n1", "n1", sets)
    node.pillar(kubeadm_pillar(ports))
    proc, states = node.call("state.apply", "kubernetes.running")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = node.box.tree(*WATCHED)
    files = {p for p, e in tree.items() if e["kind"] == "file" and p.startswith(ETC)}
    assert files == {f"{PKI}/ca.crt", f"{ETC}/kubelet.conf"}
    config = yaml.safe_load(bytes.fromhex(tree[KUBELET_CONFIG]["data"]))
    assert "staticPodPath" not in config
    assert config["authentication"]["x509"]["clientCAFile"] == f"{PKI}/ca.crt"
    assert node.sysv.actions("kubelet") == ["start"]
    proc, states = node.call("state.apply", "kubernetes.running")
    assert proc.returncode == 0 and changed(states) == []


def test_kubeadm_removed_leaves_the_seed_masters_admin_conf(new_sandbox, work, sets):
    """On a seed master, /etc/kubernetes/admin.conf is kubernetes.running's: applying
    kubernetes.kubeadm.removed there (say after moving the host off a kubeadm set)
    must not delete it."""
    node = new_node(new_sandbox, work, "seed-master", "s1", sets)
    node.pillar(seed_pillar(sets))
    proc, _ = node.call("state.apply", "kubernetes.running")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = node.box.tree(ETC)
    assert before[f"{ETC}/admin.conf"]["kind"] == "file"
    proc, states = node.call("state.apply", "kubernetes.kubeadm.removed")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node.box.tree(ETC) == before
    proc, states = node.call("state.apply", "kubernetes.running")
    assert proc.returncode == 0 and changed(states) == []


# --------------------------------------------------------------------------
# Refusals: one line naming what is wrong, nothing written
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            {"role": "node"},
            'kubernetes:role is "node", but kubernetes:kubeadm_pki:role is "master"',
        ),
        (
            {"certs": {"ca.crt": "x"}},
            "both kubernetes:certs (seed) and kubernetes:kubeadm_pki (kubeadm) are given",
        ),
    ],
)
def test_conflicting_pillar_is_refused(new_sandbox, work, sets, ports, extra, message):
    box = new_sandbox("refused")
    node = Node(
        box,
        work / f"refused-{sorted(extra)[0]}",
        services.SysV(box, work / f"refused-{sorted(extra)[0]}-bin"),
        minion_id="m1",
        ext_pillar=ext_pillar(sets),
    )
    node.pillar(kubeadm_pillar(ports, **extra))
    before = box.tree(*WATCHED)
    proc, states = node.call("state.apply", "kubernetes.running")
    assert proc.returncode != 0
    assert isinstance(states, list) and message in "\n".join(states), states
    assert box.tree(*WATCHED) == before


# --------------------------------------------------------------------------
# A renewed file recreates the pods that read it, and only those
# --------------------------------------------------------------------------


def test_a_renewed_kubeconfig_changes_only_its_pods_manifest(new_sandbox, work, ports, tmp_path):
    conf = support.write_master_config(tmp_path / "master")
    generate = support.load_runners(conf)["k8s-helper.generate_certs"]
    args = {"cluster_tag": "c1", "profile": "kubeadm", "key_type": "ecdsa-p256"}
    ret = generate(masters=MASTERS, nodes=NODES, **args)
    assert ret.get("retcode", 0) == 0, ret
    directory = support.pathlib.Path(ret["directory"])
    node = new_node(new_sandbox, work, "renewed", "m1", {"root": directory.parent})
    node.pillar(kubeadm_pillar(ports))
    proc, _ = node.call("state.apply", "kubernetes.running")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = node.box.tree(*WATCHED)
    # scheduler.conf renewed on the master (a new one issued from the same CA)
    (directory / "hosts/m1/scheduler.conf").unlink()
    ret = generate(**args)
    assert [n for n, f in ret["files"].items() if f["action"] != "reused"] == [
        "hosts/m1/scheduler.conf"
    ]
    proc, states = node.call("state.apply", "kubernetes.running")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert changed(states) == [
        "kubernetes-controlplane-kube-scheduler-manifest-file-managed",
        "kubernetes-kubeadm-scheduler-conf-file-managed",
    ]
    after = node.box.tree(*WATCHED)
    differ = sorted(p for p in after if after[p] != before.get(p))
    assert differ == [f"{ETC}/manifests/kube-scheduler.yaml", f"{ETC}/scheduler.conf"]
    assert node.sysv.actions("kubelet") == ["start"]  # the kubelet reads neither


@pytest.mark.parametrize(
    "masters, message",
    [
        (
            [],
            'kubernetes:kubeadm_pki:masters does not list this master ("m1") with its address: '
            "run salt-run k8s-helper.generate_certs profile=kubeadm for the set, then "
            "saltutil.refresh_pillar",
        ),
        (
            [{"name": "m1", "ip": "127.0.0.1,https://evil:2380"}],
            'kubernetes:kubeadm_pki:masters: {"ip": "127.0.0.1,https://evil:2380", "name": "m1"} '
            "is not {name, ip} with an IP address",
        ),
        (
            [{"name": "m1=x", "ip": "127.0.0.1"}],
            'kubernetes:kubeadm_pki:masters: {"ip": "127.0.0.1", "name": "m1=x"} is not',
        ),
    ],
)
def test_a_bad_list_of_masters_is_refused(renderer, ports, masters, message):
    """etcd's peers and the master's own address come from kubernetes:kubeadm_pki:masters
    (pillar: parsed strictly); without this master in it the render stops, saying what to run."""
    minion = renderer("m1", kubeadm_pillar(ports))
    override = json.dumps({"kubernetes": {"kubeadm_pki": {"masters": masters}}})
    proc = subprocess.run(
        support.salt_call_argv(
            minion.conf, "state.show_sls", "kubernetes.running", f"pillar={override}"
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    errors = "\n".join(json.loads(proc.stdout)["local"])
    assert message in errors, errors
