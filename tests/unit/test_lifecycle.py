"""Unit tests of the lifecycle decisions in k8s_pki: when a leaf is due, drift, renewal.

Certificates are made with past and future dates through the library's ``now=``
argument, written to real folders, and read back; openssl checks the chains.
"""

import datetime
import os
import pathlib

import pytest
from support import k8s_pki, openssl, snapshot

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
FAST = "ecdsa-p256"  # key generation in microseconds; the decisions do not depend on it


def make_set(pki_root, tag="default", made=NOW, key_type=FAST, **kwargs):
    """A seed set issued at ``made`` (CA 10 years, leaves 365 days unless overridden)."""
    days = {k: kwargs.pop(k) for k in ("ca_days", "leaf_days") if k in kwargs}
    specs = k8s_pki.seed_specs(**kwargs)
    plan, _ = k8s_pki.ensure_set(pki_root, tag, specs, key_type=key_type, now=made, **days)
    assert plan.changed
    return pki_root / tag


def plan(directory, now=NOW, **kwargs):
    specs = k8s_pki.seed_specs(**kwargs.pop("seed", {}))
    return k8s_pki.plan_set(str(directory), specs, now=now, **kwargs)


def actions(p):
    return {name: (item.action, item.reason) for name, item in p.items.items()}


def load(directory, name):
    return k8s_pki.load_cert((directory / name).read_bytes())


def verify(directory, name, at=NOW):
    """openssl's own verdict on the chain, at the test's point in time."""
    stamp = str(int(at.timestamp()))
    openssl("verify", "-attime", stamp, "-CAfile", directory / "ca.crt", directory / name)


def backups(directory):
    root = directory / k8s_pki.BACKUP_DIR
    return sorted(os.listdir(root)) if root.is_dir() else []


# -- the renewal window -------------------------------------------------------


@pytest.mark.parametrize(
    ("age_days", "due"),
    [
        (0, ""),
        (274, ""),  # 91 days left: outside the 90-day window
        (276, "expires in 89 days (renewal window: 90 days)"),
        (364.9, "expires in 3 hour(s) (renewal window: 90 days)"),
        (366, "expired"),
        (900, "expired"),
    ],
)
def test_leaf_due_by_age(pki_root, age_days, due):
    directory = make_set(pki_root, made=NOW - datetime.timedelta(days=age_days))
    leaf = load(directory, "server.crt")
    assert k8s_pki.renewal_due(leaf, 90, NOW) == due
    expected = {"": "ok", "expired": "expired"}.get(due, "renew-soon")
    assert k8s_pki.expiry_status(leaf, 90, NOW) == expected


def test_short_lived_leaves_are_due_in_their_last_third(pki_root):
    directory = make_set(pki_root, leaf_days=30)
    leaf = load(directory, "server.crt")
    assert k8s_pki.renewal_window_days(leaf, 90) == pytest.approx(10, abs=0.01)
    assert k8s_pki.renewal_due(leaf, 90, NOW) == ""
    assert k8s_pki.renewal_due(leaf, 90, NOW + 19 * DAY) == ""
    assert k8s_pki.renewal_due(leaf, 90, NOW + 21 * DAY).startswith("expires in 9 days")
    # A threshold shorter than the lifetime is used as it is.
    assert k8s_pki.renewal_window_days(leaf, 29) == 29
    assert k8s_pki.renewal_window_days(leaf, 7) == 7


@pytest.mark.parametrize("leaf_days", [30, 89, 90])
def test_short_lived_set_is_left_alone_on_the_next_run(pki_root, leaf_days):
    """Without the lifetime rule, days=30 (or 90) reissued every leaf on every run."""
    directory = make_set(pki_root, leaf_days=leaf_days)
    before = snapshot(directory)
    specs = k8s_pki.seed_specs()
    p, backup = k8s_pki.ensure_set(
        pki_root, "default", specs, key_type=FAST, leaf_days=leaf_days, now=NOW + DAY
    )
    assert not p.changed and backup is None
    assert snapshot(directory) == before
    due = NOW + (leaf_days - leaf_days / 3 + 1) * DAY
    assert k8s_pki.renewal_due(load(directory, "server.crt"), 90, due).startswith("expires in")


