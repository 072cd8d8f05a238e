"""A kubeadm set in kubeadm's own words: its certificate names, which to renew, what restarts.

``kubeadm certs check-expiration`` and ``kubeadm certs renew`` name a control
plane's certificates ``apiserver``, ``etcd-peer``, ``admin.conf``...; the set
keeps them as members (``hosts/<host>/apiserver``, ``hosts/<host>/etcd/peer``,
``admin.conf``).  :data:`KUBEADM_CERT_NAMES` maps one to the other; the
functions here read that table.
"""

from __future__ import annotations

import os

from .defaults import DEFAULT_RENEW_BEFORE_DAYS
from .errors import InputError
from .guard import lstat_or_none
from .lifecycle import renew_set
from .profiles import (
    CLUSTER,
    KUBEADM,
    KUBEADM_CERT_NAMES,
    KUBEADM_HOSTS_DIR,
    PER_MASTER,
    host_enrolls,
)

#: what a seed set calls its leaves: refused by name on a kubeadm set
SEED_NAMES = ("server", "server.crt", "kubecfg", "kubecfg.crt")

#: the service-account signing pair, which no renewal touches
TOKEN_KEY_NAMES = ("sa", "sa.key", "sa.pub")

_HOST = "{host}"


def _split(template):
    prefix, _, suffix = template.partition(_HOST)
    return prefix, suffix


def kubeadm_name(member):
    """``(kubeadm's name, host or None)`` for a member of a kubeadm set, or ``(None, None)``."""
    for name, template in KUBEADM_CERT_NAMES.items():
        if _HOST not in template:
            if member == template:
                return name, None
            continue
        prefix, suffix = _split(template)
        host = member[len(prefix) : len(member) - len(suffix)] if suffix else ""
        if member.startswith(prefix) and member.endswith(suffix) and host and "/" not in host:
            return name, host
    return None, None


def kubeadm_label(member):
    """How a member is shown: ``apiserver (m0)``, ``admin.conf``; the member itself if unnamed."""
    name, host = kubeadm_name(member)
    if name is None:
        return member
    return f"{name} ({host})" if host else name


def kubeadm_ca_name(member):
    """kubeadm's name for a CA member (``etcd/ca`` -> ``etcd-ca``)."""
    name, _ = kubeadm_name(member)
    return name or member


#: kubeadm's names of the members each master has one of (an enrolled set keeps only
#: its kubeconfigs: a master is known by any of them, not only by its apiserver)
_PER_MASTER_NAMES = frozenset(m.name for m in KUBEADM if m.scope == PER_MASTER)


def set_hosts(specs):
    """``(masters, hosts)`` of a kubeadm set's specs: the masters, then every host, in order."""
    prefix = f"{KUBEADM_HOSTS_DIR}/"
    masters, hosts = [], []
    for member in specs:
        name, host = kubeadm_name(member)
        if host is None or not member.startswith(prefix):
            continue
        if name in _PER_MASTER_NAMES and host not in masters:
            masters.append(host)
        if host not in hosts:
            hosts.append(host)
    return masters, hosts


def renewable_members(specs):
    """Every member a renewal may reissue: leaves and kubeconfigs (not CAs, not sa)."""
    return [m for m, s in specs.items() if s.kind.signed]


def cas_without_key(directory, specs):
    """The CAs of the set whose key is not in its folder (externally managed, kubeadm says)."""
    return {
        name
        for name, spec in specs.items()
        if spec.kind.is_ca and lstat_or_none(os.path.join(directory, f"{name}.key")) is None
    }


def _names(value, what):
    """A list of names from a list or a comma-separated string."""
    parts = value
    if isinstance(value, str):  # "a, b," as seed renew reads it: empty parts ignored
        parts = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(parts, (list, tuple)) or not parts:
        raise InputError(f"{what}: {value!r} is not a list of names")
    names = []
    for entry in parts:
        if not isinstance(entry, str) or not entry.strip():
            raise InputError(f"{what}: {entry!r} is not a name")
        if entry.strip() not in names:
            names.append(entry.strip())
    return names


