"""Getting the certificates into pillar: the k8s_certs ext_pillar, and the
examples pillar.example documents (taken from pillar.example itself, so the
documentation cannot drift from what works).

The ext_pillar runs in the master's real pillar compiler
(``salt.pillar.get_pillar(...).compile_pillar()``) with the module loaded from
this checkout; the pillar-file example runs through the real ``salt-call
--local``.  Nothing here writes outside tmp folders.
"""

import json
import subprocess
import sys

import pytest
import support
import yaml

EXAMPLE = support.EXAMPLE
SEED_PKI = "/var/salt/k8s-helper/pki/default/"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A generated set, from the real runner loaded in-process."""
    base = tmp_path_factory.mktemp("pillar")
    conf = support.write_master_config(base / "master")
    ret = support.load_runners(conf)["k8s-helper.generate_certs"](cluster_tag="default")
    assert ret.get("result") is not False, ret
    return base / "master" / "pki"


def master_opts(tmp_path, ext_pillar, **extra):
    """Master options with the formula's ext_pillar (from this checkout) configured."""
    import salt.config

    pillar_root = support.write_pillar(tmp_path / "pillar-roots", None, text="{}\n")
    conf = support.write_master_config(
        tmp_path / "m",
        pillar_roots={"base": [str(pillar_root)]},
        pillar_dirs=[str(support.REPO / "_pillar")],
        ext_pillar=ext_pillar,
        file_client="local",
        **extra,
    )
    return salt.config.master_config(str(conf / "master"))


def compile_pillar(tmp_path, minion_id, ext_pillar, opts=None, **extra):
    """The master's pillar for ``minion_id``, compiled the way the master does it."""
    import salt.pillar

    opts = opts or master_opts(tmp_path, ext_pillar, **extra)
    return salt.pillar.get_pillar(
        opts, {"id": minion_id}, minion_id, saltenv="base"
    ).compile_pillar()


def documented_ext_pillar():
    return support.documented_ext_pillar()


# --------------------------------------------------------------------------
# The ext_pillar, configured exactly as pillar.example shows
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minion_id", "keys"),
    [
        ("k8s-master-1", ["ca.crt", "kubecfg.crt", "kubecfg.key", "server.cert", "server.key"]),
        ("k8s-node-7", ["ca.crt", "kubecfg.crt", "kubecfg.key"]),
    ],
)
def test_ext_pillar_gives_masters_the_full_set_and_nodes_no_server_pair(
    tmp_path, pki, minion_id, keys
):
    pillar = compile_pillar(
        tmp_path, minion_id, documented_ext_pillar(), k8s_helper={"pki_root": str(pki)}
    )
    assert "_errors" not in pillar, pillar.get("_errors")
    assert pillar["kubernetes"]["k8s_env"] == "default"
    certs = pillar["kubernetes"]["certs"]
    assert sorted(certs) == keys
    # exact bytes of the generated files: nothing to strip, nothing to re-indent
    assert certs == {k: v for k, v in support.pillar_certs(pki / "default").items() if k in keys}


def test_ext_pillar_gives_other_minions_nothing(tmp_path, pki):
    pillar = compile_pillar(
        tmp_path, "web-1", documented_ext_pillar(), k8s_helper={"pki_root": str(pki)}
    )
    assert "_errors" not in pillar
    assert "kubernetes" not in pillar


EXACT = [{"k8s_certs": {"cluster_tag": "default", "masters": ["m1"], "nodes": ["n1"]}}]


@pytest.mark.parametrize("minion_id", ["M1", "m1.", " m1", "N1"])
def test_ext_pillar_matches_the_minion_id_exactly(tmp_path, pki, minion_id):
    """Ids are what Salt accepted: no case folding, nothing stripped."""
    pillar = compile_pillar(tmp_path, minion_id, EXACT, k8s_helper={"pki_root": str(pki)})
    assert "_errors" not in pillar
    assert "kubernetes" not in pillar


