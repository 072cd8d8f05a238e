"""The master's PKI folder as an attacker or an unlucky operator leaves it.

Modes whatever the umask, ownership and permission checks on pki_root, the
folders above it, the set and its files; symlinks anywhere in the store; stale
scratch folders; a full disk; backups as real copies with retention; refused
requests that create nothing.  Through Salt's loader in-process, and the real
salt-run where the exit status or the process's umask matters.  The runner
runs as root here, so "another user" is uid 65534 (nobody), set with chown on
files inside the test's own tmp folder.
"""

import json
import os
import pathlib
import shutil
import stat
import subprocess

import pytest
import yaml
from support import VENV_BIN, event_sink, k8s_pki, salt_run, snapshot, write_master_config

NOBODY = 65534


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def run_json(conf, fun, *args):
    proc = salt_run(conf, fun, *args)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def set_master_option(conf, **options):
    path = pathlib.Path(conf) / "master"
    opts = yaml.safe_load(path.read_text())
    opts["k8s_helper"].update(options)
    path.write_text(yaml.safe_dump(opts))


@pytest.fixture
def sink(master_conf):
    with event_sink(master_conf):
        yield master_conf


@pytest.fixture
def made(runners, pki_root):
    """A seed set made through the runner: the set's folder."""
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
    assert ret["changed"] is True, ret
    return pki_root / "default"


def assert_refused(ret, *words):
    assert ret["result"] is False and ret["retcode"] == 2, ret
    for word in words:
        assert word in ret["error"], ret["error"]
    assert "\n" not in ret["error"]
    return ret["error"]


# -- item 3: modes whatever the umask, ownership and permissions ---------------


def test_umask_000_still_gives_private_folders_and_keys(tmp_path):
    """pki_root and its missing ancestors, made by the real salt-run under umask 000."""
    deep = tmp_path / "var/salt/k8s-helper/pki"
    conf = write_master_config(tmp_path, k8s_helper={"pki_root": str(deep)})
    with event_sink(conf):
        cmd = f"umask 000; exec {VENV_BIN}/salt-run -c {conf} --out=json k8s-helper.generate_certs"
        proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for ancestor in ("var", "var/salt", "var/salt/k8s-helper"):
        assert mode(tmp_path / ancestor) == 0o755, ancestor
        assert os.lstat(tmp_path / ancestor).st_uid == os.geteuid()
    assert mode(deep) == 0o700
    assert mode(deep / "default") == 0o700
    assert mode(deep / ".default.lock") == 0o600
    for name in ("ca.key", "server.key", "kubecfg.key"):
        assert mode(deep / "default" / name) == 0o600, name
    for name in ("ca.crt", "server.crt", "kubecfg.crt"):
        assert mode(deep / "default" / name) == 0o644, name


def _chown_nobody(path):
    os.lchown(path, NOBODY, NOBODY)


def _make_world_writable(path):
    os.chmod(path, 0o777 if os.path.isdir(path) else 0o666)


# (what to spoil, relative to the set folder; how; words the refusal must hold)
SPOILED = [
    ("ca.crt", _chown_nobody, ["owned by uid 65534", "chown"]),
    ("ca.key", _chown_nobody, ["owned by uid 65534", "chown"]),
    ("ca.crt", _make_world_writable, ["writable by group or others", "chmod go-w"]),
    ("server.crt", lambda p: os.chmod(p, 0o664), ["writable by group or others", "chmod go-w"]),
    ("ca.key", lambda p: os.chmod(p, 0o640), ["private key readable", "chmod 600"]),
    ("kubecfg.key", lambda p: os.chmod(p, 0o604), ["private key readable", "chmod 600"]),
    (".", _make_world_writable, ["writable by group or others", "chmod go-w"]),
    (".", _chown_nobody, ["owned by uid 65534"]),
    ("..", _make_world_writable, ["writable by group or others", "chmod go-w"]),
    ("..", _chown_nobody, ["owned by uid 65534"]),
    ("../.default.lock", _chown_nobody, ["owned by uid 65534"]),
    ("../.default.created", _make_world_writable, ["chmod go-w"]),
    ("../.default.verified", _make_world_writable, ["chmod go-w"]),
]


