"""The CA rotation state machine: read the rotation state, plan each stage."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from dataclasses import dataclass

from cryptography.x509.oid import NameOID

from .crypto import (
    cert_pem,
    days_left,
    describe_cert,
    fingerprint,
    is_ca,
    key_type_of,
    load_certs,
    signed_by,
)
from .defaults import (
    DEFAULT_BACKUP_KEEP,
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
)
from .errors import InputError, PKIError, RotationRefused, SetError
from .guard import check_store, read_set_file, read_store_file
from .kubeconfig import render_kubeconfig
from .lifecycle import write_plan
from .manifest import read_manifest
from .plan import plan_set
from .signer import LOCAL
from .specs import CASpec, spec_from_ca, spec_from_cert
from .store import Item, created_cas, read_item, read_pair
from .verify import enrolled_copies
from .writer import locked

ROTATION_STAGES = ("prepare", "trust", "reissue", "finish", "abort")


ROTATION_STATES = ("idle", "prepared", "trusted", "reissued")


#: the stage that moves a rotation on from each state
NEXT_STAGE = {"idle": "prepare", "prepared": "trust", "trusted": "reissue", "reissued": "finish"}


_STAGE_REACHES = {"prepare": "prepared", "trust": "trusted", "reissue": "reissued"}


def check_rotation_stage(value, allowed=ROTATION_STAGES):
    stage = value.strip().lower() if isinstance(value, str) else value
    if stage not in allowed:
        raise InputError(f"stage: {value!r} is not one of {', '.join(allowed)}")
    return stage


#: ``ca=`` of rotate_ca -> the CA's name in a set.  The seed has ``ca`` alone;
#: the kubeadm profile has all three (``etcd/ca`` is also accepted as it is).
ROTATION_CAS = {"ca": "ca", "etcd-ca": "etcd/ca", "front-proxy-ca": "front-proxy-ca"}


def check_rotation_ca(value, profile):
    """The set's name of the CA ``ca=`` chooses; InputError naming what this set has."""
    text = value.strip() if isinstance(value, str) else None
    name = ROTATION_CAS.get(text, text if text in ROTATION_CAS.values() else None)
    if name is None:
        raise InputError(f"ca: {value!r} is not one of {', '.join(ROTATION_CAS)}")
    if profile == "seed" and name != "ca":  # no set at all: reading it says so
        raise InputError(
            f"ca: {value!r} is a CA of kubeadm sets; this set is seed and has one CA, ca "
            "(leave ca= out)"
        )
    return name


def next_ca_name(ca):
    """Where a rotation keeps the new CA of ``ca`` until it signs: ``<ca>.next``
    (the seed's ``ca.next``, :data:`NEXT_CA`; kubeadm's ``etcd/ca.next`` too)."""
    return f"{ca}.next"


def rotation_members(specs, ca):
    """The members a rotation of ``ca`` deals with: the CA and what it signs.

    The other CAs and their leaves are no part of the plan at all, so the
    writer carries their files over as they are (byte for byte, same inodes).
    """
    return {
        name: spec
        for name, spec in specs.items()
        if name == ca or (spec.kind.signed and spec.issuer == ca)
    }


@dataclass
class Rotation:
    """Where a cluster's CA rotation stands, as read from its folder."""

    directory: str
    state: str
    ca: Item  # the signing CA: ``cert`` is ca.key's certificate, ``bundle`` all of ca.crt
    next: Item | None  # ca.next.crt/.key when there
    old: list  # the CA certificates of ca.crt other than the signing one
    leaves: dict  # leaf name -> Item
    name: str = "ca"  # which CA of the set rotates (kubeadm: also front-proxy-ca, etcd/ca)
    busy: dict = dataclasses.field(default_factory=dict)  # other CA -> its rotation's state

    def signer(self, cert):
        """Which CA of the rotation signed ``cert``: "current", "old", "next" or ""."""
        if signed_by(cert, self.ca.cert):
            return "current"
        if any(signed_by(cert, ca) for ca in self.old):
            return "old"
        if self.next is not None and signed_by(cert, self.next.cert):
            return "next"
        return ""


