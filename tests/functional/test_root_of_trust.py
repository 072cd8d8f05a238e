"""Issue 10, items 7-11: inputs, issuance and renewal that must not subvert or break the set.

Everything goes through the real ``salt-run`` (exit status, what it prints,
what lands on disk), and ``openssl`` checks what the runner claims:

- whole-string checks: a trailing newline, a scoped IPv6 address, non-ASCII
  digits, ``1_000``, too many positional arguments - each refused with one
  readable line, a non-zero exit and nothing written;
- a leaf never outlives its CA (capped, and the return says so), and
  ``check_expiration`` flags an existing set where one does;
- an external CA without a Subject Key Identifier signs leaves that
  ``openssl verify`` accepts;
- renewal keeps ``server.key`` (it signs the service-account tokens when the
  set has no ``sa.key``) unless ``rotate_token_key=True``;
- ``rotate_ca`` finish/abort say that ``ca.crt`` changed.
"""

import datetime
import gc
import json
import logging
import warnings

import pytest
import salt.minion  # noqa: F401  (state.orchestrate_show_sls uses salt.minion.MasterMinion)
import support
from cryptography import x509
from support import k8s_pki, openssl, salt_run, snapshot

MASTERS = "masters=[{name: m1, ip: 192.0.2.11}]"


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """A master config with a seed set ``default`` already there, and its pki root."""
    base = tmp_path_factory.mktemp("trust")
    conf = support.write_master_config(base)
    with support.event_sink(conf):
        first = salt_run(conf, "k8s-helper.generate_certs")
        assert first.returncode == 0, first.stderr
        yield conf, base / "pki"


def run(conf, fun, *args):
    proc = salt_run(conf, fun, *args)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


# -- item 7: whole-string checks ------------------------------------------------

# (function, arguments as typed, what the one-line error must start with)
BAD = [
    ("generate_certs", ['api_server_fqdn="kubernetes.api\\n"'], "api_server_fqdn: "),
    ("generate_certs", ['cluster_tag="prod\\n"'], "cluster_tag: "),
    ("generate_certs", ['cluster_domain="cluster.local\\n"'], "cluster_domain: "),
    ("generate_certs", ['extra_sans=["k8s-master-1\\n"]'], "extra_sans: "),
    ("generate_certs", ['api_service_address="10.254.0.1\\n"'], "api_service_address: "),
    ("generate_certs", ["api_service_address=fe80::1%eth0"], "api_service_address: "),
    ("generate_certs", ["extra_sans=[fe80::1%eth0]"], "extra_sans: "),
    ("generate_certs", ["days=٣٦٥"], "days: "),
    ("generate_certs", ["days=1_000"], "days: "),
    ("generate_certs", ["ca_days=٣٦٥٠"], "ca_days: "),
    ("generate_certs", ['days=" 365"'], "days: "),
    ("renew", ["days=1_000"], "days: "),
    ("renew", ["threshold_days=٩٠"], "threshold_days: "),
    ("renew", ['cluster_tag="default\\n"'], "cluster_tag: "),
    ("check_expiration", ["threshold_days=1_000"], "threshold_days: "),
    ("rotate_ca", ["ca_days=٣٦٥٠"], "ca_days: "),
    ("verify", ["tgt=nobody", 'timeout="5\\n"'], "timeout: "),
    ("verify", ["tgt=nobody", "timeout=٥"], "timeout: "),
    (
        "generate_certs",
        ["profile=kubeadm", "cluster_tag=kb", 'masters=[{name: "m1\\n", ip: 192.0.2.11}]'],
        "masters[0].name: ",
    ),
    (
        "generate_certs",
        ["profile=kubeadm", "cluster_tag=kb", "masters=[{name: m1, ip: fe80::1%eth0}]"],
        "masters[0].ip: ",
    ),
    (
        "generate_certs",
        ["profile=kubeadm", "cluster_tag=kb", MASTERS, 'nodes=[{name: "n1\\n"}]'],
        "nodes[0].name: ",
    ),
    (
        "generate_certs",
        ["profile=kubeadm", "cluster_tag=kb", MASTERS, 'control_plane_endpoint="lb.example\\n"'],
        "control_plane_endpoint: ",
    ),
    (
        "generate_certs",
        ["profile=kubeadm", "cluster_tag=kb", MASTERS, "control_plane_endpoint=fe80::1%eth0"],
        "control_plane_endpoint: ",
    ),
    (
        "generate_certs",
        ["profile=kubeadm", "cluster_tag=kb", MASTERS, "control_plane_endpoint=lb:٦٤٤٣"],
        "control_plane_endpoint: ",
    ),
    (
        "generate_certs",
        ["profile=kubeadm", "cluster_tag=kb", 'pillar_minion="m1\\n"'],
        "pillar_minion: ",
    ),
    # too many positional arguments: named, not an internal TypeError
    (
        "check_expiration",
        ["default", "90", "False", "True", "/nowhere/r.html", "extra"],
        "too many positional",
    ),
    ("renew", ["default", "server", "False", "", "365", "", "False", "extra"], "too many"),
    ("rotate_ca", ["default", "status", "True", "", "3650", "365", "extra"], "too many"),
    ("generate_certs", [f"a{i}" for i in range(16)], "too many positional arguments"),
    ("verify", ["default", "tgt=x", "cluster_tag=default"], "verify: "),
]


