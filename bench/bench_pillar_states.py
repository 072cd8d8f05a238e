"""Benchmark: certificates into pillar, and kubernetes.certs.present when nothing changes.

Part 1 - pillar compile, the way the master compiles each minion's pillar
(``salt.pillar.get_pillar(...).compile_pillar()``, in one process), for 100
minion ids, every variant interleaved in the same run:

* ``floor``      pillar without certificates (Salt's own cost);
* ``seed``       the user's document: five ``salt.cmd.run("cat ...")`` lines;
* ``file.read``  the same template with ``salt["file.read"](...)``;
* ``ext_pillar`` the documented way: the formula's ``k8s_certs`` ext_pillar
  (synced to the master's extension_modules, bytecode cached as a master does);
* ``ext (no .pyc)`` the same without cached bytecode;
* ``empty ext``  an ext_pillar module that returns ``{}``: what Salt charges for
  loading any ext_pillar module.

The certificate part of a variant is its compile time minus the floor's, per
minion id (paired samples), then the median.  Processes spawned are counted
with a Python audit hook on ``subprocess.Popen`` (no patching).

Part 2 - ``state.apply kubernetes.certs.present`` with nothing to change vs.
applying a one-state SLS (``test.nop``), in one minion process
(``salt.client.Caller``), inside the tests' mount-namespace sandbox because the
first apply writes /srv, /etc, /var and /usr/local.  Pillar is compiled once,
as salt-call does; both sides pay the same.  Also the wall time of the real
``salt-call --local`` for both.

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python bench/bench_pillar_states.py``.
Needs root for part 2 (the sandbox); part 1 runs anywhere.
"""

import copy
import json
import os
import pathlib
import resource
import shutil
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import support  # noqa: E402
from support import k8s_pki, sandbox  # noqa: E402

WORK = REPO / ".bench" / "pillar_states"
MINIONS = 100
ROUNDS = 2
STATE_RUNS = 30
CLI_RUNS = 5
FORMULA = ("kubernetes", "_states", "_utils", "_pillar", "_runners")

SEED = support.SEED_PILLAR.replace("/var/salt/k8s-helper/pki/", "PKI_ROOT/")
FILE_READ = SEED.replace('salt.cmd.run("cat " + pki_path + ', 'salt["file.read"](pki_path + ')
FLOOR = "kubernetes:\n  k8s_env: default\n"

_spawned = 0


def _audit(event, _args):
    global _spawned
    if event == "subprocess.Popen":
        _spawned += 1


def _cpu():
    """CPU seconds used by this process and its finished children (cmd.run's cat)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _pillar_tree(name, text):
    root = WORK / "pillar" / name
    support.write_pillar(root, None, text=text)
    return root


def _formula_copy():
    """The formula alone (what a master's file_roots holds), plus the floor SLS."""
    dest = WORK / "formula"
    for name in FORMULA:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "bench" / "states" / "bench_empty.sls", dest / "bench_empty.sls")
    return dest


def _synced_extmods(conf):
    """``salt-run saltutil.sync_all`` (in-process): _pillar/_utils into the master's
    extension_modules, the way a deployment installs the ext_pillar."""
    runners = support.load_runners(conf)
    synced = runners["saltutil.sync_all"]()
    assert "pillar.k8s_certs" in synced["pillar"], synced
    root = pathlib.Path(runners.opts["extension_modules"])
    (root / "pillar" / "k8s_null.py").write_text(
        "def ext_pillar(minion_id, pillar, **kwargs):\n    return {}\n"
    )
    # The same modules without bytecode, for the "no .pyc" variant.
    shutil.copytree(root, WORK / "extmods-nopyc", ignore=shutil.ignore_patterns("__pycache__"))
    return root, WORK / "extmods-nopyc"