def check_kubeadm_hosts(value, specs, enrolling=()):
    """The hosts ``value`` names (list or comma-separated), all of the set; None when not given.

    ``enrolling``: hosts of an enrolled set, which may hold nothing on the master.
    """
    if value is None or value == "":
        return None
    _, known = set_hosts(specs)
    hosts = _names(value, "hosts")
    for host in hosts:
        if host not in known and host in enrolling:
            raise InputError(
                f"hosts: {host!r} enrolls its own certificates (cluster.yaml: enrolled: true) "
                "and renews them itself (kubernetes.certs.enrolled); the master holds none of "
                "its certificates to renew"
            )
        if host not in known:
            raise InputError(
                f"hosts: {host!r} is not a host of this set (its hosts: {', '.join(known)})"
            )
    return hosts


def select_kubeadm_certs(certs, hosts, specs):
    """The members of a kubeadm set that ``certs`` names, in kubeadm's words.

    ``certs`` is None (every certificate: the caller keeps those that are due),
    ``all``, or kubeadm's names as a list or a comma-separated string.  A
    per-host name (``apiserver``, ``etcd-server``, ``etcd-peer``,
    ``kubelet.conf``) means that certificate of every host holding one, or of
    ``hosts`` only (already checked by :func:`check_kubeadm_hosts`).  Returns
    ``(members, explicit)``; a CA, ``sa``, a seed name or an unknown name is
    refused (InputError), and so is a per-host name none of ``hosts`` holds.
    """
    renewable = renewable_members(specs)

    def on_hosts(members):
        if hosts is None:
            return members
        return [m for m in members if kubeadm_name(m)[1] in (None, *hosts)]

    if certs is None or certs == "" or certs == "all":
        return on_hosts(renewable), certs == "all"
    names = _names(certs, "certs")
    if "all" in names and len(names) > 1:
        raise InputError("certs: 'all' stands alone (it names every certificate)")
    choices = ", ".join(n for n, t in KUBEADM_CERT_NAMES.items() if t in renewable or _HOST in t)
    chosen = []
    for name in names:
        member = KUBEADM_CERT_NAMES.get(name)
        if name in ("etcd/ca", *KUBEADM_CERT_NAMES) and (
            (member or name) in specs and specs[member or name].kind.is_ca
        ):
            raise InputError(
                f"certs: {name!r} is a CA; renew never touches a CA (a CA is replaced by a "
                "CA rotation, see docs/ca-rotation.md)"
            )
        if name in TOKEN_KEY_NAMES:
            raise InputError(
                f"certs: {name!r} is the service-account signing pair, not a certificate; "
                "renew never touches sa.key (a new one would invalidate every token)"
            )
        if name in SEED_NAMES:
            raise InputError(
                f"certs: {name!r} is a certificate of the seed profile; this set is kubeadm: "
                f"choose from {choices}, or all"
            )
        if member is None:
            raise InputError(
                f"certs: {name!r} is not a certificate of this set; choose from {choices}, or all"
            )
        if host_enrolls(_MEMBERS[name]) and not any(kubeadm_name(m)[0] == name for m in specs):
            raise InputError(
                f"certs: {name!r}: the hosts of this set enroll it (cluster.yaml: enrolled: "
                "true) and renew it themselves (kubernetes.certs.enrolled, in its renewal "
                "window); the master holds none to renew"
            )
        if _HOST in member:
            found = on_hosts([m for m in renewable if kubeadm_name(m)[0] == name])
            if not found:
                holders = [kubeadm_name(m)[1] for m in renewable if kubeadm_name(m)[0] == name]
                raise InputError(
                    f"certs: {name!r}: hosts {', '.join(hosts or ())} hold none (only "
                    f"{', '.join(holders)} do)"
                )
            chosen += [m for m in found if m not in chosen]
        elif member not in chosen:
            chosen.append(member)
    return chosen, True


