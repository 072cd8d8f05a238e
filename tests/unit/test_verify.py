"""verify's comparison, on its own: what a minion reported against the master's set.

The "observed" dicts have the shape the runner's probe returns (see
kubernetes/files/verify-probe.json.jinja); the daemon test in tests/integration produces
them for real.  Here each decision is pinned with a small, exact case.
"""

import base64
import datetime
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from support import k8s_pki

NOW = datetime.datetime.now(datetime.timezone.utc)
ROOT = "/h"


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    pki = tmp_path_factory.mktemp("pki")
    k8s_pki.ensure_set(pki, "default", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    return pki / "default"


@pytest.fixture(scope="module")
def reference(master):
    return k8s_pki.verify_reference(str(master))


def cert_info(data, pillar, path, masters_only=False):
    return {
        "path": path,
        "pillar": pillar,
        "masters_only": masters_only,
        "exists": True,
        "sha256": hashlib.sha256(data).hexdigest(),
        "base64": base64.encodebytes(data).decode(),
    }


def key_info(data, pillar, path, masters_only=False):
    return {
        "path": path,
        "pillar": pillar,
        "masters_only": masters_only,
        "exists": True,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def observed_from(master, server=True):
    """What a correctly laid-down minion reports (a master with server=True)."""
    read = {name: (master / name).read_bytes() for name in k8s_pki.PILLAR_FILES.values()}
    files = {
        "ca.crt": cert_info(read["ca.crt"], "ca.crt", f"{ROOT}/srv/kubernetes/ca.crt"),
        "kubecfg.crt": cert_info(read["kubecfg.crt"], "kubecfg.crt", f"{ROOT}/k/kubecfg.crt"),
        "kubecfg.key": key_info(read["kubecfg.key"], "kubecfg.key", f"{ROOT}/k/kubecfg.key"),
        "kubelet-ca.crt": cert_info(read["ca.crt"], "ca.crt", f"{ROOT}/var/lib/kubelet/ca.crt"),
        "trust-anchor": cert_info(read["ca.crt"], "ca.crt", f"{ROOT}/anchor/kubernetes-ca.crt"),
        "server.cert": {"path": f"{ROOT}/k/server.cert", "pillar": "server.cert", "exists": False},
        "server.key": {"path": f"{ROOT}/k/server.key", "pillar": "server.key", "exists": False},
    }
    for ident in ("server.cert", "server.key"):
        files[ident]["masters_only"] = True
    given = ["ca.crt", "kubecfg.crt", "kubecfg.key"]
    if server:
        files["server.cert"] = cert_info(
            read["server.crt"], "server.cert", f"{ROOT}/k/server.cert", True
        )
        files["server.key"] = key_info(
            read["server.key"], "server.key", f"{ROOT}/k/server.key", True
        )
        given += ["server.cert", "server.key"]
    return {
        "pillar": "kubernetes:certs",
        "given": given,
        "files": files,
        "link": {
            "path": f"{ROOT}/etc/ssl/certs/kubernetes.pem",
            "expected": files["trust-anchor"]["path"],
            "is_link": True,
            "exists": True,
            "target": files["trust-anchor"]["path"],
        },
        "bundle": {"path": f"{ROOT}/bundle.crt", "exists": True, "holds": [True]},
    }


def by_id(checks):
    return {c["id"]: c for c in checks}


def test_consistent_master_and_node(master, reference):
    checks = by_id(k8s_pki.verify_host(observed_from(master), reference, NOW))
    assert {i: c["status"] for i, c in checks.items()} == {
        "ca.crt": "match",
        "kubecfg.crt": "match",
        "kubecfg.key": "match",
        "kubelet-ca.crt": "match",
        "trust-anchor": "match",
        "server.cert": "match",
        "server.key": "match",
        "trust-link": "match",
        "trust-bundle": "match",
    }
    node = by_id(k8s_pki.verify_host(observed_from(master, server=False), reference, NOW))
    assert node["server.cert"]["status"] == "absent"
    assert node["server.key"]["status"] == "absent"
    assert all(c["status"] in k8s_pki.VERIFY_OK for c in node.values())


def test_a_key_in_other_bytes_but_the_same_key_matches(master, reference):
    seen = observed_from(master)
    info = seen["files"]["server.key"]
    info["sha256"] = "0" * 64  # e.g. written with other line breaks
    key = k8s_pki.load_key((master / "server.key").read_bytes())
    info["public_key"] = (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    assert by_id(k8s_pki.verify_host(seen, reference, NOW))["server.key"]["status"] == "match"


def test_other_key_matching_its_own_other_cert_differs(master, reference, tmp_path):
    other = tmp_path / "pki"
    k8s_pki.ensure_set(other, "x", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    seen = observed_from(master)
    crt, key = (other / "x/kubecfg.crt").read_bytes(), (other / "x/kubecfg.key").read_bytes()
    seen["files"]["kubecfg.crt"] = cert_info(crt, "kubecfg.crt", f"{ROOT}/k/kubecfg.crt")
    seen["files"]["kubecfg.key"] = key_info(key, "kubecfg.key", f"{ROOT}/k/kubecfg.key")
    public = k8s_pki.load_key(key).public_key()
    seen["files"]["kubecfg.key"]["public_key"] = public.public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode()
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["kubecfg.crt"]["status"] == "differs"
    assert checks["kubecfg.key"]["status"] == "differs"  # a pair, just not the master's
    assert reference["kubecfg.key"]["public_key"] in checks["kubecfg.key"]["detail"]


def test_key_without_public_key_is_unreadable(master, reference):
    seen = observed_from(master)
    seen["files"]["server.key"]["sha256"] = "f" * 64
    seen["files"]["server.key"]["public_key_error"] = "x509.get_public_key failed"
    check = by_id(k8s_pki.verify_host(seen, reference, NOW))["server.key"]
    assert check["status"] == "unreadable"
    assert "x509.get_public_key failed" in check["detail"]


def test_garbage_certificate_is_unreadable(master, reference):
    seen = observed_from(master)
    seen["files"]["ca.crt"]["base64"] = base64.encodebytes(b"\x00garbage").decode()
    check = by_id(k8s_pki.verify_host(seen, reference, NOW))["ca.crt"]
    assert check["status"] == "unreadable"


def test_missing_where_expected_absent_where_not(master, reference):
    seen = observed_from(master)
    seen["files"]["kubelet-ca.crt"] = {
        "path": "/h/var/lib/kubelet/ca.crt",
        "pillar": "ca.crt",
        "masters_only": False,
        "exists": False,
    }
    seen["files"]["server.key"]["exists"] = False
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["kubelet-ca.crt"]["status"] == "missing"
    assert checks["server.key"]["status"] == "missing"  # its pillar gives it: a master
    node = observed_from(master, server=False)
    assert by_id(k8s_pki.verify_host(node, reference, NOW))["server.key"]["status"] == "absent"


def test_masters_only_unknown_goes_by_pillar(master, reference):
    """A formula map without masters_only: a file is expected where pillar gives it."""
    seen = observed_from(master, server=False)
    for info in seen["files"].values():
        info.pop("masters_only", None)
    seen["files"]["kubelet-ca.crt"]["exists"] = False
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["kubelet-ca.crt"]["status"] == "missing"
    assert checks["server.cert"]["status"] == "absent"


def test_no_pillar_is_a_problem(master, reference):
    seen = observed_from(master, server=False)
    seen["given"] = []
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["pillar"]["status"] == "no pillar"
    # Files every minion gets are still compared; masters-only ones are not expected.
    assert checks["kubecfg.key"]["status"] == "match"
    assert checks["server.key"]["status"] == "absent"


def test_link_and_bundle(master, reference):
    seen = observed_from(master)
    seen["link"] = {**seen["link"], "is_link": False, "exists": True, "target": None}
    seen["bundle"] = {**seen["bundle"], "holds": [False]}
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["trust-link"]["status"] == "differs"
    assert "not a symlink" in checks["trust-link"]["detail"]
    assert checks["trust-bundle"]["status"] == "differs"
    assert reference["ca.crt"]["fingerprints"][0] in checks["trust-bundle"]["detail"]
    seen["link"] = {**seen["link"], "exists": False}
    seen["bundle"] = {**seen["bundle"], "exists": False, "holds": []}
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["trust-link"]["status"] == "missing"
    assert checks["trust-bundle"]["status"] == "missing"


def test_bundle_pattern_finds_the_ca_whatever_the_line_breaks(master):
    import re

    ca = k8s_pki.load_cert((master / "ca.crt").read_bytes())
    pattern = re.compile(k8s_pki.bundle_pattern(ca))
    der64 = base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode()
    wrapped76 = "\n".join(der64[i : i + 76] for i in range(0, len(der64), 76))
    for text in ((master / "ca.crt").read_text(), wrapped76, der64):
        assert pattern.search("other stuff\n" + text + "\n-----END CERTIFICATE-----\n")
    assert not pattern.search(der64[:-8])


def test_expired_wins_over_match_and_says_if_it_also_differs(master, reference):
    later = NOW + datetime.timedelta(days=400)  # every leaf expired by then
    checks = by_id(k8s_pki.verify_host(observed_from(master), reference, later))
    assert checks["kubecfg.crt"]["status"] == "expired"
    assert "differs" not in checks["kubecfg.crt"]["detail"]
    assert checks["ca.crt"]["status"] == "match"


def test_summary_line_counts_minions_and_paths():
    hosts = {
        "a": {"status": "ok", "checks": [{"status": "match"}, {"status": "absent"}]},
        "b": {"status": "problems", "checks": [{"status": "match"}, {"status": "differs"}]},
        "c": {"status": "no answer", "error": "did not answer"},
    }
    summary, line = k8s_pki.verify_summary(hosts)
    assert summary["minions"] == {"consistent": 1, "with problems": 1, "not answering": 1}
    assert summary["problems"] == ["b", "c"]
    assert line == (
        "3 minion(s): 1 consistent, 1 with problems, 1 not answering; "
        "paths: 1 absent, 1 differs, 2 match; check b, c"
    )


def test_reference_refuses_an_incomplete_set(tmp_path):
    with pytest.raises(k8s_pki.SetError, match="no certificate set here"):
        k8s_pki.verify_reference(str(tmp_path / "none"))
    k8s_pki.ensure_set(tmp_path, "d", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    (tmp_path / "d/server.key").unlink()
    with pytest.raises(k8s_pki.SetError, match=r"server\.key: missing on the master"):
        k8s_pki.verify_reference(str(tmp_path / "d"))


# --------------------------------------------------------------------------
# A CA rotation under way: ca.crt is a bundle on the master
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rotating(tmp_path_factory):
    """A set in each rotation state: {state: folder copy}."""
    import shutil

    pki = tmp_path_factory.mktemp("rot")
    specs = k8s_pki.seed_specs()
    k8s_pki.ensure_set(pki, "r", specs, key_type="ecdsa-p256")
    out = {"idle": tmp_path_factory.mktemp("idle")}
    shutil.copytree(pki / "r", out["idle"], dirs_exist_ok=True)
    stages = (("prepare", "prepared"), ("trust", "trusted"), ("reissue", "reissued"))
    for stage, state in (*stages, ("finish", "finished")):
        k8s_pki.rotate_ca(pki, "r", specs, stage)
        out[state] = tmp_path_factory.mktemp(state)
        shutil.copytree(pki / "r", out[state], dirs_exist_ok=True)
    return out


def test_a_bundle_laid_down_matches(rotating):
    for state in ("trusted", "reissued"):
        reference = k8s_pki.verify_reference(str(rotating[state]))
        assert len(reference["ca.crt"]["fingerprints"]) == 2
        assert len(reference["ca.crt"]["patterns"]) == 2
        seen = observed_from(rotating[state])
        seen["bundle"]["holds"] = [True, True]
        checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
        assert all(c["status"] in k8s_pki.VERIFY_OK for c in checks.values()), checks


def test_a_host_without_the_bundle_yet_differs_and_says_which_ca_it_lacks(rotating):
    reference = k8s_pki.verify_reference(str(rotating["trusted"]))
    seen = observed_from(rotating["idle"])  # not rolled out yet: the old CA alone
    seen["bundle"]["holds"] = [True, False]
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    new = reference["ca.crt"]["fingerprints"][1]
    for ident in ("ca.crt", "kubelet-ca.crt", "trust-anchor"):
        assert checks[ident]["status"] == "differs"
        assert checks[ident]["detail"].startswith(f"lacks {new[:23]}...")
    assert checks["trust-bundle"]["status"] == "differs"
    assert new in checks["trust-bundle"]["detail"]
    assert checks["kubecfg.crt"]["status"] == "match"  # the leaves did not change


def test_after_finish_a_host_still_holding_the_old_ca_differs(rotating):
    reference = k8s_pki.verify_reference(str(rotating["finished"]))
    seen = observed_from(rotating["reissued"])  # not rolled out yet: ca.crt still new + old
    old = k8s_pki.verify_reference(str(rotating["idle"]))["ca.crt"]["fingerprints"][0]
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["ca.crt"]["status"] == "differs"
    assert (
        f"still holds {old[:23]}..., which the master's no longer does"
        in (checks["ca.crt"]["detail"])
    )
    assert checks["server.cert"]["status"] == "match"


# --------------------------------------------------------------------------
# Issue 15: what a role must never hold; issue 10: malformed answers
# --------------------------------------------------------------------------


def test_a_node_holding_the_apiserver_key_is_flagged_whatever_its_pillar_says(master, reference):
    """The seed's pillar, left beside the ext_pillar, gives a node the server pair:
    pillar and disk agree with each other and with the master, yet it is wrong."""
    seen = observed_from(master, server=True)
    seen["role"] = "node"
    seen["service_account"] = {"path": "/h/k/sa.key", "exists": True, "given": ["sa.key"]}
    checks = by_id(k8s_pki.verify_host(seen, reference, NOW))
    assert checks["role"]["status"] == "forbidden"
    assert "yet its pillar gives server.key, sa.key" in checks["role"]["detail"]
    assert checks["server.key"]["status"] == "forbidden"
    assert checks["sa.key"]["status"] == "forbidden"
    assert checks["server.cert"]["status"] == "match"  # a certificate is public
    assert checks["kubecfg.key"]["status"] == "match"  # the seed gives every node kubecfg
    # the same answer from a master, or with no role said, is fine
    for role in ("master", None):
        seen["role"] = role
        statuses = {c["status"] for c in k8s_pki.verify_host(seen, reference, NOW)}
        assert statuses <= set(k8s_pki.VERIFY_OK), statuses


def test_a_node_without_forbidden_keys_is_consistent(master, reference):
    seen = observed_from(master, server=False)
    seen["role"] = "node"
    seen["service_account"] = {"path": "/h/k/sa.key", "exists": False, "given": []}
    statuses = {c["status"] for c in k8s_pki.verify_host(seen, reference, NOW)}
    assert statuses <= set(k8s_pki.VERIFY_OK), statuses


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda s: "a string", "answer: expected a mapping, got str"),
        (lambda s: s.update(files=["ca.crt"]), "answer.files: unexpected list"),
        (
            lambda s: s["files"].update({"ca.crt": "x"}),
            "answer.files.ca.crt: expected a mapping, got str",
        ),
        (lambda s: s["files"]["ca.crt"].pop("path") and None, "answer.files.ca.crt.path: missing"),
        (
            lambda s: s["files"]["ca.crt"].update(exists="yes"),
            "answer.files.ca.crt.exists: unexpected str",
        ),
        (lambda s: s.update(given=[1]), "answer.given: not a list of pillar keys"),
        (lambda s: s.update(link=[1]), "answer.link: unexpected list"),
        (lambda s: s["bundle"].update(holds=5), "answer.bundle.holds: unexpected int"),
        (
            lambda s: s.update(service_account={"exists": True}),
            "answer.service_account.path: missing",
        ),
    ],
)
def test_a_malformed_answer_is_named(master, damage, problem):
    seen = observed_from(master)
    assert k8s_pki.probe_answer_problem(seen) is None
    damaged = damage(seen)
    assert k8s_pki.probe_answer_problem(damaged if isinstance(damaged, str) else seen) == problem
