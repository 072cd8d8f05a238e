"""The two profiles as tables of members, and everything derived from them.

A profile is one table of :class:`Member` records (the model is kubeadm's
``certlist.go``: ``KubeadmCert`` and ``CertTree()``).  A member says what it is
(its kind, subject, usages, which CA signs it, which rule gives its SANs), how
many there are (one per set, per master or per host), who receives which of its
files and where they go.  The specs a set is issued from, the files each host
receives, the pillar keys, the checks of what a host holds and the reminders of
what must restart all derive from these tables: nothing here repeats a fact
the tables already hold.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .checks import check_bool, check_dns_name, check_endpoint, check_hosts, check_ip, split_sans
from .defaults import KUBEADM_PORT
from .errors import InputError
from .kinds import CA, CERTIFICATE, KEY_PAIR, KUBECONFIG, Kind
from .specs import CASpec, KeyPairSpec, KubeconfigSpec, LeafSpec

MASTER, NODE = "master", "node"
BOTH = (MASTER, NODE)

# How many of a member a set holds.
CLUSTER, PER_MASTER, PER_HOST = "cluster", "master", "host"

KUBEADM_HOSTS_DIR = "hosts"
KUBEADM_ADMIN_GROUP = "kubeadm:cluster-admins"


@dataclass(frozen=True)
class Member:
    """One member of a profile.

    ``path`` is its name in the set's folder (a per-master or per-host member
    lives under ``hosts/<host>/``); ``name`` is what operators call it
    (kubeadm's certificate names).  ``destinations`` lines up with the kind's
    files: where each is handed out (a pillar key for the seed profile, a path
    under /etc/kubernetes for kubeadm), None for a file that stays on the
    master.  ``holders`` receive the member, ``key_holders`` (default: the
    same) its private key.  ``{host}`` in ``common_name`` is the host's name.
    """

    name: str
    path: str
    kind: Kind
    common_name: str = ""
    organizations: tuple = ()
    usages: tuple = ()
    issuer: str = ""
    sans: str = ""  # a rule of SAN_RULES
    server: str = ""  # a kubeconfig's apiserver: a rule of SERVER_RULES
    scope: str = CLUSTER
    holders: tuple = ()
    key_holders: tuple | None = None
    destinations: tuple = ()
    # what must restart once it is renewed and handed out (kubeadm: on the
    # member's own host when it is per host, else on every master); none for a
    # file only people use (admin.conf) or read afresh each time (a probe's)
    readers: tuple = ()
    option: str = ""  # only in sets made with this setting true
    pillar: str = ""  # seed: the pillar mapping its destinations are keys of

    def receives(self, role, secret):
        """Whether a host of ``role`` receives the (secret or public) files of this member."""
        holders = self.holders if not secret or self.key_holders is None else self.key_holders
        return role in holders

    def handed_out(self):
        """``(file, destination)`` for each file of the member that leaves the master."""
        return [
            (f, dest) for f, dest in zip(self.kind.files, self.destinations, strict=True) if dest
        ]


_APISERVER = "kube-apiserver"
_SEED_READERS_KUBECFG = (
    "kubelet (every host: its kubeconfig)",
    "kube-proxy (every host: its kubeconfig)",
    "kube-controller-manager (masters: its kubeconfig)",
    "kube-scheduler (masters: its kubeconfig)",
)

CERTS_PILLAR = "kubernetes:certs"
SERVICE_ACCOUNT_PILLAR = "kubernetes:service_account"

#: The kube-up style set: a CA, the apiserver's pair, one admin pair, and the
#: optional key pair that signs service-account tokens.
SEED = (
    Member(
        "ca", "ca", CA, "kubernetes-ca",
        holders=BOTH, key_holders=(), destinations=("ca.crt", None), pillar=CERTS_PILLAR,
    ),
    Member(
        "server", "server", CERTIFICATE, "kube-apiserver", usages=("server",), issuer="ca",
        sans="seed-apiserver", holders=(MASTER,), destinations=("server.cert", "server.key"),
        readers=(f"{_APISERVER} (masters: server.cert, server.key)",), pillar=CERTS_PILLAR,
    ),
    Member(
        "kubecfg", "kubecfg", CERTIFICATE, "kubecfg", ("system:masters",), ("client",),
        issuer="ca", holders=BOTH, destinations=("kubecfg.crt", "kubecfg.key"),
        readers=_SEED_READERS_KUBECFG, pillar=CERTS_PILLAR,
    ),
    Member(
        "sa", "sa", KEY_PAIR, holders=(MASTER,), destinations=("sa.key", "sa.pub"),
        option="service_account_key", pillar=SERVICE_ACCOUNT_PILLAR,
    ),
)  # fmt: skip


def _static_pod(component):
    return f"{component} (static pod)"


#: kubeadm's layout: three CAs, their leaves, the service-account key pair,
#: the control plane's kubeconfigs, and per host its own certificates.
KUBEADM = (
    Member(
        "ca", "ca", CA, "kubernetes-ca", holders=BOTH, key_holders=(MASTER,),
        destinations=("pki/ca.crt", "pki/ca.key"),
    ),
    Member(
        "front-proxy-ca", "front-proxy-ca", CA, "kubernetes-front-proxy-ca",
        holders=(MASTER,), destinations=("pki/front-proxy-ca.crt", "pki/front-proxy-ca.key"),
    ),
    Member(
        "etcd-ca", "etcd/ca", CA, "etcd-ca",
        holders=(MASTER,), destinations=("pki/etcd/ca.crt", "pki/etcd/ca.key"),
    ),
    Member(
        "apiserver-kubelet-client", "apiserver-kubelet-client", CERTIFICATE,
        "kube-apiserver-kubelet-client", (KUBEADM_ADMIN_GROUP,), ("client",), issuer="ca",
        holders=(MASTER,),
        destinations=("pki/apiserver-kubelet-client.crt", "pki/apiserver-kubelet-client.key"),
        readers=(_static_pod(_APISERVER),),
    ),
    Member(
        "front-proxy-client", "front-proxy-client", CERTIFICATE, "front-proxy-client",
        usages=("client",), issuer="front-proxy-ca", holders=(MASTER,),
        destinations=("pki/front-proxy-client.crt", "pki/front-proxy-client.key"),
        readers=(_static_pod(_APISERVER),),
    ),
    Member(
        "etcd-healthcheck-client", "etcd/healthcheck-client", CERTIFICATE,
        "kube-etcd-healthcheck-client", usages=("client",), issuer="etcd/ca", holders=(MASTER,),
        destinations=("pki/etcd/healthcheck-client.crt", "pki/etcd/healthcheck-client.key"),
    ),
    Member(
        "apiserver-etcd-client", "apiserver-etcd-client", CERTIFICATE,
        "kube-apiserver-etcd-client", usages=("client",), issuer="etcd/ca", holders=(MASTER,),
        destinations=("pki/apiserver-etcd-client.crt", "pki/apiserver-etcd-client.key"),
        readers=(_static_pod(_APISERVER),),
    ),
    Member(
        "sa", "sa", KEY_PAIR, holders=(MASTER,), destinations=("pki/sa.key", "pki/sa.pub"),
    ),
    Member(
        "admin.conf", "admin.conf", KUBECONFIG, "kubernetes-admin", (KUBEADM_ADMIN_GROUP,),
        issuer="ca", server="endpoint", holders=(MASTER,), destinations=("admin.conf",),
    ),
    Member(
        "super-admin.conf", "super-admin.conf", KUBECONFIG, "kubernetes-super-admin",
        ("system:masters",), issuer="ca", server="endpoint", holders=(MASTER,),
        destinations=("super-admin.conf",),
    ),
    Member(
        "apiserver", "apiserver", CERTIFICATE, "kube-apiserver", usages=("server",),
        issuer="ca", sans="apiserver", scope=PER_MASTER, holders=(MASTER,),
        destinations=("pki/apiserver.crt", "pki/apiserver.key"),
        readers=(_static_pod(_APISERVER),),
    ),
    Member(
        "etcd-server", "etcd/server", CERTIFICATE, "kube-etcd", usages=("server", "client"),
        issuer="etcd/ca", sans="etcd", scope=PER_MASTER, holders=(MASTER,),
        destinations=("pki/etcd/server.crt", "pki/etcd/server.key"),
        readers=(_static_pod("etcd"),),
    ),
    Member(
        "etcd-peer", "etcd/peer", CERTIFICATE, "kube-etcd-peer", usages=("server", "client"),
        issuer="etcd/ca", sans="etcd", scope=PER_MASTER, holders=(MASTER,),
        destinations=("pki/etcd/peer.crt", "pki/etcd/peer.key"),
        readers=(_static_pod("etcd"),),
    ),
    # kubeadm points these two at the master's own apiserver, not the endpoint,
    # so that a master keeps working while the load balancer is down: one each.
    Member(
        "controller-manager.conf", "controller-manager.conf", KUBECONFIG,
        "system:kube-controller-manager", issuer="ca", server="own", scope=PER_MASTER,
        holders=(MASTER,), destinations=("controller-manager.conf",),
        readers=(_static_pod("kube-controller-manager"),),
    ),
    Member(
        "scheduler.conf", "scheduler.conf", KUBECONFIG, "system:kube-scheduler", issuer="ca",
        server="own", scope=PER_MASTER, holders=(MASTER,), destinations=("scheduler.conf",),
        readers=(_static_pod("kube-scheduler"),),
    ),
    Member(
        "kubelet.conf", "kubelet.conf", KUBECONFIG, "system:node:{host}", ("system:nodes",),
        issuer="ca", server="endpoint", scope=PER_HOST, holders=BOTH,
        destinations=("kubelet.conf",), readers=("kubelet",),
    ),
)  # fmt: skip

PROFILES = {"seed": SEED, "kubeadm": KUBEADM}


def host_enrolls(member):
    """Whether a host of an enrolled kubeadm set makes the key of ``member`` itself.

    Every certificate a master holds (its own apiserver and etcd server/peer,
    and the client certificates kubeadm shares between masters: each master
    enrolls its own key for them) and each host's ``kubelet.conf`` (its
    kubelet's client identity).  What stays on the master: the CAs, ``sa``
    and the kubeconfigs of the control plane and of admins.  The one source of
    what enrollment covers (enroll.py's members, the files pillar no longer
    hands out, the members an enrolled set leaves out).
    """
    return member.kind is CERTIFICATE or (member.kind is KUBECONFIG and member.scope == PER_HOST)


#: the files of kubeadm's layout (relative to /etc/kubernetes) a host of an enrolled
#: cluster enrolls instead of receiving them through pillar
KUBEADM_ENROLLED_FILES = frozenset(
    dest for member in KUBEADM if host_enrolls(member) for _, dest in member.handed_out()
)


def cert_tree(table):
    """``{CA path: [paths of the members it signs]}``: kubeadm's ``CertTree()``."""
    tree = {member.path: [] for member in table if member.kind.is_ca}
    for member in table:
        if member.issuer:
            tree[member.issuer].append(member.path)
    return tree


def member_path(member, host=None):
    """Where one instance of ``member`` lives in the set's folder."""
    if member.scope == CLUSTER:
        return member.path
    return f"{KUBEADM_HOSTS_DIR}/{host}/{member.path}"


def host_of(path):
    """The host a per-host path of a kubeadm set belongs to, or None for a cluster-wide one."""
    parts = path.split("/", 2)
    return parts[1] if len(parts) == 3 and parts[0] == KUBEADM_HOSTS_DIR else None


# --- From the table to specs --------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """What the SAN and server rules need to know about a cluster (checked)."""

    fqdn: str
    address: object
    domain: str
    extra_dns: tuple
    extra_ips: tuple
    endpoint: tuple = ()  # (host, port) of the control plane
    endpoint_sans: tuple = ((), ())  # its host as SANs: (DNS names, IP addresses)
    cluster_name: str = "kubernetes"


def _service_dns(facts):
    return ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
            f"kubernetes.default.svc.{facts.domain}"]  # fmt: skip