def _reader(name):
    """``(component, "own" | "masters")`` that reads kubeadm's ``name``, or None.

    Read off the kubeadm table: a per-host member is read on its own host, a
    shared one on every master (each holds a copy).
    """
    member = _MEMBERS.get(name)
    if member is None or not member.readers:
        return None
    return member.readers[0], "masters" if member.scope == CLUSTER else "own"


_MEMBERS = {member.name: member for member in KUBEADM}
# The components in the table's order: apiserver, etcd, controller-manager, scheduler, kubelet.
_COMPONENTS = list(dict.fromkeys(m.readers[0] for m in KUBEADM if m.readers))


def kubeadm_restarts(members, specs):
    """What must restart, and where, once ``members`` are renewed and handed out.

    One line a component (apiserver, etcd, controller-manager, scheduler,
    kubelet: the order of the kubeadm table), its hosts in the set's order, e.g.
    ``kube-apiserver (static pod) on m0, m1``.
    """
    masters, hosts = set_hosts(specs)
    where = {}
    for member in members:
        name, host = kubeadm_name(member)
        reader = _reader(name)
        if reader is None:
            continue
        component, scope = reader
        on = [host] if scope == "own" else masters
        where.setdefault(component, set()).update(on)
    order = _COMPONENTS
    return [
        f"{component} on {', '.join(h for h in hosts if h in where[component])}"
        for component in order
        if component in where
    ]


def renew_kubeadm_set(pki_root, cluster_tag, specs, certs=None, hosts=None, **options):
    """Renew leaves of a kubeadm set named in kubeadm's words; returns ``(plan, backup, skipped)``.

    ``certs`` None renews those that are due (within ``due_within`` days,
    default :data:`DEFAULT_RENEW_BEFORE_DAYS`), ``all`` every one, or the names
    given (see :func:`select_kubeadm_certs`).  The rest is :func:`renew_set`'s:
    subjects, SANs and usages copied from the files, CAs and ``sa.key`` never
    touched, a backup first.

    A certificate whose CA has no key here (an externally managed CA) cannot be
    renewed: among every certificate (``certs`` None or ``all``) it is left as
    it is and listed in ``skipped`` with the reason, and the others are
    renewed, as ``kubeadm certs renew`` does; named explicitly, it is refused
    (InputError) and nothing is written.  ``plan`` is None when nothing is
    left to renew.
    """
    directory = os.path.join(pki_root, cluster_tag)
    chosen_hosts = check_kubeadm_hosts(hosts, specs, options.pop("enrolling", ()))
    members, explicit = select_kubeadm_certs(certs, chosen_hosts, specs)
    signer = options.get("signer")
    # A CA whose key a signer keeps elsewhere (OpenBao) is not externally managed.
    keyless = (
        set() if signer is not None and signer.keeps_ca_keys else cas_without_key(directory, specs)
    )
    cannot = [m for m in members if specs[m].issuer in keyless]
    if cannot and certs not in (None, "", "all"):
        member = cannot[0]
        raise InputError(
            f"certs: {kubeadm_label(member)} is signed by {kubeadm_ca_name(specs[member].issuer)}, "
            f"whose key is not here (an externally managed CA): renew it with that CA and put "
            "it in the folder; nothing was renewed"
        )
    skipped = {
        kubeadm_label(m): (
            f"signed by {kubeadm_ca_name(specs[m].issuer)}, an externally managed CA (its key "
            "is not here): renew it with that CA"
        )
        for m in cannot
    }
    members = [m for m in members if m not in cannot]
    if not members:
        return None, None, skipped
    if not explicit and options.get("due_within") is None:
        options["due_within"] = DEFAULT_RENEW_BEFORE_DAYS
    plan, backup = renew_set(pki_root, cluster_tag, specs, members, **options)
    return plan, backup, skipped
