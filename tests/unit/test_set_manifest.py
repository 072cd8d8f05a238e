"""manifest.py: the set's cluster.yaml read strictly, written canonically, inferred for old sets."""

import os

import pytest
import yaml
from support import k8s_pki

SEED = {
    "profile": "seed",
    **k8s_pki.PROFILE_DEFAULTS["seed"],
}


def _parse(doc, path="/x/cluster.yaml"):
    return k8s_pki.parse_manifest(yaml.safe_dump(doc).encode(), path)


def test_render_and_parse_round_trip():
    settings = {**SEED, "extra_sans": ["lb.example.com", "192.0.2.1"], "key_type": "ecdsa-p256"}
    data = k8s_pki.render_manifest(settings)
    assert data.startswith(b"# Written by salt-run k8s-helper.generate_certs")
    assert yaml.safe_load(data)["format"] == k8s_pki.MANIFEST_FORMAT
    assert k8s_pki.parse_manifest(data, "m") == settings


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**SEED, "format": 1, "x": 1}, "unknown key 'x' for profile seed"),
        ({**SEED, "format": 1, "ca_days": True}, "ca_days: True is not a whole number"),
        ({**SEED, "format": 1, "extra_sans": "a,b"}, "extra_sans: 'a,b' is not a list"),
        ({**SEED, "format": 1, "service_account_key": "yes"}, "is not true or false"),
        ({**SEED, "format": 1, "key_type": "dsa"}, "key_type: 'dsa'"),
        ({**SEED, "format": 1, "profile": "kube-up"}, "profile 'kube-up' is not one of"),
        ({**SEED, "format": "1"}, "format '1' is not one this k8s-helper reads"),
        ({**SEED, "format": True}, "format True"),
        ({**SEED}, "format None"),
        ([1, 2], "not a mapping of settings"),
    ],
)
def test_parse_is_strict(doc, message):
    with pytest.raises(k8s_pki.SetError) as err:
        _parse(doc)
    assert str(err.value).startswith("/x/cluster.yaml: ") and message in str(err.value)


def test_unknown_version_says_upgrade():
    with pytest.raises(k8s_pki.SetError, match="upgrade the formula on the master"):
        _parse({**SEED, "format": 2})


def test_not_yaml_and_not_utf8():
    for data in (b"a: [1\n", b"\xff\xfe"):
        with pytest.raises(k8s_pki.SetError, match="not a YAML manifest"):
            k8s_pki.parse_manifest(data, "m")


def test_canonical_forms():
    assert k8s_pki.canonical("extra_sans", "b.example.com, 192.0.2.1") == [
        "b.example.com",
        "192.0.2.1",
    ]
    assert k8s_pki.canonical("control_plane_endpoint", "LB.example.com") == "lb.example.com:6443"
    assert k8s_pki.canonical("control_plane_endpoint", "::1") == "[::1]:6443"
    assert k8s_pki.canonical("nodes", [{"name": "n1"}]) == [{"name": "n1"}]
    assert k8s_pki.canonical("days", "30") == 30
    with pytest.raises(k8s_pki.InputError, match="masters"):
        k8s_pki.canonical("masters", [{"name": "m1"}])


def test_resolve_settings_uses_the_record_and_reports_changes(tmp_path):
    root = tmp_path / "pki"
    directory = root / "c1"
    specs = k8s_pki.seed_specs(api_service_address="10.96.0.1")
    settings = {**SEED, "api_service_address": "10.96.0.1"}
    k8s_pki.ensure_set(str(root), "c1", specs, manifest=k8s_pki.render_manifest(settings))
    assert (directory / "cluster.yaml").exists()
    profile, got, recorded, changed = k8s_pki.resolve_settings(str(directory), {})
    assert profile == "seed" and got == settings and changed == {}
    given = {"api_service_address": "10.96.0.2"}
    _, got, _, changed = k8s_pki.resolve_settings(str(directory), given)
    assert got["api_service_address"] == "10.96.0.2"
    assert changed == {"api_service_address": {"from": "10.96.0.1", "to": "10.96.0.2"}}
    with pytest.raises(k8s_pki.InputError, match="^profile: this set is seed; run salt-run"):
        k8s_pki.resolve_settings(str(directory), {}, "kubeadm")
    with pytest.raises(
        k8s_pki.InputError, match="^control_plane_endpoint: only used with profile=kubeadm"
    ):
        k8s_pki.resolve_settings(str(directory), {"control_plane_endpoint": None})
    # a seed set records its hosts (for enrollment): no longer kubeadm's alone
    _, got, _, _ = k8s_pki.resolve_settings(str(directory), {"nodes": [{"name": "n1"}]})
    assert got["nodes"] == [{"name": "n1"}] and got["masters"] == []