def _seed_apiserver_sans(facts, host, ip):
    dns = [facts.fqdn, *_service_dns(facts), *facts.extra_dns]
    return dns, [facts.address, *facts.extra_ips]


def _apiserver_sans(facts, host, ip):
    endpoint_dns, endpoint_ips = facts.endpoint_sans
    dns = [host, facts.fqdn, *endpoint_dns, *_service_dns(facts), *facts.extra_dns]
    return dns, [facts.address, ip, *endpoint_ips, *facts.extra_ips]


_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def _etcd_sans(facts, host, ip):
    return [host, "localhost"], [ip, *_LOOPBACK]


#: SAN rule -> (facts, host, ip) -> (DNS names, IP addresses)
SAN_RULES = {
    "": lambda facts, host, ip: ((), ()),
    "seed-apiserver": _seed_apiserver_sans,
    "apiserver": _apiserver_sans,
    "etcd": _etcd_sans,
}


def _url(host, port):
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


#: server rule -> (facts, host, ip) -> the apiserver URL a kubeconfig names
SERVER_RULES = {
    "endpoint": lambda facts, host, ip: _url(*facts.endpoint),
    "own": lambda facts, host, ip: _url(str(ip), KUBEADM_PORT),  # the master's own apiserver
}


def _spec(member, facts, host=None, ip=None):
    """The spec one instance of ``member`` must satisfy."""
    if member.kind.is_ca:
        return CASpec(member.common_name, member.organizations)
    if not member.kind.signed:
        return KeyPairSpec()
    common_name = member.common_name.format(host=host)
    if member.kind.embeds_ca:
        server = SERVER_RULES[member.server](facts, host, ip)
        return KubeconfigSpec(
            common_name, member.organizations, server, facts.cluster_name, member.issuer
        )
    dns, ips = SAN_RULES[member.sans](facts, host, ip)
    return LeafSpec(
        common_name,
        member.organizations,
        member.usages,
        tuple(dict.fromkeys(dns)),
        tuple(dict.fromkeys(ips)),
        member.issuer,
    )