def test_a_leaf_living_just_longer_than_the_threshold_uses_the_threshold(pki_root):
    directory = make_set(pki_root, leaf_days=91)
    leaf = load(directory, "server.crt")
    assert k8s_pki.renewal_window_days(leaf, 90) == 90
    assert k8s_pki.renewal_due(leaf, 90, NOW) == ""
    assert k8s_pki.renewal_due(leaf, 90, NOW + 1.5 * DAY) != ""


# -- generate_certs' drift decisions (plan_set / ensure_set) --------------------


def test_valid_set_changes_nothing(pki_root):
    directory = make_set(pki_root)
    before = snapshot(directory)
    p, backup = k8s_pki.ensure_set(
        pki_root, "default", k8s_pki.seed_specs(), key_type=FAST, now=NOW + 200 * DAY
    )
    assert actions(p) == {n: ("reused", "") for n in ("ca", "server", "kubecfg")}
    assert backup is None
    assert snapshot(directory) == before


def test_leaves_in_the_window_are_reissued_from_the_same_ca_with_a_backup(pki_root):
    directory = make_set(pki_root, made=NOW - 300 * DAY)
    old = {name: (directory / name).read_bytes() for name in k8s_pki_files()}
    p, backup = k8s_pki.ensure_set(pki_root, "default", k8s_pki.seed_specs(), now=NOW)
    assert actions(p) == {
        "ca": ("reused", ""),
        # server.key also signs the service-account tokens (no sa.key): kept
        "server": ("reissued", "expires in 65 days (renewal window: 90 days)"),
        "kubecfg": ("generated", "expires in 65 days (renewal window: 90 days)"),
    }
    # The CA is byte-identical (the same inode, even); the leaves are new, with new keys
    # but for the token-signing server.key.
    assert (directory / "ca.crt").read_bytes() == old["ca.crt"]
    assert (directory / "ca.key").read_bytes() == old["ca.key"]
    for name in ("server.crt", "kubecfg.crt", "kubecfg.key"):
        assert (directory / name).read_bytes() != old[name], name
    assert (directory / "server.key").read_bytes() == old["server.key"]
    assert "warnings" not in k8s_pki.describe_plan(p, backup)
    for name in ("server.crt", "kubecfg.crt"):
        assert k8s_pki.days_left(load(directory, name), NOW) == pytest.approx(365, abs=0.01)
    verify(directory, "server.crt")
    verify(directory, "kubecfg.crt")
    # The previous files, all of them, are in the backup.
    assert backup and os.path.dirname(backup) == str(directory / "backup")
    for name, data in old.items():
        assert pathlib.Path(backup, name).read_bytes() == data
    assert oct(os.stat(os.path.join(backup, "server.key")).st_mode & 0o777) == "0o600"


def test_expired_leaf_is_reissued_with_reason_expired(pki_root):
    directory = make_set(pki_root, made=NOW - 400 * DAY)
    p = plan(directory)
    assert actions(p)["server"] == ("reissued", "expired")  # the token-signing key is kept
    assert actions(p)["kubecfg"] == ("generated", "expired")
    assert actions(p)["ca"] == ("reused", "")


@pytest.mark.parametrize(
    "changed",
    [
        {"api_server_fqdn": "api.example.com"},
        {"api_service_address": "10.96.0.1"},
        {"cluster_domain": "k8s.example"},
        {"extra_sans": ["k8s-master-1", "192.0.2.11"]},
    ],
    ids=lambda d: next(iter(d)),
)
def test_san_drift_reissues_only_the_server(pki_root, changed):
    directory = make_set(pki_root)
    kubecfg = (directory / "kubecfg.crt").read_bytes()
    ca = (directory / "ca.crt").read_bytes()
    specs = k8s_pki.seed_specs(**changed)
    p, backup = k8s_pki.ensure_set(pki_root, "default", specs, key_type=FAST, now=NOW + DAY)
    assert actions(p) == {
        "ca": ("reused", ""),
        "server": ("reissued", "names or usages differ from those requested"),
        "kubecfg": ("reused", ""),
    }
    assert backup is not None
    assert (directory / "kubecfg.crt").read_bytes() == kubecfg
    assert (directory / "ca.crt").read_bytes() == ca
    assert k8s_pki.satisfies(load(directory, "server.crt"), specs["server"])
    verify(directory, "server.crt", at=NOW + DAY)
    # ... and the next run with the same arguments changes nothing.
    before = snapshot(directory)
    p, backup = k8s_pki.ensure_set(pki_root, "default", specs, key_type=FAST, now=NOW + DAY)
    assert not p.changed and backup is None and snapshot(directory) == before


