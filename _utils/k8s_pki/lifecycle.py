"""Ensure a set (generate) and renew its leaves: fill a plan, hand it to the writer."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shutil

from .crypto import fingerprint, key_type_of, renewal_due
from .defaults import (
    DEFAULT_BACKUP_KEEP,
    DEFAULT_CA_DAYS,
    DEFAULT_KEY_TYPE,
    DEFAULT_LEAF_DAYS,
    DEFAULT_RENEW_BEFORE_DAYS,
)
from .errors import InputError, SetError
from .guard import check_set_folder, check_store, lstat_or_none, read_store_file
from .manifest import manifest_path
from .plan import fill_plan, leaf_names, member_shows, plan_set, token_signing_leaf
from .profiles import host_of
from .record import remember
from .specs import spec_from_cert
from .store import read_item, read_pair
from .writer import (
    HostSwapUnsupported,
    commit_hosts,
    commit_staging,
    locked,
    prune_old_backups,
    record_created,
    scratch_dirs,
    stage_plan,
)


def ensure_set(
    pki_root,
    cluster_tag,
    specs,
    *,
    key_type=DEFAULT_KEY_TYPE,
    ca_days=DEFAULT_CA_DAYS,
    leaf_days=DEFAULT_LEAF_DAYS,
    force_regen=False,
    renew=(),
    keep_keys=False,
    rotate_token_key=False,
    renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
    now=None,
    backup_keep=DEFAULT_BACKUP_KEEP,
    dry_run=False,
    manifest=None,
    settings=None,
    signer=None,
    leave_out=(),
):
    """Make sure ``<pki_root>/<cluster_tag>`` holds a complete, valid set.

    Returns ``(plan, backup_path_or_None)``.  Nothing on disk changes unless the
    plan changes something; when it does, the whole folder is replaced in one
    rename, so a reader (or a crash) sees the old set or the new one, never a mix.
    Whenever an existing pair is replaced (``force_regen``, ``renew`` or drift),
    the previous files are kept under ``backup/<timestamp>/``, and only the
    newest ``backup_keep`` backups stay.  With ``key_type=None`` each new key
    is of the same type as the key it replaces.  A store someone else could
    have changed is refused (:func:`check_store`) before anything is read.

    With ``dry_run`` the plan is returned unfilled and nothing is written, not
    even pki_root or the lock: it is the same :func:`plan_set` call the locked
    path makes, only without the lock (a writer meanwhile may change the outcome).

    ``manifest`` (the bytes of ``cluster.yaml``) is written with the files, in
    the same swap, when the set has no such manifest yet or another one;
    ``settings`` (those it was rendered from) go to the set's record, so that
    the next run need not parse it again.

    ``signer`` (signer.py) makes the CAs and signs the leaves: the local one
    (keys in the folder) by default.

    ``leave_out``: files the set no longer holds, removed (and backed up) in
    the same swap (``plan_set``).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    decide = dict(renew_before_days=renew_before_days, now=now)
    options = dict(
        force_regen=force_regen,
        renew=renew,
        keep_keys=keep_keys,
        rotate_token_key=rotate_token_key,
        signer=signer,
        leave_out=leave_out,
        **decide,
    )
    if dry_run:
        seen = check_store(directory)
        plan = plan_set(directory, specs, seen=seen, **options)
        _stage_manifest(plan, manifest)
        return plan, None
    check_set_folder(directory)
    written_before = lstat_or_none(os.path.join(pki_root, f".{cluster_tag}.lock")) is not None
    # Settings that differ from the manifest of a set k8s-helper wrote before
    # change it for sure: straight to the lock then, without deciding twice.
    # Any other set is decided (and refused, if it must be) before a lock is made.
    settled = manifest is None or read_store_file(manifest_path(directory)) == manifest
    unlocked = not force_regen and not renew and os.path.isdir(directory)
    unlocked = unlocked and (settled or not written_before)
    if unlocked or not written_before:
        seen = check_store(directory)
    if unlocked:
        # Fast path, no lock: a valid set is left alone without writing anything.
        try:
            plan = plan_set(
                directory, specs, seen=seen, signer=signer, leave_out=leave_out, **decide
            )
            _stage_manifest(plan, manifest)
            if not plan.changed:
                return plan, None
        except SetError:
            # Perhaps a writer mid-swap: decide again under the lock.  Where no
            # writer ever took the lock there is none; refuse, creating nothing.
            if not written_before:
                raise
    with locked(pki_root, cluster_tag) as seen:
        plan = plan_set(directory, specs, seen=seen, **options)
        _stage_manifest(plan, manifest)
        if not plan.changed:
            return plan, None
        backup = write_plan(
            pki_root,
            cluster_tag,
            plan,
            key_type,
            ca_days,
            leaf_days,
            now,
            backup_keep,
            settings,
            signer=signer,
        )
        return plan, backup