@pytest.mark.parametrize(("rel", "spoil", "words"), SPOILED)
def test_a_store_someone_else_controls_is_refused_never_reused(runners, made, rel, spoil, words):
    path = os.path.normpath(made / rel)
    spoil(path)
    before = snapshot(made.parent)
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
    error = assert_refused(ret, path, *words)
    assert "reused" not in repr(ret)
    assert snapshot(made.parent) == before, error
    # The other functions that read the set refuse it too.
    for fun, args in (("renew", {}), ("check_expiration", {}), ("rotate_ca", {"stage": "prepare"})):
        assert_refused(runners[f"k8s-helper.{fun}"](**args), path)
    assert snapshot(made.parent) == before


def test_a_folder_above_pki_root_others_could_write_is_refused(tmp_path, runners, made):
    above = tmp_path  # the folder pki_root lives in
    os.chmod(above, 0o777)
    try:
        before = snapshot(made.parent)
        ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
        assert_refused(ret, f"{above}: above pki_root", "chmod go-w")
        assert snapshot(made.parent) == before
        os.chmod(above, 0o1777)  # sticky, like /tmp: nobody can swap another's folder
        ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
        assert ret["changed"] is False, ret
        os.chmod(above, 0o755)
        os.lchown(above, NOBODY, NOBODY)
        ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
        assert_refused(ret, f"{above}: above pki_root", "owned by uid 65534")
    finally:
        os.lchown(above, 0, 0)
        os.chmod(above, 0o700)


def test_a_refusal_exits_non_zero_through_salt_run(sink, made):
    os.chmod(made / "ca.key", 0o644)
    before = snapshot(made.parent)
    proc, data = run_json(sink, "k8s-helper.generate_certs", "key_type=ecdsa-p256")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{made / 'ca.key'}: a private key readable" in data["error"]
    assert snapshot(made.parent) == before


# -- item 4: symlinks in the store ---------------------------------------------