@pytest.mark.parametrize(("minion_id", "role"), [("m1", "master"), ("n1", "node")])
def test_ext_pillar_hands_the_role_it_decided(tmp_path, pki, minion_id, role):
    pillar = compile_pillar(tmp_path, minion_id, EXACT, k8s_helper={"pki_root": str(pki)})
    assert pillar["kubernetes"]["role"] == role
    assert ("server.key" in pillar["kubernetes"]["certs"]) == (role == "master")


def test_ext_pillar_missing_files_fail_the_pillar_naming_the_file(tmp_path, pki):
    pillar = compile_pillar(
        tmp_path,
        "k8s-master-1",
        [{"k8s_certs": {"cluster_tag": "nosuch", "masters": "k8s-master-*"}}],
        k8s_helper={"pki_root": str(pki)},
    )
    (error,) = pillar["_errors"]
    assert f"{pki}/nosuch/ca.crt" in error
    assert "salt-run k8s-helper.generate_certs cluster_tag=nosuch" in error
    assert "kubernetes" not in pillar


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"masters": "k8s-*", "colour": "blue"}, "unknown option(s) colour"),
        ({}, "give masters and/or nodes"),
        ({"masters": [3]}, "masters: expected a minion-id glob"),
        ({"masters": "k8s-*", "cluster_tag": "../etc"}, "cluster_tag: '../etc' is not a safe"),
    ],
)
def test_ext_pillar_bad_options_fail_the_pillar(tmp_path, pki, config, message):
    pillar = compile_pillar(
        tmp_path, "k8s-1", [{"k8s_certs": config}], k8s_helper={"pki_root": str(pki)}
    )
    assert any(message in e for e in pillar["_errors"]), pillar["_errors"]
    assert "kubernetes" not in pillar


def test_ext_pillar_spawns_no_process(tmp_path, pki):
    """Counted with an audit hook on subprocess.Popen; the seed's form is the control."""
    spawned = []

    def hook(event, args):
        if event == "subprocess.Popen":
            spawned.append(args[1])

    sys.addaudithook(hook)  # cannot be removed; it only counts
    ext = documented_ext_pillar()
    opts = master_opts(tmp_path, ext, k8s_helper={"pki_root": str(pki)})
    compile_pillar(tmp_path, "k8s-master-1", ext, opts)  # Salt's own first-time probes
    before = len(spawned)
    pillar = compile_pillar(tmp_path, "k8s-master-2", ext, opts)
    assert len(pillar["kubernetes"]["certs"]) == 5
    assert spawned[before:] == []

    seed = "kubernetes:\n  certs:\n" + "".join(
        f'    "{key}": |\n      {{{{ salt.cmd.run("cat {pki}/default/{name}") | indent(8) }}}}\n'
        for key, name in support.PILLAR_FILES.items()
    )
    import salt.config
    import salt.pillar

    root = support.write_pillar(tmp_path / "seed-roots", None, text=seed)
    conf = support.write_master_config(
        tmp_path / "seed", pillar_roots={"base": [str(root)]}, file_client="local"
    )
    opts = salt.config.master_config(str(conf / "master"))
    salt.pillar.get_pillar(opts, {"id": "m"}, "m", saltenv="base").compile_pillar()
    before = len(spawned)
    pillar = salt.pillar.get_pillar(opts, {"id": "n"}, "n", saltenv="base").compile_pillar()
    assert len(pillar["kubernetes"]["certs"]) == 5
    assert [argv[0] for argv in spawned[before:]].count("cat") == 5


# --------------------------------------------------------------------------
# The pillar-file alternative, and the seed's form, through salt-call
# --------------------------------------------------------------------------