def _stage_manifest(plan, manifest):
    """Have the writer put ``manifest`` in place unless the set already holds it."""
    if manifest is not None and read_store_file(manifest_path(plan.directory)) != manifest:
        plan.manifest = manifest


def write_plan(
    pki_root,
    cluster_tag,
    plan,
    key_type,
    ca_days,
    leaf_days,
    now,
    keep=DEFAULT_BACKUP_KEEP,
    settings=None,
    signer=None,
):
    """Make what ``plan`` asks for and swap the new folder in; returns the backup's path.

    The one writer of a set: :func:`ensure_set` and the CA rotation both end
    here.  The caller holds :func:`locked` and made ``plan`` under it.  On any
    failure (a full disk included) the staging folder is removed again.
    """
    specs = plan.specs
    fill_plan(plan, specs, key_type, ca_days, leaf_days, now, signer=signer)
    made = {  # a CA whose key is the signer's (OpenBao) was not made here
        fingerprint(plan.items[name].cert): name
        for name, spec in specs.items()
        if spec.kind.is_ca
        and plan.items[name].action == "generated"
        and not plan.items[name].remote
    }
    if made:
        record_created(plan.directory, made)
    hosts = changed_hosts(plan)
    backup, hosts = _write_files(pki_root, cluster_tag, plan, hosts, now, keep)
    remember(plan.directory, plan, member_shows, hosts, settings)
    return backup


def _write_files(pki_root, cluster_tag, plan, hosts, now, keep):
    """Put the plan's files in place: only ``hosts`` where it can, else the whole set.

    Returns the backup's path and the hosts written (None: the whole set).
    """
    if hosts:
        try:
            return commit_hosts(pki_root, cluster_tag, plan, hosts, now, keep), hosts
        except HostSwapUnsupported:
            pass
    staging, old = scratch_dirs(pki_root, cluster_tag)
    try:
        backup = stage_plan(plan, staging, now, keep)
        commit_staging(staging, old, plan.directory)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return backup, None


def changed_hosts(plan):
    """The hosts whose folders hold every change of ``plan``, or () when a change lies elsewhere.

    A set that does not exist yet, a file dropped, or any change to a member
    of the whole set (a CA, a shared leaf) is written as a whole.
    """
    if plan.drop or not os.path.isdir(plan.directory):
        return ()
    hosts = []
    for name, item in plan.items.items():
        if item.action == "reused":
            continue
        host = host_of(name)
        if host is None:
            return ()
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def prune_backups(pki_root, cluster_tag, keep=DEFAULT_BACKUP_KEEP):
    """Remove all but the newest ``keep`` backups of a set; returns the removed folders' paths.

    Each old backup folder is removed under the set's lock; the live files are
    not touched.
    """
    directory = os.path.join(pki_root, cluster_tag)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(
            f"{directory}: no certificate set for cluster {cluster_tag!r}; nothing to prune"
        )
    with locked(pki_root, cluster_tag):
        return prune_old_backups(directory, keep)


def check_renew_names(value, specs, name="certs"):
    """The leaves ``value`` names (a list or comma-separated string); all leaves when empty.

    ``server`` and ``server.crt`` both name the pair ``server``.  A CA or a name
    the set does not have is refused.
    """
    # A kubeconfig (the kubeadm profile's) is renewed like a leaf: its client certificate.
    leaves = leaf_names(specs) + [n for n, s in specs.items() if s.kind.embeds_ca]
    if value is None or value == "" or value == []:
        return tuple(leaves)
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f"{name}: {value!r} is not a list of certificate names")
    chosen = []
    for entry in value:
        text = str(entry).strip()
        base = text[: -len(".crt")] if text.endswith(".crt") else text
        if base in specs and specs[base].kind.is_ca:
            raise InputError(
                f"{name}: {text!r} is a CA; renew never touches a CA (a new CA means a new set: "
                "generate_certs force_regen=True)"
            )
        if base not in leaves:
            raise InputError(
                f"{name}: {text!r} is not a certificate of this set; choose from "
                f"{', '.join(leaves)}"
            )
        if base not in chosen:
            chosen.append(base)
    return tuple(chosen)


