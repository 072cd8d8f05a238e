"""kubernetes.certs.present / kubernetes.certs.removed, applied for real.

Every apply is the real ``salt-call --local`` with this checkout as file_roots,
run inside a throwaway mount namespace (tests/support/sandbox.py) so the states write
the real /srv, /var/lib/kubelet, /usr/local/share/ca-certificates and
/etc/ssl/certs, and run the real update-ca-certificates, without touching the
host.  Independent checks: openssl verify against the rebuilt trust bundle.
"""

import datetime
import json
import pathlib
import subprocess

import pytest
import support
from support import k8s_pki, tlsserver
from support.minion import Minion, by_id, changed

pytestmark = pytest.mark.sandbox

PRESENT = "kubernetes.certs.present"
REMOVED = "kubernetes.certs.removed"
SRV = "/srv/kubernetes"
ANCHOR = "/usr/local/share/ca-certificates/kubernetes-ca.crt"
LINK = "/etc/ssl/certs/kubernetes.pem"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
KUBELET_CA = "/var/lib/kubelet/ca.crt"
# Trees compared byte for byte before and after.
WATCHED = ("/srv", "/var/lib/kubelet", "/usr/local/share/ca-certificates", "/etc/ssl/certs")
SEED_PKI = "/var/salt/k8s-helper/pki/default"

SEED_PILLAR = support.SEED_PILLAR

# where each laid-down file comes from in a generated set
FROM_SET = {
    f"{SRV}/ca.crt": "ca.crt",
    f"{SRV}/kubecfg.crt": "kubecfg.crt",
    f"{SRV}/kubecfg.key": "kubecfg.key",
    f"{SRV}/server.cert": "server.crt",
    f"{SRV}/server.key": "server.key",
    KUBELET_CA: "ca.crt",
    ANCHOR: "ca.crt",
}
KEYS = (f"{SRV}/kubecfg.key", f"{SRV}/server.key")