def test_san_order_is_not_drift(pki_root):
    directory = make_set(pki_root, extra_sans=["b.example", "a.example", "192.0.2.2", "192.0.2.1"])
    p = plan(directory, seed={"extra_sans": "a.example,192.0.2.1,b.example,192.0.2.2"})
    assert not p.changed


def test_leaf_from_a_foreign_ca_is_reissued(pki_root):
    directory = make_set(pki_root)
    foreign = make_set(pki_root, tag="other")
    for name in ("server.crt", "server.key"):
        (directory / name).write_bytes((foreign / name).read_bytes())
    p, _ = k8s_pki.ensure_set(pki_root, "default", k8s_pki.seed_specs(), key_type=FAST, now=NOW)
    assert actions(p)["server"] == ("reissued", "not signed by the current ca")
    assert actions(p)["kubecfg"] == ("reused", "")
    verify(directory, "server.crt")


def test_missing_leaf_is_issued_without_backup_of_nothing(pki_root):
    directory = make_set(pki_root)
    (directory / "kubecfg.crt").unlink()
    (directory / "kubecfg.key").unlink()
    p, backup = k8s_pki.ensure_set(
        pki_root, "default", k8s_pki.seed_specs(), key_type=FAST, now=NOW
    )
    assert actions(p)["kubecfg"] == ("generated", "missing")
    assert backup is None  # nothing was replaced


def test_ca_in_its_window_or_expired_is_never_replaced_without_force_regen(pki_root):
    # CA of 400 days made 390 days ago: in its window; leaves fine.
    directory = make_set(pki_root, made=NOW - 390 * DAY, ca_days=400, leaf_days=3000)
    ca = (directory / "ca.crt").read_bytes()
    p, _ = k8s_pki.ensure_set(pki_root, "default", k8s_pki.seed_specs(), key_type=FAST, now=NOW)
    assert not p.changed
    assert (directory / "ca.crt").read_bytes() == ca
    # Expired CA and a leaf to issue: refused, nothing written.
    (directory / "server.crt").unlink()
    before = snapshot(pki_root)
    with pytest.raises(k8s_pki.SetError, match=r"ca\.crt expired on .*force_regen=True"):
        k8s_pki.ensure_set(
            pki_root, "default", k8s_pki.seed_specs(), key_type=FAST, now=NOW + 20 * DAY
        )
    assert snapshot(pki_root) == before
    # force_regen replaces it, keeping the old set.
    p, backup = k8s_pki.ensure_set(
        pki_root, "default", k8s_pki.seed_specs(), key_type=FAST, force_regen=True, now=NOW
    )
    assert actions(p)["ca"] == ("generated", "force_regen")
    assert pathlib.Path(backup, "ca.crt").read_bytes() == ca


# -- renewal -------------------------------------------------------------------


def k8s_pki_files():
    return ("ca.crt", "ca.key", "server.crt", "server.key", "kubecfg.crt", "kubecfg.key")


def test_renew_one_leaf_with_new_key(pki_root):
    directory = make_set(pki_root, api_server_fqdn="api.example.com", extra_sans="192.0.2.7")
    old = {name: (directory / name).read_bytes() for name in k8s_pki_files()}
    old_server = load(directory, "server.crt")
    p, backup = k8s_pki.renew_set(
        pki_root, "default", k8s_pki.seed_specs(), "server", rotate_token_key=True, now=NOW
    )
    assert p.warnings and "service-account tokens" in p.warnings[0]
    assert actions(p) == {
        "ca": ("reused", ""),
        "server": ("generated", "renewal requested"),
        "kubecfg": ("reused", ""),
    }
    new_server = load(directory, "server.crt")
    # Same names and usages, same issuer; new serial, dates and key.
    assert k8s_pki.cert_sans(new_server) == k8s_pki.cert_sans(old_server)
    assert new_server.subject == old_server.subject
    assert k8s_pki.cert_usages(new_server) == ("server",)
    assert new_server.serial_number != old_server.serial_number
    assert (directory / "server.key").read_bytes() != old["server.key"]
    assert k8s_pki.key_type_of(k8s_pki.load_key((directory / "server.key").read_bytes())) == FAST
    for name in ("ca.crt", "ca.key", "kubecfg.crt", "kubecfg.key"):
        assert (directory / name).read_bytes() == old[name], name
    assert sorted(os.listdir(backup)) == sorted(k8s_pki_files())
    verify(directory, "server.crt")