def _specs(table, facts, masters=(), nodes=(), options=(), leave_out=None):
    """Every instance of every member of ``table``: ``{path in the set: spec}``, CAs first.

    ``leave_out``: a predicate on members the set does not hold (those hosts enroll).
    """
    specs = {}
    for member in table:
        if member.option and member.option not in options:
            continue
        if leave_out is not None and leave_out(member):
            continue
        if member.scope == CLUSTER:
            specs[member.path] = _spec(member, facts)
            continue
        hosts = masters if member.scope == PER_MASTER else (*masters, *nodes)
        for host, ip in hosts:
            specs[member_path(member, host)] = _spec(member, facts, host, ip)
    return specs


def _facts(api_server_fqdn, api_service_address, cluster_domain, extra_sans, **more):
    extra_dns, extra_ips = split_sans(extra_sans)
    return _Facts(
        fqdn=check_dns_name(api_server_fqdn, "api_server_fqdn"),
        address=check_ip(api_service_address, "api_service_address"),
        domain=check_dns_name(cluster_domain, "cluster_domain"),
        extra_dns=extra_dns,
        extra_ips=extra_ips,
        **more,
    )


def seed_specs(
    api_server_fqdn="kubernetes.api",
    api_service_address="10.254.0.1",
    cluster_domain="cluster.local",
    extra_sans=(),
    service_account_key=False,
    masters=(),
    nodes=(),
):
    """The kube-up style set (``ca``, ``server``, ``kubecfg``), checked and ready to issue.

    ``service_account_key`` adds ``sa.key``/``sa.pub``: a key pair of its own for
    signing service-account tokens, so that a new serving certificate does not
    invalidate every token (the seed signs them with ``server.key``).
    ``masters`` and ``nodes`` (lists of ``{name, ip}``, optional) are the hosts
    that may enroll (docs/enrollment.md); they add no member to the set.
    """
    check_disjoint_hosts(
        check_hosts(masters, "masters"), check_hosts(nodes, "nodes", need_ip=False)
    )
    facts = _facts(api_server_fqdn, api_service_address, cluster_domain, extra_sans)
    with_sa = check_bool(service_account_key, "service_account_key")
    return _specs(SEED, facts, options=("service_account_key",) if with_sa else ())


