"""Decide what to create, keep or reissue in a set, and describe the decision."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

from .crypto import (
    build_ca,
    capped_end,
    cert_pem,
    days_left,
    describe_cert,
    fingerprint,
    is_ca,
    iso_utc,
    key_pem,
    key_type_of,
    load_certs,
    new_key,
    public_key_fingerprint,
    public_pem,
    renewal_due,
    satisfies,
    signed_by,
)
from .defaults import (
    CA_FILE_ACTIONS,
    DEFAULT_KEY_TYPE,
    DEFAULT_RENEW_BEFORE_DAYS,
    MANIFEST_FILE,
    NEXT_CA,
)
from .errors import InputError, PKIError, SetError
from .kinds import CERTIFICATE
from .kubeconfig import render_kubeconfig
from .record import load_record, recall
from .signer import LOCAL
from .store import Item, created_cas, read_item


@dataclass
class Plan:
    directory: str
    items: dict = field(default_factory=dict)
    backup: bool = False
    specs: dict = field(default_factory=dict)
    # Files of the folder (relative paths) the new set leaves out: they remain
    # only in the backup (e.g. ca.next.crt/.key once a rotation promoted them).
    drop: set = field(default_factory=set)
    warnings: list = field(default_factory=list)  # what the operator must act on
    manifest: bytes | None = None  # a new cluster.yaml, staged with the files

    @property
    def changed(self):
        if self.drop or self.manifest is not None:
            return True
        return any(item.action != "reused" for item in self.items.values())


def _leaf_drift(item, spec, ca, renew_before_days, now):
    """Why the leaf must be issued again, or "" when it is fine as it is."""
    if item.cert is None or item.key is None:
        return "missing"
    if ca.action == "generated" or not signed_by(item.cert, ca.cert):
        return f"not signed by the current {spec.issuer}"
    if not satisfies(item.cert, spec):
        return "names or usages differ from those requested"
    return renewal_due(item.cert, renew_before_days, now, ca.cert)


def _kubeconfig_drift(item, spec, ca):
    """Why a kubeconfig whose certificate is fine must still be written again, or ""."""
    if item.kubeconfig.server != spec.server:
        return f"server is {item.kubeconfig.server!r}, not {spec.server!r}"
    try:
        embedded = load_certs(item.kubeconfig.ca_bytes)
    except PKIError:
        embedded = []
    if ca.cert not in embedded:
        return f"does not hold the current {spec.issuer} certificate"
    return ""


def _check_provided(directory, name, spec, item, ca, renew, renew_before_days, now):
    """A leaf of a CA whose key is not here: it must be present and right; never issued."""
    problem = _leaf_drift(item, spec.leaf, ca, 0, now)
    if not problem and spec.kind.embeds_ca:
        problem = _kubeconfig_drift(item, spec, ca)
    if not problem and name in renew:
        problem = "renewal requested"
    if problem:
        what = spec.kind.main_file(name)
        raise SetError(
            f"{directory}: {what}: {problem}; {spec.issuer}.key is not here (a CA k8s-helper "
            f"did not create), so {what} must be provided, signed by {spec.issuer}"
        )
    if days_left(item.cert, now) < renew_before_days:
        item.reason = f"expires within {renew_before_days} days; renew it with {spec.issuer}"


def _plan_keypair(item, name, renew):
    if item.key is None:
        item.action, item.reason = "generated", "missing"
        item.key_bytes = item.pub_bytes = None
    elif name in renew:
        item.action, item.reason = "generated", "renewal requested"
        item.key = item.key_bytes = item.pub_bytes = None
    elif item.pub_bytes is None:
        item.action, item.reason = "reissued", f"{name}.pub missing"
    return item


# The leaf whose key (in the seed layout, without sa.key) signs the tokens.
TOKEN_KEY_LEAF = "server"  # noqa: S105 - a pair name, not a secret


def token_signing_leaf(directory, specs):
    """The leaf whose key also signs the cluster's service-account tokens, or None.

    In the seed layout kube-apiserver signs (and verifies) tokens with
    ``server.key`` unless the set has a key pair of its own (``sa.key``): a new
    ``server.key`` then invalidates every token in the cluster.
    """
    if TOKEN_KEY_LEAF not in specs or specs[TOKEN_KEY_LEAF].kind is not CERTIFICATE:
        return None
    if "sa" in specs or os.path.exists(os.path.join(directory, "sa.key")):
        return None
    return TOKEN_KEY_LEAF


def token_key_warning(name):
    return (
        f"{name}.key is new and it also signs the cluster's service-account tokens (the set "
        "has no sa.key): every token signed with the old key is refused once kube-apiserver "
        "runs with the new one; reissue them (delete the service-account token Secrets, "
        "restart the pods that use tokens; see docs/lifecycle.md)"
    )


def plan_set(
    directory,
    specs,
    *,
    force_regen=False,
    renew=(),
    keep_keys=False,
    rotate_token_key=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
    cas=None,
    trust_record=True,
    seen=None,
    signer=None,
    leave_out=(),
):
    """Decide, without writing anything, which pairs to keep and which to issue.

    A complete, valid set is kept as it is.  A leaf is (re)issued when it is
    missing, when it no longer says what its spec asks (SANs, names, usages),
    when it is not signed by its CA, when it expires within
    ``renew_before_days``, or when it is named in ``renew`` (then with its old
    key if ``keep_keys``).  A CA is only made where it and every leaf it signs
    are absent, or with ``force_regen``: an existing CA is never replaced
    otherwise, and a set whose CA cannot be used is an error.  ``renew`` may
    only name leaves of the set.  Whenever an existing pair is replaced, the
    plan asks for a backup of the folder first.

    ``cas`` maps CA names to items the caller has already decided (a CA
    rotation: a trust bundle rewritten, or the next CA put in place); the
    leaves are then judged against those.

    The key that signs service-account tokens (:func:`token_signing_leaf`) is
    kept whenever its leaf is issued again, unless ``rotate_token_key``; a new
    one in an existing set adds a warning to the plan.

    Members whose files the set's record shows unchanged since a writer
    verified them are taken from it unread (record.py), unless
    ``trust_record`` is False or the run starts anew or rotates a CA.
    ``seen``: what the caller's check of the whole set saw of its files
    (``check_store``), so that their identities are not taken twice.

    ``signer`` (signer.py; the local one by default) says whether a CA found
    without its key is one it signs with (a CA in OpenBao) or an external one.

    ``leave_out``: files of the folder the set no longer holds (an enrolled
    set's per-host pairs, ``manifest.enrolled_leftovers``): removed from it,
    kept in the backup, in the same swap.
    """
    signer = signer or LOCAL
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for name in renew:
        if name not in specs:
            raise InputError(f"renew: {name!r} is not a certificate of this set")
        if specs[name].kind.is_ca:
            raise InputError(f"renew: {name!r} is a CA; renewal never replaces a CA")
    full = force_regen or cas or not trust_record
    found = _find_members(directory, specs, renew, renew_before_days, now, full, seen, signer)
    plan = Plan(directory, specs=specs)
    created = created_cas(directory)
    if force_regen:
        for name, spec in specs.items():
            cert = found[name].cert
            if spec.kind.is_ca and cert is not None and fingerprint(cert) not in created:
                raise SetError(
                    f"{directory}: force_regen would replace {name}.crt, a CA that k8s-helper "
                    "did not create; it never overwrites such a CA. Move the folder (or that "
                    "CA) away yourself to start a new set"
                )
    if force_regen or not any(item.present for item in found.values()):
        plan.backup = force_regen and any(item.present for item in found.values())
        reason = "force_regen" if plan.backup else "new set"
        plan.items = {name: Item(name, action="generated", reason=reason) for name in specs}
        _mark_remote_cas(plan, signer)
        if force_regen:  # a new start ends any CA rotation: its new CA goes to the backup only
            cas = [n for n, spec in specs.items() if spec.kind.is_ca]
            nexts = {NEXT_CA} | {f"{name}.next" for name in cas}  # each CA's (kubeadm: three)
            rotation = [f"{n}.{ext}" for n in sorted(nexts) for ext in ("crt", "key")]
            plan.drop |= {f for f in rotation if os.path.exists(os.path.join(directory, f))}
        _leave_out(plan, leave_out)
        return plan

    token_leaf = token_signing_leaf(directory, specs)
    for name, spec in specs.items():
        item = found[name]
        if item.recorded is not None and plan.items[spec.issuer].action == "reused":
            plan.items[name] = item  # verified before, and unchanged since (record.py)
            continue
        if spec.kind.is_ca and cas and name in cas:
            plan.items[name] = cas[name]
            plan.backup = plan.backup or cas[name].action != "reused"
            continue
        if spec.kind.is_ca:
            signs = [n for n, s in specs.items() if getattr(s, "issuer", None) == name]
            if not item.present and not any(found[n].present for n in signs):
                plan.items[name] = Item(name, action="generated", reason="missing")
                continue
            if item.cert is not None and signer.adopt_ca(directory, name, item):
                item.remote = True  # its key is the signer's: leaves are issued from it
                plan.items[name] = item
                continue
            ours = item.cert is not None and fingerprint(item.cert) in created
            if item.cert is None or (item.key is None and ours):
                missing = f"{name}.crt" if item.cert is None else f"{name}.key"
                raise SetError(
                    f"{directory}: {missing} is missing, so {name} cannot issue certificates; "
                    "restore it, or start a new set with force_regen=True"
                )
            if not is_ca(item.cert):
                raise SetError(f"{directory}: {name}.crt is not a CA certificate")
            item.external = not ours
            plan.items[name] = item
            continue
        if not spec.kind.signed:  # a bare key pair: nothing to sign
            plan.items[name] = _plan_keypair(item, name, renew)
            continue
        ca = plan.items[spec.issuer]
        if ca.cert_only:
            _check_provided(directory, name, spec, item, ca, renew, renew_before_days, now)
            plan.items[name] = item
            continue
        reason = _leaf_drift(item, spec.leaf, ca, renew_before_days, now)
        if not reason and spec.kind.embeds_ca:
            reason = _kubeconfig_drift(item, spec, ca)
        if not reason and name in renew:
            reason = "renewal requested"
        if reason and ca.action == "reused" and days_left(ca.cert, now) <= 0:
            raise SetError(
                f"{directory}: {spec.issuer}.crt expired on "
                f"{iso_utc(ca.cert.not_valid_after_utc)}, "
                f"so {name} ({reason}) cannot be issued from it; make a new set with "
                "force_regen=True"
            )
        if reason:
            reuse_key = keep_keys and item.key is not None and reason != "missing"
            if name == token_leaf:
                reuse_key = item.key is not None and not rotate_token_key
                if not reuse_key:
                    plan.warnings.append(token_key_warning(name))
            item.action = "reissued" if reuse_key else "generated"
            plan.backup = plan.backup or item.present
            if not reuse_key:
                item.key_type = key_type_of(item.key) if item.key is not None else None
                item.key = item.key_bytes = None
            item.reason = reason
        plan.items[name] = item
    _mark_remote_cas(plan, signer)
    _leave_out(plan, leave_out)
    return plan


def _leave_out(plan, files):
    """Drop ``files`` from the new folder, backing them up first (they may hold keys)."""
    if files:
        plan.drop |= set(files)
        plan.backup = True


def _mark_remote_cas(plan, signer):
    """CAs to be made by a signer that keeps their keys elsewhere: no key file, even planned."""
    if signer.keeps_ca_keys:
        for name, item in plan.items.items():
            if plan.specs[name].kind.is_ca and item.action == "generated":
                item.remote = True


def _find_members(directory, specs, renew, renew_before_days, now, full, seen=None, signer=LOCAL):
    """Every member of ``specs`` as found on disk.

    An issued member whose files the set's record shows unchanged since they
    were verified comes from the record (:func:`recall`); the others, and all
    of them when ``full`` (a new start, a CA rotation), are read and parsed.
    CAs come first in ``specs``, so a member's CA is found before it.
    """
    record = {} if full else load_record(directory)
    found, prints = {}, {}
    for name, spec in specs.items():
        entry = record.get(name)
        if entry is not None and spec.kind.signed and name not in renew:
            ca = found[spec.issuer]
            # A CA that can still sign: its key is here, or the signer keeps it (OpenBao).
            if ca.cert is not None and (ca.key is not None or signer.keeps_ca_keys):
                if spec.issuer not in prints:
                    prints[spec.issuer] = fingerprint(ca.cert)
                item = recall(
                    entry,
                    directory,
                    name,
                    spec,
                    ca,
                    prints[spec.issuer],
                    renew_before_days,
                    now,
                    seen,
                )
                if item is not None:
                    found[name] = item
                    continue
        found[name] = read_item(directory, name, spec)
    return found


def fill_plan(plan, specs, key_type, ca_days, leaf_days, now, signer=None):
    """Make the keys and certificates the plan asks for (CAs come first in ``specs``).

    ``signer`` (signer.py) makes the CAs and signs the leaves; the local one
    by default.
    """
    signer = signer or LOCAL
    for name, spec in specs.items():
        item = plan.items[name]
        if item.action in ("reused", *CA_FILE_ACTIONS):
            continue
        if spec.kind.is_ca and item.action == "generated":
            item.key, item.cert = signer.make_ca(
                name, spec, key_type or item.key_type or DEFAULT_KEY_TYPE, ca_days, now
            )
            item.key_checked = True
            item.key_bytes = key_pem(item.key) if item.key is not None else None
            item.remote = item.key is None
            item.cert_bytes = cert_pem(item.cert)
            continue
        if item.action == "generated":
            item.key = new_key(key_type or item.key_type or DEFAULT_KEY_TYPE)
            item.key_checked = True
            item.key_bytes = key_pem(item.key)
        if spec.kind.is_ca:
            item.cert = build_ca(item.key, spec.common_name, ca_days, spec.organizations, now)
        elif not spec.kind.signed:  # a bare key pair
            item.pub_bytes = public_pem(item.key)
            continue
        else:
            ca = plan.items[spec.issuer]
            item.cert = signer.sign(name, spec.leaf, item.key, ca, leaf_days, now)
            _, requested = capped_end(ca.cert, leaf_days, now)
            if requested is not None:
                item.capped = (
                    f"valid until {spec.issuer}.crt ends "
                    f"({iso_utc(item.cert.not_valid_after_utc)}), "
                    f"not until {iso_utc(requested)} ({leaf_days} days asked): a certificate "
                    "cannot outlive its CA"
                )
        item.cert_bytes = cert_pem(item.cert)
        if spec.kind.embeds_ca:
            ca_pem = plan.items[spec.issuer].cert_bytes
            item.file_bytes = render_kubeconfig(spec, ca_pem, item.cert_bytes, item.key_bytes)


def describe_plan(plan, backup=None):
    """The runner's return value: paths, fingerprints, subjects, dates; no key material."""
    files = {}
    for item in plan.items.values():
        files.update(_describe_member(plan.directory, item, plan.specs[item.name]))
    described = {
        "directory": plan.directory,
        "changed": plan.changed,
        "backup": backup,
        "files": files,
    }
    if plan.manifest is not None:
        described["manifest"] = {"path": os.path.join(plan.directory, MANIFEST_FILE)}
        described["manifest"]["action"] = "written"
    if plan.drop:  # files the new folder left out (kept in the backup)
        described["removed"] = sorted(plan.drop)
    if plan.warnings:
        described["warnings"] = list(plan.warnings)
    return described


def _describe_member(directory, item, spec):
    """describe_plan's entries for one member: each of its files, as its kind shows it."""
    shows = item.recorded["shows"] if item.recorded is not None else member_shows(item, spec)
    entries = {}
    for f in spec.kind.files:
        rel = item.name + f.suffix
        if rel in shows:
            entries[rel] = {
                "path": os.path.join(directory, rel),
                "action": f.action(item.action),
                **shows[rel],
            }
    first = entries[spec.kind.main_file(item.name)]
    if item.reason:
        first["reason"] = item.reason
    if item.capped:
        first["capped"] = item.capped
    return entries


def member_shows(item, spec):
    """What a description says of each file of a member, but its path and action."""
    shows = {}
    for f in spec.kind.files:
        if f.follows_key and item.key is None:  # a CA whose key is not here
            continue
        entry = {}
        if "server" in f.shows:
            entry["server"] = spec.server
        if "cert" in f.shows:
            entry.update(describe_cert(item.cert))
            if item.external:
                entry["external"] = True
            if item.bundle:  # a trust bundle: every CA it holds, the key's own first
                entry["bundle"] = [fingerprint(cert) for cert in item.bundle]
        if "public" in f.shows:
            entry["public_key_sha256"] = public_key_fingerprint(item.key.public_key())
        shows[item.name + f.suffix] = entry
    return shows


def leaf_names(specs):
    return [name for name, spec in specs.items() if spec.kind is CERTIFICATE]


# What each planned file amounts to, in the words of a dry run.
CHANGE_WORDS = ("create", "keep", "reissue", "remove")


def _planned_outputs(item, spec):
    """(file name, action) for each file ``item`` leaves in the set, as the writer lays them.

    Mirrors ``writer._outputs`` without needing the bytes: a dry run never fills
    the plan.  A CA whose key is not here keeps having no key file.
    """
    keyless = item.action == "reused" and item.key is None and item.recorded is None
    keyless = keyless or item.remote  # a CA whose key the signer keeps elsewhere
    return [
        (item.name + f.suffix, f.action(item.action))
        for f in spec.kind.files
        if not (f.follows_key and keyless)
    ]


def plan_files(plan):
    """Every file a plan touches: path, action (as the real run reports it), change, reason.

    ``change`` is one of :data:`CHANGE_WORDS`: ``keep`` (left as it is),
    ``create`` (not there yet), ``reissue`` (there, written anew) or ``remove``
    (left out of the new folder, kept in the backup).  The reason goes with
    the first file of its pair, as in :func:`describe_plan`.  No key material.
    """
    files = {}
    for item in plan.items.values():
        rows = _planned_outputs(item, plan.specs[item.name])
        for index, (name, action) in enumerate(rows):
            path = os.path.join(plan.directory, name)
            if action == "reused":
                change = "keep"
            else:
                change = "reissue" if os.path.lexists(path) else "create"
            entry = {"path": path, "action": action, "change": change}
            if index == 0 and item.reason:
                entry["reason"] = item.reason
            files[name] = entry
    for name in sorted(plan.drop):
        files[name] = {
            "path": os.path.join(plan.directory, name),
            "action": "removed",
            "change": "remove",
            "reason": "left out of the new set (kept in the backup)",
        }
    return files


def describe_dry_run(plan):
    """A dry run's return: what the run would do to each file, and a line a file."""
    files = plan_files(plan)
    described = {
        "test": True,
        "comment": "dry run: nothing written",
        "directory": plan.directory,
        "changed": plan.changed,
        "backup": None,
        "would_back_up": plan.backup,
        "files": files,
        "plan": [
            f"{info['change']:8} {name}" + (f": {info['reason']}" if info.get("reason") else "")
            for name, info in files.items()
        ],
    }
    if plan.drop:
        described["removed"] = sorted(plan.drop)
    if plan.warnings:
        described["warnings"] = list(plan.warnings)
    return described
