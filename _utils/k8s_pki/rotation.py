"""The CA rotation state machine: read the rotation state, plan each stage."""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

from cryptography.x509.oid import NameOID

from .crypto import cert_pem, days_left, describe_cert, fingerprint, is_ca, key_type_of, signed_by
from .defaults import (
    DEFAULT_BACKUP_KEEP,
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    NEXT_CA,
)
from .errors import InputError, RotationRefused, SetError
from .guard import check_store
from .lifecycle import write_plan
from .plan import plan_set
from .specs import CASpec, spec_from_ca, spec_from_cert
from .store import Item, created_cas, read_pair
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


@dataclass
class Rotation:
    """Where a cluster's CA rotation stands, as read from its folder."""

    directory: str
    state: str
    ca: Item  # the signing CA: ``cert`` is ca.key's certificate, ``bundle`` all of ca.crt
    next: Item | None  # ca.next.crt/.key when there
    old: list  # the CA certificates of ca.crt other than the signing one
    leaves: dict  # leaf name -> Item

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


def read_rotation(directory, specs):
    """Read a seed set's CA, its next CA and its leaves; :class:`SetError` if unusable."""
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(f"{directory}: no certificate set here; run generate_certs first")
    others = [n for n, sp in specs.items() if sp.kind.is_ca and n != "ca"]
    if others or os.path.exists(os.path.join(directory, "front-proxy-ca.crt")):
        raise SetError(
            f"{directory}: CA rotation handles the seed set's single CA (ca.crt); this set "
            "has more CAs (the kubeadm profile), which rotate_ca does not rotate"
        )
    ca = read_pair(directory, "ca")
    if ca.cert is None or ca.key is None:
        missing = "ca.crt" if ca.cert is None else "ca.key"
        raise SetError(f"{directory}: {missing} is missing; there is no CA to rotate")
    if fingerprint(ca.cert) not in created_cas(directory):
        raise SetError(
            f"{directory}: ca.crt is a CA k8s-helper did not create; rotate it with whatever "
            "made it (rotate_ca only replaces a CA it made itself)"
        )
    nxt = read_pair(directory, NEXT_CA)
    if not nxt.present:
        nxt = None
    elif nxt.cert is None or nxt.key is None:
        missing = f"{NEXT_CA}.crt" if nxt.cert is None else f"{NEXT_CA}.key"
        raise SetError(
            f"{directory}: {missing} is missing while the other half of the new CA is there; "
            "restore it from backup/, or remove both and run stage=prepare again"
        )
    elif nxt.bundle or not is_ca(nxt.cert):
        raise SetError(f"{directory}: {NEXT_CA}.crt must hold exactly one CA certificate")
    old = [cert for cert in ca.bundle if cert != ca.cert]
    leaves = {}
    for name, spec in specs.items():
        if spec.kind.is_ca:
            continue
        leaves[name] = read_pair(directory, name)
        if leaves[name].cert is None:
            raise SetError(
                f"{directory}: {name}.crt is missing; generate_certs issues it before a rotation"
            )
    if nxt is None:
        state = "reissued" if old else "idle"
    elif not old:
        state = "prepared"
    elif nxt.cert in old:
        state = "trusted"
    else:
        raise SetError(
            f"{directory}: ca.crt holds several CAs, but not {NEXT_CA}.crt: this is no state a "
            "rotation leaves; restore the folder from backup/"
        )
    return Rotation(directory, state, ca, nxt, old, leaves)


def rotation_status(rotation, now=None):
    """A plain dict about a rotation: state, CAs, who signed each leaf, what comes next."""
    now = now or datetime.datetime.now(datetime.timezone.utc)

    def ca_info(cert):
        return {**describe_cert(cert), "days_left": int(days_left(cert, now))}

    leaves = {}
    for name, item in rotation.leaves.items():
        signer = rotation.signer(item.cert)
        leaves[f"{name}.crt"] = {
            "sha256": fingerprint(item.cert),
            "issuer": item.cert.issuer.rfc4514_string(),
            "signed_by": f"{signer} CA" if signer else "no CA of this set",
        }
    explain = {
        "idle": "no rotation in progress; stage=prepare starts one",
        "prepared": "the new CA is made (ca.next.crt) and handed out to no host yet; "
        "stage=trust puts it into ca.crt beside the current one",
        "trusted": "ca.crt trusts the current and the new CA; roll it out to every host, "
        "then stage=reissue signs the leaves with the new CA",
        "reissued": "the new CA signs; ca.crt still trusts the old one too. Once every host "
        "runs with the reissued certificates, stage=finish drops the old CA",
    }[rotation.state]
    return {
        "directory": rotation.directory,
        "state": rotation.state,
        "next_stage": NEXT_STAGE[rotation.state] if rotation.state != "idle" else None,
        "explain": explain,
        "signing_ca": ca_info(rotation.ca.cert),
        "trusted_cas": [ca_info(cert) for cert in rotation.ca.bundle or [rotation.ca.cert]],
        "next_ca": ca_info(rotation.next.cert) if rotation.next else None,
        "leaves": leaves,
    }


