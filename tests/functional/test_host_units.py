"""Per-host units and the record of verified files, on real kubeadm sets.

A change to some hosts (a node added, a master moved) writes only their folders
and the manifest; a re-run that changes nothing takes unchanged members from
the record unread, yet a changed or tampered file is still caught.  Through
the runner in-process (Salt's loader) where the manifest matters, through the
library for the crash trials; real files, real processes, SIGKILL.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import support
from support import k8s_pki
from support import kubeadm as ks

MASTERS = [{"name": f"m{i}", "ip": f"10.0.0.{10 + i}"} for i in range(3)]
NODES = [{"name": f"n{i}"} for i in range(6)]


def identities(directory):
    """{relative path: (inode, size, mtime_ns, ctime_ns)} of every file, backups aside."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        if dirpath == str(directory) and "backup" in dirnames:
            dirnames.remove("backup")
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[os.path.relpath(path, directory)] = (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
            )
    return found


@pytest.fixture
def runner(tmp_path):
    conf = support.write_master_config(tmp_path / "master")
    generate = support.load_runners(conf)["k8s-helper.generate_certs"]
    pki = tmp_path / "master" / "pki"

    def run(masters=MASTERS, nodes=NODES, **kwargs):
        ret = generate(
            cluster_tag="c1",
            key_type="ecdsa-p256",
            profile="kubeadm",
            masters=masters,
            nodes=nodes,
            **kwargs,
        )
        assert "error" not in ret, ret
        return ret

    run.directory = pki / "c1"
    run.pki_root = pki
    return run


def test_adding_a_node_writes_only_its_folder_and_the_manifest(runner):
    runner()
    before = identities(runner.directory)
    ret = runner(nodes=[*NODES, {"name": "n-new"}])
    after = identities(runner.directory)

    new = {rel for rel in after if rel.startswith("hosts/n-new/")}
    assert new == {"hosts/n-new/kubelet.conf"}
    assert ret["files"]["hosts/n-new/kubelet.conf"]["action"] == "generated"
    # Every other file is the very same inode, untouched (not even linked: the ctime holds).
    untouched = {rel: ident for rel, ident in after.items() if rel not in new}
    assert untouched.pop("cluster.yaml") != before.pop("cluster.yaml")
    assert untouched == before
    assert "n-new" in (runner.directory / "cluster.yaml").read_text()
    assert not (runner.pki_root / ".c1.staging").exists()
    assert not (runner.directory / "backup").exists()  # nothing was replaced
    # The set is whole: a full check (no record) finds nothing to do.
    assert not full_check(runner.directory, ks.specs(MASTERS, [*NODES, {"name": "n-new"}])).changed


def test_moving_a_master_reissues_only_its_files_and_backs_them_up(runner):
    runner()
    before = identities(runner.directory)
    old_apiserver = (runner.directory / "hosts/m1/apiserver.crt").read_bytes()
    moved = [dict(m, ip="10.0.1.11") if m["name"] == "m1" else m for m in MASTERS]
    ret = runner(masters=moved)
    after = identities(runner.directory)

    changed = {rel for rel in after if after[rel] != before.get(rel)}
    m1 = {rel for rel in after if rel.startswith("hosts/m1/")}
    assert changed == m1 | {"cluster.yaml"}
    reasons = {n: f["reason"] for n, f in ret["files"].items() if f.get("reason")}
    assert set(reasons) == {  # its SANs name its address; its own components point at it
        "hosts/m1/apiserver.crt", "hosts/m1/etcd/server.crt", "hosts/m1/etcd/peer.crt",
        "hosts/m1/controller-manager.conf", "hosts/m1/scheduler.conf",
    }  # fmt: skip
    assert all(r.startswith("masters changed") for r in reasons.values()), reasons
    backup = runner.directory / ret["backup"].split("/c1/", 1)[1]
    assert (backup / "hosts/m1/apiserver.crt").read_bytes() == old_apiserver
    assert (backup / "cluster.yaml").exists()
    assert oct((backup / "hosts/m1/apiserver.key").stat().st_mode & 0o777) == "0o600"
    assert not (backup / "hosts/m2").exists()  # only what was replaced is kept
    cert = k8s_pki.load_cert((runner.directory / "hosts/m1/apiserver.crt").read_bytes())
    assert "10.0.1.11" in k8s_pki.describe_cert(cert)["sans"]


