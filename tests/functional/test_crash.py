"""A writer killed at any moment leaves the old complete set or the new complete set.

Real processes, real files, SIGKILL at random points of a run; and concurrent
writers serialised by the lock.
"""

import os
import random
import signal
import subprocess
import sys
import time

from support import REPO, SEED_FILES, k8s_pki

# The child imports everything first, says "ready", and starts writing on "go".
CHILD = f"""
import sys
sys.path.insert(0, {str(REPO / "_utils")!r})
import k8s_pki
pki_root, force = sys.argv[1], sys.argv[2] == "force"
specs = k8s_pki.seed_specs()
print("ready", flush=True)
sys.stdin.readline()
plan, _ = k8s_pki.ensure_set(pki_root, "default", specs, key_type="ecdsa-p256", force_regen=force)
print(k8s_pki.fingerprint(plan.items["ca"].cert), flush=True)
"""


def start(pki_root, force=True):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(pki_root), "force" if force else "keep"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def go(proc):
    proc.stdin.write("go\n")
    proc.stdin.flush()


def read_files(directory):
    if not directory.exists():
        return None
    return {f: (directory / f).read_bytes() for f in SEED_FILES if (directory / f).exists()}


def assert_complete_and_valid(directory):
    plan = k8s_pki.plan_set(str(directory), k8s_pki.seed_specs())  # parses, matches, chains
    assert not plan.changed, {n: i.reason for n, i in plan.items.items()}


def test_killed_writer_leaves_old_or_new_set(tmp_path):
    pki_root = tmp_path / "pki"
    target = pki_root / "default"
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261130")))

    # How long one forced regeneration takes here, to spread the kills over it.
    durations = []
    for _ in range(3):
        proc = start(pki_root)
        t0 = time.perf_counter()
        go(proc)
        proc.wait(timeout=60)
        durations.append(time.perf_counter() - t0)
    span = sorted(durations)[1] * 1.3

    outcomes = {"old": 0, "new": 0, "mid-write": 0}
    for trial in range(60):
        old = read_files(target)
        proc = start(pki_root, force=trial % 10 != 0)
        if trial % 10 == 0:  # now and then: a fresh set, killed while it is made
            for entry in pki_root.iterdir():
                if entry.is_dir():
                    subprocess.run(["rm", "-rf", str(entry)], check=True)
            old = None
        go(proc)
        time.sleep(rng.uniform(0, span))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)

        # A staging folder left behind means the kill landed while files were written.
        outcomes["mid-write"] += (pki_root / ".default.staging").exists()
        now = read_files(target)
        if now == old:
            outcomes["old"] += 1
            if old is not None:
                assert_complete_and_valid(target)
            continue
        outcomes["new"] += 1
        assert now is not None and sorted(now) == sorted(SEED_FILES), f"trial {trial}: partial set"
        assert_complete_and_valid(target)
        if old is not None:  # a forced run replaced a set: the old one is kept whole
            assert all(now[f] != old[f] for f in SEED_FILES), f"trial {trial}: a mix of sets"
            backups = sorted((target / "backup").iterdir())
            assert read_files(backups[-1]) == old

    # Both outcomes must have happened, or the kills did not land inside the writes.
    print("crash outcomes:", outcomes)
    assert min(outcomes.values()) >= 3, outcomes

    # Whatever a killed writer left is cleared by the next writer, under the lock.
    proc = start(pki_root, force=True)
    go(proc)
    assert proc.wait(timeout=60) == 0
    # (.default.created: the fingerprints of the CAs k8s-helper made for the set;
    # .default.verified: the record of what the last writer verified)
    assert sorted(p.name for p in pki_root.iterdir()) == [
        ".default.created",
        ".default.lock",
        ".default.verified",
        "default",
    ]


def test_concurrent_writers_agree_on_one_ca(tmp_path):
    pki_root = tmp_path / "pki"
    procs = [start(pki_root, force=False) for _ in range(4)]
    for proc in procs:
        go(proc)
    fingerprints = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(fingerprints) == 1  # one made the set, the others found it and kept it
    assert_complete_and_valid(pki_root / "default")