@pytest.mark.parametrize(
    "fun, args, message", BAD, ids=[f"{f} {' '.join(a)}"[:60] for f, a, _ in BAD]
)
def test_bad_input_is_refused_with_one_line_and_nothing_written(cli, fun, args, message):
    conf, pki = cli
    before = snapshot(pki)
    proc, data = run(conf, f"k8s-helper.{fun}", *args)
    assert proc.returncode != 0, proc.stdout
    assert data["error"].startswith(message), data["error"]
    assert "\n" not in data["error"] and "internal error" not in data["error"]
    assert snapshot(pki) == before


def test_too_many_positional_arguments_names_the_parameters(cli):
    conf, _ = cli
    args = ("default", "90", "False", "True", "/nowhere/r.html", "x")
    _, data = run(conf, "k8s-helper.check_expiration", *args)
    assert data["error"] == (
        "too many positional arguments: check_expiration takes at most 5 (cluster_tag, "
        "threshold_days, fire_event, table, html), got 6; name them, e.g. cluster_tag=..."
    )


def test_positional_arguments_that_fit_still_work(cli):
    conf, _ = cli
    proc, data = run(conf, "k8s-helper.check_expiration", "default", "30", "False", "False")
    assert proc.returncode == 0 and data["renew_before_days"] == 30


# -- item 8: validity inside the CA's --------------------------------------------


def enddate(path):
    return openssl("x509", "-noout", "-enddate", "-in", path).stdout.strip()


def test_leaves_are_capped_at_the_ca_end_and_say_so(cli):
    conf, pki = cli
    proc, data = run(conf, "k8s-helper.generate_certs", "cluster_tag=short", "ca_days=1")
    assert proc.returncode == 0, proc.stdout
    folder = pki / "short"
    for leaf in ("server.crt", "kubecfg.crt"):
        assert enddate(folder / leaf) == enddate(folder / "ca.crt"), leaf
        note = data["files"][leaf]["capped"]
        ca_end = data["files"]["ca.crt"]["not_after"]
        assert note.startswith(f"valid until ca.crt ends ({ca_end}), not until "), note
        openssl("verify", "-CAfile", folder / "ca.crt", folder / leaf)
    assert "capped" not in data["files"]["ca.crt"]
    # A capped leaf already ends with its CA: the next run changes nothing.
    before = snapshot(folder)
    proc, again = run(conf, "k8s-helper.generate_certs", "cluster_tag=short", "ca_days=1")
    assert proc.returncode == 0 and again["changed"] is False
    assert snapshot(folder) == before
    # Renewal near the CA's end works: capped again, not refused.
    proc, renewed = run(conf, "k8s-helper.renew", "cluster_tag=short", "certs=server")
    assert proc.returncode == 0, proc.stdout
    assert "capped" in renewed["files"]["server.crt"]
    assert enddate(folder / "server.crt") == enddate(folder / "ca.crt")
    openssl("verify", "-CAfile", folder / "ca.crt", folder / "server.crt")


