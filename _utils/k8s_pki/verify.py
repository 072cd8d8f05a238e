"""Master-side comparison of what the minions hold with the set."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os

from cryptography.hazmat.primitives import serialization

from .checks import check_dns_name
from .crypto import days_left, fingerprint, iso_utc, load_certs, load_key, public_key_fingerprint
from .distribution import bundle_pattern
from .errors import InputError, PKIError, SetError
from .guard import check_store, lstat_or_none, read_set_file
from .manifest import host_role, read_manifest
from .profiles import (
    KEY_PAIRS,
    KUBEADM_ENROLLED_FILES,
    KUBEADM_HOSTS_DIR,
    PILLAR_FILES,
    ROLE_FORBIDDEN,
    kubeadm_host_files,
    role_forbidden,
)
from .signer import ca_key_files_elsewhere
from .store import read_file

#: statuses of verify_host that are not a problem
VERIFY_OK = ("match", "absent")


def verify_reference(directory, now=None):
    """What the master's set says, per pillar key: fingerprints, dates, public keys.

    Nothing here is secret: fingerprints of certificates, SHA-256 of files and
    of public keys.  ``ca_patterns`` are regexes a minion can search its trust
    bundle for (one per CA certificate of ``ca.crt``).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(f"{directory}: no certificate set here; run generate_certs first")
    ref = {}
    for pillar_key, filename in PILLAR_FILES.items():
        path = os.path.join(directory, filename)
        data = read_file(path)
        if data is None:
            raise SetError(f"{path}: missing on the master; run generate_certs")
        entry = {"path": path, "file_sha256": hashlib.sha256(data).hexdigest()}
        if pillar_key in KEY_PAIRS:
            key = load_key(data, path)
            entry["public_key"] = public_key_fingerprint(key.public_key())
        else:
            certs = load_certs(data, path)
            entry["fingerprints"] = [fingerprint(cert) for cert in certs]
            entry["public_key"] = public_key_fingerprint(certs[0].public_key())
            if pillar_key == "ca.crt":
                entry["patterns"] = [bundle_pattern(cert) for cert in certs]
        ref[pillar_key] = entry
    return ref


def _observed_certs(info):
    try:
        data = base64.b64decode(info.get("base64") or "", validate=False)
        return load_certs(data, info["path"]), ""
    except (PKIError, ValueError) as err:
        return None, str(err) if isinstance(err, PKIError) else "not base64"


def _short_fp(fp):
    return fp[:23] + "..." if fp else "?"


def _check_cert(info, ref, now):
    certs, error = _observed_certs(info)
    if certs is None:
        return "unreadable", error, {}
    seen = [fingerprint(cert) for cert in certs]
    extra = {"minion_sha256": seen, "master_sha256": ref["fingerprints"]}
    same = seen == ref["fingerprints"]
    compare = (
        ""
        if same
        else f"minion sha256 {', '.join(seen)}; master sha256 {', '.join(ref['fingerprints'])}"
    )
    if not same and (len(seen) > 1 or len(ref["fingerprints"]) > 1):
        # A CA bundle (a rotation under way): say what is missing or left over.
        lacks = [fp for fp in ref["fingerprints"] if fp not in seen]
        extra_cas = [fp for fp in seen if fp not in ref["fingerprints"]]
        parts = [f"lacks {_short_fp(fp)}" for fp in lacks]
        parts += [
            f"still holds {_short_fp(fp)}, which the master's no longer does" for fp in extra_cas
        ]
        if not parts:
            parts = ["the same certificates in another order"]
        compare = f"{'; '.join(parts)} ({compare})"
    dead = [cert for cert in certs if days_left(cert, now) <= 0]
    if dead:
        when = iso_utc(dead[0].not_valid_after_utc)
        detail = f"expired on {when}"
        if compare:
            detail += f"; differs from the master's: {compare}"
        return "expired", detail, extra
    if not same:
        return "differs", compare, extra
    return "match", f"sha256 {_short_fp(seen[0])}", extra


