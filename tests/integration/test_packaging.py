"""The checkout installed as a Salt extension, into a fresh venv that already has Salt.

What an operator does on a master whose Salt came from pip (``salt-pip`` is the
same pip inside Salt's onedir): ``pip install <checkout>``.  It must leave Salt
as it is, and the master must then find ``k8s-helper.*``, the ext_pillars and
the outputter with no ``runner_dirs``/``utils_dirs``/``pillar_dirs``/
``outputter_dirs`` and no sync.

The fresh venv: ``python -m venv`` without pip, and "Salt already installed"
by a ``.pth`` file pointing at a folder of links to this test venv's installed
distributions (Salt 3008.4, pip, setuptools, cryptography ...), so that no
Salt has to be downloaded and built again (~30-80 s).  pip sees them as
installed (they are on sys.path) but outside the new venv, which it never
uninstalls from.  The checkout is copied first (building writes into the
source folder) and built with this venv's setuptools (``--no-build-isolation
--no-index``: no network; the build backend is the one pyproject names).
Everything happens under pytest's tmp folder; the real salt-run (Salt's own
entry point, run by the new venv's interpreter) and a real pillar compile.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest
import support
import yaml

#: Left out of the copy of the checkout: what is not the project's source.
NOT_SOURCE = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".demo", ".bench", ".*cache")
#: This venv's installed things the new venv must not see: the formula itself
#: (the test venv does not hold it; see the Makefile) and .pth hooks.
NOT_SALT = ("kubernetes_formula", "k8s_pki", "__editable__", "__pycache__")


def _run(argv, cwd, **kwargs):
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **kwargs,
    )
    return proc


def _pip(python, *args, cwd):
    proc = _run([python, "-m", "pip", "--disable-pip-version-check", *args], cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _installed(python, cwd):
    return {
        d["name"].lower(): d["version"]
        for d in json.loads(_pip(python, "list", "--format=json", cwd=cwd))
    }


def _salt_run(python, conf, *args, cwd):
    """The real salt-run (Salt's console script body), run by ``python``."""
    code = "import sys, salt.scripts; sys.argv[0] = 'salt-run'; salt.scripts.salt_run()"
    return _run([python, "-c", code, "-c", conf, *args], cwd)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """{python, before, install, after, cwd}: the fresh venv, Salt there, the checkout installed."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    shutil.copytree(support.REPO, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    # Salt already installed: links to this venv's distributions.
    have = base / "salt-installed"
    have.mkdir()
    here = pathlib.Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if entry.suffix == ".pth" or entry.name.startswith(NOT_SALT):
            continue
        (have / entry.name).symlink_to(entry)
    prefix = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    python = prefix / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base)
    (pathlib.Path(site.stdout.strip()) / "salt-installed.pth").write_text(f"{have}\n")
    before = _installed(python, base)
    install = _pip(python, "install", "--no-build-isolation", "--no-index", str(src), cwd=base)
    after = _installed(python, base)
    return {"python": python, "prefix": prefix, "before": before, "install": install,
            "after": after, "cwd": base}  # fmt: skip


def test_pip_install_leaves_salt_alone(venv):
    assert venv["before"]["salt"] == "3008.4"
    assert "kubernetes-formula" not in venv["before"]
    # one thing more, nothing changed
    assert venv["after"] == {**venv["before"], "kubernetes-formula": "0.2.0"}, venv["install"]
    assert "Successfully installed kubernetes-formula-0.2.0\n" in venv["install"]
    # the new venv holds the formula and no Salt of its own
    site = pathlib.Path(sysconfig.get_paths(vars={"base": str(venv["prefix"])})["purelib"])
    assert not (site / "salt").exists()
    # k8s_pki: a module today, maybe a package tomorrow (see pyproject.toml)
    assert (site / "k8s_pki.py").is_file() or (site / "k8s_pki" / "__init__.py").is_file()
    assert (site / "kubernetes_formula" / "_runners" / "k8s_helper.py").is_file()
    # Salt is no requirement of the formula, only of its test extra
    probe = _run(
        [venv["python"], "-c", "import importlib.metadata as m, json; "
         "print(json.dumps(m.requires('kubernetes-formula')))"],
        venv["cwd"],
    )  # fmt: skip
    requires = json.loads(probe.stdout)
    plain = sorted(r for r in requires if "extra ==" not in r)
    assert plain == ["Jinja2>=3.1", "PyYAML>=6", "cryptography>=42"]
    assert 'salt==3008.4; extra == "test"' in requires


LOADED = textwrap.dedent(
    """
    import json, sys
    import salt.config, salt.loader, k8s_pki
    opts = salt.config.master_config(sys.argv[1])
    runner = salt.loader.runner(opts)["k8s-helper.generate_certs"]
    pillars = salt.loader.pillars(opts, {})
    print(json.dumps({
        "runner": sys.modules[runner.__module__].__file__,
        "pillars": sorted(p for p in pillars if p.startswith("k8s_")),
        "outputters": sorted(o for o in salt.loader.outputters(opts) if o.startswith("k8s_")),
        "k8s_pki": k8s_pki.__file__,
    }))
    """
)


@pytest.fixture(scope="module")
def master(venv):
    """A master config with no *_dirs: the formula comes from the installed package only."""
    base = venv["cwd"] / "master"
    conf = support.write_master_config(base)
    opts = yaml.safe_load((conf / "master").read_text())
    for key in ("runner_dirs", "utils_dirs", "outputter_dirs", "pillar_dirs"):
        opts.pop(key, None)
    opts["ext_pillar"] = [
        {
            "k8s_certs": {
                "cluster_tag": "default",
                "masters": ["k8s-master-*"],
                "nodes": ["k8s-node-*"],
            }
        }
    ]
    (conf / "master").write_text(yaml.safe_dump(opts))
    assert not any(key.endswith("_dirs") for key in opts), opts
    with support.event_sink(conf):
        yield {"conf": conf, "pki": base / "pki"}


def test_master_loads_the_installed_modules(venv, master):
    proc = _run([venv["python"], "-c", LOADED, master["conf"] / "master"], venv["cwd"])
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    prefix = str(venv["prefix"]) + os.sep
    assert loaded["runner"].startswith(prefix), loaded
    assert loaded["runner"].endswith("kubernetes_formula/_runners/k8s_helper.py")
    assert loaded["k8s_pki"].startswith(prefix), loaded
    assert loaded["pillars"] == ["k8s_certs", "k8s_kubeadm"]
    assert loaded["outputters"] == ["k8s_orch", "k8s_table"]


def test_salt_run_generates_and_pillar_hands_out(venv, master):
    made = _salt_run(venv["python"], master["conf"], "--out=json", "k8s-helper.generate_certs",
                     "key_type=ecdsa-p256", cwd=venv["cwd"])  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert json.loads(made.stdout)["changed"] is True
    assert (master["pki"] / "default" / "ca.crt").is_file()
    shown = _salt_run(venv["python"], master["conf"], "--out=json", "pillar.show_pillar",
                      "k8s-master-1", cwd=venv["cwd"])  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    certs = json.loads(shown.stdout)["kubernetes"]["certs"]
    assert set(certs) == {"ca.crt", "kubecfg.crt", "kubecfg.key", "server.cert", "server.key"}
    ca = (master["pki"] / "default" / "ca.crt").read_text()
    assert certs["ca.crt"].strip() == ca.strip()


def test_salt_run_d_shows_the_runner_docs(venv, master):
    proc = _salt_run(venv["python"], master["conf"], "-d", "k8s-helper", cwd=venv["cwd"])
    assert proc.returncode == 0, proc.stderr
    for fun in ("generate_certs", "check_expiration", "renew", "rotate_ca", "verify"):
        assert f"k8s-helper.{fun}:" in proc.stdout, proc.stdout[:2000]
    assert "salt-run k8s-helper.generate_certs" in proc.stdout  # the CLI examples