def test_days_beyond_the_ca_are_capped(cli):
    conf, pki = cli
    proc, data = run(conf, "k8s-helper.generate_certs", "cluster_tag=long", "days=36500")
    assert proc.returncode == 0, proc.stdout
    assert enddate(pki / "long/server.crt") == enddate(pki / "long/ca.crt")
    assert "(36500 days asked)" in data["files"]["server.crt"]["capped"]


def make_ca(folder, name, days, ski=True):
    """An external CA by openssl: ``<name>.crt``/``.key`` in ``folder`` (no SKI if asked)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    ext = [] if ski else ["-addext", "subjectKeyIdentifier=none"]
    ext += ["-addext", "basicConstraints=critical,CA:TRUE"]
    ext += ["-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"]
    openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={name}-external", "-days", days,
            "-out", crt, *ext)  # fmt: skip
    return crt, key


def test_check_expiration_flags_a_ca_ending_before_its_leaves(cli, tmp_path):
    conf, pki = cli
    folder = pki / "old"
    crt, key = make_ca(folder, "ca", 2)
    for leaf in ("server", "kubecfg"):  # an older set: leaves issued for 30 days
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={leaf}",
                "-keyout", folder / f"{leaf}.key", "-out", tmp_path / f"{leaf}.csr")  # fmt: skip
        openssl("x509", "-req", "-in", tmp_path / f"{leaf}.csr", "-CA", crt, "-CAkey", key,
                "-CAcreateserial", "-CAserial", tmp_path / "serial", "-days", "30",
                "-out", folder / f"{leaf}.crt")  # fmt: skip
    proc, data = run(conf, "k8s-helper.check_expiration", "cluster_tag=old", "table=False")
    assert proc.returncode == 0, proc.stdout
    entries = {entry["name"]: entry for entry in data["certificates"]}
    assert entries["server.crt"]["notice"].startswith("outlives its CA (ca.crt): refused from ")
    assert entries["ca.crt"]["notice"] == "ends before leaves it signs: kubecfg.crt, server.crt"
    assert len(data["notices"]) == 3
    table = salt_run(conf, "k8s-helper.check_expiration", "cluster_tag=old", out=None)
    assert "notice: ca.crt: ends before leaves it signs" in table.stdout
    # A set made by generate_certs has none.
    _, fine = run(conf, "k8s-helper.check_expiration", "table=False")
    assert "notices" not in fine and not any("notice" in e for e in fine["certificates"])


def test_kubeadm_leaves_of_a_short_lived_external_ca_are_capped(cli):
    conf, pki = cli
    crt, _ = make_ca(pki / "kshort", "ca", 20)
    proc, data = run(
        conf, "k8s-helper.generate_certs", "profile=kubeadm", "cluster_tag=kshort", MASTERS
    )
    assert proc.returncode == 0, proc.stdout
    files = data["files"]
    assert files["ca.crt"]["external"] is True
    for name in ("apiserver-kubelet-client.crt", "hosts/m1/apiserver.crt", "admin.conf"):
        assert files[name]["capped"].startswith("valid until ca.crt ends"), name
    assert enddate(pki / "kshort/hosts/m1/apiserver.crt") == enddate(crt)
    # the set's own CAs live longer: their leaves are not capped
    for name in ("front-proxy-client.crt", "hosts/m1/etcd/server.crt"):
        assert "capped" not in files[name], name


# -- item 9: an external CA without Subject Key Identifier -----------------------


def aki(path):
    text = openssl("x509", "-noout", "-text", "-in", path).stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "Authority Key Identifier" in line)
    return lines[at + 1].strip().removeprefix("keyid:")


@pytest.mark.parametrize("profile", ["seed", "kubeadm"])
def test_external_ca_without_ski_signs_verifiable_leaves(cli, profile):
    conf, pki = cli
    tag = f"noski-{profile}"
    crt, _ = make_ca(pki / tag, "ca", 3650, ski=False)
    assert "Subject Key Identifier" not in openssl("x509", "-noout", "-text", "-in", crt).stdout
    extra = [MASTERS] if profile == "kubeadm" else []
    proc, data = run(
        conf, "k8s-helper.generate_certs", f"profile={profile}", f"cluster_tag={tag}", *extra
    )
    assert proc.returncode == 0, proc.stdout
    assert data["files"]["ca.crt"]["action"] == "reused"
    leaf = pki / tag / ("server.crt" if profile == "seed" else "hosts/m1/apiserver.crt")
    openssl("verify", "-CAfile", crt, leaf)  # -x509_strict would fault the CA itself
    # The AKI is the CA's public key hashed as RFC 5280 says (what a SKI would hold).
    ca_cert = k8s_pki.load_cert(crt.read_bytes())
    expected = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key()).digest
    assert aki(leaf).replace(":", "").lower() == expected.hex()


# -- item 10: the token-signing key ----------------------------------------------


def pubkey_of_cert(path):
    return openssl("x509", "-noout", "-pubkey", "-in", path).stdout


def pubkey_of_key(path):
    return openssl("pkey", "-pubout", "-in", path).stdout


def test_renew_server_keeps_the_token_signing_key(cli):
    conf, pki = cli
    assert run(conf, "k8s-helper.generate_certs", "cluster_tag=tok")[0].returncode == 0
    folder = pki / "tok"
    key, cert = (folder / "server.key").read_bytes(), (folder / "server.crt").read_bytes()
    proc, data = run(conf, "k8s-helper.renew", "cluster_tag=tok", "certs=server")
    assert proc.returncode == 0, proc.stdout
    assert (folder / "server.key").read_bytes() == key
    assert (folder / "server.crt").read_bytes() != cert
    assert pubkey_of_cert(folder / "server.crt") == pubkey_of_key(folder / "server.key")
    assert data["files"]["server.crt"]["action"] == "reissued"
    assert data["files"]["server.key"]["action"] == "reused"
    assert "warnings" not in data
    # Every leaf (the default): kubecfg gets a new key, server keeps its own.
    kubecfg = (folder / "kubecfg.key").read_bytes()
    proc, data = run(conf, "k8s-helper.renew", "cluster_tag=tok")
    assert proc.returncode == 0
    assert (folder / "server.key").read_bytes() == key
    assert (folder / "kubecfg.key").read_bytes() != kubecfg
    # A new key of another type would need a new key: refused, nothing written.
    before = snapshot(pki)
    proc, data = run(conf, "k8s-helper.renew", "cluster_tag=tok", "key_type=ecdsa-p256")
    assert proc.returncode == 2 and data["error"].startswith("key_type: server.key is kept")
    assert snapshot(pki) == before


def test_rotate_token_key_replaces_it_and_warns(cli):
    conf, pki = cli
    assert run(conf, "k8s-helper.generate_certs", "cluster_tag=rot")[0].returncode == 0
    folder = pki / "rot"
    key = (folder / "server.key").read_bytes()
    proc, data = run(
        conf, "k8s-helper.renew", "cluster_tag=rot", "certs=server", "rotate_token_key=True"
    )
    assert proc.returncode == 0, proc.stdout
    assert (folder / "server.key").read_bytes() != key
    assert pubkey_of_cert(folder / "server.crt") == pubkey_of_key(folder / "server.key")
    (warning,) = data["warnings"]
    assert warning.startswith("server.key is new and it also signs the cluster's service-account")
    assert "reissue them" in warning
    # Not renewing server, it has nothing to rotate.
    proc, data = run(
        conf, "k8s-helper.renew", "cluster_tag=rot", "certs=kubecfg", "rotate_token_key=True"
    )
    assert proc.returncode == 2 and data["error"].startswith("rotate_token_key: only with server")


def test_with_sa_key_server_key_is_an_ordinary_key(cli):
    conf, pki = cli
    proc, _ = run(conf, "k8s-helper.generate_certs", "cluster_tag=sa", "service_account_key=True")
    assert proc.returncode == 0
    folder = pki / "sa"
    key, sa = (folder / "server.key").read_bytes(), (folder / "sa.key").read_bytes()
    proc, data = run(conf, "k8s-helper.renew", "cluster_tag=sa", "certs=server")
    assert proc.returncode == 0, proc.stdout
    assert (folder / "server.key").read_bytes() != key  # sa.key signs the tokens
    assert (folder / "sa.key").read_bytes() == sa
    assert "warnings" not in data
    proc, data = run(
        conf, "k8s-helper.renew", "cluster_tag=sa", "certs=server", "rotate_token_key=True"
    )
    assert proc.returncode == 2 and "signs service-account tokens with sa.key" in data["error"]


def orch_renew_step(conf):
    """The salt.runner step of kubernetes.orch.renew, as Salt renders it."""
    runner = support.load_runners(conf)["state.orchestrate_show_sls"]
    ret = runner("kubernetes.orch.renew", pillar={"k8s_renew": {"cluster_tag": "orch"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    (out,) = ret.values()
    body = out["kubernetes-orch-renew-due-leaves-salt-runner"]["salt"]
    args = {}
    for item in body:
        if isinstance(item, dict):
            args.update(item)
    args.pop("order", None)
    return args.pop("name"), args


def test_orch_renew_keeps_the_token_signing_key(tmp_path, caplog):
    """What the expiry reactor's orchestration runs, with its own arguments, keeps server.key."""
    base = tmp_path
    pillar = support.write_pillar(base / "pillar", {})
    conf = support.write_master_config(
        base,
        file_roots={"base": [str(support.formula_root(base))]},
        pillar_roots={"base": [str(pillar)]},
    )
    # quiet Salt's rendering for this test alone (a level left on the "salt"
    # logger would hide later tests' debug records in this worker)
    caplog.set_level(logging.ERROR, logger="salt")
    fun, args = orch_renew_step(conf)
    assert fun == "k8s-helper.renew" and args == {"cluster_tag": "orch", "threshold_days": 90}
    with support.event_sink(conf):
        # a set made 300 days ago: its leaves are due within the orchestration's 90 days
        made = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=300)
        k8s_pki.ensure_set(str(base / "pki"), "orch", k8s_pki.seed_specs(), now=made)
        key = (base / "pki/orch/server.key").read_bytes()
        proc, data = run(conf, fun, *(f"{k}={v}" for k, v in args.items()))
    assert proc.returncode == 0, proc.stdout
    assert sorted(data["renewed"]) == ["kubecfg", "server"]
    assert (base / "pki/orch/server.key").read_bytes() == key
    assert "warnings" not in data


