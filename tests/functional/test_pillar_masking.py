"""What docs/certs-states.md says about pillar output, checked with the real salt-call.

Salt 3008 masks pillar values in ``pillar.items``, ``pillar.get`` and
``pillar.item``; but with ``-l all`` (``garbage``) salt-call logs every rendered
pillar SLS, keys included, when pillar comes from SLS files.  The same pillar
from the formula's ``k8s_certs`` ext_pillar renders no SLS: nothing to log.
Masterless minions (``salt-call --local``) compile their own pillar, so the
log is the one that compiles it, as a master's would be.
"""

import subprocess

import pytest
import support
from support import k8s_pki


@pytest.fixture(scope="module")
def minions(tmp_path_factory):
    base = tmp_path_factory.mktemp("masking")
    pki = base / "pki"
    k8s_pki.ensure_set(str(pki), "default", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    key_line = (pki / "default" / "server.key").read_text().splitlines()[1]
    support.write_pillar(
        base / "sls-pillar", {"kubernetes": {"certs": support.pillar_certs(pki / "default")}}
    )
    sls = support.write_minion_config(base / "sls", base / "sls-pillar", "k8s-master-1")
    support.write_pillar(base / "ext-pillar", {})
    ext = support.write_minion_config(
        base / "ext",
        base / "ext-pillar",
        "k8s-master-1",
        ext_pillar=[{"k8s_certs": {"cluster_tag": "default", "masters": ["k8s-master-*"]}}],
        pillar_dirs=[str(support.REPO / "_pillar")],
        utils_dirs=[str(support.REPO / "_utils")],
        k8s_helper={"pki_root": str(pki)},
    )
    return {"sls": sls, "ext": ext, "key_line": key_line}


def _call(conf, *args):
    proc = subprocess.run(
        support.salt_call_argv(conf, *args), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize(
    "args",
    [
        ("pillar.items",),
        ("pillar.get", "kubernetes:certs"),
        ("pillar.get", "kubernetes:certs:server.key"),
        ("pillar.item", "kubernetes"),
    ],
    ids=["items", "get", "get-leaf", "item"],
)
def test_pillar_functions_mask_the_values(minions, args):
    proc = _call(minions["sls"], *args)
    assert "**********" in proc.stdout
    assert minions["key_line"] not in proc.stdout + proc.stderr


def test_log_level_all_prints_the_rendered_sls_with_the_keys(minions):
    proc = _call(minions["sls"], "-l", "all", "pillar.keys", "kubernetes:certs")
    assert "server.key" in proc.stdout
    assert minions["key_line"] in proc.stderr  # the rendered SLS, logged
    quieter = _call(minions["sls"], "-l", "trace", "pillar.keys", "kubernetes:certs")
    assert minions["key_line"] not in quieter.stderr


def test_the_ext_pillar_leaves_nothing_to_log(minions):
    proc = _call(minions["ext"], "-l", "all", "pillar.keys", "kubernetes:certs")
    assert "server.key" in proc.stdout  # the same pillar ...
    assert minions["key_line"] not in proc.stdout + proc.stderr  # ... without the key in the log
