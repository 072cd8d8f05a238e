"""The whole path with real daemons: a salt-master and two salt-minions.

master: ``salt-run saltutil.sync_all`` (runner, utils, ext_pillar from this
checkout's file_roots) -> ``salt-run k8s-helper.generate_certs`` -> the
``k8s_certs`` ext_pillar hands the generated files to the minions ->
``saltutil.sync_all`` + ``saltutil.refresh_pillar`` on the minions ->
``state.apply kubernetes.certs.present`` on both.

Both minions run on this one host, yet each must have its own disk: the
master-role minion gets the apiserver's key, the node-role minion must not
have it anywhere.  So each minion daemon is started inside its own sandbox
(tests/support/sandbox.py): its own private mount namespace with overlays over /etc,
/var, /srv and /usr/local.  Each minion writes the real paths of its own
"machine", and the host stays untouched.  We look at each minion's disk by
entering its namespace (nsenter), and ask the minion itself (file.stat).
"""

import contextlib
import pathlib
import subprocess

import attr
import pytest
import support
from saltfactories.daemons.minion import SaltMinion
from support import k8s_pki, sandbox, tlsserver

pytestmark = [pytest.mark.daemons, pytest.mark.sandbox]

SRV = "/srv/kubernetes"
ANCHOR = "/usr/local/share/ca-certificates/kubernetes-ca.crt"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MASTER_ID = "k8s-master-1"
NODE_ID = "k8s-node-1"
TAG = "default"  # as in the ext_pillar pillar.example shows
WATCHED = ("/srv", "/var/lib/kubelet", "/usr/local/share/ca-certificates", "/etc/ssl/certs")


@attr.s(kw_only=True, slots=True)
class SandboxedMinion(SaltMinion):
    """A salt-minion daemon whose process runs inside its own Sandbox."""

    sandbox = attr.ib(repr=False)

    def cmdline(self, *args):
        return self.sandbox.wrap(SaltMinion.cmdline(self, *args))