def renew_set(
    pki_root,
    cluster_tag,
    specs,
    certs=None,
    *,
    keep_keys=False,
    rotate_token_key=False,
    key_type=None,
    leaf_days=DEFAULT_LEAF_DAYS,
    due_within=None,
    now=None,
    backup_keep=DEFAULT_BACKUP_KEEP,
    dry_run=False,
    signer=None,
):
    """Issue the named leaves (all leaves by default) again from the set's own CA.

    Each renewed leaf says exactly what the one it replaces says (subject, SANs,
    usages): a renewal changes dates, serial and (unless ``keep_keys``) the key,
    nothing else.  ``specs`` gives the set's members (which are CAs, which CA
    signs each leaf); their names are taken from the certificates on disk.
    Leaves not named are kept, unless they are already unusable (expired or not
    signed by their CA) - those are reissued too, and the return says why.  The
    previous files are kept under ``backup/``.  A CA is never touched; a missing
    leaf is an error (renewal has nothing to copy its names from).

    With ``due_within`` (days), only those of the named leaves that are due
    (:func:`renewal_due`) are renewed: running it twice renews once.

    The key that signs service-account tokens (``server.key`` without ``sa.key``)
    is kept unless ``rotate_token_key``; the plan's warnings then say that the
    tokens must be reissued.

    With ``dry_run`` nothing is written (see :func:`ensure_set`).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    names = check_renew_names(certs, specs)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(
            f"{directory}: no certificate set for cluster {cluster_tag!r}; run generate_certs first"
        )
    token_leaf = token_signing_leaf(directory, specs)
    if rotate_token_key and token_leaf is None:
        raise InputError(
            "rotate_token_key: this set signs service-account tokens with sa.key, which renew "
            "never replaces; leave rotate_token_key out"
        )
    if rotate_token_key and token_leaf not in names:
        raise InputError(f"rotate_token_key: only with {token_leaf} among certs")
    derived, due, ca_certs = {}, {}, {}
    for name, spec in specs.items():
        if spec.kind.is_ca:
            derived[name] = spec
            ca_certs[name] = read_pair(directory, name).cert
            continue
        if not spec.kind.signed:
            derived[name] = spec  # sa.key/sa.pub: never renewed
            continue
        item = read_item(directory, name, spec)
        if item.cert is None:
            raise SetError(
                f"{directory}: {spec.kind.main_file(name)} is missing, so there is nothing to "
                "renew; generate_certs issues it (with the cluster's names)"
            )
        derived[name] = spec_from_cert(item.cert, spec.issuer)
        if spec.kind.embeds_ca:
            # kubeadm's rule: the identity from the file, and the server it points to.
            derived[name] = dataclasses.replace(
                spec,
                common_name=derived[name].common_name,
                organizations=derived[name].organizations,
                server=item.kubeconfig.server,
            )
        kept_type = key_type_of(item.key) if item.key is not None else None
        keeps_token_key = name == token_leaf and name in names and not rotate_token_key
        if keeps_token_key and key_type is not None and kept_type not in (None, key_type):
            raise InputError(
                f"key_type: {name}.key is kept (it signs service-account tokens), so it "
                f"stays {kept_type}; add rotate_token_key=True for a new {key_type} key "
                "(every token must then be reissued)"
            )
        if due_within is not None and name in names:
            due[name] = renewal_due(item.cert, due_within, now, ca_certs.get(spec.issuer))
            if not due[name]:
                names = tuple(n for n in names if n != name)
    plan, backup = ensure_set(
        pki_root,
        cluster_tag,
        derived,
        key_type=key_type,
        leaf_days=leaf_days,
        renew=names,
        keep_keys=keep_keys,
        rotate_token_key=rotate_token_key,
        renew_before_days=0,
        now=now,
        backup_keep=backup_keep,
        dry_run=dry_run,
        signer=signer,
    )
    for name, reason in due.items():  # say why it was due, not just "requested"
        if reason and plan.items[name].reason == "renewal requested":
            plan.items[name].reason = reason
    return plan, backup