def _next_ca_name(cert):
    """The new CA's common name: the current one's with a generation number
    (kubernetes-ca -> kubernetes-ca-2 -> kubernetes-ca-3), so the two CAs of a
    bundle are told apart at a glance."""
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    name = cns[0] if cns else "kubernetes-ca"
    match = re.match(r"^(.*)-(\d+)$", name)
    base, generation = (match.group(1), int(match.group(2))) if match else (name, 1)
    return f"{base}-{generation + 1}"[:64]


def read_rotation(directory, specs, ca="ca", signer=None):
    """Read a set's CA ``ca``, its next CA and the leaves it signs; :class:`SetError` if
    unusable.  The other CAs of the set (kubeadm) are only looked at for a rotation of
    their own in progress (``busy``).  With a ``signer`` that keeps the CA keys
    elsewhere (OpenBao), the folder holds the CAs' certificates only."""
    remote = (signer or LOCAL).keeps_ca_keys
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(f"{directory}: no certificate set here; run generate_certs first")
    next_name = next_ca_name(ca)
    current = read_pair(directory, ca)
    current.remote = remote
    if current.cert is None or (current.key is None and not remote):
        missing = f"{ca}.crt" if current.cert is None else f"{ca}.key"
        raise SetError(f"{directory}: {missing} is missing; there is no CA to rotate")
    if not remote and fingerprint(current.cert) not in created_cas(directory):
        raise SetError(
            f"{directory}: {ca}.crt is a CA k8s-helper did not create; rotate it with whatever "
            "made it (rotate_ca only replaces a CA it made itself)"
        )
    nxt = read_pair(directory, next_name)
    if not nxt.present:
        nxt = None
    elif nxt.cert is None or (nxt.key is None and not remote):
        missing = f"{next_name}.crt" if nxt.cert is None else f"{next_name}.key"
        raise SetError(
            f"{directory}: {missing} is missing while the other half of the new CA is there; "
            "restore it from backup/, or remove both and run stage=prepare again"
        )
    elif nxt.bundle or not is_ca(nxt.cert):
        raise SetError(f"{directory}: {next_name}.crt must hold exactly one CA certificate")
    old = [cert for cert in current.bundle if cert != current.cert]
    leaves = {}
    for name, spec in rotation_members(specs, ca).items():
        if spec.kind.is_ca:
            continue
        leaves[name] = read_item(directory, name, spec)
        if leaves[name].cert is None:
            raise SetError(
                f"{directory}: {spec.kind.main_file(name)} is missing; generate_certs issues it "
                "before a rotation"
            )
    if nxt is None:
        state = "reissued" if old else "idle"
    elif not old:
        state = "prepared"
    elif nxt.cert in old:
        state = "trusted"
    else:
        raise SetError(
            f"{directory}: {ca}.crt holds several CAs, but not {next_name}.crt: this is no "
            "state a rotation leaves; restore the folder from backup/"
        )
    busy = {
        other: _other_state(directory, other)
        for other, spec in specs.items()
        if spec.kind.is_ca and other != ca
    }
    busy = {other: state for other, state in busy.items() if state != "idle"}
    return Rotation(directory, state, current, nxt, old, leaves, ca, busy)


def _other_state(directory, ca):
    """Where a rotation of another CA of the set stands, judged by its files alone
    (its next CA there or not, its certificate file one CA or several; no key is read)."""
    pending = os.path.lexists(os.path.join(directory, f"{next_ca_name(ca)}.crt"))
    pending = pending or os.path.lexists(os.path.join(directory, f"{next_ca_name(ca)}.key"))
    data = read_store_file(os.path.join(directory, f"{ca}.crt"))
    try:
        several = data is not None and len(load_certs(data, f"{ca}.crt")) > 1
    except PKIError as err:
        raise SetError(f"{directory}: {err}") from None
    if pending:
        return "trusted" if several else "prepared"
    return "reissued" if several else "idle"


