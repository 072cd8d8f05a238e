"""Unit tests of the minion-side PKI checks in _utils/k8s_pki/:
check_distribution (what pillar hands a minion), normalize_pem, bundle_has,
load_key(validate=False) + key_works.  openssl checks what the code claims."""

import datetime

import pytest
import support
from cryptography.hazmat.primitives.asymmetric import rsa
from support import k8s_pki

NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    conf = support.write_master_config(tmp_path_factory.mktemp("dist"))
    generate = support.load_runners(conf)["k8s-helper.generate_certs"]
    out = {}
    for tag, key_type in (("a", "rsa-2048"), ("b", "rsa-2048"), ("e", "ecdsa-p256")):
        ret = generate(cluster_tag=tag, key_type=key_type)
        out[tag] = support.pillar_certs(ret["directory"])
        out[tag + "-dir"] = ret["directory"]
    return out


def check(certs, now=None):
    return k8s_pki.check_distribution(certs, now=now)


def refused(certs, now=None):
    with pytest.raises(k8s_pki.PKIError) as err:
        check(certs, now)
    return str(err.value)


@pytest.mark.parametrize("tag", ["a", "e"])
def test_full_set_passes_and_report_holds_no_key(sets, tag):
    report = check(sets[tag])
    assert set(report) == set(k8s_pki.DIST_KEYS)
    assert report["ca.crt"][0]["subject"] == "CN=kubernetes-ca"
    assert report["server.cert"]["sha256"] == k8s_pki.fingerprint(
        k8s_pki.load_cert(sets[tag]["server.cert"].encode())
    )
    assert support.leaked(repr(report), [sets[tag]["server.key"], sets[tag]["kubecfg.key"]]) is None


def test_node_set_passes_without_server_pair(sets):
    node = {k: v for k, v in sets["a"].items() if not k.startswith("server.")}
    assert set(check(node)) == {"ca.crt", "kubecfg.crt", "kubecfg.key"}


def test_every_problem_is_reported_each_naming_its_item(sets):
    certs = dict(sets["a"])
    certs["server.key"] = sets["a"]["kubecfg.key"]  # wrong pair
    certs["kubecfg.crt"] = "cat: kubecfg.crt: No such file or directory"  # garbage
    certs["server.crt"] = "typo'd key"  # unknown
    message = refused(certs)
    assert "kubernetes:certs:server.key: does not belong to server.cert" in message
    assert "kubernetes:certs:kubecfg.crt: not a PEM certificate" in message
    assert "unknown key(s) server.crt" in message
    assert support.leaked(message, [sets["a"]["server.key"], sets["a"]["kubecfg.key"]]) is None


def test_leaf_from_another_ca_is_refused(sets):
    certs = dict(sets["a"], **{k: sets["b"][k] for k in ("server.cert", "server.key")})
    assert "kubernetes:certs:server.cert: not signed by ca.crt" in refused(certs)


def test_ca_bundle_with_old_and_new_ca_accepts_leaves_of_either(sets):
    certs = dict(sets["a"], **{"ca.crt": sets["b"]["ca.crt"] + sets["a"]["ca.crt"]})
    assert len(check(certs)["ca.crt"]) == 2


def test_leaf_as_ca_is_refused(sets):
    certs = dict(sets["a"], **{"ca.crt": sets["a"]["kubecfg.crt"]})
    message = refused(certs)
    assert "kubernetes:certs:ca.crt: not a CA certificate" in message


@pytest.mark.parametrize(
    ("days", "message"),
    [(400, "expired on"), (-400, "not valid before")],
)
def test_dates_are_checked(sets, days, message):
    # ca.crt is valid for 10 years, the leaves for 1: 400 days on, the leaves
    # are expired; 400 days back, nothing is valid yet.
    when = NOW + datetime.timedelta(days=days)
    assert f"kubernetes:certs:server.cert: {message}" in refused(sets["a"], when)