_ANSWER_FIELDS = {  # field -> (allowed types, required)
    "pillar": ((str,), False),
    "k8s_env": ((str, type(None)), False),
    "given": ((list,), False),
    "files": ((dict,), False),
    "link": ((dict, type(None)), False),
    "bundle": ((dict, type(None)), False),
    "role": ((str, type(None)), False),
    "service_account": ((dict, type(None)), False),
}


_FILE_FIELDS = {
    "path": ((str,), True),
    "pillar": ((str,), True),
    "exists": ((bool,), True),
    "masters_only": ((bool, type(None)), False),
    "sha256": ((str, type(None)), False),
    "base64": ((str, type(None)), False),
    "public_key": ((str,), False),
    "public_key_error": ((str,), False),
}


_LINK_FIELDS = {
    "path": ((str,), True),
    "expected": ((str,), False),
    "is_link": ((bool,), False),
    "exists": ((bool,), False),
    "target": ((str, type(None)), False),
}


_BUNDLE_FIELDS = {"path": ((str,), True), "exists": ((bool,), False), "holds": ((list,), False)}


_SA_FIELDS = {"path": ((str,), True), "exists": ((bool,), True), "given": ((list,), False)}


def _shape_problem(value, fields, where):
    if not isinstance(value, dict):
        return f"{where}: expected a mapping, got {type(value).__name__}"
    for name, (types, required) in fields.items():
        if name not in value:
            if required:
                return f"{where}.{name}: missing"
            continue
        if not isinstance(value[name], types):
            return f"{where}.{name}: unexpected {type(value[name]).__name__}"
    return None


def probe_answer_problem(observed):
    """What is malformed in one minion's answer to verify's probe, or None.

    A minion answers whatever it likes (a broken or hostile one too): its
    answer must have the probe's shape before anything is compared, so that
    one bad answer is reported for that host and the others are still checked.
    """
    problem = _shape_problem(observed, _ANSWER_FIELDS, "answer")
    if problem:
        return problem
    if not all(isinstance(key, str) for key in observed.get("given") or ()):
        return "answer.given: not a list of pillar keys"
    parts = [
        (info, _FILE_FIELDS, f"answer.files.{ident}")
        for ident, info in (observed.get("files") or {}).items()
    ]
    for section, fields in (
        ("link", _LINK_FIELDS),
        ("bundle", _BUNDLE_FIELDS),
        ("service_account", _SA_FIELDS),
    ):
        if observed.get(section) is not None:
            parts.append((observed[section], fields, f"answer.{section}"))
    return next((p for p in (_shape_problem(*part) for part in parts) if p), None)


def _role_checks(observed, add):
    """Flag what the host's role must never hold, whatever its pillar gives."""
    role = observed.get("role")
    if role not in ROLE_FORBIDDEN:
        return set()
    sa = observed.get("service_account") or {}
    given = set(observed.get("given") or ()) | set(sa.get("given") or ())
    wrong = role_forbidden(role, given)
    if wrong:
        add(
            "role",
            observed.get("pillar", "kubernetes:certs"),
            "forbidden",
            f"kubernetes:role is {role}, yet its pillar gives {', '.join(wrong)}, which a "
            f"{role} must never hold; take it out of this minion's pillar "
            "(docs/certs-states.md), then apply kubernetes.certs.present",
        )
    held = {
        info.get("pillar") for info in (observed.get("files") or {}).values() if info.get("exists")
    }
    if sa.get("exists"):
        held.add("sa.key")
    on_disk = set(role_forbidden(role, held))
    if "sa.key" in on_disk:
        add(
            "sa.key",
            sa.get("path"),
            "forbidden",
            f"a {role} must never hold sa.key (kubernetes:role is {role}); remove it",
        )
    return on_disk