def rotation_status(rotation, now=None):
    """A plain dict about a rotation: state, CAs, who signed each leaf, what comes next."""
    now = now or datetime.datetime.now(datetime.timezone.utc)

    def ca_info(cert):
        return {**describe_cert(cert), "days_left": int(days_left(cert, now))}

    leaves = {}
    for name, item in rotation.leaves.items():
        signer = rotation.signer(item.cert)
        leaves[name if item.kubeconfig is not None else f"{name}.crt"] = {
            "sha256": fingerprint(item.cert),
            "issuer": item.cert.issuer.rfc4514_string(),
            "signed_by": f"{signer} CA" if signer else "no CA of this set",
        }
    ca_file, next_file = f"{rotation.name}.crt", f"{next_ca_name(rotation.name)}.crt"
    explain = {
        "idle": "no rotation in progress; stage=prepare starts one",
        "prepared": f"the new CA is made ({next_file}) and handed out to no host yet; "
        f"stage=trust puts it into {ca_file} beside the current one",
        "trusted": f"{ca_file} trusts the current and the new CA; roll it out to every host, "
        "then stage=reissue signs the leaves with the new CA",
        "reissued": f"the new CA signs; {ca_file} still trusts the old one too. Once every host "
        "runs with the reissued certificates, stage=finish drops the old CA",
    }[rotation.state]
    extra = {}
    if rotation.busy:  # one rotation at a time: say which one holds the set
        extra["other_rotations"] = dict(rotation.busy)
    return {
        "directory": rotation.directory,
        "state": rotation.state,
        "next_stage": NEXT_STAGE[rotation.state] if rotation.state != "idle" else None,
        "explain": explain,
        "signing_ca": ca_info(rotation.ca.cert),
        "trusted_cas": [ca_info(cert) for cert in rotation.ca.bundle or [rotation.ca.cert]],
        "next_ca": ca_info(rotation.next.cert) if rotation.next else None,
        "leaves": leaves,
        **extra,
    }


def _rotation_specs(rotation, specs, with_next):
    """The rotating CA's members as they stand (leaves as their certificates say)."""
    ca = rotation.name
    out = {ca: specs[ca]}
    if with_next:  # kept as it is: its spec is never used to issue anything
        out[next_ca_name(ca)] = spec_from_ca(rotation.next.cert)
    for name, spec in rotation_members(specs, ca).items():
        if spec.kind.is_ca:
            continue
        item = rotation.leaves[name]
        said = spec_from_cert(item.cert, spec.issuer)
        if spec.kind.embeds_ca:  # a kubeconfig keeps its user and its server
            said = dataclasses.replace(
                spec,
                common_name=said.common_name,
                organizations=said.organizations,
                server=item.kubeconfig.server,
            )
        out[name] = said
    return out