def test_pair_comes_whole(sets):
    certs = dict(sets["a"])
    del certs["server.key"]
    assert "kubernetes:certs:server.key: missing while server.cert is given" in refused(certs)
    node = {k: v for k, v in sets["a"].items() if not k.startswith("kubecfg.")}
    assert "kubernetes:certs:kubecfg.crt, kubecfg.key: missing" in refused(node)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "kubernetes:certs: missing from pillar"),
        ("text", "kubernetes:certs: expected a mapping"),
        ({"ca.crt": 5}, "kubernetes:certs:ca.crt: expected PEM text, got int"),
    ],
)
def test_wrong_shapes(value, message):
    assert message in refused(value)


def test_damaged_key_that_still_matches_the_certificate_is_caught(sets):
    """Public half intact (matches the certificate), private exponents wrong:
    only signing shows it; that is what key_works does in place of OpenSSL's
    slow consistency check, which load_key(validate=False) skips."""
    key = k8s_pki.load_key(sets["a"]["server.key"].encode())
    n = key.private_numbers()
    bad = rsa.RSAPrivateNumbers(
        p=n.p,
        q=n.q,
        d=n.d + 2,
        dmp1=n.dmp1 + 2,
        dmq1=n.dmq1,
        iqmp=n.iqmp,
        public_numbers=n.public_numbers,
    ).private_key(unsafe_skip_rsa_key_validation=True)
    certs = dict(sets["a"], **{"server.key": k8s_pki.key_pem(bad).decode()})
    message = refused(certs)
    assert "kubernetes:certs:server.key: damaged" in message
    with pytest.raises(k8s_pki.PKIError):  # the full check refuses it as well
        k8s_pki.load_key(k8s_pki.key_pem(bad))


def test_normalize_pem_restores_the_seed_pillars_indentation(sets):
    text = sets["a"]["ca.crt"]
    lines = text.rstrip("\n").split("\n")
    indented = lines[0] + "\n" + "\n".join("  " + line for line in lines[1:]) + "\n"
    assert k8s_pki.normalize_pem(indented) == text
    assert k8s_pki.normalize_pem(text) == text  # generated files pass unchanged
    assert k8s_pki.normalize_pem(text.rstrip("\n")) == text
    assert k8s_pki.normalize_pem("\r\n".join(lines) + "\r\n\n") == text


def test_openssl_rejects_the_indented_form_and_takes_the_normalised_one(sets, tmp_path):
    text = sets["a"]["ca.crt"]
    lines = text.rstrip("\n").split("\n")
    indented = tmp_path / "indented.crt"
    indented.write_text(lines[0] + "\n" + "\n".join("  " + line for line in lines[1:]) + "\n")
    normal = tmp_path / "normal.crt"
    normal.write_text(k8s_pki.normalize_pem(indented.read_text()))
    assert support.openssl("x509", "-noout", "-in", indented, check=False).returncode != 0
    assert support.openssl("x509", "-noout", "-in", normal).returncode == 0


def test_bundle_has(sets):
    ca = k8s_pki.load_cert(sets["a"]["ca.crt"].encode())
    other = k8s_pki.load_cert(sets["b"]["ca.crt"].encode())
    with open("/etc/ssl/certs/ca-certificates.crt", "rb") as handle:
        system = handle.read()
    assert not k8s_pki.bundle_has(system, ca)
    # RedHat bundles put comments between the blocks; CRLF line ends too
    bundle = system + b"# kubernetes-ca\r\n" + sets["a"]["ca.crt"].replace("\n", "\r\n").encode()
    assert k8s_pki.bundle_has(bundle, ca)
    assert not k8s_pki.bundle_has(bundle, other)
    assert not k8s_pki.bundle_has(b"", ca)


# --------------------------------------------------------------------------
# Strict PEM (issue 10 item 1): complete blocks of the right type, nothing else
# --------------------------------------------------------------------------

UNTERMINATED = "-----BEGIN CERTIFICATE-----\nZZZZ\n"