def bench_pillar():
    import salt.config
    import salt.pillar

    formula = _formula_copy()
    conf = support.write_master_config(WORK / "master", file_roots={"base": [str(formula)]})
    pki_root = WORK / "master" / "pki"
    ret = support.load_runners(conf)["k8s-helper.generate_certs"](cluster_tag="default")
    assert ret.get("result") is not False, ret
    extmods, extmods_nopyc = _synced_extmods(conf)
    base = salt.config.master_config(str(conf / "master"))
    base["file_client"] = "local"
    floor_root = _pillar_tree("floor", FLOOR)
    ext = [{"k8s_certs": {"cluster_tag": "default", "masters": ["k8s-*"]}}]
    variants = {
        "floor": {"pillar_roots": {"base": [str(floor_root)]}},
        "seed": {
            "pillar_roots": {
                "base": [str(_pillar_tree("seed", SEED.replace("PKI_ROOT", str(pki_root))))]
            }
        },
        "file.read": {
            "pillar_roots": {
                "base": [
                    str(_pillar_tree("fileread", FILE_READ.replace("PKI_ROOT", str(pki_root))))
                ]
            }
        },
        "ext_pillar": {
            "pillar_roots": {"base": [str(floor_root)]},
            "ext_pillar": ext,
            "extension_modules": str(extmods),
        },
        "ext (no .pyc)": {
            "pillar_roots": {"base": [str(floor_root)]},
            "ext_pillar": ext,
            "extension_modules": str(extmods_nopyc),
        },
        # Salt's own price for any ext_pillar: a module returning {}.
        "empty ext": {
            "pillar_roots": {"base": [str(floor_root)]},
            "ext_pillar": [{"k8s_null": {}}],
            "extension_modules": str(extmods),
        },
    }
    opts = {}
    for name, extra in variants.items():
        opts[name] = copy.deepcopy(base)
        opts[name].update(extra)
    expected = support.pillar_certs(pki_root / "default")
    times = {name: [] for name in variants}
    spawned = {name: 0 for name in variants}
    compiles = 0
    sys.addaudithook(_audit)
    names = list(variants)
    for round_ in range(ROUNDS):
        for i in range(MINIONS):
            minion_id = f"k8s-{i:03d}"
            grains = {"id": minion_id, "os_family": "Debian"}
            order = names[(i + round_) % len(names) :] + names[: (i + round_) % len(names)]
            for name in order:
                # A master caches the bytecode of synced modules; this machine's
                # environment sets PYTHONDONTWRITEBYTECODE, so allow it here, except
                # for the variant that shows the cost without it.
                sys.dont_write_bytecode = name == "ext (no .pyc)"
                before = _spawned
                cpu0 = _cpu()
                start = time.perf_counter()
                pillar = salt.pillar.get_pillar(
                    opts[name], grains, minion_id, saltenv="base"
                ).compile_pillar()
                wall = time.perf_counter() - start
                times[name].append((minion_id, round_, wall, _cpu() - cpu0))
                spawned[name] += _spawned - before
                assert "_errors" not in pillar, (name, pillar.get("_errors"))
                if name not in ("floor", "empty ext"):
                    certs = pillar["kubernetes"]["certs"]
                    assert {k: k8s_pki.normalize_pem(v) for k, v in certs.items()} == expected
            compiles += 1
    floor = {(m, r): (w, c) for m, r, w, c in times["floor"]}
    out = {"minions": MINIONS, "rounds": ROUNDS, "variants": {}}
    for name in variants:
        rows = times[name]
        out["variants"][name] = {
            "compile_ms": round(statistics.median(w for *_, w, _ in rows) * 1000, 2),
            "certificates_ms": round(
                statistics.median(w - floor[(m, r)][0] for m, r, w, _ in rows) * 1000, 3
            ),
            "compile_cpu_ms": round(statistics.median(c for *_, c in rows) * 1000, 2),
            "certificates_cpu_ms": round(
                statistics.median(c - floor[(m, r)][1] for m, r, _, c in rows) * 1000, 3
            ),
            "processes_per_compile": spawned[name] / compiles,
        }
    return out


# --------------------------------------------------------------------------
# Part 2: state.apply, inside the sandbox
# --------------------------------------------------------------------------


def _minion_setup():
    pki = WORK / "master" / "pki" / "default"
    pillar_root = support.write_pillar(
        WORK / "minion-pillar", {"kubernetes": {"certs": support.pillar_certs(pki)}}
    )
    return support.write_minion_config(
        WORK / "minion",
        pillar_root,
        "k8s-master-1",
        file_roots={"base": [str(WORK / "formula")]},
    )


