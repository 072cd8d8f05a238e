"""k8s-helper.generate_certs through Salt: in-process with the loader, and the real salt-run."""

import json
import os

import pytest
import yaml
from support import SEED_FILES, event_sink, k8s_pki, load_runners, salt_run, snapshot

# Each bad input, as typed on the salt-run command line, and the parameter the
# error must name.  Nothing may be created or changed by any of them.
BAD_INPUTS = [
    (["cluster_tag="], "cluster_tag"),
    (["cluster_tag=a/b"], "cluster_tag"),
    (["cluster_tag=.."], "cluster_tag"),
    (["cluster_tag=../../etc"], "cluster_tag"),
    (["cluster_tag=prod cluster"], "cluster_tag"),
    (["cluster_tag=$(id)"], "cluster_tag"),
    (["api_service_address=10.254.0.999"], "api_service_address"),
    (["api_service_address=kubernetes.api"], "api_service_address"),
    (["api_server_fqdn=bad_name!"], "api_server_fqdn"),
    (["api_server_fqdn=-x.example.com"], "api_server_fqdn"),
    (["bogus=1"], "bogus"),
    (["force_regen=maybe"], "force_regen"),
    (["force_regen=1"], "force_regen"),
    (["key_type=dsa-1024"], "key_type"),
    (["ca_days=0"], "ca_days"),
    (["days=-5"], "days"),
    (["extra_sans=[ok.example.com, 'not ok']"], "extra_sans"),
    (["cluster_domain=bad domain"], "cluster_domain"),
]


def _parse_cli(args):
    """The keyword arguments salt-run would pass for ``args`` (YAML-typed values)."""
    kwargs = {}
    for arg in args:
        key, _, value = arg.partition("=")
        kwargs[key] = yaml.safe_load(value) if value else ""
    return kwargs


def test_defaults_through_the_loader(runners, master_conf, tmp_path):
    ret = runners["k8s-helper.generate_certs"]()
    assert ret["cluster_tag"] == "default" and ret["changed"] is True
    assert ret["directory"] == str(tmp_path / "pki" / "default")  # pki_root from master opts
    assert sorted(ret["files"]) == sorted(SEED_FILES)
    server = ret["files"]["server.crt"]
    assert server["sans"] == [
        "kubernetes.api",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.254.0.1",
    ]
    assert server["subject"] == "CN=kube-apiserver" and server["action"] == "generated"
    assert len(server["sha256"].split(":")) == 32 and server["not_after"].endswith("Z")
    assert ret["files"]["kubecfg.crt"]["subject"] == "CN=kubecfg,O=system:masters"
    for name in SEED_FILES:
        assert os.path.isfile(ret["files"][name]["path"])
    assert "PRIVATE KEY" not in repr(ret)
    keys = {(tmp_path / "pki/default" / f).read_bytes() for f in SEED_FILES if f.endswith(".key")}
    assert not any(k.decode() in repr(ret) for k in keys)

    again = runners["k8s-helper.generate_certs"]()
    assert again["changed"] is False
    assert {f["action"] for f in again["files"].values()} == {"reused"}
    assert again["files"]["ca.crt"]["sha256"] == ret["files"]["ca.crt"]["sha256"]


def test_default_pki_root_is_the_documented_path(tmp_path):
    import salt.config
    import salt.loader

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "master").write_text(yaml.safe_dump({"root_dir": str(tmp_path / "root")}))
    opts = salt.config.master_config(str(conf / "master"))
    opts["runner_dirs"] = [str(k8s_pki.__file__).rsplit("/_utils/", 1)[0] + "/_runners"]
    loaded = salt.loader.runner(opts, utils=salt.loader.utils(opts))
    func = loaded["k8s-helper.generate_certs"]
    assert func.__globals__["_pki_root"]() == "/var/salt/k8s-helper/pki"