def check_disjoint_hosts(master_hosts, node_hosts):
    """Refuse a node that is also a master (by name or address): a host has one role."""
    master_names = dict(master_hosts)
    master_ips = {ip: host for host, ip in master_hosts}
    for index, (host, ip) in enumerate(node_hosts):
        if host in master_names:
            raise InputError(f"nodes[{index}].name: {host!r} is also listed in masters")
        if ip in master_ips:
            raise InputError(f"nodes[{index}].ip: {ip} is also the address of {master_ips[ip]!r}")


def kubeadm_specs(
    masters,
    nodes=(),
    api_server_fqdn="kubernetes.api",
    api_service_address="10.254.0.1",
    cluster_domain="cluster.local",
    extra_sans=(),
    control_plane_endpoint=None,
    cluster_name="kubernetes",
):
    """kubeadm's set for these hosts, checked and ready to issue.

    ``masters`` and ``nodes`` are lists of ``{name, ip}`` (a node's ip is
    optional).  Every host gets a kubelet kubeconfig (``system:node:<name>``);
    each master also gets its own apiserver, etcd server and etcd peer
    certificates, naming its host name and address.
    """
    return kubeadm_specs_of_hosts(
        check_hosts(masters, "masters"),
        check_hosts(nodes, "nodes", need_ip=False),
        api_server_fqdn=api_server_fqdn,
        api_service_address=api_service_address,
        cluster_domain=cluster_domain,
        extra_sans=extra_sans,
        control_plane_endpoint=control_plane_endpoint,
        cluster_name=cluster_name,
    )


