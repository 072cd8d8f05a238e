"""The profiles' members (seed and kubeadm) and which files each host receives."""

from __future__ import annotations

import ipaddress

from .checks import check_bool, check_dns_name, check_endpoint, check_hosts, check_ip, split_sans
from .defaults import CERT_MODE, KEY_MODE, KUBEADM_PORT
from .errors import InputError
from .specs import CASpec, KeyPairSpec, KubeconfigSpec, LeafSpec


def seed_specs(
    api_server_fqdn="kubernetes.api",
    api_service_address="10.254.0.1",
    cluster_domain="cluster.local",
    extra_sans=(),
    service_account_key=False,
):
    """The kube-up style set (``ca``, ``server``, ``kubecfg``), checked and ready to issue.

    ``service_account_key`` adds ``sa.key``/``sa.pub``: a key pair of its own for
    signing service-account tokens, so that a new serving certificate does not
    invalidate every token (the seed signs them with ``server.key``).
    """
    fqdn = check_dns_name(api_server_fqdn, "api_server_fqdn")
    address = check_ip(api_service_address, "api_service_address")
    domain = check_dns_name(cluster_domain, "cluster_domain")
    extra_dns, extra_ips = split_sans(extra_sans)
    dns = [fqdn, "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns += [f"kubernetes.default.svc.{domain}", *extra_dns]
    return {
        "ca": CASpec(common_name="kubernetes-ca"),
        "server": LeafSpec(
            common_name="kube-apiserver",
            usages=("server",),
            dns_names=tuple(dict.fromkeys(dns)),
            ip_addresses=tuple(dict.fromkeys([address, *extra_ips])),
        ),
        "kubecfg": LeafSpec(
            common_name="kubecfg",
            organizations=("system:masters",),
            usages=("client",),
        ),
        **({"sa": KeyPairSpec()} if check_bool(service_account_key, "service_account_key") else {}),
    }


KUBEADM_HOSTS_DIR = "hosts"


KUBEADM_ADMIN_GROUP = "kubeadm:cluster-admins"


def _url(host, port):
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


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
    fqdn = check_dns_name(api_server_fqdn, "api_server_fqdn")
    address = check_ip(api_service_address, "api_service_address")
    domain = check_dns_name(cluster_domain, "cluster_domain")
    extra_dns, extra_ips = split_sans(extra_sans)
    master_hosts = check_hosts(masters, "masters")
    if not master_hosts:
        raise InputError("masters: the kubeadm profile needs at least one master {name, ip}")
    node_hosts = check_hosts(nodes, "nodes", need_ip=False)
    master_ips = {ip: host for host, ip in master_hosts}
    for index, (host, ip) in enumerate(node_hosts):
        if host in dict(master_hosts):
            raise InputError(f"nodes[{index}].name: {host!r} is also listed in masters")
        if ip in master_ips:
            raise InputError(f"nodes[{index}].ip: {ip} is also the address of {master_ips[ip]!r}")
    if control_plane_endpoint in (None, ""):
        endpoint = (fqdn, KUBEADM_PORT)
    else:
        endpoint = check_endpoint(control_plane_endpoint)
    server = _url(*endpoint)
    endpoint_dns, endpoint_ips = split_sans([endpoint[0]], "control_plane_endpoint")

    def conf(cn, orgs=()):
        return KubeconfigSpec(cn, tuple(orgs), server=server, cluster_name=cluster_name)

    specs = {
        "ca": CASpec(common_name="kubernetes-ca"),
        "front-proxy-ca": CASpec(common_name="kubernetes-front-proxy-ca"),
        "etcd/ca": CASpec(common_name="etcd-ca"),
        "apiserver-kubelet-client": LeafSpec(
            "kube-apiserver-kubelet-client", (KUBEADM_ADMIN_GROUP,), ("client",)
        ),
        "front-proxy-client": LeafSpec(
            "front-proxy-client", usages=("client",), issuer="front-proxy-ca"
        ),
        "etcd/healthcheck-client": LeafSpec(
            "kube-etcd-healthcheck-client", usages=("client",), issuer="etcd/ca"
        ),
        "apiserver-etcd-client": LeafSpec(
            "kube-apiserver-etcd-client", usages=("client",), issuer="etcd/ca"
        ),
        "sa": KeyPairSpec(),
        "admin.conf": conf("kubernetes-admin", [KUBEADM_ADMIN_GROUP]),
        "super-admin.conf": conf("kubernetes-super-admin", ["system:masters"]),
        "controller-manager.conf": conf("system:kube-controller-manager"),
        "scheduler.conf": conf("system:kube-scheduler"),
    }
    service_dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    service_dns.append(f"kubernetes.default.svc.{domain}")
    loopback = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for host, ip in master_hosts:
        here = f"{KUBEADM_HOSTS_DIR}/{host}"
        dns = [host, fqdn, *endpoint_dns, *service_dns, *extra_dns]
        ips = [address, ip, *endpoint_ips, *extra_ips]
        specs[f"{here}/apiserver"] = LeafSpec(
            "kube-apiserver",
            usages=("server",),
            dns_names=tuple(dict.fromkeys(dns)),
            ip_addresses=tuple(dict.fromkeys(ips)),
        )
        for leaf, cn in (("server", "kube-etcd"), ("peer", "kube-etcd-peer")):
            specs[f"{here}/etcd/{leaf}"] = LeafSpec(
                cn,
                usages=("server", "client"),
                dns_names=(host, "localhost"),
                ip_addresses=tuple(dict.fromkeys([ip, *loopback])),
                issuer="etcd/ca",
            )
    for host, _ in master_hosts + node_hosts:
        specs[f"{KUBEADM_HOSTS_DIR}/{host}/kubelet.conf"] = conf(
            f"system:node:{host}", ["system:nodes"]
        )
    return specs


# Where each file of the set goes on a host, relative to /etc/kubernetes.
_KUBEADM_MASTER_SHARED = (
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key",
    "front-proxy-client.crt",
    "front-proxy-client.key",
    "etcd/healthcheck-client.crt",
    "etcd/healthcheck-client.key",
    "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
    "sa.key",
    "sa.pub",
)


_KUBEADM_MASTER_OWN = (
    "apiserver.crt",
    "apiserver.key",
    "etcd/server.crt",
    "etcd/server.key",
    "etcd/peer.crt",
    "etcd/peer.key",
)


_KUBEADM_CONFS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")


def kubeadm_host_files(host, master):
    """What one host receives: ``{path under /etc/kubernetes: path in the set's folder}``.

    A master gets everything kubeadm keeps on a control-plane host (the CA keys
    included); a node gets the cluster CA certificate and its own kubelet.conf,
    no key but its own.
    """
    host = check_dns_name(host, "host")
    own = f"{KUBEADM_HOSTS_DIR}/{host}"
    files = {"pki/ca.crt": "ca.crt", "kubelet.conf": f"{own}/kubelet.conf"}
    if master:
        files.update({f"pki/{rel}": rel for rel in _KUBEADM_MASTER_SHARED})
        files.update({f"pki/{rel}": f"{own}/{rel}" for rel in _KUBEADM_MASTER_OWN})
        files.update({conf: conf for conf in _KUBEADM_CONFS})
    return files


KUBEADM_HOST_FILES = tuple(
    ["pki/ca.crt", "kubelet.conf"]
    + [f"pki/{rel}" for rel in _KUBEADM_MASTER_SHARED + _KUBEADM_MASTER_OWN if rel != "ca.crt"]
    + list(_KUBEADM_CONFS)
)


KUBEADM_NODE_FILES = ("pki/ca.crt", "kubelet.conf")


KUBEADM_CAS = {"ca": "pki/ca.crt", "front-proxy-ca": "pki/front-proxy-ca.crt"}


KUBEADM_CAS["etcd/ca"] = "pki/etcd/ca.crt"


def kubeadm_file_mode(rel):
    """The mode of a laid-down kubeadm file: keys and kubeconfigs 0600, the rest 0644."""
    return KEY_MODE if rel.endswith((".key", ".conf")) else CERT_MODE


def kubeadm_issuer(rel):
    """Which CA file (relative to /etc/kubernetes) signs the laid-down file ``rel``."""
    if rel == "pki/apiserver-etcd-client.crt" or rel.startswith("pki/etcd/"):
        return KUBEADM_CAS["etcd/ca"]
    if rel == "pki/front-proxy-client.crt":
        return KUBEADM_CAS["front-proxy-ca"]
    return KUBEADM_CAS["ca"]


#: The CA certificate(s) every minion gets.
#: pillar key under kubernetes:certs -> file of the set on the master
PILLAR_FILES = {
    "ca.crt": "ca.crt",
    "kubecfg.crt": "kubecfg.crt",
    "kubecfg.key": "kubecfg.key",
    "server.cert": "server.crt",
    "server.key": "server.key",
}


#: pillar keys only masters receive (nodes never get the apiserver's pair)
MASTERS_ONLY = ("server.cert", "server.key")


#: the optional service-account key pair -> pillar kubernetes:service_account (masters only)
SERVICE_ACCOUNT_FILES = ("sa.key", "sa.pub")


DIST_CA = "ca.crt"


#: (certificate, key, required) pairs; the server pair goes to masters only.
DIST_PAIRS = (("kubecfg.crt", "kubecfg.key", True), ("server.cert", "server.key", False))


DIST_KEYS = (DIST_CA, *(name for pair in DIST_PAIRS for name in pair[:2]))


#: what a role must never hold, whatever its pillar says: a node gets the CA,
#: and the seed's kubecfg pair (its kubelet and kube-proxy use it), but never
#: the apiserver's key nor the key that signs service-account tokens.
ROLE_FORBIDDEN = {"node": ("server.key", "sa.key")}


def role_forbidden(role, held):
    """Which of ``held`` (pillar keys / file names) the ``role`` must not hold."""
    return [name for name in ROLE_FORBIDDEN.get(role, ()) if name in held]


#: key pillar key -> the certificate pillar key it belongs to
KEY_PAIRS = {"kubecfg.key": "kubecfg.crt", "server.key": "server.cert"}


#: kubeadm's own names for a kubeadm set's members (``kubeadm certs
#: check-expiration`` / ``kubeadm certs renew``) -> the member; ``{host}``
#: marks one member per host.  The CAs last.
KUBEADM_CERT_NAMES = {
    "admin.conf": "admin.conf",
    "apiserver": f"{KUBEADM_HOSTS_DIR}/{{host}}/apiserver",
    "apiserver-etcd-client": "apiserver-etcd-client",
    "apiserver-kubelet-client": "apiserver-kubelet-client",
    "controller-manager.conf": "controller-manager.conf",
    "etcd-healthcheck-client": "etcd/healthcheck-client",
    "etcd-peer": f"{KUBEADM_HOSTS_DIR}/{{host}}/etcd/peer",
    "etcd-server": f"{KUBEADM_HOSTS_DIR}/{{host}}/etcd/server",
    "front-proxy-client": "front-proxy-client",
    "kubelet.conf": f"{KUBEADM_HOSTS_DIR}/{{host}}/kubelet.conf",
    "scheduler.conf": "scheduler.conf",
    "super-admin.conf": "super-admin.conf",
    "ca": "ca",
    "etcd-ca": "etcd/ca",
    "front-proxy-ca": "front-proxy-ca",
}