def _pillar_certs(tmp_path, files, minion_id):
    root = tmp_path / "pillar"
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    conf = support.write_minion_config(tmp_path / minion_id, root, minion_id)
    proc = subprocess.run(
        support.salt_call_argv(conf, "pillar.get", "kubernetes:certs", "unmask=True"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["local"]


def test_documented_pillar_files_give_exact_bytes_and_target_masters(tmp_path, pki):
    snippets = support.example_snippets()
    files = {
        name: snippets[name].replace(SEED_PKI, f"{pki}/default/")
        for name in ("top.sls", "kubernetes-certs.sls", "kubernetes-certs-master.sls")
    }
    expected = support.pillar_certs(pki / "default")
    master = _pillar_certs(tmp_path, files, "k8s-master-1")
    assert master == expected  # byte for byte: the documented indentation is right
    node = _pillar_certs(tmp_path, files, "k8s-node-1")
    assert node == {k: v for k, v in expected.items() if not k.startswith("server.")}


def test_seed_form_leaves_indented_lines_that_the_states_strip(tmp_path, pki):
    """Why k8s_certs.pem_managed strips lines: the seed's indent(8) under a value
    indented by 6 gives every line after the first two extra spaces."""
    seed = (
        '{% set pki_path = "PKI/" %}\n'
        "kubernetes:\n"
        "  certs:\n"
        '    "ca.crt": |\n'
        '      {{ salt.cmd.run("cat " + pki_path + "ca.crt") | indent(8) }}\n'
    ).replace("PKI/", f"{pki}/default/")
    files = {"top.sls": "base:\n  '*':\n    - k8s\n", "k8s.sls": seed}
    got = _pillar_certs(tmp_path, files, "k8s-master-1")["ca.crt"]
    original = (pki / "default" / "ca.crt").read_text()
    assert got != original
    assert got.splitlines()[-1] == "  -----END CERTIFICATE-----"
    assert support.k8s_pki.normalize_pem(got) == original


def _mapdata(tmp_path):
    """map.jinja's export as a minion without pillar renders it."""
    root = support.write_pillar(tmp_path / "p", {})
    conf = support.write_minion_config(tmp_path / "m", root, "k8s-master-1")
    template = "{%- from 'kubernetes/map.jinja' import mapdata with context %}{{ mapdata | json }}"
    proc = subprocess.run(
        support.salt_call_argv(
            conf, "slsutil.renderer", f"string={template}", "default_renderer=jinja"
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(json.loads(proc.stdout)["local"])


def test_example_lookup_values_are_the_defaults(tmp_path):
    """pillar.example shows kubernetes:lookup with the Debian defaults: keep it true."""
    example = yaml.safe_load(EXAMPLE.read_text())["kubernetes"]["lookup"]
    mapdata = _mapdata(tmp_path)
    mapdata.pop("files")
    mapdata["kubeadm"].pop("files")  # the kubeadm profile's fixed file list, not a setting
    assert mapdata == example


def test_the_states_file_lists_agree_with_the_profile_tables(tmp_path):
    """The states' parameters say what the profiles' member tables say, file by file."""
    mapdata = _mapdata(tmp_path)
    modes = {"0600": 0o600, "0644": 0o644}
    seed = {
        dest: (f.mode, not member.receives("node", f.secret))
        for member in support.k8s_pki.profiles.SEED
        if member.pillar == "kubernetes:certs"
        for f, dest in member.handed_out()
    }
    laid = {
        key: (modes[entry["mode"]], entry["masters_only"])
        for key, entry in mapdata["files"].items()
        if entry["pillar"] == key  # the copies elsewhere (kubelet CA, trust anchor) aside
    }
    assert laid == seed
    assert mapdata["kubeadm"]["files"] == list(support.k8s_pki.KUBEADM_HOST_FILES)


def test_pillar_example_is_valid_yaml_for_yamllint():
    proc = subprocess.run(
        [str(support.VENV_BIN / "yamllint"), "-s", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_snippets_found():
    assert set(support.example_snippets()) == {
        "ext_pillar",
        "top.sls",
        "kubernetes-certs.sls",
        "kubernetes-certs-master.sls",
    }


def test_ext_pillar_hands_the_service_account_pair_to_masters_only(tmp_path_factory):
    """generate_certs service_account_key=True -> the pair in a master's pillar under
    kubernetes:service_account (the form kubernetes.running reads), never a node's."""
    base = tmp_path_factory.mktemp("sa")
    conf = support.write_master_config(base / "master")
    generate = support.load_runners(conf)["k8s-helper.generate_certs"]
    ret = generate(cluster_tag="default", service_account_key=True)
    assert ret["files"]["sa.key"]["action"] == "generated"
    assert "PRIVATE KEY" not in repr(ret)
    pki = base / "master" / "pki"
    ext = documented_ext_pillar()
    master = compile_pillar(base, "k8s-master-1", ext, k8s_helper={"pki_root": str(pki)})
    assert master["kubernetes"]["service_account"] == {
        name: (pki / "default" / name).read_text() for name in ("sa.key", "sa.pub")
    }
    node = compile_pillar(base, "k8s-node-1", ext, k8s_helper={"pki_root": str(pki)})
    assert "service_account" not in node["kubernetes"]
    sa_lines = support.key_lines((pki / "default" / "sa.key").read_text())
    assert not any(line in repr(node) for line in sa_lines)


# --------------------------------------------------------------------------
# The ext_pillars hand out only what the master's user alone controls
# --------------------------------------------------------------------------


def _copy_set(tmp_path, pki):
    import shutil

    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    shutil.copytree(pki / "default", root / "default", symlinks=True)
    return root


def _tamper_symlink(set_dir, outside):
    (set_dir / "ca.crt").rename(outside / "ca.crt")
    (set_dir / "ca.crt").symlink_to(outside / "ca.crt")
    return "ca.crt: is a symbolic link"


def _tamper_owner(set_dir, outside):
    import os

    os.chown(set_dir / "ca.crt", 65534, 65534)
    return "ca.crt: owned by uid 65534"


def _tamper_mode(set_dir, outside):
    (set_dir / "server.key").chmod(0o644)
    return "server.key: a private key readable by group or others"


@pytest.mark.parametrize("tamper", [_tamper_symlink, _tamper_owner, _tamper_mode])
def test_ext_pillar_refuses_a_store_file_someone_else_controls(tmp_path, pki, tamper):
    root = _copy_set(tmp_path, pki)
    outside = tmp_path / "outside"
    outside.mkdir()
    message = tamper(root / "default", outside)
    pillar = compile_pillar(
        tmp_path,
        "k8s-master-1",
        [{"k8s_certs": {"cluster_tag": "default", "masters": "k8s-master-*"}}],
        k8s_helper={"pki_root": str(root)},
    )
    (error,) = pillar["_errors"]
    assert message in error
    assert "kubernetes" not in pillar


def test_kubeadm_ext_pillar_refuses_a_swapped_host_folder(tmp_path):
    """A symlinked hosts/<name> would hand out whatever it points at: refused."""
    conf = support.write_master_config(tmp_path / "gen")
    ret = support.load_runners(conf)["k8s-helper.generate_certs"](
        cluster_tag="c1",
        profile="kubeadm",
        masters=[{"name": "m1", "ip": "192.0.2.11"}],
        key_type="ecdsa-p256",
    )
    assert ret.get("result") is not False, ret
    pki = tmp_path / "gen" / "pki"
    ext = [{"k8s_kubeadm": {"cluster_tag": "c1"}}]
    good = compile_pillar(tmp_path / "a", "m1", ext, k8s_helper={"pki_root": str(pki)})
    assert good["kubernetes"]["kubeadm_pki"]["role"] == "master"
    hosts = pki / "c1" / "hosts"
    (hosts / "m1").rename(tmp_path / "elsewhere")
    (hosts / "m1").symlink_to(tmp_path / "elsewhere")
    pillar = compile_pillar(tmp_path / "b", "m1", ext, k8s_helper={"pki_root": str(pki)})
    (error,) = pillar["_errors"]
    assert f"{hosts / 'm1'}: is a symbolic link" in error
    assert "kubernetes" not in pillar