def test_renew_keep_keys_reissues_with_the_same_key(pki_root):
    directory = make_set(pki_root)
    old_key = (directory / "kubecfg.key").read_bytes()
    old_cert = (directory / "kubecfg.crt").read_bytes()
    p, backup = k8s_pki.renew_set(
        pki_root, "default", k8s_pki.seed_specs(), ["kubecfg.crt"], keep_keys=True, now=NOW
    )
    assert actions(p)["kubecfg"] == ("reissued", "renewal requested")
    assert actions(p)["server"] == ("reused", "")
    assert (directory / "kubecfg.key").read_bytes() == old_key
    assert (directory / "kubecfg.crt").read_bytes() != old_cert
    assert k8s_pki.key_matches(load(directory, "kubecfg.crt"), k8s_pki.load_key(old_key)), (
        "the reissued certificate carries the old public key"
    )
    assert backup is not None


def test_renew_all_by_default_and_key_type_follows_the_old_key(pki_root):
    directory = make_set(pki_root, key_type="rsa-2048")
    p, _ = k8s_pki.renew_set(pki_root, "default", k8s_pki.seed_specs(), None, now=NOW)
    assert {n for n, (a, _) in actions(p).items() if a == "generated"} == {"kubecfg"}
    for name in ("server.key", "kubecfg.key"):
        key = k8s_pki.load_key((directory / name).read_bytes())
        assert k8s_pki.key_type_of(key) == "rsa-2048"
    with pytest.raises(k8s_pki.InputError, match="key_type: server.key is kept"):
        k8s_pki.renew_set(
            pki_root, "default", k8s_pki.seed_specs(), "server", key_type="ecdsa-p384", now=NOW
        )
    p, _ = k8s_pki.renew_set(
        pki_root,
        "default",
        k8s_pki.seed_specs(),
        "server",
        key_type="ecdsa-p384",
        rotate_token_key=True,
        now=NOW,
    )
    assert k8s_pki.key_type_of(k8s_pki.load_key((directory / "server.key").read_bytes())) == (
        "ecdsa-p384"
    )


def test_renew_keeps_other_leaves_unless_they_are_unusable(pki_root):
    # Made 300 days ago: both leaves are in the window, neither is expired.
    directory = make_set(pki_root, made=NOW - 300 * DAY)
    kubecfg = (directory / "kubecfg.crt").read_bytes()
    p, _ = k8s_pki.renew_set(pki_root, "default", k8s_pki.seed_specs(), "server", now=NOW)
    assert actions(p)["kubecfg"] == ("reused", "")
    assert (directory / "kubecfg.crt").read_bytes() == kubecfg
    # An expired leaf is reissued along, and the return says why.
    directory = make_set(pki_root, tag="old", made=NOW - 400 * DAY)
    p, _ = k8s_pki.renew_set(pki_root, "old", k8s_pki.seed_specs(), "server", now=NOW)
    assert actions(p)["kubecfg"] == ("generated", "expired")


@pytest.mark.parametrize(
    ("certs", "message"),
    [
        ("ca", r"certs: 'ca' is a CA; renew never touches a CA"),
        ("ca.crt", r"certs: 'ca.crt' is a CA"),
        ("server,etcd", r"certs: 'etcd' is not a certificate of this set; choose from server"),
        (["nope"], r"certs: 'nope' is not a certificate"),
        (42, r"certs: 42 is not a list"),
    ],
)
def test_renew_refuses_cas_and_unknown_names_and_changes_nothing(pki_root, certs, message):
    make_set(pki_root)
    before = snapshot(pki_root)
    with pytest.raises(k8s_pki.InputError, match=message):
        k8s_pki.renew_set(pki_root, "default", k8s_pki.seed_specs(), certs, now=NOW)
    assert snapshot(pki_root) == before


def test_plan_set_refuses_a_ca_or_unknown_name_in_renew(pki_root):
    directory = make_set(pki_root)
    with pytest.raises(k8s_pki.InputError, match="renew: 'ca' is a CA"):
        plan(directory, renew=("ca",))
    with pytest.raises(k8s_pki.InputError, match="renew: 'x' is not a certificate"):
        plan(directory, renew=("x",))