@pytest.mark.parametrize("args, param", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_in_process(runners, tmp_path, args, param):
    ret = runners["k8s-helper.generate_certs"](**_parse_cli(args))
    assert ret["result"] is False and ret["retcode"] != 0
    assert ret["error"].startswith(f"{param}: "), ret["error"]
    assert not (tmp_path / "pki").exists()


def test_existing_set_is_untouched_by_bad_input(runners, tmp_path):
    runners["k8s-helper.generate_certs"]()
    before = snapshot(tmp_path / "pki")
    for args, _ in BAD_INPUTS:
        assert runners["k8s-helper.generate_certs"](**_parse_cli(args))["retcode"] != 0
        ret = runners["k8s-helper.generate_certs"](**{"force_regen": True, **_parse_cli(args)})
        assert ret["retcode"] != 0
    assert snapshot(tmp_path / "pki") == before


def test_unwritable_pki_root_is_a_clean_error(tmp_path):
    from support import write_master_config

    (tmp_path / "blocker").write_text("a file where the pki root should be\n")
    conf = write_master_config(tmp_path, k8s_helper={"pki_root": str(tmp_path / "blocker" / "pki")})
    ret = load_runners(conf)["k8s-helper.generate_certs"]()
    assert ret["retcode"] != 0 and "Not a directory" in ret["error"]


@pytest.fixture(scope="module")
def cli_conf(tmp_path_factory):
    from support import write_master_config

    conf = write_master_config(tmp_path_factory.mktemp("cli"))
    with event_sink(conf):
        yield conf


def _pki(conf):
    return conf.parent / "pki"


def test_salt_run_end_to_end(cli_conf):
    """The real salt-run: generate, re-run (unchanged), force_regen (backup), doc.runner."""
    first = salt_run(
        cli_conf,
        "k8s-helper.generate_certs",
        "cluster_tag=e2e",
        "extra_sans=[k8s-master-1, 192.0.2.11]",
    )
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["changed"] is True
    assert "192.0.2.11" in data["files"]["server.crt"]["sans"]
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    before = snapshot(_pki(cli_conf) / "e2e")

    second = salt_run(
        cli_conf,
        "k8s-helper.generate_certs",
        "cluster_tag=e2e",
        "extra_sans=k8s-master-1,192.0.2.11",
    )
    assert second.returncode == 0 and json.loads(second.stdout)["changed"] is False
    assert snapshot(_pki(cli_conf) / "e2e") == before

    third = salt_run(
        cli_conf,
        "k8s-helper.generate_certs",
        "cluster_tag=e2e",
        "extra_sans=[k8s-master-1, 192.0.2.11]",
        "force_regen=True",
    )
    assert third.returncode == 0
    new = json.loads(third.stdout)
    assert new["backup"].startswith(str(_pki(cli_conf) / "e2e" / "backup"))
    assert new["files"]["ca.crt"]["sha256"] != data["files"]["ca.crt"]["sha256"]

    doc = json.loads(salt_run(cli_conf, "doc.runner").stdout)["k8s-helper.generate_certs"]
    assert "CLI Example" in doc and "api_server_fqdn : kubernetes.api" in doc


@pytest.mark.parametrize("args, param", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_through_salt_run(cli_conf, args, param):
    """The exit status and message of the real command line, and nothing written."""
    tag_dir = _pki(cli_conf)
    before = snapshot(tag_dir)
    proc = salt_run(cli_conf, "k8s-helper.generate_certs", *args)
    assert proc.returncode != 0, proc.stdout
    assert json.loads(proc.stdout)["error"].startswith(f"{param}: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(tag_dir) == before


def test_install_by_syncing_from_file_roots(tmp_path):
    """The README's install path: formula in file_roots, then saltutil.sync_runners/utils."""
    from support import formula_root, write_master_config

    conf = write_master_config(tmp_path, file_roots={"base": [str(formula_root(tmp_path))]})
    opts = yaml.safe_load((conf / "master").read_text())
    del opts["runner_dirs"], opts["utils_dirs"]
    (conf / "master").write_text(yaml.safe_dump(opts))
    with event_sink(conf):
        before = salt_run(conf, "k8s-helper.generate_certs")
        assert "k8s-helper.generate_certs" in before.stdout + before.stderr  # not available yet
        assert not (tmp_path / "pki").exists()
        for fun in ("saltutil.sync_utils", "saltutil.sync_runners"):
            synced = salt_run(conf, fun)
            assert synced.returncode == 0, synced.stderr
        after = salt_run(conf, "k8s-helper.generate_certs")
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["changed"] is True
    assert (tmp_path / "pki/default/ca.crt").is_file()


def test_service_account_key_pair(runners, tmp_path):
    """A key pair of its own for service-account tokens: made once, kept when the
    serving certificate changes, refused with the kubeadm profile (it has one)."""
    generate = runners["k8s-helper.generate_certs"]
    ret = generate(service_account_key=True)
    d = tmp_path / "pki" / "default"
    key = k8s_pki.load_key((d / "sa.key").read_bytes())
    pub = (d / "sa.pub").read_bytes()
    assert k8s_pki.public_pem(key) == pub
    assert (os.stat(d / "sa.key").st_mode & 0o777, os.stat(d / "sa.pub").st_mode & 0o777) == (
        0o600,
        0o644,
    )
    assert ret["files"]["sa.key"]["action"] == "generated"
    before = (d / "sa.key").read_bytes()
    drift = generate(service_account_key=True, api_server_fqdn="api.example.com")
    assert drift["files"]["server.crt"]["action"] == "generated"
    assert drift["files"]["sa.key"]["action"] == "reused"
    assert (d / "sa.key").read_bytes() == before
    refused = generate(
        cluster_tag="other",
        profile="kubeadm",
        service_account_key=True,
        masters=[{"name": "m1", "ip": "192.0.2.1"}],
    )
    assert refused["retcode"] != 0 and refused["error"].startswith("service_account_key: ")
    bad = generate(service_account_key="perhaps")
    assert bad["retcode"] != 0 and bad["error"].startswith("service_account_key: ")