def verify_host(observed, reference, now=None):
    """Compare what one minion reported with the master's reference.

    ``observed`` is what the runner's probe returned for the minion: its pillar
    keys (``given``), every file the formula lays down (``files``: id -> path,
    pillar key, exists, sha256, the base64 of certificates, the public key of
    keys whose file differs), the trust link and the bundle.  Returns a list of
    checks ``{id, path, status, detail}``; statuses: ``match``, ``absent`` (not
    expected, not there), ``differs``, ``missing``, ``expired``,
    ``key does not match cert``, ``unreadable``, ``unexpected`` (there, though
    this minion's pillar does not give it), ``no pillar``, ``forbidden`` (a key
    the minion's ``role`` must never hold, :data:`ROLE_FORBIDDEN`, given by its
    pillar or on its disk).  ``observed`` must have passed
    :func:`probe_answer_problem`.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    given = set(observed.get("given") or ())
    files = observed.get("files") or {}
    checks = []
    cert_public = {}  # pillar key -> public key fingerprint of the minion's certificate

    def add(ident, path, status, detail, **extra):
        checks.append({"id": ident, "path": path, "status": status, "detail": detail, **extra})

    if not given:
        add(
            "pillar",
            observed.get("pillar", "kubernetes:certs"),
            "no pillar",
            "this minion's pillar gives no certificates (not part of the cluster, "
            "or its pillar is stale: saltutil.refresh_pillar)",
        )
    forbidden = _role_checks(observed, add)

    # Certificates first: the keys are judged against them.
    ordered = sorted(files.items(), key=lambda kv: (kv[1].get("pillar") in KEY_PAIRS, kv[0]))
    for ident, info in ordered:
        pillar_key, path = info.get("pillar"), info.get("path")
        ref = reference.get(pillar_key)
        if pillar_key in forbidden and info.get("exists"):
            role = observed.get("role")
            add(
                ident,
                path,
                "forbidden",
                f"a {role} must never hold {pillar_key} (kubernetes:role is {role}), "
                "whatever its pillar says; remove it",
            )
            continue
        # The states lay a file down where pillar gives it, and all but the
        # masters-only ones (the apiserver's pair) on every minion; a map that
        # does not say (masters_only None) goes by pillar alone, and so does a
        # host that enrolls its pairs (``enrolled``: the runner saw its copies).
        everywhere = info.get("masters_only") is False and not observed.get("enrolled")
        expected = pillar_key in given or everywhere
        if not info.get("exists"):
            if expected:
                add(ident, path, "missing", f"expected: this minion's pillar gives {pillar_key}")
            else:
                add(ident, path, "absent", f"not expected: no {pillar_key} in this minion's pillar")
            continue
        if not expected:
            add(
                ident,
                path,
                "unexpected",
                f"present although this minion's pillar does not give {pillar_key}",
            )
            continue
        if ref is None:
            add(ident, path, "unexpected", f"{pillar_key}: not a file of the set")
            continue
        if pillar_key not in KEY_PAIRS:
            status, detail, extra = _check_cert(info, ref, now)
            if status != "unreadable":
                certs, _ = _observed_certs(info)
                cert_public.setdefault(pillar_key, public_key_fingerprint(certs[0].public_key()))
            add(ident, path, status, detail, **extra)
            continue
        # A private key: never read from the minion; its file hash, or the
        # public key the minion derives from it, is enough.
        if info.get("sha256") == ref["file_sha256"]:
            public = ref["public_key"]
        elif info.get("public_key"):
            try:
                loaded = serialization.load_pem_public_key(info["public_key"].encode())
                public = public_key_fingerprint(loaded)
            except ValueError:
                add(ident, path, "unreadable", "the minion's public key did not parse")
                continue
        else:
            reason = info.get("public_key_error") or "the minion could not read it"
            add(ident, path, "unreadable", f"not a usable private key ({reason})")
            continue
        same = public == ref["public_key"]
        paired = cert_public.get(KEY_PAIRS[pillar_key])
        if paired is not None and paired != public:
            add(
                ident,
                path,
                "key does not match cert",
                f"public key sha256 {_short_fp(public)} is not that of "
                f"{KEY_PAIRS[pillar_key]} ({_short_fp(paired)})",
            )
        elif same:
            add(ident, path, "match", f"public key sha256 {_short_fp(public)}")
        else:
            add(
                ident,
                path,
                "differs",
                f"minion public key sha256 {public}; master public key sha256 {ref['public_key']}",
            )

    link = observed.get("link")
    if link:
        path, target, want = link.get("path"), link.get("target"), link.get("expected")
        if link.get("is_link"):
            if target == want:
                add("trust-link", path, "match", f"-> {want}")
            else:
                add("trust-link", path, "differs", f"points to {target}, expected {want}")
        elif link.get("exists"):
            add("trust-link", path, "differs", f"not a symlink (expected a link to {want})")
        else:
            add("trust-link", path, "missing", f"expected a symlink to {want}")

    bundle = observed.get("bundle")
    if bundle:
        path = bundle.get("path")
        holds = bundle.get("holds") or []
        fps = reference.get("ca.crt", {}).get("fingerprints", [])
        if not bundle.get("exists"):
            add("trust-bundle", path, "missing", "the system trust bundle is not there")
        elif holds and all(holds):
            add("trust-bundle", path, "match", "holds the cluster CA")
        else:
            lacking = [fp for fp, held in zip(fps, holds, strict=False) if not held] or fps
            add(
                "trust-bundle",
                path,
                "differs",
                f"does not hold the cluster CA sha256 {', '.join(lacking)} "
                "(trust store not refreshed?)",
            )
    return checks


def verify_summary(hosts):
    """Counts per status (paths) and per outcome (minions), and one line saying it."""
    paths, outcome = {}, {"consistent": 0, "with problems": 0, "not answering": 0}
    for info in hosts.values():
        if info["status"] == "no answer":
            outcome["not answering"] += 1
            continue
        bad = info["status"] != "ok"
        outcome["with problems" if bad else "consistent"] += 1
        for check in info.get("checks", ()):
            paths[check["status"]] = paths.get(check["status"], 0) + 1
    problems = sorted(name for name, info in hosts.items() if info["status"] != "ok")
    line = (
        f"{len(hosts)} minion(s): {outcome['consistent']} consistent, "
        f"{outcome['with problems']} with problems, {outcome['not answering']} not answering"
    )
    if paths:
        line += "; paths: " + ", ".join(f"{n} {s}" for s, n in sorted(paths.items()))
    if problems:
        line += "; check " + ", ".join(problems)
    return {"minions": outcome, "paths": paths, "problems": problems}, line


# --------------------------------------------------------------------------
# The kubeadm profile: each host's share under kubeadm's folder
# --------------------------------------------------------------------------

#: files of the kubeadm profile a host must not hold unless its share gives them
_KUBEADM_SECRET_SUFFIXES = (".key", ".conf")


def kubeadm_share(directory, host):
    """What ``host`` should hold (``{path under /etc/kubernetes: file of the set}``), or None.

    The same rule as the k8s_kubeadm ext_pillar: the set's manifest names its
    masters and nodes (a set made before manifests: a host has its
    ``hosts/<host>/kubelet.conf``, an ``apiserver.crt`` beside it makes it a
    master).  In an enrolled set the share leaves out what the host enrolls;
    in a set whose CAs live in OpenBao, the CA keys (kubeadm's external CA
    mode, as the ext_pillar hands it out).  ``host`` is matched exactly (no
    case folding).
    """
    try:
        checked = check_dns_name(host, "host")
    except InputError:
        return None
    if checked != host:
        return None
    recorded = read_manifest(directory)
    if recorded is not None:
        role, _ = host_role(recorded, host) if recorded["profile"] == "kubeadm" else (None, None)
        if role is None:
            return None
        share = kubeadm_host_files(host, role == "master")
        if recorded.get("enrolled"):
            share = {d: src for d, src in share.items() if d not in KUBEADM_ENROLLED_FILES}
        elsewhere = ca_key_files_elsewhere(recorded)
        return {dest: src for dest, src in share.items() if src not in elsewhere}
    own = os.path.join(directory, KUBEADM_HOSTS_DIR, host)
    if lstat_or_none(os.path.join(own, "kubelet.conf")) is None:
        return None
    master = lstat_or_none(os.path.join(own, "apiserver.crt")) is not None
    return kubeadm_host_files(host, master)


def kubeadm_reference(directory, rel):
    """What the master's file ``rel`` of a kubeadm set is: its hash (and fingerprints)."""
    path = os.path.join(directory, rel)
    data = read_set_file(directory, rel)
    if data is None:
        raise SetError(f"{path}: missing on the master; run generate_certs profile=kubeadm")
    entry = {"path": path, "file_sha256": hashlib.sha256(data).hexdigest()}
    if rel.endswith(".crt"):
        entry["fingerprints"] = [fingerprint(cert) for cert in load_certs(data, path)]
    return entry


