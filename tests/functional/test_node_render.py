"""kubernetes.running / kubernetes.kubelet.removed as Salt renders them (state.show_sls).

Salt renders the formula from this checkout for a master and a node: the real
salt-call for the two roles, and for the many variations Salt's Caller in this
process, each pillar given as an override (support.node.Renderer); nothing is
applied (no sandbox needed).  Bad settings
must fail the render with a message naming the setting; the real salt-call
exits non-zero on them.
"""

import pytest
from support.node import (
    FAST,
    REMOVED,
    RUNNING,
    SERVICE_WATCH,
    SRV,
    Minion,
    Renderer,
    generate_sets,
    node_pillar,
    sa_pair,
    show_sls,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("render")


@pytest.fixture(scope="module")
def sets(work):
    return generate_sets(work, "a")


@pytest.fixture(scope="module")
def minion(work):
    """One masterless minion; each test writes its pillar first."""
    return Minion(None, work / "minion", sync=False, **FAST)


@pytest.fixture(scope="module")
def renderer(minion):
    return Renderer(minion)


def render(renderer, pillar, sls=RUNNING):
    states = renderer(sls, pillar)
    assert isinstance(states, dict), states
    return states


def real_show_sls(minion, pillar):
    """Both roles are also rendered by the real salt-call (the other renders go in-process)."""
    minion.pillar(pillar)
    proc, states = show_sls(minion, RUNNING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert isinstance(states, dict), states
    return states


@pytest.fixture(scope="module")
def master_states(minion, sets):
    return real_show_sls(minion, node_pillar(sets["a"], "master"))


@pytest.fixture(scope="module")
def node_states(minion, sets):
    return real_show_sls(minion, node_pillar(sets["a"], "node"))


def flags(states, component):
    return states[f"kubernetes-controlplane-{component}-manifest-file-managed"]["context"]["flags"]


def test_master_renders_the_control_plane_and_the_kubelet(master_states):
    states = master_states
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        state = states[f"kubernetes-controlplane-{component}-manifest-file-managed"]
        assert state["name"] == f"/etc/kubernetes/manifests/{component}.yaml"
        assert state["mode"] == "0600"
        assert state["context"]["image"] == f"registry.k8s.io/{component}:v1.32.4"
    for kubeconfig in ("admin", "controller-manager", "scheduler"):
        state = states[f"kubernetes-controlplane-{kubeconfig}-kubeconfig-file-managed"]
        assert state["mode"] == "0600"
    apiserver = flags(states, "kube-apiserver")
    assert apiserver["client-ca-file"] == f"{SRV}/ca.crt"
    assert apiserver["tls-cert-file"] == f"{SRV}/server.cert"
    assert apiserver["tls-private-key-file"] == f"{SRV}/server.key"
    # the seed's behaviour: server.key signs and verifies service-account tokens
    assert apiserver["service-account-key-file"] == f"{SRV}/server.key"
    assert apiserver["service-account-signing-key-file"] == f"{SRV}/server.key"
    cm = flags(states, "kube-controller-manager")
    assert cm["service-account-private-key-file"] == f"{SRV}/server.key"
    assert cm["root-ca-file"] == f"{SRV}/ca.crt"
    assert cm["kubeconfig"] == "/var/lib/kube-controller-manager/kubeconfig"
    assert flags(states, "kube-scheduler")["kubeconfig"] == "/var/lib/kube-scheduler/kubeconfig"
    config = states["kubernetes-kubelet-config-file-managed"]["context"]
    assert config["static_pod_path"] == "/etc/kubernetes/manifests"
    assert "kubernetes-controlplane-sa-key-file-absent" in states  # no dedicated pair given


def test_kubelet_service_is_enabled_and_watches_every_file_it_reads(master_states, node_states):
    for role, states in (("master", master_states), ("node", node_states)):
        service = states["kubernetes-kubelet-service-running"]
        assert service["fun"] == "service.running"
        assert service["name"] == "kubelet"
        assert service["enable"] is True
        assert service["watch"] == SERVICE_WATCH, role
        # every watched state exists (Salt would fail the run otherwise, at apply time)
        for requisite in service["watch"]:
            assert next(iter(requisite.values())) in states


def test_node_renders_no_control_plane_and_removes_a_former_one(node_states):
    states = node_states
    assert not [s for s in states if s.endswith("-manifest-file-managed")]
    absent = {s["name"] for s in states.values() if s["fun"] == "file.absent"}
    assert {
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/etc/kubernetes/manifests/kube-controller-manager.yaml",
        "/etc/kubernetes/manifests/kube-scheduler.yaml",
        "/etc/kubernetes/admin.conf",
        "/var/lib/kube-controller-manager/kubeconfig",
        "/var/lib/kube-scheduler/kubeconfig",
        f"{SRV}/sa.key",
        f"{SRV}/sa.pub",
        f"{SRV}/server.cert",
        f"{SRV}/server.key",
    } <= absent
    assert states["kubernetes-kubelet-config-file-managed"]["context"]["static_pod_path"] == ""
    kubelet = states["kubernetes-kubelet-kubeconfig-file-managed"]["context"]
    assert kubelet["server"] == "https://kubernetes.api:6443"
    assert kubelet["server_name"] == "kubernetes.api"
    assert kubelet["cert"] == f"{SRV}/kubecfg.crt"
    assert "kubernetes-running-kube-proxy-kubeconfig-file-managed" in states


def test_role_defaults_to_node(renderer, sets):
    pillar = node_pillar(sets["a"], "master")
    del pillar["kubernetes"]["role"]
    states = render(renderer, pillar)
    assert "kubernetes-controlplane-kube-apiserver-manifest-file-absent" in states


def test_lookup_overrides_images_addresses_and_flags(renderer, sets):
    lookup = {
        "registry": "registry.example.com/k8s",
        "version": "v1.33.1",
        "scheduler": {"image": "mirror.example.com/kube-scheduler:v1.33.1-patched"},
        "api_server": {"address": "2001:db8::10", "port": 8443},
        "apiserver": {
            "secure_port": 8443,
            "advertise_address": "192.0.2.10",
            "extra_args": {"enable-admission-plugins": None, "audit-log-maxage": 30},
        },
        "manifests": {"dir": "/etc/k8s/pods"},
        "admin": {"kubeconfig": "/root/admin.kubeconfig"},
    }
    states = render(renderer, node_pillar(sets["a"], "master", lookup=lookup))
    apiserver = states["kubernetes-controlplane-kube-apiserver-manifest-file-managed"]
    assert apiserver["name"] == "/etc/k8s/pods/kube-apiserver.yaml"
    context = apiserver["context"]
    assert context["image"] == "registry.example.com/k8s/kube-apiserver:v1.33.1"
    assert context["port"] == 8443
    assert "enable-admission-plugins" not in context["flags"]
    assert context["flags"]["audit-log-maxage"] == 30
    assert context["flags"]["advertise-address"] == "192.0.2.10"
    assert context["flags"]["secure-port"] == 8443
    scheduler = states["kubernetes-controlplane-kube-scheduler-manifest-file-managed"]["context"]
    assert scheduler["image"] == "mirror.example.com/kube-scheduler:v1.33.1-patched"
    admin = states["kubernetes-controlplane-admin-kubeconfig-file-managed"]
    assert admin["name"] == "/root/admin.kubeconfig"
    assert admin["context"]["server"] == "https://[2001:db8::10]:8443"
    local = states["kubernetes-controlplane-scheduler-kubeconfig-file-managed"]["context"]
    assert local["server"] == "https://127.0.0.1:8443"
    assert local["server_name"] == "kubernetes.api"
    kubelet = states["kubernetes-kubelet-config-file-managed"]["context"]
    assert kubelet["static_pod_path"] == "/etc/k8s/pods"


def test_dedicated_service_account_pair_replaces_server_key(renderer, sets):
    states = render(renderer, node_pillar(sets["a"], "master", service_account=sa_pair()))
    assert states["kubernetes-controlplane-service-account-validated"]["fun"] == (
        "k8s_node.key_pair_validated"
    )
    # the certificate check waits for the pair's check: a bad pair writes nothing
    assert states["kubernetes-controlplane-service-account-validated"]["require_in"] == [
        {"k8s_certs": "kubernetes-certs-pillar-validated"}
    ]
    key = states["kubernetes-controlplane-sa-key-pem-managed"]
    assert (key["name"], key["mode"], key["source"]) == (
        f"{SRV}/sa.key",
        "0600",
        "kubernetes:service_account:sa.key",
    )
    assert states["kubernetes-controlplane-sa-pub-pem-managed"]["mode"] == "0644"
    apiserver = flags(states, "kube-apiserver")
    assert apiserver["service-account-key-file"] == f"{SRV}/sa.pub"
    assert apiserver["service-account-signing-key-file"] == f"{SRV}/sa.key"
    assert apiserver["tls-private-key-file"] == f"{SRV}/server.key"
    cm = flags(states, "kube-controller-manager")
    assert cm["service-account-private-key-file"] == f"{SRV}/sa.key"


def test_redhat_family_writes_sysconfig(sets, work):
    minion = Minion(None, work / "rh-minion", sync=False, grains={"os_family": "RedHat"}, **FAST)
    states = render(Renderer(minion), node_pillar(sets["a"], "node"))
    assert states["kubernetes-kubelet-env-file-managed"]["name"] == "/etc/sysconfig/kubelet"
    dropin = states["kubernetes-kubelet-systemd-dropin-file-managed"]["context"]
    assert dropin["env_file"] == "/etc/sysconfig/kubelet"


def test_runtime_endpoint_follows_container_runtime(renderer, sets, node_states):
    context = node_states["kubernetes-kubelet-config-file-managed"]["context"]
    assert context["runtime_endpoint"] == "unix:///run/cri-dockerd.sock"
    containerd = render(renderer, node_pillar(sets["a"], "node", container_runtime="containerd"))
    context = containerd["kubernetes-kubelet-config-file-managed"]["context"]
    assert context["runtime_endpoint"] == "unix:///run/containerd/containerd.sock"


def test_kubelet_removed_stops_the_kubelet_before_touching_containers(renderer, sets):
    states = render(renderer, node_pillar(sets["a"], "node"), sls=REMOVED)
    assert states["kubernetes-kubelet-removed-service-dead"]["fun"] == "service.dead"
    containers = states["kubernetes-kubelet-removed-containers-absent"]
    assert containers["fun"] == "k8s_node.containers_absent"
    assert containers["require"] == [{"service": "kubernetes-kubelet-removed-service-dead"}]
    assert (containers["name"], containers["cli"], containers["host"]) == ("docker", "docker", "")
    # images and volumes stay unless pillar asks
    assert containers["images"] is False and containers["volumes"] is False

    pillar = node_pillar(
        sets["a"],
        "node",
        container_runtime="containerd",
        lookup={"cleanup": {"images": True}},
    )
    containers = render(renderer, pillar, sls=REMOVED)[
        "kubernetes-kubelet-removed-containers-absent"
    ]
    assert containers["name"] == "containerd"
    assert containers["cli"] == "auto"
    assert containers["address"] == "/run/containerd/containerd.sock"
    assert containers["namespace"] == "k8s.io"
    assert containers["images"] is True and containers["volumes"] is False


# --------------------------------------------------------------------------
# Bad settings: the render fails, naming the setting
# --------------------------------------------------------------------------

BAD = {
    "role-typo": (
        {"role": "mastr"},
        RUNNING,
        'kubernetes:role must be master or node, not "mastr"',
    ),
    "runtime-unknown": (
        {"container_runtime": "podman"},
        RUNNING,
        'kubernetes:container_runtime must be docker or containerd, not "podman"',
    ),
    "runtime-unknown-removed": (
        {"container_runtime": "podman"},
        REMOVED,
        'kubernetes:container_runtime must be docker or containerd, not "podman"',
    ),
    "containerd-cli-unknown": (
        {
            "container_runtime": "containerd",
            "lookup": {"runtime": {"containerd": {"cli": "nerdctl"}}},
        },
        REMOVED,
        'kubernetes:lookup:runtime:containerd:cli must be auto, crictl or ctr, not "nerdctl"',
    ),
    "port-not-a-number": (
        {"lookup": {"api_server": {"port": "https"}}},
        RUNNING,
        'kubernetes:lookup:api_server:port must be a port number (1-65535), not "https"',
    ),
    "port-out-of-range": (
        {"lookup": {"apiserver": {"secure_port": 70000}}},
        RUNNING,
        "kubernetes:lookup:apiserver:secure_port must be a port number (1-65535), not 70000",
    ),
    "master-without-server-pair": (
        {"certs": "node"},
        RUNNING,
        "kubernetes:role is master, but kubernetes:certs has no server.cert/server.key",
    ),
    "service-account-not-a-mapping": (
        {"service_account": "text"},
        RUNNING,
        'kubernetes:service_account must be a mapping with "sa.key" and "sa.pub"',
    ),
    "half-a-service-account-pair": (
        {"service_account": "key-only"},
        RUNNING,
        'kubernetes:service_account must hold both "sa.key" and "sa.pub"',
    ),
}


def _bad_pillar(case, sets):
    override, sls, message = BAD[case]
    pillar = node_pillar(sets["a"], "master")
    kubernetes = pillar["kubernetes"]
    for key, value in override.items():
        if key == "certs":
            kubernetes["certs"] = node_pillar(sets["a"], "node")["kubernetes"]["certs"]
        elif key == "service_account" and value == "text":
            kubernetes["service_account"] = sa_pair()["sa.key"]
        elif key == "service_account":
            kubernetes["service_account"] = {"sa.key": sa_pair()["sa.key"]}
        elif key == "lookup":
            kubernetes["lookup"] = value
        else:
            kubernetes[key] = value
    return pillar, sls, message


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_setting_fails_the_render_naming_it(case, renderer, sets):
    pillar, sls, message = _bad_pillar(case, sets)
    errors = renderer(sls, pillar)
    assert isinstance(errors, list), "rendered although bad"
    assert any(message in error for error in errors), errors


@pytest.mark.parametrize("case", ["role-typo", "runtime-unknown-removed"])
def test_bad_setting_makes_salt_call_exit_non_zero(case, minion, sets):
    pillar, sls, message = _bad_pillar(case, sets)
    minion.pillar(pillar)
    try:
        proc, errors = show_sls(minion, sls)
    finally:
        # The in-process renders merge their pillar over this file: leave no bad
        # setting behind for the tests that run after this one.
        minion.pillar({})
    assert proc.returncode != 0
    assert any(message in error for error in errors), proc.stdout + proc.stderr
    assert message in proc.stderr  # logged for whoever runs it by hand


def test_a_bad_role_does_not_stop_the_certificates(renderer, sets):
    """certs.present does not care about the role: only the states that use it refuse."""
    pillar = node_pillar(sets["a"], "master")
    pillar["kubernetes"]["role"] = "mastr"
    states = render(renderer, pillar, sls="kubernetes.certs.present")
    assert "kubernetes-certs-pillar-validated" in states


def test_kubernetes_kubelet_is_the_kubelet_alone(renderer, sets):
    """kubernetes.kubelet (init.sls) = kubelet.running: the certificates and the kubelet,
    no control plane, no kube-proxy."""
    states = render(renderer, node_pillar(sets["a"], "master"), sls="kubernetes.kubelet")
    assert states["kubernetes-kubelet-service-running"]["watch"] == SERVICE_WATCH
    assert "kubernetes-certs-pillar-validated" in states
    assert not [
        s for s in states if s.startswith(("kubernetes-controlplane", "kubernetes-running"))
    ]


@pytest.mark.parametrize("role", ["master", "node"])
def test_state_apply_kubernetes_is_the_whole_host(renderer, sets, role):
    """`state.apply kubernetes` (kubernetes/init.sls) renders exactly kubernetes.running."""
    pillar = node_pillar(sets["a"], role)
    top = render(renderer, pillar, sls="kubernetes")
    assert top == render(renderer, pillar)
    assert "kubernetes-kubelet-prerequisites-met" in top
    assert "kubernetes-kubelet-service-running" in top