def test_a_symlinked_set_folder_is_refused_up_front(runners, pki_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    k8s_pki.ensure_set(str(tmp_path), "elsewhere", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    pki_root.mkdir(mode=0o700)
    (pki_root / "default").symlink_to(elsewhere)
    before = snapshot(tmp_path)
    for _ in range(2):  # before the fix: the first write committed, then every write failed
        ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256", force_regen=True)
        assert_refused(ret, f"{pki_root / 'default'}: is a symbolic link")
        assert snapshot(tmp_path) == before
    assert not (pki_root / ".default.staging").exists()


@pytest.mark.parametrize("rel", ["server.key", "ca.crt", "backup"])
def test_a_symlink_inside_the_set_is_refused(runners, made, tmp_path, rel):
    runners["k8s-helper.renew"]()  # a backup folder now exists
    target = made / rel
    outside = tmp_path / f"outside-{rel}"
    shutil.move(target, outside)
    target.symlink_to(outside)
    before = snapshot(tmp_path)
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
    assert_refused(ret, f"{target}: is a symbolic link")
    ret = runners["k8s-helper.renew"]()
    assert_refused(ret, f"{target}: is a symbolic link")
    assert snapshot(tmp_path) == before


def test_a_symlinked_pki_root_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    conf = write_master_config(tmp_path, k8s_helper={"pki_root": str(tmp_path / "pki")})
    (tmp_path / "pki").symlink_to(real)
    from support import load_runners

    ret = load_runners(conf)["k8s-helper.generate_certs"](key_type="ecdsa-p256")
    assert_refused(ret, f"{tmp_path / 'pki'}: is a symbolic link")
    assert list(real.iterdir()) == []


def test_a_symlinked_lock_is_refused_and_its_target_untouched(runners, made, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    os.unlink(made.parent / ".default.lock")
    (made.parent / ".default.lock").symlink_to(victim)
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256", force_regen=True)
    assert_refused(ret, ".default.lock: is a symbolic link")
    assert victim.read_bytes() == b"keep me"


def test_a_stale_staging_of_ours_is_cleared_one_not_ours_refused(runners, made):
    staging = made.parent / ".default.staging"
    staging.mkdir(mode=0o700)
    (staging / "half.crt").write_bytes(b"half written")
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256", force_regen=True)
    assert ret["changed"] is True, ret
    assert not staging.exists()
    staging.mkdir(mode=0o700)
    os.lchown(staging, NOBODY, NOBODY)
    before = snapshot(made.parent)
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256", force_regen=True)
    assert_refused(ret, str(staging), "remove it yourself")
    assert snapshot(made.parent) == before
    staging.rmdir()
    staging.symlink_to(made)  # a link there must not make us remove the set
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256", force_regen=True)
    assert_refused(ret, str(staging))
    assert (made / "ca.crt").exists()


FULL_DISK = """
set -e
mount -t tmpfs -o size=1m,mode=0755 tmpfs "$MNT"
run() {{ {salt_run} -c "$CONF" --out=json "$@"; }}
run k8s-helper.generate_certs key_type=ecdsa-p256 > "$OUT/make.json"
dd if=/dev/zero of="$MNT/filler" bs=4k 2>/dev/null || true
find "$MNT/pki" -printf '%p %m %i %s\\n' | sort > "$OUT/before"
set +e
run k8s-helper.renew > "$OUT/full.json"
echo $? > "$OUT/full.rc"
set -e
find "$MNT/pki" -printf '%p %m %i %s\\n' | sort > "$OUT/after"
rm "$MNT/filler"
run k8s-helper.renew > "$OUT/again.json"
"""


def test_a_full_disk_fails_cleanly_and_leaves_no_staging(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private tmpfs")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    conf = write_master_config(tmp_path, k8s_helper={"pki_root": str(mnt / "pki")})
    script = FULL_DISK.format(salt_run=VENV_BIN / "salt-run")
    env = {**os.environ, "MNT": str(mnt), "OUT": str(out), "CONF": str(conf)}
    with event_sink(conf):
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    full = json.loads((out / "full.json").read_text())
    assert (out / "full.rc").read_text().strip() == "2"
    assert "No space left on device" in full["error"]
    assert (out / "before").read_text() == (out / "after").read_text()  # no .staging, no change
    again = json.loads((out / "again.json").read_text())
    assert again["renewed"] == ["server", "kubecfg"], again


# -- item 5: backups -----------------------------------------------------------


def test_backups_are_copies_with_private_modes(runners, made):
    os.chmod(made / "server.crt", 0o600)  # a backup is never more open than its live file
    ret = runners["k8s-helper.renew"]()
    backup = pathlib.Path(ret["backup"])
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "kubecfg.crt", "kubecfg.key"):
        live, saved = os.lstat(made / name), os.lstat(backup / name)
        assert (live.st_ino, live.st_dev) != (saved.st_ino, saved.st_dev), name
        want = 0o600 if name.endswith(".key") or name == "server.crt" else 0o644
        assert mode(backup / name) == want, name
    assert mode(backup) == 0o700 and mode(made / "backup") == 0o700
    saved = (backup / "ca.key").read_bytes()
    with open(made / "ca.key", "r+b") as handle:  # an in-place edit of a live file...
        handle.write(b"X")
    assert (backup / "ca.key").read_bytes() == saved  # ...leaves its backup alone


def test_one_ca_rotation_keeps_at_most_backup_keep_backups(runners, made):
    for stage in ("prepare", "trust", "reissue", "finish"):
        ret = runners["k8s-helper.rotate_ca"](stage=stage)
        assert ret.get("result") is not False, ret
    for _ in range(4):
        runners["k8s-helper.renew"]()
    assert len(list((made / "backup").iterdir())) == 5  # the default backup_keep
    keys = list((made / "backup").glob("*/ca*.key"))
    assert len(keys) <= 5 * 2


def test_backup_keep_is_applied_on_every_write(master_conf, made):
    from support import load_runners

    set_master_option(master_conf, backup_keep=2)
    runners = load_runners(master_conf)
    names = []
    for _ in range(4):
        names.append(pathlib.Path(runners["k8s-helper.renew"]()["backup"]).name)
    assert sorted(p.name for p in (made / "backup").iterdir()) == names[-2:]


@pytest.mark.parametrize("value", [0, -1, "3", True, 1.5, None, [2]])
def test_a_bad_backup_keep_is_refused_before_anything(master_conf, pki_root, value):
    from support import load_runners

    set_master_option(master_conf, backup_keep=value)
    runners = load_runners(master_conf)
    for fun, args in (
        ("generate_certs", {}),
        ("renew", {}),
        ("rotate_ca", {"stage": "prepare"}),
        ("prune_backups", {}),
    ):
        ret = runners[f"k8s-helper.{fun}"](**args)
        assert_refused(ret, "k8s_helper:backup_keep", "at least 1")
    assert not pki_root.exists()


def test_prune_backups_through_salt_run(sink, made, runners):
    for _ in range(4):
        runners["k8s-helper.renew"]()
    old = k8s_pki.backups(str(made))
    assert len(old) == 4
    live = {n: (made / n).read_bytes() for n in ("ca.key", "server.crt", "server.key")}
    set_master_option(sink, backup_keep=1)
    proc, data = run_json(sink, "k8s-helper.prune_backups")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["removed"] == [str(made / "backup" / n) for n in old[:3]]
    assert data["kept"] == [str(made / "backup" / old[3])]
    assert k8s_pki.backups(str(made)) == old[3:]
    assert {n: (made / n).read_bytes() for n in live} == live
    proc, data = run_json(sink, "k8s-helper.prune_backups")
    assert proc.returncode == 0 and data["removed"] == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["cluster_tag=a/b"], "cluster_tag"),
        (["cluster_tag=missing"], "no certificate set"),
        (["bogus=1"], "bogus: unknown argument"),
    ],
)
def test_prune_backups_refusals(sink, made, args, words):
    before = snapshot(made.parent)
    proc, data = run_json(sink, "k8s-helper.prune_backups", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in data["error"]
    assert snapshot(made.parent) == before


def test_prune_backups_is_documented():
    from support import REPO

    text = (REPO / "_runners/k8s_helper.py").read_text()
    assert "salt-run k8s-helper.prune_backups cluster_tag=" in text


# -- item 11: refused requests create nothing ----------------------------------


@pytest.mark.parametrize(
    ("fun", "args"),
    [
        ("k8s-helper.rotate_ca", ["stage=prepare"]),
        ("k8s-helper.rotate_ca", ["stage=trust"]),
        ("k8s-helper.rotate_ca", []),
        ("k8s-helper.renew", []),
        ("k8s-helper.generate_certs", ["key_type=nope"]),
        ("k8s-helper.prune_backups", []),
    ],
)
def test_a_request_on_a_missing_set_creates_nothing(sink, pki_root, fun, args):
    proc, data = run_json(sink, fun, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert data["result"] is False
    assert not pki_root.exists()


def test_a_refused_request_on_a_hand_made_set_leaves_no_lock(runners, pki_root):
    (pki_root / "default").mkdir(parents=True, mode=0o700)
    os.chmod(pki_root, 0o700)
    (pki_root / "default" / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nZZZZ\n")
    before = snapshot(pki_root)
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
    assert ret["result"] is False
    assert snapshot(pki_root) == before


def test_a_pki_root_that_is_a_file_is_refused(runners, pki_root):
    pki_root.write_bytes(b"not a folder")
    os.chmod(pki_root, 0o600)
    ret = runners["k8s-helper.generate_certs"](key_type="ecdsa-p256")
    assert_refused(ret, f"{pki_root}: pki_root is not a folder")
    assert pki_root.read_bytes() == b"not a folder"
