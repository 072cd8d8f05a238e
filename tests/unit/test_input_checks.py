"""The library's input checks match whole strings (issue 10, item 7).

``re.match(...$)`` lets a trailing newline through; ``int()`` takes non-ASCII
digits and ``1_000``; ``ipaddress`` takes an IPv6 zone.  The runner, both
ext_pillars and the kubeadm host checks all go through these functions.
"""

import pytest
from support import k8s_pki

CASES = [
    (k8s_pki.check_cluster_tag, "prod\n", "cluster_tag: "),
    (k8s_pki.check_cluster_tag, "prod\r", "cluster_tag: "),
    (k8s_pki.check_dns_name, "kubernetes.api\n", "api_server_fqdn: "),
    (k8s_pki.check_dns_name, "kube\n.api", "api_server_fqdn: "),
    (k8s_pki.check_dns_name, "ku\u0431e.api", "api_server_fqdn: "),
    (k8s_pki.check_ip, "10.0.0.1\n", "api_service_address: "),
    (k8s_pki.check_ip, " 10.0.0.1", "api_service_address: "),
    (k8s_pki.check_ip, "fe80::1%eth0", "api_service_address: "),
    (lambda v: k8s_pki.split_sans([v]), "fe80::1%eth0", "extra_sans: "),
    (lambda v: k8s_pki.split_sans([v]), "a.example\n", "extra_sans: "),
    (lambda v: k8s_pki.check_days(v, "days"), "٣٦٥", "days: "),
    (lambda v: k8s_pki.check_days(v, "days"), "1_000", "days: "),
    (lambda v: k8s_pki.check_days(v, "days"), "365\n", "days: "),
    (lambda v: k8s_pki.check_days(v, "days"), "+365", "days: "),
    (lambda v: k8s_pki.check_days(v, "days"), "--5", "days: "),
    (k8s_pki.check_endpoint, "lb.example\n", "control_plane_endpoint: "),
    (k8s_pki.check_endpoint, "lb.example:6443\n", "control_plane_endpoint: "),
    (k8s_pki.check_endpoint, "lb.example:٦٤٤٣", "control_plane_endpoint: "),
    (k8s_pki.check_endpoint, "fe80::1%eth0", "control_plane_endpoint: "),
    (k8s_pki.check_endpoint, "[fe80::1%eth0]:6443", "control_plane_endpoint: "),
    (lambda v: k8s_pki.check_hosts([{"name": v, "ip": "192.0.2.1"}], "masters"), "m1\n", "masters"),
    (
        lambda v: k8s_pki.check_hosts([{"name": "m1", "ip": v}], "masters"),
        "fe80::1%eth0",
        "masters",
    ),
    (lambda v: k8s_pki.kubeadm_host_files(v, True), "m1\n", "host: "),
]


@pytest.mark.parametrize("check, value, message", CASES, ids=[repr(c[1]) for c in CASES])
def test_refused(check, value, message):
    with pytest.raises(k8s_pki.InputError) as err:
        check(value)
    assert str(err.value).startswith(message), err.value


def test_what_stays_accepted():
    assert k8s_pki.check_cluster_tag("prod-1.a_b") == "prod-1.a_b"
    assert k8s_pki.check_dns_name("Kubernetes.API.") == "kubernetes.api"
    assert str(k8s_pki.check_ip("fe80::1")) == "fe80::1"
    assert k8s_pki.check_days("365", "days") == 365 and k8s_pki.check_days(30, "days") == 30
    assert k8s_pki.check_endpoint("lb.example:8443") == ("lb.example", 8443)
    assert k8s_pki.check_endpoint("[2001:db8::1]:6443") == ("2001:db8::1", 6443)
    assert k8s_pki.check_endpoint("2001:db8::1") == ("2001:db8::1", 6443)
    dns, ips = k8s_pki.split_sans("a.example, 192.0.2.1")  # spaces after commas
    assert dns == ("a.example",) and [str(ip) for ip in ips] == ["192.0.2.1"]