def _rotation_specs(rotation, specs, with_next):
    """The set's members as they stand (leaves as their certificates say), for planning."""
    out = {"ca": specs["ca"]}
    if with_next:  # kept as it is: its spec is never used to issue anything
        out[NEXT_CA] = spec_from_ca(rotation.next.cert)
    for name, spec in specs.items():
        if not spec.kind.is_ca:
            out[name] = spec_from_cert(rotation.leaves[name].cert, spec.issuer)
    return out


def rotate_ca(
    pki_root,
    cluster_tag,
    specs,
    stage,
    *,
    key_type=None,
    ca_days=DEFAULT_CA_DAYS,
    leaf_days=DEFAULT_LEAF_DAYS,
    keep_keys=True,
    now=None,
    backup_keep=DEFAULT_BACKUP_KEEP,
    dry_run=False,
):
    """Move the CA rotation of a seed set on by one stage (see the comment above).

    ``prepare``: make the new CA as ca.next.crt/.key.  ``trust``: ca.crt
    becomes current + new.  ``reissue``: the new CA takes ca.key, ca.crt
    becomes new + old, every leaf is issued again from the new CA (with its
    own key unless ``keep_keys=False``).  ``finish``: ca.crt holds the new CA
    alone.  ``abort`` (before reissue): back to the current CA alone, the new
    one dropped.  A stage already done changes nothing; one asked for too early
    raises :class:`RotationRefused` saying what must come first.  Every write
    goes through :func:`write_plan` under the cluster's lock, after a backup.

    Returns ``(before, after, plan_or_None, backup)``: the state names before
    and after, the plan written (None when nothing changed), the backup path.
    With ``dry_run`` the same plan is made (unfilled) and nothing is written;
    ``after`` is the state the stage would reach.
    """
    stage = check_rotation_stage(stage)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = os.path.join(pki_root, cluster_tag)
    rot = read_rotation(directory, specs)  # a missing or unusable set: refused, nothing created
    if dry_run:  # decided as below, without the lock: nothing is written
        before, plan = plan_stage(rot, specs, stage, keep_keys, now)
        after = before if plan is None else _STAGE_REACHES.get(stage, "idle")
        return before, after, plan, None
    with locked(pki_root, cluster_tag):
        rot = read_rotation(directory, specs)
        before, plan = plan_stage(rot, specs, stage, keep_keys, now)
        if plan is None:
            return before, before, None, None  # done already
        # key_type is the new CA's (prepare); new leaf keys keep their own types.
        new_ca_key = (key_type or key_type_of(rot.ca.key)) if stage == "prepare" else None
        backup = write_plan(
            pki_root, cluster_tag, plan, new_ca_key, ca_days, leaf_days, now, backup_keep
        )
        after = read_rotation(directory, specs).state
        return before, after, plan, backup