def test_renew_without_a_set_or_with_a_missing_leaf_is_an_error(pki_root):
    with pytest.raises(k8s_pki.SetError, match="no certificate set for cluster 'default'"):
        k8s_pki.renew_set(pki_root, "default", k8s_pki.seed_specs(), now=NOW)
    assert not (pki_root / "default").exists()
    directory = make_set(pki_root)
    (directory / "server.crt").unlink()
    before = snapshot(pki_root)
    with pytest.raises(k8s_pki.SetError, match=r"server\.crt is missing, so there is nothing"):
        k8s_pki.renew_set(pki_root, "default", k8s_pki.seed_specs(), "kubecfg", now=NOW)
    assert snapshot(pki_root) == before


def test_renew_of_a_set_from_an_expired_ca_is_refused(pki_root):
    make_set(pki_root, made=NOW - 500 * DAY, ca_days=400, leaf_days=3000)
    before = snapshot(pki_root)
    with pytest.raises(k8s_pki.SetError, match="ca.crt expired on"):
        k8s_pki.renew_set(pki_root, "default", k8s_pki.seed_specs(), now=NOW)
    assert snapshot(pki_root) == before


# -- expiry report ----------------------------------------------------------------


def test_expiry_report_statuses_and_fields(pki_root):
    directory = make_set(pki_root, made=NOW - 300 * DAY)
    # server: expired (issued for 200 days, 300 days ago); kubecfg: renew-soon; ca: ok.
    ca = k8s_pki.load_cert((directory / "ca.crt").read_bytes())
    ca_key = k8s_pki.load_key((directory / "ca.key").read_bytes())
    key = k8s_pki.load_key((directory / "server.key").read_bytes())
    spec = k8s_pki.seed_specs()["server"]
    expired = k8s_pki.issue_leaf(spec, key, ca, ca_key, days=200, now=NOW - 300 * DAY)
    (directory / "server.crt").write_bytes(k8s_pki.cert_pem(expired))

    report = k8s_pki.expiry_report(str(directory), k8s_pki.seed_specs(), 90, now=NOW)
    by_name = {e["name"]: e for e in report["certificates"]}
    assert sorted(by_name) == ["ca.crt", "kubecfg.crt", "server.crt"]
    assert by_name["ca.crt"]["status"] == "ok"
    assert by_name["ca.crt"]["kind"] == "ca"
    assert by_name["ca.crt"]["days_left"] == 3650 - 300
    assert by_name["kubecfg.crt"]["status"] == "renew-soon"
    assert by_name["kubecfg.crt"]["days_left"] == 65
    assert by_name["kubecfg.crt"]["subject"] == "CN=kubecfg,O=system:masters"
    assert by_name["kubecfg.crt"]["issuer"] == "CN=kubernetes-ca"
    assert by_name["server.crt"]["status"] == "expired"
    assert by_name["server.crt"]["days_left"] == -100
    assert by_name["server.crt"]["member"] == "server"
    assert report["summary"] == {"ok": 1, "renew-soon": 1, "expired": 1, "unreadable": 0}
    # The same dates as openssl reads.
    end = openssl("x509", "-in", directory / "kubecfg.crt", "-noout", "-enddate").stdout
    parsed = datetime.datetime.strptime(end.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
    assert parsed.strftime("%Y-%m-%dT%H:%M:%SZ") == by_name["kubecfg.crt"]["not_after"]
    # No key material anywhere in the report.
    assert "PRIVATE KEY" not in repr(report)

    alert = k8s_pki.expiry_alert(report)
    assert alert["renew"] == ["kubecfg", "server"]
    assert alert["cas"] == []
    assert [c["name"] for c in alert["certificates"]] == ["kubecfg.crt", "server.crt"]


def test_expiry_report_threshold_argument(pki_root):
    directory = make_set(pki_root, made=NOW - 200 * DAY)  # leaves: 165 days left
    report = k8s_pki.expiry_report(str(directory), None, 90, now=NOW)
    assert report["summary"]["renew-soon"] == 0
    assert k8s_pki.expiry_alert(report) is None
    report = k8s_pki.expiry_report(str(directory), None, 180, now=NOW)
    assert report["summary"]["renew-soon"] == 2
    assert k8s_pki.expiry_alert(report)["renew"] == []  # no specs given: no pair names


def test_expiry_report_reads_ca_bundles_kubeconfigs_and_subfolders(pki_root):
    directory = make_set(pki_root)
    old_ca = make_set(pki_root, tag="old", made=NOW - 3700 * DAY)
    bundle = (directory / "ca.crt").read_bytes() + (old_ca / "ca.crt").read_bytes()
    (directory / "ca.crt").write_bytes(bundle)
    (directory / "etcd").mkdir()
    (directory / "etcd" / "ca.crt").write_bytes((old_ca / "ca.crt").read_bytes())
    import base64

    def b64(name):
        return base64.b64encode((directory / name).read_bytes()).decode()

    (directory / "admin.conf").write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: k\n  cluster:\n    certificate-authority-data: {b64('ca.crt')}\n"
        f"users:\n- name: admin\n  user:\n    client-certificate-data: {b64('kubecfg.crt')}\n"
        f"    client-key-data: {b64('kubecfg.key')}\n"
    )
    os.chmod(directory / "admin.conf", 0o600)  # it embeds a key: others may not read it
    (directory / "garbage.pem").write_text("not a certificate\n")
    report = k8s_pki.expiry_report(str(directory), k8s_pki.seed_specs(), now=NOW)
    by_name = {e["name"]: e for e in report["certificates"]}
    assert sorted(by_name) == [
        "admin.conf cluster k",
        "admin.conf cluster k #2",
        "admin.conf user admin",
        "ca.crt #1",
        "ca.crt #2",
        "etcd/ca.crt",
        "garbage.pem",
        "kubecfg.crt",
        "server.crt",
    ]
    assert by_name["ca.crt #1"]["status"] == "ok"
    assert by_name["ca.crt #2"]["status"] == "expired"
    assert by_name["etcd/ca.crt"]["status"] == "expired"
    assert by_name["admin.conf user admin"]["subject"] == "CN=kubecfg,O=system:masters"
    assert by_name["garbage.pem"]["status"] == "unreadable"
    assert "not a PEM certificate" in by_name["garbage.pem"]["error"]
    assert report["summary"] == {"ok": 5, "renew-soon": 0, "expired": 3, "unreadable": 1}
    assert "PRIVATE KEY" not in repr(report) and b64("kubecfg.key") not in repr(report)