def kubeadm_specs_of_hosts(
    master_hosts,
    node_hosts,
    *,
    api_server_fqdn,
    api_service_address,
    cluster_domain,
    extra_sans,
    control_plane_endpoint,
    cluster_name,
    enrolled=False,
):
    """:func:`kubeadm_specs` of hosts already checked (``check_hosts``' ``((name, ip), ...)``).

    A set's recorded settings were checked when they were recorded; checking
    thousands of host names again on every run is most of what it costs to
    decide that nothing changes.  ``enrolled``: the hosts enroll what
    :func:`host_enrolls` names, so the set leaves those members out (no key of
    theirs is made or kept on the master).
    """
    fqdn = check_dns_name(api_server_fqdn, "api_server_fqdn")
    if not master_hosts:
        raise InputError("masters: the kubeadm profile needs at least one master {name, ip}")
    check_disjoint_hosts(master_hosts, node_hosts)
    if control_plane_endpoint in (None, ""):
        endpoint = (fqdn, KUBEADM_PORT)
    else:
        endpoint = check_endpoint(control_plane_endpoint)
    facts = _facts(
        fqdn,
        api_service_address,
        cluster_domain,
        extra_sans,
        endpoint=endpoint,
        endpoint_sans=split_sans([endpoint[0]], "control_plane_endpoint"),
        cluster_name=cluster_name,
    )
    leave_out = host_enrolls if enrolled else None
    return _specs(KUBEADM, facts, master_hosts, node_hosts, leave_out=leave_out)


# --- From the table to what each host receives ------------------------------------------


def _received(table, role, pillar=None):
    """``(member, file, destination)`` for every file a host of ``role`` receives."""
    for member in table:
        if pillar is not None and member.pillar != pillar:
            continue
        for f, dest in member.handed_out():
            if member.receives(role, f.secret):
                yield member, f, dest


def kubeadm_host_files(host, master):
    """What one host receives: ``{path under /etc/kubernetes: path in the set's folder}``.

    A master gets everything kubeadm keeps on a control-plane host (the CA keys
    included); a node gets the cluster CA certificate and its own kubelet.conf,
    no key but its own.
    """
    host = check_dns_name(host, "host")
    role = MASTER if master else NODE
    return {
        dest: member_path(member, host) + f.suffix for member, f, dest in _received(KUBEADM, role)
    }


#: every file the kubeadm profile may lay down on a host (paths under /etc/kubernetes)
KUBEADM_HOST_FILES = tuple(dest for member in KUBEADM for _, dest in member.handed_out())

#: what a kubeadm node holds
KUBEADM_NODE_FILES = tuple(dest for _, _, dest in _received(KUBEADM, NODE))

_KUBEADM_DESTINATIONS = {
    dest: (member, f) for member in KUBEADM for f, dest in member.handed_out()
}  # fmt: skip