def kubectl_against(files, workdir):
    """The real kubectl, with the laid-down CA and kubecfg pair, asks a TLS server
    presenting the laid-down server pair (client certificates required)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tlsserver.TLSServer(files["server.crt"], files["server.key"], files["ca.crt"]) as server:
        config = tlsserver.kubeconfig(
            workdir / "kubeconfig",
            server.url,
            files["ca.crt"],
            files["kubecfg.crt"],
            files["kubecfg.key"],
            "kubernetes.api",
        )
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(config), "get", "--raw", "/healthz"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return proc, server.clients


def set_keys(set_dir):
    return [(pathlib.Path(set_dir) / n).read_text() for n in ("kubecfg.key", "server.key")]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="module")
def sets(work):
    """Three independent sets (three CAs), minted by the real runner, loaded in-process."""
    conf = support.write_master_config(work / "master")
    generate = support.load_runners(conf)["k8s-helper.generate_certs"]
    out = {}
    for tag in ("a", "b", "c"):
        ret = generate(cluster_tag=tag)
        assert ret.get("result") is not False, ret
        out[tag] = pathlib.Path(ret["directory"])
    return out


# --------------------------------------------------------------------------
# The seed's flow: runner -> seed pillar (verbatim) -> present -> again -> removed
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow(new_sandbox, work):
    """Runs the whole life cycle once in one sandbox and records what each step did."""
    box = new_sandbox("flow")
    rec = {"box": box, "before": box.tree(*WATCHED)}
    # What the OS's own tool makes of this machine's trust store without our CA:
    # the reference "nothing else changed" is measured against (any run of
    # update-ca-certificates normalises the store, e.g. turns files into links).
    reference = new_sandbox("reference")
    reference.run(["update-ca-certificates", "--fresh"], check=True)
    rec["reference"] = reference.tree("/etc/ssl/certs")
    # The runner at its default pki_root, exactly where the seed's pillar reads.
    mconf = support.write_master_config(work / "flow-master", k8s_helper={})
    with support.event_sink(mconf):
        rec["generate"] = box.run(
            [
                support.VENV_BIN / "salt-run",
                "-c",
                mconf,
                "--out=json",
                "k8s-helper.generate_certs",
                "cluster_tag=default",
                "api_service_address=10.254.0.1",
                "api_server_fqdn=kubernetes.api",
            ]
        )
    rec["pki"] = {
        name: box.read(f"{SEED_PKI}/{name}") for name in support.SEED_FILES if name != "ca.key"
    }
    minion = Minion(box, work / "flow-minion")
    minion.pillar(text=SEED_PILLAR)
    rec["minion"] = minion
    rec["test"] = minion.call("state.apply", PRESENT, "test=True")
    rec["after_test"] = box.tree(*WATCHED)
    rec["apply1"] = minion.call("state.apply", PRESENT)
    rec["after1"] = box.tree(*WATCHED)
    rec["verify_cafile"] = box.run(["openssl", "verify", "-CAfile", BUNDLE, f"{SRV}/server.cert"])
    rec["verify_capath"] = box.run(
        ["openssl", "verify", "-CApath", "/etc/ssl/certs", f"{SRV}/kubecfg.crt"]
    )
    rec["kubectl"] = kubectl_against(
        {name: box.upper(path) for path, name in FROM_SET.items() if path.startswith(SRV)},
        work / "flow-tls",
    )
    rec["apply2"] = minion.call("state.apply", PRESENT)
    rec["after2"] = box.tree(*WATCHED)
    rec["removed1"] = minion.call("state.apply", REMOVED)
    rec["after_removed"] = box.tree(*WATCHED)
    server_crt = work / "flow-server.crt"  # a copy: /srv/kubernetes/server.cert is gone now
    server_crt.write_bytes(rec["pki"]["server.crt"])
    rec["verify_removed"] = box.run(["openssl", "verify", "-CAfile", BUNDLE, server_crt])
    rec["removed2"] = minion.call("state.apply", REMOVED)
    rec["after_removed2"] = box.tree(*WATCHED)
    return rec


def test_runner_wrote_the_set_where_the_seed_pillar_reads(flow):
    proc = flow["generate"]
    assert proc.returncode == 0, proc.stderr
    assert all(flow["pki"].values()), "generate_certs did not write the seed set"


def test_test_mode_predicts_and_writes_nothing(flow):
    proc, states = flow["test"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert flow["after_test"] == flow["before"]
    ids = by_id(states)
    assert ids["kubernetes-certs-pillar-validated"]["result"] is True
    assert ids["kubernetes-certs-server-key-pem-managed"]["result"] is None


def test_present_lays_down_every_file_with_its_mode(flow):
    proc, states = flow["apply1"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["result"] for r in states.values())
    tree = flow["after1"]
    for path, name in FROM_SET.items():
        entry = tree[path]
        assert entry["kind"] == "file", path
        assert bytes.fromhex(entry["data"]) == flow["pki"][name], f"{path} differs from {name}"
        assert (entry["uid"], entry["gid"]) == (0, 0), path
        assert entry["mode"] == (0o600 if path in KEYS else 0o644), f"{path}: {oct(entry['mode'])}"


def test_every_copy_of_the_ca_is_the_same(flow):
    tree = flow["after1"]
    copies = {tree[p]["data"] for p in (f"{SRV}/ca.crt", KUBELET_CA, ANCHOR)}
    assert len(copies) == 1


def test_kubernetes_pem_links_to_the_anchor(flow):
    entry = flow["after1"][LINK]
    assert entry == {**entry, "kind": "link", "target": ANCHOR}


def test_trust_bundle_holds_the_ca(flow):
    bundle = bytes.fromhex(flow["after1"][BUNDLE]["data"])
    ca = k8s_pki.load_cert(flow["pki"]["ca.crt"])
    assert k8s_pki.bundle_has(bundle, ca)
    assert not k8s_pki.bundle_has(bytes.fromhex(flow["before"][BUNDLE]["data"]), ca)
    # openssl, independently: the bundle file and the hashed folder both trust it now
    assert flow["verify_cafile"].returncode == 0, flow["verify_cafile"].stderr
    assert flow["verify_capath"].returncode == 0, flow["verify_capath"].stderr


def test_kubectl_talks_tls_with_the_laid_down_files(flow):
    proc, clients = flow["kubectl"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert {"commonName": "kubecfg", "organizationName": "system:masters"} in clients


def test_second_apply_changes_nothing_and_does_not_refresh(flow):
    proc, states = flow["apply2"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert changed(states) == []
    assert flow["after2"] == flow["after1"]
    assert "holds the CA" in by_id(states)["kubernetes-certs-trust-store-trusted"]["comment"]
    # the first apply refreshed, because the anchor was new
    first = by_id(flow["apply1"][1])["kubernetes-certs-trust-store-trusted"]
    assert first["changes"]["refresh"] == "update-ca-certificates"


def _under(tree, top):
    return {p: e for p, e in tree.items() if p == top or p.startswith(top + "/")}


def _diff(a, b):
    return sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))


def test_present_adds_only_its_own_entries_to_the_trust_store(flow):
    after = _under(flow["after1"], "/etc/ssl/certs")
    ours = {p for p, e in after.items() if e.get("target") in (ANCHOR, "kubernetes-ca.pem")}
    # the anchor's link made by update-ca-certificates, its hash link, our link
    assert "/etc/ssl/certs/kubernetes-ca.pem" in ours and LINK in ours
    assert len(ours) == 3, sorted(ours)
    assert _diff(after, flow["reference"]) == sorted(ours | {BUNDLE})


def test_removed_takes_away_exactly_what_present_laid_down(flow):
    proc, states = flow["removed1"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after, before = flow["after_removed"], flow["before"]
    # The trust store: exactly what the OS tool makes of it without our CA,
    # bundle and hash links included; our anchor folder as before.
    assert _diff(_under(after, "/etc/ssl/certs"), flow["reference"]) == []
    top = "/usr/local/share/ca-certificates"
    assert _diff(_under(after, top), _under(before, top)) == []
    # Elsewhere only the (now empty) folders present created remain.
    rest = {p: e for p, e in after.items() if not p.startswith(("/etc/ssl/certs", top))}
    extra = sorted(set(rest) - set(before))
    assert set(extra) <= {SRV, "/var/lib/kubelet"}, extra
    assert all(after[p]["kind"] == "dir" for p in extra), extra
    assert {p: e for p, e in rest.items() if p in before} == {
        p: e for p, e in before.items() if not p.startswith(("/etc/ssl/certs", top))
    }
    # openssl no longer trusts the apiserver certificate through the bundle
    assert flow["verify_removed"].returncode != 0


def test_removed_again_changes_nothing(flow):
    proc, states = flow["removed2"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert changed(states) == []
    assert flow["after_removed2"] == flow["after_removed"]


def test_no_key_material_in_output_or_logs(flow):
    keys = [flow["pki"]["kubecfg.key"], flow["pki"]["server.key"]]
    for step in ("test", "apply1", "apply2", "removed1"):
        proc, _ = flow[step]
        assert support.leaked(proc.stdout, keys) is None, f"{step}: key in stdout"
        assert support.leaked(proc.stderr, keys) is None, f"{step}: key in info log"
    assert support.leaked(flow["minion"].log(), keys) is None
    # The minion's caches (sls.p, highstate.cache.p: the rendered states) hold
    # no key either: the states read pillar at apply time.
    for path in (flow["minion"].base / "root").rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("latin-1")
            assert support.leaked(text, keys) is None, path


# --------------------------------------------------------------------------
# Node pillar: no server pair, ever
# --------------------------------------------------------------------------


def test_node_gets_no_server_pair_and_loses_a_stale_one(new_sandbox, work, sets):
    box = new_sandbox("node")
    minion = Minion(box, work / "node-minion", minion_id="k8s-node-1")
    node = {"kubernetes": {"k8s_env": "a", "certs": support.pillar_certs(sets["a"], server=False)}}
    master = {"kubernetes": {"k8s_env": "a", "certs": support.pillar_certs(sets["a"])}}

    minion.pillar(node)
    proc, _ = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = box.tree(SRV)
    assert sorted(tree) == [SRV] + [f"{SRV}/{n}" for n in ("ca.crt", "kubecfg.crt", "kubecfg.key")]

    # a minion that was a master and becomes a node loses the apiserver's key
    minion.pillar(master)
    assert minion.call("state.apply", PRESENT)[0].returncode == 0
    assert f"{SRV}/server.key" in box.tree(SRV)
    minion.pillar(node)
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert changed(states) == [
        "kubernetes-certs-server-cert-file-absent",
        "kubernetes-certs-server-key-file-absent",
    ]
    assert f"{SRV}/server.key" not in box.tree(SRV)
    assert f"{SRV}/server.cert" not in box.tree(SRV)


# --------------------------------------------------------------------------
# Broken pillars: refused, naming the item, nothing on disk changes
# --------------------------------------------------------------------------


def _expired_server_cert(set_dir):
    ca_cert = k8s_pki.load_cert((set_dir / "ca.crt").read_bytes())
    ca_key = k8s_pki.load_key((set_dir / "ca.key").read_bytes())
    key = k8s_pki.load_key((set_dir / "server.key").read_bytes())
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=400)
    cert = k8s_pki.issue_leaf(
        k8s_pki.seed_specs()["server"], key, ca_cert, ca_key, days=30, now=long_ago
    )
    return k8s_pki.cert_pem(cert).decode()


def _broken(case, sets):
    """A pillar from set b (a different CA than the one on disk) with one bad item."""
    certs = support.pillar_certs(sets["b"])
    if case == "key-not-matching-cert":
        certs["server.key"] = (sets["b"] / "kubecfg.key").read_text()
        return certs, "kubernetes:certs:server.key: does not belong to server.cert"
    if case == "cert-from-foreign-ca":
        certs["server.cert"] = (sets["c"] / "server.crt").read_text()
        certs["server.key"] = (sets["c"] / "server.key").read_text()
        return certs, "kubernetes:certs:server.cert: not signed by ca.crt"
    if case == "garbage-text":
        # what the seed's `cmd.run cat` yields when the file is missing
        certs["kubecfg.crt"] = f"cat: {SEED_PKI}/kubecfg.crt: No such file or directory"
        return certs, "kubernetes:certs:kubecfg.crt: not a PEM certificate"
    if case == "expired-leaf":
        certs["server.cert"] = _expired_server_cert(sets["b"])
        return certs, "kubernetes:certs:server.cert: expired on"
    if case == "key-without-cert":
        del certs["server.cert"]
        return certs, "kubernetes:certs:server.cert: missing while server.key is given"
    if case == "no-certs-at-all":
        return None, "kubernetes:certs: missing from pillar"
    if case == "ca-ending-in-an-unterminated-block":
        # the issue's paste: cryptography reads it, the system bundle then breaks
        certs["ca.crt"] += "-----BEGIN CERTIFICATE-----\nZZZZ\n"
        return certs, "kubernetes:certs:ca.crt: not a PEM certificate: the CERTIFICATE block of"
    if case == "foreign-ca-after-junk":
        certs["ca.crt"] += "# and ours:\n" + (sets["c"] / "ca.crt").read_text()
        return certs, "kubernetes:certs:ca.crt: not a PEM certificate: line"
    if case == "two-keys-in-one-key-file":
        certs["kubecfg.key"] += (sets["b"] / "server.key").read_text()
        return certs, "kubernetes:certs:kubecfg.key: holds 2 PEM blocks, expected 1"
    raise AssertionError(case)


@pytest.fixture(scope="module")
def applied(new_sandbox, work, sets):
    """A sandbox where set a is laid down; broken pillars try to replace it."""
    box = new_sandbox("broken")
    minion = Minion(box, work / "broken-minion")
    minion.pillar({"kubernetes": {"certs": support.pillar_certs(sets["a"])}})
    proc, _ = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return minion


BROKEN = (
    "key-not-matching-cert",
    "cert-from-foreign-ca",
    "garbage-text",
    "expired-leaf",
    "key-without-cert",
    "no-certs-at-all",
    "ca-ending-in-an-unterminated-block",
    "foreign-ca-after-junk",
    "two-keys-in-one-key-file",
)


@pytest.mark.parametrize("case", BROKEN)
def test_broken_pillar_is_refused_and_disk_stays_byte_identical(case, applied, sets):
    minion = applied
    before = minion.box.tree(*WATCHED)
    certs, message = _broken(case, sets)
    minion.pillar({"kubernetes": {"certs": certs}} if certs else {"kubernetes": {"k8s_env": "b"}})
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    validated = by_id(states)["kubernetes-certs-pillar-validated"]
    assert validated["result"] is False
    assert message in validated["comment"], validated["comment"]
    assert all(r["result"] is False for r in states.values())  # the rest never ran
    assert changed(states) == []
    assert minion.box.tree(*WATCHED) == before
    keys = set_keys(sets["b"]) + set_keys(sets["c"])
    assert support.leaked(proc.stdout + proc.stderr, keys) is None


def test_broken_pillar_on_a_fresh_minion_creates_nothing(new_sandbox, work, sets):
    box = new_sandbox("fresh")
    before = box.tree(*WATCHED)
    minion = Minion(box, work / "fresh-minion")
    certs, message = _broken("key-not-matching-cert", sets)
    minion.pillar({"kubernetes": {"certs": certs}})
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    assert message in by_id(states)["kubernetes-certs-pillar-validated"]["comment"]
    assert box.tree(*WATCHED) == before
    assert SRV not in box.tree(SRV)


def test_a_node_whose_pillar_holds_the_apiserver_key_is_refused(applied, sets):
    """Whatever pillar gives: a node never holds server.key or sa.key."""
    minion = applied
    before = minion.box.tree(*WATCHED)
    minion.pillar(
        {
            "kubernetes": {
                "role": "node",
                "certs": support.pillar_certs(sets["a"]),  # the seed's pillar gives all five
                "service_account": {"sa.key": "x", "sa.pub": "y"},
            }
        }
    )
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    comment = by_id(states)["kubernetes-certs-pillar-validated"]["comment"]
    wanted = "kubernetes:certs:server.key: kubernetes:role is node, and a node must never hold"
    assert f"{wanted} server.key" in comment
    assert "kubernetes:service_account:sa.key: kubernetes:role is node" in comment
    assert "docs/certs-states.md" in comment
    assert changed(states) == []
    assert minion.box.tree(*WATCHED) == before
    # the same pillar on a master is fine
    minion.pillar({"kubernetes": {"role": "master", "certs": support.pillar_certs(sets["a"])}})
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------
# Destinations: never written through a symlink (issue 10 item 2)
# --------------------------------------------------------------------------


def test_a_symlink_at_a_destination_is_refused_and_its_target_untouched(
    new_sandbox, work, sets, tmp_path
):
    box = new_sandbox("symlink")
    minion = Minion(box, work / "symlink-minion")
    outside = tmp_path / "outside.txt"  # outside the sandbox's overlays
    outside.write_text("precious\n")
    box.run(["sh", "-ec", f"mkdir -p {SRV} && ln -s {outside} {SRV}/server.key"], check=True)
    before = box.tree(*WATCHED)
    minion.pillar({"kubernetes": {"certs": support.pillar_certs(sets["a"])}})
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode != 0
    check = by_id(states)["kubernetes-certs-destinations-no-symlinks"]
    assert check["result"] is False
    assert f"{SRV}/server.key is a symlink to {outside} (remove it" in check["comment"]
    assert changed(states) == []
    assert box.tree(*WATCHED) == before
    assert outside.read_text() == "precious\n"
    # the formula's own writer refuses it too, without the precheck
    proc, states = minion.call(
        "state.single",
        "k8s_certs.pem_managed",
        f"name={SRV}/server.key",
        "source=kubernetes:certs:server.key",
        "mode=0600",
    )
    ret = next(iter(states.values()))
    assert ret["result"] is False
    assert f"{SRV}/server.key is a symlink to {outside}" in ret["comment"]
    assert outside.read_text() == "precious\n"
    assert box.tree(*WATCHED) == before


# --------------------------------------------------------------------------
# The system bundle must still load after a refresh (issue 10 item 1)
# --------------------------------------------------------------------------


def test_a_refresh_that_breaks_the_bundle_puts_the_previous_anchor_back(new_sandbox, work, sets):
    box = new_sandbox("rollback")
    minion = Minion(box, work / "rollback-minion")
    minion.pillar({"kubernetes": {"certs": support.pillar_certs(sets["a"])}})
    proc, _ = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    good = box.read(ANCHOR)
    # An anchor the pillar check would refuse, laid there behind the formula's
    # back: the issue's unterminated block.
    bad = good + b"-----BEGIN CERTIFICATE-----\nZZZZ\n"
    box.run(["sh", "-ec", f"cat > {ANCHOR}"], input=bad.decode(), check=True)
    proc, states = minion.call(
        "state.single",
        "k8s_certs.trusted",
        f"name={ANCHOR}",
        f"bundle={BUNDLE}",
        "refresh=update-ca-certificates",
    )
    assert proc.returncode != 0
    ret = next(iter(states.values()))
    assert ret["result"] is False
    assert f"after update-ca-certificates, {BUNDLE} no longer loads" in ret["comment"]
    assert f"put the previous {ANCHOR} back" in ret["comment"]
    assert f"{BUNDLE} loads again" in ret["comment"]
    assert box.read(ANCHOR) == good
    bundle = box.read(BUNDLE)
    assert k8s_pki.bundle_problem(bundle) is None
    assert k8s_pki.bundle_has(bundle, k8s_pki.load_cert(good))
    # independent: openssl reads the whole bundle again
    check = box.run(["openssl", "verify", "-CAfile", BUNDLE, f"{SRV}/kubecfg.crt"])
    assert check.returncode == 0, check.stdout + check.stderr


def test_new_ca_replaces_the_old_one_everywhere(new_sandbox, work, sets):
    """Replacing the certificates (a new CA): the files, and in the bundle the new
    CA in and the old one out, with one refresh."""
    box = new_sandbox("rotate")
    minion = Minion(box, work / "rotate-minion")
    minion.pillar({"kubernetes": {"certs": support.pillar_certs(sets["a"])}})
    assert minion.call("state.apply", PRESENT)[0].returncode == 0
    minion.pillar({"kubernetes": {"certs": support.pillar_certs(sets["b"])}})
    proc, states = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert by_id(states)["kubernetes-certs-trust-store-trusted"]["changes"]["refresh"]
    tree = box.tree(*WATCHED)
    for path, name in FROM_SET.items():
        assert bytes.fromhex(tree[path]["data"]) == (sets["b"] / name).read_bytes(), path
    bundle = bytes.fromhex(tree[BUNDLE]["data"])
    assert k8s_pki.bundle_has(bundle, k8s_pki.load_cert((sets["b"] / "ca.crt").read_bytes()))
    assert not k8s_pki.bundle_has(bundle, k8s_pki.load_cert((sets["a"] / "ca.crt").read_bytes()))


# --------------------------------------------------------------------------
# Paths come from map.jinja, overridable with kubernetes:lookup
# --------------------------------------------------------------------------

LOOKUP = {
    "certs": {"dir": "/srv/k8s-alt"},
    "kubelet": {"ca": "/var/lib/kubelet-alt/ca.crt"},
    "trust": {"link": "/etc/ssl/certs/k8s-alt.pem"},
}


def test_lookup_moves_every_path(new_sandbox, work, sets):
    box = new_sandbox("lookup")
    minion = Minion(box, work / "lookup-minion")
    minion.pillar({"kubernetes": {"lookup": LOOKUP, "certs": support.pillar_certs(sets["a"])}})
    proc, _ = minion.call("state.apply", PRESENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = box.tree("/srv", "/var/lib/kubelet-alt", "/var/lib/kubelet", "/etc/ssl/certs")
    assert "/srv/k8s-alt/server.key" in tree and SRV not in tree
    assert "/var/lib/kubelet-alt/ca.crt" in tree and KUBELET_CA not in tree
    assert tree["/etc/ssl/certs/k8s-alt.pem"]["target"] == ANCHOR and LINK not in tree


def _render_map(minion, **grains):
    """What map.jinja gives on this minion: what a runner can ask a minion for."""
    template = "{%- from 'kubernetes/map.jinja' import mapdata with context %}{{ mapdata | json }}"
    proc = subprocess.run(
        support.salt_call_argv(
            minion.conf, "slsutil.renderer", f"string={template}", "default_renderer=jinja"
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(json.loads(proc.stdout)["local"])


def test_map_lists_every_laid_down_path(work):
    minion = Minion(None, work / "map-minion", sync=False)
    minion.pillar({"kubernetes": {"lookup": LOOKUP}})
    mapdata = _render_map(minion)
    paths = {k: v["path"] for k, v in mapdata["files"].items()}
    assert [k for k, v in mapdata["files"].items() if v["masters_only"]] == [
        "server.cert",
        "server.key",
    ]
    assert paths == {
        "ca.crt": "/srv/k8s-alt/ca.crt",
        "kubecfg.crt": "/srv/k8s-alt/kubecfg.crt",
        "kubecfg.key": "/srv/k8s-alt/kubecfg.key",
        "server.cert": "/srv/k8s-alt/server.cert",
        "server.key": "/srv/k8s-alt/server.key",
        "kubelet-ca.crt": "/var/lib/kubelet-alt/ca.crt",
        "trust-anchor": ANCHOR,
    }
    assert mapdata["trust"]["link"] == "/etc/ssl/certs/k8s-alt.pem"
    assert mapdata["trust"]["bundle"] == BUNDLE


def test_redhat_family_uses_ca_trust(work, sets):
    """Rendered only: no RedHat userland (update-ca-trust) exists on this Debian machine."""
    minion = Minion(None, work / "rh-minion", sync=False, grains={"os_family": "RedHat"})
    minion.pillar({"kubernetes": {"certs": support.pillar_certs(sets["a"])}})
    proc = subprocess.run(
        support.salt_call_argv(minion.conf, "state.show_sls", PRESENT),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    states = json.loads(proc.stdout)["local"]

    def arg(state_id, name):
        module = next(k for k in states[state_id] if not k.startswith("__"))
        return next(a[name] for a in states[state_id][module] if isinstance(a, dict) and name in a)

    anchor = "/etc/pki/ca-trust/source/anchors/kubernetes-ca.crt"
    assert arg("kubernetes-certs-trust-anchor-pem-managed", "name") == anchor
    assert arg("kubernetes-certs-trust-store-trusted", "refresh") == "update-ca-trust extract"
    assert (
        arg("kubernetes-certs-trust-store-trusted", "bundle")
        == "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
    )
    assert arg("kubernetes-certs-trust-link-file-symlink", "name") == (
        "/etc/pki/tls/certs/kubernetes.pem"
    )
    assert arg("kubernetes-certs-server-key-pem-managed", "name") == f"{SRV}/server.key"
    # no PEM text in the rendered states: contents come from pillar at apply time
    assert support.leaked(proc.stdout, set_keys(sets["a"])) is None


def test_the_host_is_untouched(host_untouched, flow, applied):
    """After everything above (the module fixture checks again at teardown)."""
    import conftest
    from support import sandbox

    now = sandbox.host_tree(*conftest.HOST_PATHS)
    assert now == host_untouched
    assert SRV not in now and ANCHOR not in now and LINK not in now