def plan_stage(rot, specs, stage, keep_keys, now):
    """``(state, plan_or_None)``: what ``stage`` would write to the rotation ``rot``.

    None when the stage is done already; :class:`RotationRefused` when it
    comes too early.  Writes nothing: :func:`rotate_ca` calls it under the
    lock (and a dry run without).
    """
    before = rot.state
    order = ROTATION_STATES.index(before)
    plan = None
    if stage in _STAGE_REACHES and order >= ROTATION_STATES.index(_STAGE_REACHES[stage]):
        return before, None  # done already
    if stage == "prepare":
        plan = _plan_prepare(rot, specs, now)
    elif stage == "trust":
        if before == "idle":
            raise RotationRefused("stage=trust: there is no new CA yet; run stage=prepare first")
        plan = _plan_trust(rot, specs, now)
    elif stage == "reissue":
        if before == "idle":
            raise RotationRefused(
                "stage=reissue: no rotation in progress; start with stage=prepare"
            )
        if before != "trusted":
            raise RotationRefused(
                "stage=reissue: the new CA is not in ca.crt yet, so hosts would refuse "
                "certificates it signs; run stage=trust and roll ca.crt out to every host first"
            )
        plan = _plan_reissue(rot, specs, keep_keys, now)
    elif stage == "finish":
        if before == "idle":
            return before, None  # nothing to finish: done already
        if before != "reissued":
            raise RotationRefused(
                f"stage=finish: the rotation is only {before}; the leaves are still signed "
                "by the current CA, so dropping it would break every host. Next: "
                f"stage={NEXT_STAGE[before]}"
            )
        stale = [f"{n}.crt" for n, item in rot.leaves.items() if rot.signer(item.cert) != "current"]
        if stale:
            raise RotationRefused(
                f"stage=finish: {', '.join(stale)} not signed by the new CA yet; run "
                "stage=reissue (and roll the result out) before dropping the old CA"
            )
        plan = _plan_finish(rot, specs, now)
    else:  # abort
        if before == "idle":
            return before, None
        if before == "reissued":
            raise RotationRefused(
                "stage=abort: the leaves are already signed by the new CA; a rotation can "
                "only be abandoned before stage=reissue (finish it instead)"
            )
        plan = _plan_abort(rot, specs, now)
    return before, plan


def _rotation_ca_item(cert, key_item, bundle, action, reason):
    """The "ca" pair as a stage leaves it: ``cert`` signs (``key_item`` holds its
    key), ca.crt = ``cert`` followed by the other CAs of ``bundle``."""
    certs = [cert, *(other for other in bundle if other != cert)]
    return Item(
        "ca",
        cert=cert,
        key=key_item.key,
        cert_bytes=b"".join(cert_pem(c) for c in certs),
        key_bytes=key_item.key_bytes,
        action=action,
        reason=reason,
        bundle=certs if len(certs) > 1 else [],
    )


def _plan_prepare(rot, specs, now):
    members = _rotation_specs(rot, specs, with_next=False)
    current = spec_from_ca(rot.ca.cert)
    ca_spec = CASpec(_next_ca_name(rot.ca.cert), current.organizations)
    members = {"ca": members.pop("ca"), NEXT_CA: ca_spec, **members}
    plan = plan_set(rot.directory, members, renew_before_days=0, now=now)
    plan.items[NEXT_CA].reason = "the new CA of a rotation (not handed out yet)"
    return plan


def _plan_trust(rot, specs, now):
    ca = _rotation_ca_item(
        rot.ca.cert,
        rot.ca,
        [rot.ca.cert, rot.next.cert],
        "rebundled",
        "trust bundle: the current CA, then the new one",
    )
    members = _rotation_specs(rot, specs, with_next=True)
    return plan_set(rot.directory, members, renew_before_days=0, now=now, cas={"ca": ca})


def _plan_reissue(rot, specs, keep_keys, now):
    ca = _rotation_ca_item(
        rot.next.cert,
        rot.next,
        [rot.next.cert, *rot.ca.bundle],
        "rotated",
        "the new CA signs from now on; ca.crt still trusts the old one",
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
        cas={"ca": ca},
    )
    for item in plan.items.values():
        if item.name != "ca" and item.action != "reused":
            kept = "same key" if item.action == "reissued" else "new key"
            item.reason = f"signed by the old CA; issued again by the new one ({kept})"
    plan.drop |= {f"{NEXT_CA}.crt", f"{NEXT_CA}.key"}
    plan.backup = True
    return plan


def _plan_finish(rot, specs, now):
    dropped = ", ".join(fingerprint(cert) for cert in rot.old)
    ca = _rotation_ca_item(
        rot.ca.cert,
        rot.ca,
        [rot.ca.cert],
        "rebundled",
        f"old CA dropped from ca.crt: sha256 {dropped}",
    )
    members = _rotation_specs(rot, specs, with_next=False)
    return plan_set(rot.directory, members, renew_before_days=0, now=now, cas={"ca": ca})


def _plan_abort(rot, specs, now):
    members = _rotation_specs(rot, specs, with_next=False)
    cas = None
    if rot.old:
        ca = _rotation_ca_item(
            rot.ca.cert,
            rot.ca,
            [rot.ca.cert],
            "rebundled",
            "rotation abandoned: the new CA left ca.crt",
        )
        cas = {"ca": ca}
    plan = plan_set(rot.directory, members, renew_before_days=0, now=now, cas=cas)
    plan.drop |= {f"{NEXT_CA}.crt", f"{NEXT_CA}.key"}
    plan.backup = True
    return plan