def test_new_set_defaults_to_seed(tmp_path):
    profile, settings, recorded, changed = k8s_pki.resolve_settings(str(tmp_path / "none"), {})
    assert profile == "seed" and settings == SEED and recorded == {} and changed == {}
    assert not (tmp_path / "none").exists()


def test_infer_settings_of_a_set_without_manifest(tmp_path):
    root = tmp_path / "pki"
    specs = k8s_pki.seed_specs(
        api_server_fqdn="api.example.com",
        api_service_address="10.96.0.1",
        extra_sans=["a.example.com", "192.0.2.5"],
    )
    k8s_pki.ensure_set(str(root), "old", specs, key_type="ecdsa-p256")
    directory = str(root / "old")
    assert k8s_pki.files_profile(directory) == "seed"
    assert k8s_pki.set_profile(directory) == ("seed", None)
    found = k8s_pki.infer_settings(directory, "seed")
    assert found == {
        "api_server_fqdn": "api.example.com",
        "api_service_address": "10.96.0.1",
        "cluster_domain": "cluster.local",
        "extra_sans": ["a.example.com", "192.0.2.5"],
        "service_account_key": False,
        "key_type": "ecdsa-p256",
    }
    # the inferred settings ask for exactly the files there: nothing would be reissued
    settings = {**SEED, **found}
    plan = k8s_pki.plan_set(directory, k8s_pki.specs_for(settings))
    assert not plan.changed


def test_files_of_both_profiles_refused(tmp_path):
    directory = tmp_path / "mixed"
    (directory / "hosts").mkdir(parents=True)
    (directory / "server.crt").write_text("")
    with pytest.raises(k8s_pki.SetError, match="holds files of both profiles"):
        k8s_pki.files_profile(str(directory))
    os.unlink(directory / "server.crt")
    assert k8s_pki.files_profile(str(directory)) == "kubeadm"


def test_manifest_is_staged_with_the_set(tmp_path):
    """Written in the same swap as the files; a set that holds it already is left alone."""
    root = tmp_path / "pki"
    specs = k8s_pki.seed_specs()
    data = k8s_pki.render_manifest(SEED)
    plan, _ = k8s_pki.ensure_set(str(root), "c", specs)
    assert not (root / "c/cluster.yaml").exists()
    plan, backup = k8s_pki.ensure_set(str(root), "c", specs, manifest=data)
    assert plan.changed and backup is None and plan.manifest == data
    assert (root / "c/cluster.yaml").read_bytes() == data
    assert k8s_pki.describe_plan(plan)["manifest"]["action"] == "written"
    plan, _ = k8s_pki.ensure_set(str(root), "c", specs, manifest=data)
    assert not plan.changed and plan.manifest is None
    # a later write without a manifest (renew, rotation) carries it along
    k8s_pki.renew_set(str(root), "c", specs, "kubecfg")
    assert (root / "c/cluster.yaml").read_bytes() == data


def test_a_manifest_records_enrolled_strictly():
    settings = {"profile": "kubeadm", **k8s_pki.PROFILE_DEFAULTS["kubeadm"]}
    settings["masters"] = k8s_pki.canonical("masters", [{"name": "m1", "ip": "192.0.2.11"}])
    plain = k8s_pki.render_manifest(settings)
    assert b"enrolled" not in plain  # a set without it: the manifest earlier formulas wrote
    assert k8s_pki.parse_manifest(plain, "cluster.yaml")["enrolled"] is False

    def with_line(line):
        return plain.replace(b"cluster_name: kubernetes\n", b"cluster_name: kubernetes\n" + line)

    assert k8s_pki.parse_manifest(with_line(b"enrolled: true\n"), "x")["enrolled"] is True
    with pytest.raises(k8s_pki.SetError, match="enrolled: 'yes' is not true or false"):
        k8s_pki.parse_manifest(with_line(b"enrolled: 'yes'\n"), "x")
