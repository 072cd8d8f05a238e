"""The PKI library on its own: what it writes, reloaded and checked field by field."""

import datetime
import ipaddress
import os
import pathlib
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import SEED_FILES, k8s_pki, openssl, snapshot


def generate(pki_root, tag="default", **kwargs):
    spec_args = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in ("api_server_fqdn", "api_service_address", "cluster_domain", "extra_sans")
    }
    kwargs.setdefault("key_type", "ecdsa-p256")
    return k8s_pki.ensure_set(str(pki_root), tag, k8s_pki.seed_specs(**spec_args), **kwargs)


def load(directory, name):
    return x509.load_pem_x509_certificate((directory / name).read_bytes())


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.mark.parametrize("key_type", k8s_pki.KEY_TYPES)
def test_seed_set_fields(tmp_path, key_type):
    plan, backup = generate(tmp_path, key_type=key_type, extra_sans=["k8s-master-1", "192.0.2.11"])
    assert plan.changed and backup is None
    d = tmp_path / "default"
    assert sorted(os.listdir(d)) == sorted(SEED_FILES)

    ca, server, kubecfg = (load(d, f) for f in ("ca.crt", "server.crt", "kubecfg.crt"))
    # (the time of this test, not of the module's import: a long suite runs in between)
    now = datetime.datetime.now(datetime.timezone.utc)
    # CA: self-signed, CA:TRUE critical, keyCertSign + cRLSign, SKI, ten years.
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(ca, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    ca_ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ca_ski.digest == x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest
    assert (ca.not_valid_after_utc - now).days in (3649, 3650)

    # Leaves: signed by the CA, AKI = CA's SKI, not CAs, one year.
    for leaf in (server, kubecfg):
        leaf.verify_directly_issued_by(ca)
        assert ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest
        assert not ext(leaf, x509.BasicConstraints).value.ca
        assert (leaf.not_valid_after_utc - now).days in (364, 365)
        assert leaf.not_valid_before_utc <= now

    assert list(ext(server, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = ext(server, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "kubernetes.api",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "k8s-master-1",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.254.0.1"),
        ipaddress.ip_address("192.0.2.11"),
    ]
    assert list(ext(kubecfg, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    orgs = kubecfg.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in orgs] == ["system:masters"]

    # Keys of the requested type, each belonging to its certificate.
    expected = rsa.RSAPrivateKey if key_type.startswith("rsa") else ec.EllipticCurvePrivateKey
    for name in ("ca", "server", "kubecfg"):
        key = k8s_pki.load_key((d / f"{name}.key").read_bytes())
        assert isinstance(key, expected)
        if key_type.startswith("rsa"):
            assert key.key_size == int(key_type.split("-")[1])
        assert k8s_pki.key_matches(load(d, f"{name}.crt"), key)

    # Modes: folder 0700, keys 0600, certificates 0644.
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in SEED_FILES:
        want = 0o600 if f.endswith(".key") else 0o644
        assert stat.S_IMODE((d / f).stat().st_mode) == want, f


def test_openssl_agrees(tmp_path):
    """An independent implementation verifies the chain and reads the same fields."""
    generate(
        tmp_path,
        key_type="rsa-2048",
        api_server_fqdn="api.example.com",
        api_service_address="fd00::1",
    )
    d = tmp_path / "default"
    out = openssl("verify", "-CAfile", d / "ca.crt", d / "server.crt", d / "kubecfg.crt").stdout
    assert out.count(": OK") == 2
    text = openssl("x509", "-in", d / "server.crt", "-noout", "-text").stdout
    assert "DNS:api.example.com" in text and "IP Address:FD00:0:0:0:0:0:0:1" in text
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    ca_text = openssl("x509", "-in", d / "ca.crt", "-noout", "-text").stdout
    assert "CA:TRUE" in ca_text and "Certificate Sign, CRL Sign" in ca_text
    for name in ("ca", "server", "kubecfg"):
        cert_pub = openssl("x509", "-in", d / f"{name}.crt", "-noout", "-pubkey").stdout
        key_pub = openssl("pkey", "-in", d / f"{name}.key", "-pubout").stdout
        assert cert_pub == key_pub


def test_valid_set_is_left_byte_identical(tmp_path):
    generate(tmp_path)
    before = snapshot(tmp_path)
    plan, backup = generate(tmp_path)
    assert not plan.changed and backup is None
    assert {i.action for i in plan.items.values()} == {"reused"}
    assert snapshot(tmp_path) == before  # same bytes, modes and inodes


def test_missing_leaf_is_issued_from_existing_ca(tmp_path):
    generate(tmp_path)
    d = tmp_path / "default"
    ca_before, kubecfg_before = (d / "ca.crt").read_bytes(), (d / "kubecfg.crt").read_bytes()
    (d / "server.crt").unlink()
    (d / "server.key").unlink()
    plan, _ = generate(tmp_path)
    assert plan.items["server"].action == "generated"
    assert plan.items["server"].reason == "missing"
    assert (d / "ca.crt").read_bytes() == ca_before
    assert (d / "kubecfg.crt").read_bytes() == kubecfg_before
    assert k8s_pki.signed_by(load(d, "server.crt"), load(d, "ca.crt"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "ca.key").unlink(), "ca.key is missing"),
        (lambda d: (d / "ca.crt").unlink(), "ca.crt is missing"),
        (lambda d: (d / "server.crt").write_text("garbage\n"), "server.crt: not a PEM certificate"),
        (lambda d: (d / "kubecfg.key").write_text("garbage\n"), "kubecfg.key: not an unencrypted"),
        (
            lambda d: (d / "server.key").write_bytes((d / "kubecfg.key").read_bytes()),
            "server.key does not belong to server.crt",
        ),
        (
            lambda d: (d / "ca.crt").write_bytes((d / "server.crt").read_bytes()),
            "ca.key does not belong to ca.crt",
        ),
    ],
    ids=["no-ca-key", "no-ca-crt", "garbage-cert", "garbage-key", "key-mismatch", "ca-mismatch"],
)
def test_broken_set_is_an_error_and_nothing_changes(tmp_path, damage, message):
    generate(tmp_path)
    damage(tmp_path / "default")
    before = snapshot(tmp_path)
    with pytest.raises(k8s_pki.SetError, match=message):
        generate(tmp_path)
    with pytest.raises(k8s_pki.SetError, match=message):
        generate(tmp_path, api_server_fqdn="other.example.com")  # even when drift asks for work
    assert snapshot(tmp_path) == before


def test_force_regen_backs_up_the_previous_set(tmp_path):
    generate(tmp_path)
    d = tmp_path / "default"
    old = {f: (d / f).read_bytes() for f in SEED_FILES}
    plan, backup = generate(tmp_path, force_regen=True)
    assert {i.action for i in plan.items.values()} == {"generated"}
    assert backup and os.path.dirname(backup) == str(d / "backup")
    assert {
        f: (d / "backup" / os.path.basename(backup) / f).read_bytes() for f in SEED_FILES
    } == old
    assert (d / "ca.crt").read_bytes() != old["ca.crt"]
    assert stat.S_IMODE(os.stat(os.path.join(backup, "ca.key")).st_mode) == 0o600
    # A second force_regen keeps the first backup too.
    _, backup2 = generate(tmp_path, force_regen=True)
    assert sorted(os.listdir(d / "backup")) == sorted(map(os.path.basename, (backup, backup2)))


def test_drift_reissues_only_the_leaf_concerned(tmp_path):
    generate(tmp_path)
    d = tmp_path / "default"
    before = {f: (d / f).read_bytes() for f in SEED_FILES}
    plan, backup = generate(
        tmp_path, api_server_fqdn="api.example.com", extra_sans="lb.example.com"
    )
    assert plan.items["server"].reason == "names or usages differ from those requested"
    # The replaced pair is kept (issue 5: a backup whenever existing files are replaced).
    assert (pathlib.Path(backup) / "server.key").read_bytes() == before["server.key"]
    for f in ("ca.crt", "ca.key", "kubecfg.crt", "kubecfg.key"):
        assert (d / f).read_bytes() == before[f]
    dns, _ = k8s_pki.cert_sans(load(d, "server.crt"))
    assert "api.example.com" in dns and "lb.example.com" in dns
    assert "kubernetes.api" not in dns


def test_leaf_near_expiry_or_from_foreign_ca_is_reissued(tmp_path):
    generate(tmp_path)
    d = tmp_path / "default"
    ca = k8s_pki.load_cert((d / "ca.crt").read_bytes())
    ca_key = k8s_pki.load_key((d / "ca.key").read_bytes())
    specs = k8s_pki.seed_specs()
    # kubecfg: a valid one, but expiring in 10 days.
    key = k8s_pki.new_key("ecdsa-p256")
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=355)
    cert = k8s_pki.issue_leaf(specs["kubecfg"], key, ca, ca_key, days=365, now=old)
    (d / "kubecfg.crt").write_bytes(k8s_pki.cert_pem(cert))
    (d / "kubecfg.key").write_bytes(k8s_pki.key_pem(key))
    # server: right names, signed by some other CA.
    other_key = k8s_pki.new_key("ecdsa-p256")
    other = k8s_pki.build_ca(other_key, "kubernetes-ca")
    key = k8s_pki.new_key("ecdsa-p256")
    cert = k8s_pki.issue_leaf(specs["server"], key, other, other_key)
    (d / "server.crt").write_bytes(k8s_pki.cert_pem(cert))
    (d / "server.key").write_bytes(k8s_pki.key_pem(key))

    plan, _ = generate(tmp_path)
    assert plan.items["kubecfg"].reason.startswith("expires in 9 days (renewal window: 90 days)")
    assert plan.items["server"].reason == "not signed by the current ca"
    assert plan.items["ca"].action == "reused"
    for name in ("server", "kubecfg"):
        assert k8s_pki.signed_by(load(d, f"{name}.crt"), ca)
        assert k8s_pki.days_left(load(d, f"{name}.crt")) > 364


def test_fallback_without_rename_exchange(tmp_path, monkeypatch):
    """Where renameat2 cannot swap folders, two renames are used and a crash between
    them is undone by the next run (under the lock)."""
    generate(tmp_path)
    monkeypatch.setattr(k8s_pki.writer, "exchange_dirs", lambda a, b: False)
    plan, backup = generate(tmp_path, force_regen=True)
    assert plan.changed and os.path.isdir(backup)
    assert not (tmp_path / ".default.old").exists()
    # A writer killed between its two renames leaves only .default.old behind.
    os.rename(tmp_path / "default", tmp_path / ".default.old")
    (tmp_path / ".default.staging").mkdir(mode=0o700)  # as a writer makes it
    before = snapshot(tmp_path / ".default.old")
    plan, _ = generate(tmp_path, force_regen=True)
    assert os.path.isdir(tmp_path / "default")
    assert not (tmp_path / ".default.staging").exists()
    restored = os.path.join(tmp_path / "default", "backup", os.path.basename(_latest(tmp_path)))
    assert {k: v[2] for k, v in snapshot(restored).items()} == {
        k: v[2] for k, v in before.items() if not k.startswith("backup")
    }


def _latest(tmp_path):
    return sorted((tmp_path / "default" / "backup").iterdir())[-1]


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda: k8s_pki.check_cluster_tag(""), "cluster_tag"),
        (lambda: k8s_pki.check_cluster_tag("a/b"), "cluster_tag"),
        (lambda: k8s_pki.check_cluster_tag(".."), "cluster_tag"),
        (lambda: k8s_pki.check_cluster_tag("a..b"), "cluster_tag"),
        (lambda: k8s_pki.check_cluster_tag("a b"), "cluster_tag"),
        (lambda: k8s_pki.check_cluster_tag(".hidden"), "cluster_tag"),
        (lambda: k8s_pki.check_cluster_tag(None), "cluster_tag"),
        (lambda: k8s_pki.check_ip("10.254.0.256"), "api_service_address"),
        (lambda: k8s_pki.check_ip("kubernetes.api"), "api_service_address"),
        (lambda: k8s_pki.check_dns_name("bad_name"), "api_server_fqdn"),
        (lambda: k8s_pki.check_dns_name("-lead.example.com"), "api_server_fqdn"),
        (lambda: k8s_pki.check_dns_name("10.0.0.1"), "api_server_fqdn"),
        (lambda: k8s_pki.check_dns_name(""), "api_server_fqdn"),
        (lambda: k8s_pki.check_dns_name("a" * 64 + ".com"), "api_server_fqdn"),
        (lambda: k8s_pki.check_bool("maybe", "force_regen"), "force_regen"),
        (lambda: k8s_pki.check_bool(1, "force_regen"), "force_regen"),
        (lambda: k8s_pki.check_key_type("dsa-1024"), "key_type"),
        (lambda: k8s_pki.check_days(0, "days"), "days"),
        (lambda: k8s_pki.check_days(-1, "ca_days"), "ca_days"),
        (lambda: k8s_pki.check_days("ten", "days"), "days"),
        (lambda: k8s_pki.check_days(True, "days"), "days"),
        (lambda: k8s_pki.split_sans(["ok.example.com", "not ok"]), "extra_sans"),
        (lambda: k8s_pki.split_sans({"a": 1}), "extra_sans"),
    ],
)
def test_bad_input_names_the_parameter(call, param):
    with pytest.raises(k8s_pki.InputError) as err:
        call()
    assert str(err.value).startswith(f"{param}: ")