#: CA path in the set -> its certificate on a host
KUBEADM_CAS = {member.path: member.destinations[0] for member in KUBEADM if member.kind.is_ca}


def kubeadm_file_mode(rel):
    """The mode of a laid-down kubeadm file: keys and kubeconfigs 0600, the rest 0644."""
    return _KUBEADM_DESTINATIONS[rel][1].mode


def kubeadm_issuer(rel):
    """Which CA file (relative to /etc/kubernetes) signs the laid-down file ``rel``."""
    member = _KUBEADM_DESTINATIONS[rel][0]
    return KUBEADM_CAS[member.issuer or member.path]


#: pillar key under kubernetes:certs -> file of the set on the master
PILLAR_FILES = {
    dest: member.path + f.suffix
    for member in SEED
    if member.pillar == CERTS_PILLAR
    for f, dest in member.handed_out()
}

#: pillar keys only masters receive (nodes never get the apiserver's pair)
MASTERS_ONLY = tuple(
    dest
    for member, f, dest in _received(SEED, MASTER, CERTS_PILLAR)
    if not member.receives(NODE, f.secret)
)

#: the optional service-account key pair -> pillar kubernetes:service_account (masters only)
SERVICE_ACCOUNT_FILES = tuple(
    dest for member in SEED if member.pillar == SERVICE_ACCOUNT_PILLAR
    for _, dest in member.handed_out()
)  # fmt: skip

#: the CA certificate every minion gets
DIST_CA = next(member.destinations[0] for member in SEED if member.kind.is_ca)

#: (certificate, key, required) pillar keys of each pair; those nodes do not
#: receive are optional (a node has none of them)
DIST_PAIRS = tuple(
    sorted(
        (
            (*member.destinations, member.receives(NODE, True))
            for member in SEED
            if member.pillar == CERTS_PILLAR and member.kind.signed
        ),
        key=lambda pair: not pair[2],
    )
)

DIST_KEYS = (DIST_CA, *(name for pair in DIST_PAIRS for name in pair[:2]))

#: key pillar key -> the certificate pillar key it belongs to
KEY_PAIRS = {key: cert for cert, key, _ in DIST_PAIRS}

#: what a role must never hold, whatever its pillar says: a node gets the CA,
#: and the seed's kubecfg pair (its kubelet and kube-proxy use it), but never
#: the apiserver's key nor the key that signs service-account tokens.
ROLE_FORBIDDEN = {
    NODE: tuple(
        dest
        for member in SEED
        for f, dest in member.handed_out()
        if f.secret and not member.receives(NODE, True)
    )
}


def role_forbidden(role, held):
    """Which of ``held`` (pillar keys / file names) the ``role`` must not hold."""
    return [name for name in ROLE_FORBIDDEN.get(role, ()) if name in held]


def readers(profile, path):
    """What reads the member at ``path`` of a ``profile`` set: what must restart after a renewal."""
    base = path.split("/", 2)[2] if host_of(path) else path
    for member in PROFILES[profile]:
        if member.path == base:
            return list(member.readers)
    return []


def kubelet_serving_spec(host, ip=None):
    """A kubelet's serving certificate, as kubelet's ``serverTLSBootstrap`` asks for it.

    ``CN=system:node:<host>``, ``O=system:nodes``, serverAuth, the host's name
    (and address, when the set records one) as SANs.  kubeadm does not make it
    (a kubelet signs its own unless it bootstraps one); an enrolled host gets
    it signed by the cluster CA like its client certificate, so it is no row of
    the tables (which list what the master issues into the set's folder).
    """
    return LeafSpec(
        f"system:node:{host}",
        ("system:nodes",),
        ("server",),
        dns_names=(host,),
        ip_addresses=(ipaddress.ip_address(ip),) if ip else (),
    )


#: kubeadm's own names for a kubeadm set's members (``kubeadm certs
#: check-expiration`` / ``kubeadm certs renew``) -> the member's path in the set;
#: ``{host}`` marks one member per host.  The leaves by name, then the CAs.
KUBEADM_CERT_NAMES = {
    member.name: member_path(member, "{host}")
    for member in sorted(KUBEADM, key=lambda m: (m.kind.is_ca, m.name))
    if member.kind.signed or member.kind.is_ca
}