def rotate_ca(
    pki_root,
    cluster_tag,
    specs,
    stage,
    *,
    ca="ca",
    key_type=None,
    ca_days=DEFAULT_CA_DAYS,
    leaf_days=DEFAULT_LEAF_DAYS,
    keep_keys=True,
    now=None,
    backup_keep=DEFAULT_BACKUP_KEEP,
    dry_run=False,
    signer=None,
):
    """Move the rotation of the CA ``ca`` of a set on by one stage (see the comment above).

    ``prepare``: make the new CA as ca.next.crt/.key.  ``trust``: ca.crt
    becomes current + new.  ``reissue``: the new CA takes ca.key, ca.crt
    becomes new + old, every leaf is issued again from the new CA (with its
    own key unless ``keep_keys=False``).  ``finish``: ca.crt holds the new CA
    alone.  ``abort`` (before reissue): back to the current CA alone, the new
    one dropped.  A stage already done changes nothing; one asked for too early
    raises :class:`RotationRefused` saying what must come first.  Every write
    goes through :func:`write_plan` under the cluster's lock, after a backup.

    ``ca`` names the CA (a kubeadm set: ``ca``, ``front-proxy-ca`` or
    ``etcd/ca``; the new one is ``<ca>.next``).  Only that CA, and the leaves
    and kubeconfigs it signs, are in the plan; kubeconfigs embed whatever
    ``<ca>.crt`` holds (the bundle while it lasts).  While another CA of the
    set is being rotated, every stage is refused: one rotation at a time.

    Returns ``(before, after, plan_or_None, backup)``: the state names before
    and after, the plan written (None when nothing changed), the backup path.
    With ``dry_run`` the same plan is made (unfilled) and nothing is written;
    ``after`` is the state the stage would reach.

    ``signer`` (signer.py): where the CAs live.  Through OpenBao the next CA is
    a second issuer of the CA's mount, ``reissue`` makes it the default issuer
    before the leaves are signed, ``finish`` revokes the old issuer and
    ``abort`` deletes the new one, each before the folder is written (a re-run
    of the stage does it again, harmlessly).
    """
    signer = signer or LOCAL
    stage = check_rotation_stage(stage)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    rot = read_rotation(directory, specs, ca, signer)  # a missing or unusable set: refused
    if dry_run:  # decided as below, without the lock: nothing is written
        before, plan = plan_stage(rot, specs, stage, keep_keys, now, signer)
        after = before if plan is None else _STAGE_REACHES.get(stage, "idle")
        return before, after, plan, None
    with locked(pki_root, cluster_tag):
        rot = read_rotation(directory, specs, ca, signer)
        before, plan = plan_stage(rot, specs, stage, keep_keys, now, signer)
        if plan is None:
            return before, before, None, None  # done already
        # key_type is the new CA's (prepare); new leaf keys keep their own types.
        new_ca_key = None
        if stage == "prepare":
            new_ca_key = key_type or key_type_of(rot.ca.key) or public_key_type(rot.ca.cert)
        _step_where_the_ca_lives(signer, rot, stage)
        backup = write_plan(
            pki_root,
            cluster_tag,
            plan,
            new_ca_key,
            ca_days,
            leaf_days,
            now,
            backup_keep,
            signer=signer,
        )
        after = read_rotation(directory, specs, ca, signer).state
        return before, after, plan, backup


def _step_where_the_ca_lives(signer, rot, stage):
    """What a stage changes where the CA is kept (OpenBao), before the folder is written."""
    if stage == "reissue":
        signer.switch_default(rot.name, rot.next.cert)
    elif stage == "finish":
        signer.retire(rot.name, rot.old)
    elif stage == "abort" and rot.next is not None:
        signer.drop_next(rot.name, rot.next.cert)


def public_key_type(cert):
    """The ``KEY_TYPES`` name of a certificate's public key (a CA whose key is elsewhere)."""
    public = cert.public_key()
    size = getattr(public, "key_size", None)
    curve = getattr(getattr(public, "curve", None), "name", None)
    if curve is not None:
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(curve)
    return f"rsa-{size}" if size else None