def states_inside():
    """Runs inside the sandbox: prints the medians as JSON."""
    import salt.client
    import salt.config

    conf = WORK / "minion" / "conf"
    opts = salt.config.minion_config(str(conf / "minion"))
    opts["__cli"] = "salt-call"  # reuse the pillar compiled at start, as salt-call does
    caller = salt.client.Caller(mopts=opts)
    synced = caller.cmd("saltutil.sync_all")
    assert "states.k8s_certs" in synced["states"], synced
    first = caller.cmd("state.apply", "kubernetes.certs.present")
    assert all(r["result"] for r in first.values()), first
    times = {"present": [], "empty": []}
    for i in range(STATE_RUNS):
        for name in ("present", "empty") if i % 2 else ("empty", "present"):
            sls = "kubernetes.certs.present" if name == "present" else "bench_empty"
            start = time.perf_counter()
            ret = caller.cmd("state.apply", sls)
            times[name].append(time.perf_counter() - start)
            assert all(r["result"] for r in ret.values()), ret
            assert not any(r["changes"] for r in ret.values()), ret
    json.dump({k: statistics.median(v) for k, v in times.items()}, sys.stdout)


def bench_states():
    reason = sandbox.available()
    if reason:
        return {"skipped": reason}
    conf = _minion_setup()
    box = sandbox.Sandbox(WORK / "box")
    proc = box.run([sys.executable, __file__, "--states-inside"], check=True, timeout=900)
    inproc = json.loads(proc.stdout.strip().splitlines()[-1])
    cli = {"present": [], "empty": []}
    for i in range(CLI_RUNS):
        for name in ("present", "empty") if i % 2 else ("empty", "present"):
            sls = "kubernetes.certs.present" if name == "present" else "bench_empty"
            start = time.perf_counter()
            box.run(support.salt_call_argv(conf, "state.apply", sls), check=True)
            cli[name].append(time.perf_counter() - start)
    return {
        "in_process_ms": {k: round(v * 1000, 1) for k, v in inproc.items()},
        "in_process_ratio": round(inproc["present"] / inproc["empty"], 2),
        "salt_call_s": {k: round(statistics.median(v), 2) for k, v in cli.items()},
        "salt_call_ratio": round(
            statistics.median(cli["present"]) / statistics.median(cli["empty"]), 2
        ),
    }


def main():
    if "--states-inside" in sys.argv:
        states_inside()
        return
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    load_before = os.getloadavg()[0]
    pillar = bench_pillar()
    states = bench_states()
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result = {"pillar": pillar, "states": states, "loadavg_1min_before_after": load}
    (WORK / "result.json").write_text(json.dumps(result, indent=2))
    v = pillar["variants"]
    print(f"Pillar compile, {MINIONS} minion ids x {ROUNDS} rounds, medians per compile:")
    print(
        f"  {'variant':<14} {'compile ms':>10} {'certs ms':>9} "
        f"{'cpu ms':>8} {'certs cpu':>9} {'processes':>9}"
    )
    for name, row in v.items():
        print(
            f"  {name:<14} {row['compile_ms']:>10.2f} {row['certificates_ms']:>9.3f} "
            f"{row['compile_cpu_ms']:>8.2f} {row['certificates_cpu_ms']:>9.3f} "
            f"{row['processes_per_compile']:>9.1f}"
        )
    for unit in ("certificates_ms", "certificates_cpu_ms"):
        seed, ext = v["seed"][unit], v["ext_pillar"][unit]
        print(f"  seed / ext_pillar, certificate part ({unit}): {seed / max(ext, 0.001):.1f}x")
    whole = v["seed"]["compile_ms"] / v["ext_pillar"]["compile_ms"]
    print(f"  seed / ext_pillar, whole compile: {whole:.2f}x")
    if "skipped" in states:
        print(f"state.apply: skipped ({states['skipped']})")
    else:
        print("state.apply, nothing to change vs. a one-state SLS:")
        print(f"  in process: {states['in_process_ms']} -> {states['in_process_ratio']}x")
        print(f"  salt-call:  {states['salt_call_s']} s -> {states['salt_call_ratio']}x")
    print(f"load average (1 min) before / after: {load[0]} / {load[1]} on {os.cpu_count()} CPUs")
    print(f"(full figures: {WORK / 'result.json'})")


if __name__ == "__main__":
    main()