_KUBEADM_ANSWER_FIELDS = {
    "profile": ((str,), True),
    "dir": ((str,), True),
    "pillar_host": ((str, type(None)), False),
    "files": ((dict,), True),
}


_KUBEADM_FILE_FIELDS = {
    "path": ((str,), True),
    "exists": ((bool,), True),
    "is_link": ((bool,), False),
    "sha256": ((str, type(None)), False),
    "base64": ((str, type(None)), False),
}


def kubeadm_probe_problem(observed, paths):
    """What is malformed in one minion's answer to the kubeadm probe, or None.

    ``paths`` are the files the probe had to report (every one of them).
    """
    problem = _shape_problem(observed, _KUBEADM_ANSWER_FIELDS, "answer")
    if problem:
        return problem
    files = observed["files"]
    for rel in paths:
        if rel not in files:
            return f"answer.files: {rel} missing"
        problem = _shape_problem(files[rel], _KUBEADM_FILE_FIELDS, f"answer.files.{rel}")
        if problem:
            return problem
    return None


def verify_kubeadm_host(observed, share, references, now=None):
    """Compare what one minion holds under kubeadm's folder with its share of the set.

    ``share`` is :func:`kubeadm_share` for the minion (None: no host of the
    set); ``references`` maps a file of the set to :func:`kubeadm_reference`
    (a callable taking the file's relative path).  Every file of the profile
    is judged: ``match``, ``differs``, ``missing``, ``expired``,
    ``unreadable``, ``absent`` (not in the share, not there: fine),
    ``unexpected`` (a certificate not in the share) or ``forbidden`` (a key or
    a kubeconfig not in the share: a node with a CA key, say).  ``observed``
    must have passed :func:`kubeadm_probe_problem`.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    checks = []
    share = share or {}

    def add(ident, path, status, detail, **extra):
        checks.append({"id": ident, "path": path, "status": status, "detail": detail, **extra})

    for rel, info in sorted(observed["files"].items()):
        path = info.get("path")
        expected = rel in share
        if not info.get("exists"):
            if expected:
                add(rel, path, "missing", "expected: this host's share holds it")
            else:
                add(rel, path, "absent", "not in this host's share")
            continue
        if not expected:
            if rel.endswith(_KUBEADM_SECRET_SUFFIXES):
                add(
                    rel,
                    path,
                    "forbidden",
                    "holds a private key this host's share does not give; remove it "
                    "(kubernetes.kubeadm.present removes it)",
                )
            else:
                add(rel, path, "unexpected", "present although this host's share does not give it")
            continue
        if info.get("is_link"):
            add(rel, path, "differs", "a symbolic link, not the file of the share")
            continue
        ref = references(share[rel])
        if rel.endswith(".crt"):
            status, detail, extra = _check_cert(info, ref, now)
            add(rel, path, status, detail, **extra)
            continue
        if info.get("sha256") == ref["file_sha256"]:
            add(rel, path, "match", f"file sha256 {_short_fp(ref['file_sha256'])}")
        else:
            add(
                rel,
                path,
                "differs",
                f"minion file sha256 {info.get('sha256')}; master file sha256 {ref['file_sha256']}",
            )
    return checks


# --------------------------------------------------------------------------
# Enrolled hosts: what a host holds against the master's copy of what it issued
# --------------------------------------------------------------------------

#: where the master keeps its copies (k8s_pki.enroll.ENROLLED_DIR; not imported
#: from there: verify must not depend on the signer)
_ENROLLED_DIR = "enrolled"


def enrolled_copies(directory, minion):
    """``{member: copy's path in the set}`` of the certificates the master issued to ``minion``.

    ``minion`` is the id Salt accepted, matched exactly; an id that is no
    plain host name has no copies (it never was a host of a set).
    """
    try:
        if check_dns_name(minion, "minion") != minion:
            return {}
    except InputError:
        return {}
    own = os.path.join(directory, _ENROLLED_DIR, minion)
    if lstat_or_none(own) is None:
        return {}
    copies = {}
    for folder, _, names in os.walk(own):
        for name in names:
            if name.endswith(".crt"):
                rel = os.path.relpath(os.path.join(folder, name), directory)
                member = os.path.relpath(os.path.join(folder, name), own)[: -len(".crt")]
                copies[member] = rel
    return copies


def enrolled_probe_problem(answer):
    """What is wrong with the shape of an enrolled probe's answer, or ""."""
    if not isinstance(answer, dict) or not isinstance(answer.get("members"), dict):
        return "no 'members' mapping"
    if not isinstance(answer.get("kubeconfigs", []), list):
        return "'kubeconfigs' is not a list"
    for member, info in answer["members"].items():
        if not isinstance(info, dict) or not all(
            isinstance(info.get(k), str) for k in ("cert", "key")
        ):
            return f"members.{member}: not a mapping with 'cert' and 'key' paths"
    return ""


def enrolled_paths(answer):
    """Every path an enrolled probe answer names (its members' pairs, its kubeconfigs)."""
    paths = set(answer.get("kubeconfigs") or ())
    for info in answer["members"].values():
        paths.update((info["cert"], info["key"]))
    return paths


def verify_enrolled_host(answer, directory, copies, now=None):
    """Compare the pairs a host enrolled with the master's copies: a check per member.

    ``match`` (the certificate is the one the master issued last, and the
    host's key is the one it certifies), ``differs`` (another certificate:
    not the master's latest), ``key does not match cert``, ``expired``,
    ``missing``, ``unreadable``, ``not enrolled`` (the host holds it, the
    master issued none), ``absent`` (neither).  Only public data travels: the
    certificate (base64) and the public key of the host's key file.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    checks = []
    for member, seen in sorted(answer["members"].items()):
        ident = f"enrolled {member}"
        path = seen["cert"]
        info = {**seen, "path": path}

        def add(status, detail, ident=ident, path=path, **extra):
            checks.append({"id": ident, "path": path, "status": status, "detail": detail, **extra})

        copy = copies.get(member)
        if not info.get("exists"):
            if copy:
                add("missing", f"the master issued {copy}; enroll again (state.apply)")
            else:
                add("absent", "not enrolled, not there")
            continue
        if not copy:
            add("not enrolled", "the master issued no certificate for it (no copy on the master)")
            continue
        ref_cert = load_certs(read_set_file(directory, copy) or b"", copy)
        status, detail, extra = _check_cert(info, {"fingerprints": [fingerprint(ref_cert[0])]}, now)
        if status == "match":
            seen = _observed_certs(info)[0][0]
            public = info.get("public_key")
            try:
                key_print = public_key_fingerprint(
                    serialization.load_pem_public_key(public.encode())
                )
            except (AttributeError, ValueError):
                key_print = None
            if key_print != public_key_fingerprint(seen.public_key()):
                status = "key does not match cert"
                detail = f"{info['key']}: not the key {path} certifies (or unreadable)"
                path = info["key"]
        add(status, detail, path=path, **extra)
    return checks