@pytest.fixture(scope="module")
def master(salt_factories, tmp_path_factory, host_untouched):
    reason = sandbox.available()
    if reason:
        pytest.skip(f"sandbox unavailable: {reason}")
    base = tmp_path_factory.mktemp("master")
    pillar_root = base / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text("base: {}\n")
    factory = salt_factories.salt_master_daemon(
        "k8s-salt",
        overrides={
            "file_roots": {"base": [str(support.formula_root(base))]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "k8s_helper": {"pki_root": str(base / "pki")},
            # The documented way, taken from pillar.example itself.
            "ext_pillar": support.documented_ext_pillar(),
        },
    )
    factory.pki_dir = base / "pki" / TAG
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def minions(master, tmp_path_factory):
    started = {}
    for minion_id in (MASTER_ID, NODE_ID):
        box = sandbox.Sandbox(tmp_path_factory.mktemp(minion_id))
        factory = master.salt_minion_daemon(minion_id, factory_class=SandboxedMinion, sandbox=box)
        factory.box = box
        started[minion_id] = factory
    with contextlib.ExitStack() as stack:
        support.start_together(stack, started.values())
        yield started


@pytest.fixture(scope="module")
def run(master, minions):
    """The operator's steps, once; what each returned is recorded for the tests."""
    salt_run = master.salt_run_cli()
    salt = master.salt_cli()
    rec = {}
    rec["sync_master"] = salt_run.run("saltutil.sync_all")
    rec["generate"] = salt_run.run(
        "k8s-helper.generate_certs",
        f"cluster_tag={TAG}",
        "api_service_address=10.254.0.1",
        "api_server_fqdn=kubernetes.api",
    )
    for minion_id in minions:
        rec[f"sync {minion_id}"] = salt.run("saltutil.sync_all", minion_tgt=minion_id)
        rec[f"refresh {minion_id}"] = salt.run(
            "saltutil.refresh_pillar", "wait=True", minion_tgt=minion_id
        )
        rec[f"pillar {minion_id}"] = salt.run(
            "pillar.keys", "kubernetes:certs", minion_tgt=minion_id
        )
        rec[f"apply {minion_id}"] = salt.run(
            "state.apply", "kubernetes.certs.present", minion_tgt=minion_id
        )
        rec[f"disk {minion_id}"] = sandbox.tree_in(minions[minion_id].pid, *WATCHED)
        rec[f"stat {minion_id}"] = salt.run(
            "file.file_exists", f"{SRV}/server.key", minion_tgt=minion_id
        )
        rec[f"again {minion_id}"] = salt.run(
            "state.apply", "kubernetes.certs.present", minion_tgt=minion_id
        )
    return rec


def _ok(ret):
    assert ret.returncode == 0, f"{ret.stdout}\n{ret.stderr}"
    return ret.data


def test_master_syncs_the_formula_and_mints_the_set(run, master):
    synced = _ok(run["sync_master"])
    assert "runners.k8s_helper" in synced["runners"], synced
    assert "pillar.k8s_certs" in synced["pillar"], synced
    generated = _ok(run["generate"])
    assert generated["directory"] == str(master.pki_dir)
    assert {info["action"] for info in generated["files"].values()} == {"generated"}


@pytest.mark.parametrize(
    ("minion_id", "expected"),
    [
        (MASTER_ID, ["ca.crt", "kubecfg.crt", "kubecfg.key", "server.cert", "server.key"]),
        (NODE_ID, ["ca.crt", "kubecfg.crt", "kubecfg.key"]),
    ],
)
def test_pillar_gives_the_server_pair_to_masters_only(run, minion_id, expected):
    assert sorted(_ok(run[f"pillar {minion_id}"])) == expected


@pytest.mark.parametrize("minion_id", [MASTER_ID, NODE_ID])
def test_state_apply_succeeds_then_changes_nothing(run, minion_id):
    first = _ok(run[f"apply {minion_id}"])
    assert all(r["result"] for r in first.values())
    assert any(r["changes"] for r in first.values())
    again = _ok(run[f"again {minion_id}"])
    assert [r["__id__"] for r in again.values() if r["changes"]] == []


def test_files_on_each_minion_are_the_generated_bytes(run, master):
    pki = master.pki_dir
    common = {
        f"{SRV}/ca.crt": "ca.crt",
        f"{SRV}/kubecfg.crt": "kubecfg.crt",
        f"{SRV}/kubecfg.key": "kubecfg.key",
        "/var/lib/kubelet/ca.crt": "ca.crt",
        ANCHOR: "ca.crt",
    }
    server = {f"{SRV}/server.cert": "server.crt", f"{SRV}/server.key": "server.key"}
    for minion_id, files in ((MASTER_ID, {**common, **server}), (NODE_ID, common)):
        disk = run[f"disk {minion_id}"]
        for path, name in files.items():
            assert bytes.fromhex(disk[path]["data"]) == (pki / name).read_bytes(), path
            assert disk[path]["mode"] == (0o600 if path.endswith(".key") else 0o644), path
        bundle = bytes.fromhex(disk[BUNDLE]["data"])
        assert k8s_pki.bundle_has(bundle, k8s_pki.load_cert((pki / "ca.crt").read_bytes()))


def test_node_has_no_server_key_on_its_disk(run):
    disk = run[f"disk {NODE_ID}"]
    assert not [p for p in disk if p.startswith(f"{SRV}/server.")]
    assert _ok(run[f"stat {NODE_ID}"]) is False  # the node minion, asked itself
    assert _ok(run[f"stat {MASTER_ID}"]) is True


def test_no_key_material_in_what_salt_printed(run, master):
    keys = [(master.pki_dir / n).read_text() for n in ("kubecfg.key", "server.key", "ca.key")]
    for step, ret in run.items():
        if hasattr(ret, "stdout"):
            assert support.leaked(ret.stdout + ret.stderr, keys) is None, step


@pytest.mark.parametrize("minion_id", [MASTER_ID, NODE_ID])
def test_no_key_material_in_the_minions_logs_and_caches(run, master, minions, minion_id):
    """The minion's root_dir: its log file, sls/highstate caches, job cache (its own
    Salt authentication keys under pki/ excepted)."""
    keys = [(master.pki_dir / n).read_text() for n in ("kubecfg.key", "server.key", "ca.key")]
    root = pathlib.Path(minions[minion_id].config["root_dir"])
    files = [p for p in root.rglob("*") if p.is_file() and root / "pki" not in p.parents]
    assert root / "logs" / "minion.log" in files
    assert root / "cache" / "highstate.cache.p" in files
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert support.leaked(text, keys) is None, path


def test_kubectl_with_the_nodes_files_reaches_a_server_with_the_masters_files(
    run, minions, tmp_path
):
    """The TLS proof: the master minion's server.cert/server.key serve, requiring a
    client certificate; the real kubectl on the node's ca.crt + kubecfg pair gets in."""
    master_disk, node_disk = run[f"disk {MASTER_ID}"], run[f"disk {NODE_ID}"]

    def put(disk, path, name):
        target = tmp_path / name
        target.write_bytes(bytes.fromhex(disk[path]["data"]))
        target.chmod(0o600)
        return target

    server_cert = put(master_disk, f"{SRV}/server.cert", "server.cert")
    server_key = put(master_disk, f"{SRV}/server.key", "server.key")
    server_ca = put(master_disk, f"{SRV}/ca.crt", "server-ca.crt")
    ca = put(node_disk, f"{SRV}/ca.crt", "ca.crt")
    cert = put(node_disk, f"{SRV}/kubecfg.crt", "kubecfg.crt")
    key = put(node_disk, f"{SRV}/kubecfg.key", "kubecfg.key")

    def kubectl(config):
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(config), "get", "--raw", "/healthz"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    with tlsserver.TLSServer(server_cert, server_key, server_ca) as server:
        good = tlsserver.kubeconfig(
            tmp_path / "kubeconfig", server.url, ca, cert, key, "kubernetes.api"
        )
        proc = kubectl(good)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "ok"
        assert {"commonName": "kubecfg", "organizationName": "system:masters"} in server.clients
        # Controls, so the check above can fail: a wrong server name, and a
        # client that trusts another CA, are both refused by kubectl.
        wrong_name = tlsserver.kubeconfig(
            tmp_path / "kc-name", server.url, ca, cert, key, "not-in-the-sans.example"
        )
        assert kubectl(wrong_name).returncode != 0
        other_ca = tmp_path / "other-ca.crt"
        other_ca.write_bytes(k8s_pki.cert_pem(_other_ca()))
        foreign = tlsserver.kubeconfig(
            tmp_path / "kc-ca", server.url, other_ca, cert, key, "kubernetes.api"
        )
        refused = kubectl(foreign)
        assert refused.returncode != 0
        assert "certificate" in refused.stderr


def _other_ca():
    key = k8s_pki.new_key("ecdsa-p256")
    return k8s_pki.build_ca(key, "someone-else")


def test_the_host_got_nothing(run):
    assert f"{SRV}/server.key" in run[f"disk {MASTER_ID}"]
    assert sandbox.host_tree(SRV, ANCHOR, "/var/lib/kubelet/ca.crt") == {}
    assert not pathlib.Path("/etc/ssl/certs/kubernetes.pem").is_symlink()