# -- item 11: rotate_ca finish / abort say ca.crt changed -------------------------


def stage(conf, tag, name):
    proc, data = run(conf, "k8s-helper.rotate_ca", f"cluster_tag={tag}", f"stage={name}")
    assert proc.returncode == 0, proc.stdout
    return data["message"]


def test_rotation_finish_and_abort_say_ca_crt_changed(cli):
    conf, _ = cli
    for tag in ("fin", "abt", "abp"):
        assert run(conf, "k8s-helper.generate_certs", f"cluster_tag={tag}")[0].returncode == 0
    for name in ("prepare", "trust", "reissue"):
        stage(conf, "fin", name)
    message = stage(conf, "fin", "finish")
    assert message == (
        "stage=finish: reissued -> idle; ca.crt changed (it now holds the new CA alone): hand "
        "it out to every host and restart what reads it (kubernetes.orch.rotate_ca does both)"
    )
    stage(conf, "abt", "prepare")
    stage(conf, "abt", "trust")
    message = stage(conf, "abt", "abort")
    assert message.startswith("stage=abort: trusted -> idle; ca.crt changed (it now holds the ")
    assert "hand it out to every host" in message
    # Abandoned before any host saw the new CA: ca.crt did not change.
    stage(conf, "abp", "prepare")
    assert (
        stage(conf, "abp", "abort") == "stage=abort: prepared -> idle; nothing to do on the hosts"
    )