def plan_stage(rot, specs, stage, keep_keys, now, signer=None):
    """``(state, plan_or_None)``: what ``stage`` would write to the rotation ``rot``.

    None when the stage is done already; :class:`RotationRefused` when it
    comes too early.  Writes nothing: :func:`rotate_ca` calls it under the
    lock (and a dry run without).
    """
    before = rot.state
    order = ROTATION_STATES.index(before)
    plan = None
    ca_file = f"{rot.name}.crt"
    if rot.busy and before == "idle":
        other, state = next(iter(rot.busy.items()))
        choose = next(key for key, value in ROTATION_CAS.items() if value == other)
        raise RotationRefused(
            f"stage={stage}: a rotation of {other} is in progress ({state}); one CA is rotated "
            f"at a time: finish it (or abort it) first, with ca={choose}"
        )
    if stage in _STAGE_REACHES and order >= ROTATION_STATES.index(_STAGE_REACHES[stage]):
        return before, None  # done already
    if stage == "prepare":
        plan = _plan_prepare(rot, specs, now, signer)
    elif stage == "trust":
        if before == "idle":
            raise RotationRefused("stage=trust: there is no new CA yet; run stage=prepare first")
        plan = _plan_trust(rot, specs, now, signer)
    elif stage == "reissue":
        if before == "idle":
            raise RotationRefused(
                "stage=reissue: no rotation in progress; start with stage=prepare"
            )
        if before != "trusted":
            raise RotationRefused(
                f"stage=reissue: the new CA is not in {ca_file} yet, so hosts would refuse "
                f"certificates it signs; run stage=trust and roll {ca_file} out to every host "
                "first"
            )
        plan = _plan_reissue(rot, specs, keep_keys, now, signer)
    elif stage == "finish":
        if before == "idle":
            return before, None  # nothing to finish: done already
        if before != "reissued":
            raise RotationRefused(
                f"stage=finish: the rotation is only {before}; the leaves are still signed "
                "by the current CA, so dropping it would break every host. Next: "
                f"stage={NEXT_STAGE[before]}"
            )
        stale = [
            n if item.kubeconfig is not None else f"{n}.crt"
            for n, item in rot.leaves.items()
            if rot.signer(item.cert) != "current"
        ]
        if stale:
            raise RotationRefused(
                f"stage=finish: {', '.join(stale)} not signed by the new CA yet; run "
                "stage=reissue (and roll the result out) before dropping the old CA"
            )
        enrolled = enrolled_by_old_ca(rot)
        if enrolled:
            more = f" and {len(enrolled) - 3} more" if len(enrolled) > 3 else ""
            raise RotationRefused(
                f"stage=finish: {', '.join(enrolled[:3])}{more} (issued to hosts that enroll) "
                "still signed by the old CA; have those hosts enroll again first (state.apply "
                "kubernetes.certs.enrolled with kubernetes:enrollment:renew_before_days above "
                "the days those certificates have left: docs/ca-rotation.md)"
            )
        plan = _plan_finish(rot, specs, now, signer)
    else:  # abort
        if before == "idle":
            return before, None
        if before == "reissued":
            raise RotationRefused(
                "stage=abort: the leaves are already signed by the new CA; a rotation can "
                "only be abandoned before stage=reissue (finish it instead)"
            )
        plan = _plan_abort(rot, specs, now, signer)
    return before, plan


def enrolled_by_old_ca(rot):
    """The master's copies (``enrolled/<host>/<member>.crt``) of certificates issued to hosts
    the set still records that the rotation's old CA signed: dropping it would cut them off.

    (Copies of hosts removed from the set stay on disk, and hold nothing back.)
    """
    recorded = read_manifest(rot.directory) or {}
    stale = []
    for entry in (recorded.get("masters") or []) + (recorded.get("nodes") or []):
        for _, rel in sorted(enrolled_copies(rot.directory, entry["name"]).items()):
            data = read_set_file(rot.directory, rel)
            if data is not None and rot.signer(load_certs(data, rel)[0]) == "old":
                stale.append(rel)
    return stale


def _rotation_ca_item(name, cert, key_item, bundle, action, reason):
    """The CA pair ``name`` as a stage leaves it: ``cert`` signs (``key_item`` holds
    its key), <name>.crt = ``cert`` followed by the other CAs of ``bundle``."""
    certs = [cert, *(other for other in bundle if other != cert)]
    return Item(
        name,
        cert=cert,
        key=key_item.key,
        cert_bytes=b"".join(cert_pem(c) for c in certs),
        key_bytes=key_item.key_bytes,
        action=action,
        reason=reason,
        bundle=certs if len(certs) > 1 else [],
        remote=key_item.key is None,  # its key is the signer's (OpenBao)
    )


def _rebundle_kubeconfigs(plan, rot):
    """Have every kubeconfig the rotating CA signs embed what <ca>.crt now holds.

    A kubeconfig is the only CA file its client has: it must carry the bundle
    while the bundle lasts, and the new CA alone once it is over.  Those the
    plan issues again are written with it anyway; the others are rewritten
    around their own certificate and key (action ``rebundled``).
    """
    ca = plan.items[rot.name]
    want = load_certs(ca.cert_bytes)
    for name, item in plan.items.items():
        spec = plan.specs.get(name)
        if spec is None or not spec.kind.embeds_ca or item.action != "reused":
            continue
        try:
            held = load_certs(item.kubeconfig.ca_bytes)
        except PKIError:
            held = []
        if held == want:
            continue
        item.action = "rebundled"
        item.reason = f"embeds {rot.name}.crt as it is now: " + ", then ".join(
            fingerprint(cert) for cert in want
        )
        item.file_bytes = render_kubeconfig(spec, ca.cert_bytes, item.cert_bytes, item.key_bytes)
        plan.backup = True
    return plan