def test_expiry_report_leaves_out_backups_and_needs_certificates(pki_root):
    directory = make_set(pki_root, made=NOW - 400 * DAY)
    k8s_pki.renew_set(pki_root, "default", k8s_pki.seed_specs(), now=NOW)
    assert backups(directory)
    report = k8s_pki.expiry_report(str(directory), now=NOW)
    assert {e["name"] for e in report["certificates"]} == {"ca.crt", "server.crt", "kubecfg.crt"}
    assert report["summary"]["expired"] == 0
    with pytest.raises(k8s_pki.SetError, match="no certificate set here"):
        k8s_pki.expiry_report(str(pki_root / "nope"))
    (pki_root / "empty").mkdir()
    with pytest.raises(k8s_pki.SetError, match="no certificate found"):
        k8s_pki.expiry_report(str(pki_root / "empty"))


def test_renew_due_within_renews_only_what_is_due_once(pki_root):
    directory = make_set(pki_root, made=NOW - 300 * DAY)  # 65 days left
    specs = k8s_pki.seed_specs()
    p, backup = k8s_pki.renew_set(pki_root, "default", specs, "server", due_within=60, now=NOW)
    assert not p.changed and backup is None  # 65 days left: not due within 60
    p, backup = k8s_pki.renew_set(pki_root, "default", specs, "server", due_within=90, now=NOW)
    assert actions(p)["server"] == ("reissued", "expires in 65 days (renewal window: 90 days)")
    assert actions(p)["kubecfg"] == ("reused", "")  # not named
    before = snapshot(directory)
    p, backup = k8s_pki.renew_set(pki_root, "default", specs, None, due_within=90, now=NOW)
    assert actions(p)["server"] == ("reused", "")  # renewed a moment ago
    assert actions(p)["kubecfg"] == ("generated", "expires in 65 days (renewal window: 90 days)")
    p, backup = k8s_pki.renew_set(pki_root, "default", specs, None, due_within=90, now=NOW)
    assert not p.changed and backup is None
    assert len(backups(directory)) == 2
    assert snapshot(directory) != before