def test_an_unchanged_rerun_takes_members_from_the_record(runner):
    runner()
    specs = ks.specs(MASTERS, NODES)
    plan = k8s_pki.plan_set(str(runner.directory), specs)
    recorded = [n for n, item in plan.items.items() if item.recorded is not None]
    issued = [n for n, spec in specs.items() if spec.kind.signed]
    assert sorted(recorded) == sorted(issued)
    # What the runner returns is the same whether read from the files or the record.
    again = runner()
    assert not again["changed"]
    full = k8s_pki.describe_plan(full_check(runner.directory, specs))
    assert again["files"] == full["files"]


@pytest.mark.parametrize("tamper", ["swap two nodes' kubeconfigs", "change its server"])
def test_a_tampered_file_is_caught_even_with_its_mtime_put_back(runner, tamper):
    """The record compares ctime and inode too, which no write can put back."""
    runner()
    n1 = runner.directory / "hosts/n1/kubelet.conf"
    n2 = runner.directory / "hosts/n2/kubelet.conf"
    st = n1.stat()
    if tamper == "change its server":  # same size: the name one letter off
        n1.write_bytes(n1.read_bytes().replace(b"kubernetes.api:", b"kubernetes.apj:"))
        expected = {"hosts/n1/kubelet.conf"}
    else:  # both valid and signed by the CA, same size: only the names give it away
        first, second = n1.read_bytes(), n2.read_bytes()
        n1.write_bytes(second)
        n2.write_bytes(first)
        expected = {"hosts/n1/kubelet.conf", "hosts/n2/kubelet.conf"}
    os.utime(n1, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert n1.stat().st_mtime_ns == st.st_mtime_ns and n1.stat().st_ino == st.st_ino
    if tamper == "change its server":
        assert n1.stat().st_size == st.st_size

    ret = runner()
    assert ret["changed"]
    reissued = {n for n, f in ret["files"].items() if f["action"] != "reused"}
    assert reissued == expected
    for host in ("n1", "n2"):
        conf = ks.kubeconfig(runner.directory / f"hosts/{host}/kubelet.conf")
        assert conf["server"] == "https://kubernetes.api:6443"
        cert = k8s_pki.load_cert(conf["cert"])
        assert f"CN=system:node:{host}" in k8s_pki.describe_cert(cert)["subject"]


def test_a_record_someone_else_could_write_is_refused(runner):
    runner()
    record = runner.pki_root / ".c1.verified"
    record.chmod(0o666)
    with pytest.raises(k8s_pki.SetError, match=r"\.c1\.verified: writable by group or others"):
        k8s_pki.plan_set(str(runner.directory), ks.specs(MASTERS, NODES))


def test_a_damaged_record_only_costs_a_full_check(runner):
    runner()
    path = runner.pki_root / ".c1.verified"
    header, *members = path.read_text().splitlines()
    # A member line garbled, another cut short: those two are read and checked in full.
    garbled, cut = members[0].split("\t")[0], members[-1].split("\t")[0]
    members[0] = members[0].replace('"files"', '"fi')
    members[-1] = members[-1][: len(members[-1]) // 2]
    path.write_text("\n".join([header, *members]))
    plan = k8s_pki.plan_set(str(runner.directory), ks.specs(MASTERS, NODES))
    assert not plan.changed
    full = {name for name, item in plan.items.items() if item.recorded is None}
    assert {garbled, cut} <= full and len(full) < len(plan.items) - 2
    # A header that is not the record's (damaged, or of another version): all in full.
    for damaged in ("{not json", '{"version": 1, "members": {}}'):
        path.write_text("\n".join([damaged, *members]))
        plan = k8s_pki.plan_set(str(runner.directory), ks.specs(MASTERS, NODES))
        assert not plan.changed
        assert all(item.recorded is None for item in plan.items.values())


def test_without_folder_swaps_the_whole_set_is_written(tmp_path, monkeypatch):
    """Where renameat2 cannot swap folders, a host change falls back to the whole-set swap."""
    root = tmp_path / "pki"
    k8s_pki.ensure_set(str(root), "c1", ks.specs(MASTERS, NODES), key_type="ecdsa-p256")
    monkeypatch.setattr(k8s_pki.writer, "exchange_dirs", lambda a, b: False)
    moved = [dict(m, ip="10.0.1.12") if m["name"] == "m2" else m for m in MASTERS]
    plan, backup = k8s_pki.ensure_set(str(root), "c1", ks.specs(moved, NODES))
    assert plan.changed and backup
    assert not (root / ".c1.staging").exists() and not (root / ".c1.old").exists()
    assert not k8s_pki.plan_set(
        str(root / "c1"), ks.specs(moved, NODES), trust_record=False
    ).changed


def full_check(directory, specs):
    """Plan with every file read and checked (no record): raises if a member is broken."""
    return k8s_pki.plan_set(str(directory), specs, trust_record=False)


CHILD = """
import sys, os
sys.path.insert(0, {utils!r})
import k8s_pki
masters = {masters!r}
ip = sys.argv[1]
masters = [dict(m, ip=ip) if m["name"] == "m1" else m for m in masters]
specs = k8s_pki.kubeadm_specs(masters, {nodes!r})
os.write(1, b"ready\\n")
k8s_pki.ensure_set({root!r}, "c1", specs, key_type="ecdsa-p256")
"""


def test_a_killed_host_writer_leaves_each_host_old_or_new(tmp_path):
    """SIGKILL while a master moves back and forth: its folder is always whole, old or new."""
    root = tmp_path / "pki"
    addresses = ("10.0.0.11", "10.0.9.11")
    code = CHILD.format(utils=str(support.REPO / "_utils"), masters=MASTERS, nodes=NODES,
                        root=str(root))  # fmt: skip

    def specs_at(ip):
        return k8s_pki.kubeadm_specs(
            [dict(m, ip=ip) if m["name"] == "m1" else m for m in MASTERS], NODES
        )

    def start(ip):
        child = subprocess.Popen([sys.executable, "-c", code, ip], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"
        return child

    start(addresses[0]).wait(timeout=60)
    started = time.perf_counter()
    start(addresses[1]).wait(timeout=60)  # one host move: the window to hit
    window = time.perf_counter() - started
    others = {rel: ident for rel, ident in identities(root / "c1").items()
              if not rel.startswith("hosts/m1/")}  # fmt: skip
    rng = random.Random(11)
    seen = set()
    for trial in range(24):
        child = start(addresses[trial % 2])
        time.sleep(rng.uniform(0, window))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        settled = [ip for ip in addresses if not full_check(root / "c1", specs_at(ip)).changed]
        assert len(settled) == 1, f"trial {trial}: hosts/m1 is neither old nor new"
        seen.add(settled[0])
        now = {rel: ident for rel, ident in identities(root / "c1").items()
               if not rel.startswith("hosts/m1/")}  # fmt: skip
        assert now == others, f"trial {trial}: a file outside hosts/m1 was touched"
    assert len(seen) == 2, "no kill landed after a swap: the trial proved nothing"
    # Whatever a killed writer left is cleared by the next one that writes, under the lock.
    for ip in addresses:
        assert start(ip).wait(timeout=60) == 0
    assert not (root / ".c1.staging").exists()


def test_the_manifest_comes_from_the_record_only_while_it_is_the_same_file(runner):
    """The settings a writer rendered cluster.yaml from are reused unparsed; an edited
    manifest (its mtime put back) is read and checked in full."""
    runner()
    manifest = runner.directory / "cluster.yaml"
    parsed = k8s_pki.parse_manifest(manifest.read_bytes(), str(manifest))
    assert k8s_pki.read_manifest(str(runner.directory)) == parsed
    st = manifest.stat()
    manifest.write_text(manifest.read_text().replace("cluster.local", "cluster.test"))
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert k8s_pki.read_manifest(str(runner.directory))["cluster_domain"] == "cluster.test"
    manifest.write_text(manifest.read_text().replace("format: 1", "format: 7"))
    with pytest.raises(k8s_pki.SetError, match="format 7"):
        k8s_pki.read_manifest(str(runner.directory))