def _plan_prepare(rot, specs, now, signer=None):
    members = _rotation_specs(rot, specs, with_next=False)
    current = spec_from_ca(rot.ca.cert)
    ca_spec = CASpec(_next_ca_name(rot.ca.cert), current.organizations)
    next_name = next_ca_name(rot.name)
    members = {rot.name: members.pop(rot.name), next_name: ca_spec, **members}
    plan = plan_set(
        rot.directory, members, renew_before_days=0, now=now, trust_record=False, signer=signer
    )
    plan.items[next_name].reason = "the new CA of a rotation (not handed out yet)"
    return plan


def _plan_trust(rot, specs, now, signer=None):
    ca = _rotation_ca_item(
        rot.name,
        rot.ca.cert,
        rot.ca,
        [rot.ca.cert, rot.next.cert],
        "rebundled",
        "trust bundle: the current CA, then the new one",
    )
    return _plan_rebundled(rot, specs, ca, True, now, signer)


def _plan_rebundled(rot, specs, ca, with_next, now, signer):
    """The set with the CA item ``ca`` (its ``.crt`` rewritten as a new trust bundle) in the
    CA's place: the leaves are kept (a rotation reads every file it plans for), the
    kubeconfigs carry the new bundle."""
    plan = plan_set(
        rot.directory,
        _rotation_specs(rot, specs, with_next=with_next),
        renew_before_days=0,
        now=now,
        cas={rot.name: ca},
        trust_record=False,
        signer=signer,
    )
    return _rebundle_kubeconfigs(plan, rot)


def _plan_reissue(rot, specs, keep_keys, now, signer=None):
    ca = _rotation_ca_item(
        rot.name,
        rot.next.cert,
        rot.next,
        [rot.next.cert, *rot.ca.bundle],
        "rotated",
        f"the new CA signs from now on; {rot.name}.crt still trusts the old one",
    )
    ca.key_checked = False
    members = _rotation_specs(rot, specs, with_next=False)
    plan = plan_set(
        rot.directory,
        members,
        keep_keys=keep_keys,
        rotate_token_key=not keep_keys,  # keep_keys=False asks for new keys, this one too
        renew_before_days=0,
        now=now,
        cas={rot.name: ca},
        trust_record=False,  # a rotation reads every file it plans for
        signer=signer,
    )
    for item in plan.items.values():
        if item.name != rot.name and item.action != "reused":
            kept = "same key" if item.action == "reissued" else "new key"
            item.reason = f"signed by the old CA; issued again by the new one ({kept})"
    next_name = next_ca_name(rot.name)
    plan.drop |= {f"{next_name}.crt", f"{next_name}.key"}
    plan.backup = True
    return _rebundle_kubeconfigs(plan, rot)


def _plan_finish(rot, specs, now, signer=None):
    dropped = ", ".join(fingerprint(cert) for cert in rot.old)
    ca = _rotation_ca_item(
        rot.name,
        rot.ca.cert,
        rot.ca,
        [rot.ca.cert],
        "rebundled",
        f"old CA dropped from {rot.name}.crt: sha256 {dropped}",
    )
    return _plan_rebundled(rot, specs, ca, False, now, signer)


def _plan_abort(rot, specs, now, signer=None):
    members = _rotation_specs(rot, specs, with_next=False)
    cas = None
    if rot.old:
        ca = _rotation_ca_item(
            rot.name,
            rot.ca.cert,
            rot.ca,
            [rot.ca.cert],
            "rebundled",
            f"rotation abandoned: the new CA left {rot.name}.crt",
        )
        cas = {rot.name: ca}
    plan = plan_set(
        rot.directory,
        members,
        renew_before_days=0,
        now=now,
        cas=cas,
        trust_record=False,
        signer=signer,
    )
    next_name = next_ca_name(rot.name)
    plan.drop |= {f"{next_name}.crt", f"{next_name}.key"}
    plan.backup = True
    return _rebundle_kubeconfigs(plan, rot)