def _strict_cases(sets):
    a, b = sets["a"], sets["b"]
    return {
        # the reproduction: passes cryptography, breaks the system bundle
        "unterminated-block-after-ca": (
            "ca.crt",
            a["ca.crt"] + UNTERMINATED,
            "ca.crt: not a PEM certificate: the CERTIFICATE block of line",
        ),
        "junk-before": (
            "ca.crt",
            "# our CA\n" + a["ca.crt"],
            "ca.crt: not a PEM certificate: line 1",
        ),
        "junk-after": ("kubecfg.crt", a["kubecfg.crt"] + "trailing junk\n", "text outside"),
        "junk-separated-foreign-ca": (
            "ca.crt",
            a["ca.crt"] + "and another one:\n" + b["ca.crt"],
            "ca.crt: not a PEM certificate: line",
        ),
        "two-keys-in-one-key-file": (
            "kubecfg.key",
            a["kubecfg.key"] + a["server.key"],
            "kubecfg.key: holds 2 PEM blocks, expected 1",
        ),
        "key-where-a-certificate-belongs": (
            "kubecfg.crt",
            a["kubecfg.key"],
            "kubecfg.crt: not a PEM certificate: line 1: a private key block, not certificate",
        ),
        "not-base64-inside": (
            "server.cert",
            a["server.cert"].replace("\n", "\n!!\n", 2),
            "server.cert: not a PEM certificate: line 2: not base64",
        ),
    }


STRICT_CASES = (
    "unterminated-block-after-ca",
    "junk-before",
    "junk-after",
    "junk-separated-foreign-ca",
    "two-keys-in-one-key-file",
    "key-where-a-certificate-belongs",
    "not-base64-inside",
)


@pytest.mark.parametrize("case", STRICT_CASES)
def test_pillar_pem_is_parsed_strictly(sets, case):
    item, text, expected = _strict_cases(sets)[case]
    message = refused(dict(sets["a"], **{item: text}))
    assert expected in message and f"kubernetes:certs:{item}: " in message, message
    assert support.leaked(message, [sets["a"]["server.key"], sets["a"]["kubecfg.key"]]) is None


def test_strict_pem_keeps_the_seed_indentation_and_bundles(sets):
    """What the seed's indent() pillar makes, and a two-CA bundle (a rotation) with
    blank lines between blocks, still pass."""
    indented = {}
    for key, text in sets["a"].items():
        lines = text.rstrip("\n").split("\n")
        indented[key] = lines[0] + "\n" + "\n".join("  " + line for line in lines[1:]) + "\n"
    assert set(check(indented)) == set(k8s_pki.DIST_KEYS)
    bundle = dict(sets["a"], **{"ca.crt": sets["a"]["ca.crt"] + "\n\n" + sets["b"]["ca.crt"]})
    assert len(check(bundle)["ca.crt"]) == 2


def test_strict_pem_outside_pillar_tolerates_no_indentation(sets):
    text = sets["a"]["ca.crt"]
    assert k8s_pki.strict_pem(text, k8s_pki.CERT_LABELS, "f", 1, indented=False) == 1
    with pytest.raises(k8s_pki.PKIError, match="f: not a PEM certificate: line 1"):
        k8s_pki.strict_pem(
            " " + text.replace("\n", "\n ", 1), k8s_pki.CERT_LABELS, "f", indented=False
        )


def test_bundle_problem_finds_what_breaks_every_tls_client(sets):
    with open("/etc/ssl/certs/ca-certificates.crt", "rb") as handle:
        system = handle.read()
    assert k8s_pki.bundle_problem(system) is None
    # what update-ca-certificates makes of an anchor ending in an unterminated block
    broken = system + (sets["a"]["ca.crt"] + UNTERMINATED + sets["b"]["ca.crt"]).encode()
    assert "is not terminated before the next one starts" in k8s_pki.bundle_problem(broken)
    assert "not terminated (no END line)" in k8s_pki.bundle_problem(system + UNTERMINATED.encode())
    garbage = system + b"-----BEGIN CERTIFICATE-----\nZZZZ\n-----END CERTIFICATE-----\n"
    assert "is not a certificate that parses" in k8s_pki.bundle_problem(garbage)
    assert k8s_pki.bundle_problem(b"") == "it holds no certificate"
    # RedHat's comments between blocks are fine
    assert k8s_pki.bundle_problem(b"# a comment\n" + sets["a"]["ca.crt"].encode()) is None
