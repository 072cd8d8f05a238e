"""Argument checks: tags, addresses, DNS names, day counts, key types, hosts, endpoints."""

from __future__ import annotations

import contextlib
import ipaddress
import re

from .defaults import KEY_TYPES, KUBEADM_PORT
from .errors import InputError

# Every check matches the whole string (fullmatch): with re.match, "$" also
# matches before a trailing newline, which would then reach a SAN or a path.
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


_DAYS_RE = re.compile(r"-?[0-9]+")  # ASCII digits: int() also takes "٣٦٥", "1_000", " +5 "


def check_cluster_tag(value):
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value) or ".." in value:
        raise InputError(
            f"cluster_tag: {value!r} is not a safe folder name; use 1-63 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit, and no '..'"
        )
    return value


def check_ip(value, name="api_service_address"):
    """An IPv4 or IPv6 address, exactly as given (no spaces, no IPv6 zone)."""
    try:
        address = ipaddress.ip_address(value if isinstance(value, str) else str(value))
    except ValueError:
        raise InputError(f"{name}: {value!r} is not an IPv4 or IPv6 address") from None
    if getattr(address, "scope_id", None):
        # A certificate cannot hold the zone: the SAN would never equal the
        # request, and every run would issue the certificate again.
        raise InputError(
            f"{name}: {value!r} is a scoped IPv6 address; a certificate holds no zone "
            "(%...): give the address without it"
        )
    return address


def check_dns_name(value, name="api_server_fqdn"):
    text = value if isinstance(value, str) else ""
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InputError(
            f"{name}: {value!r} is not a valid DNS name (labels of letters, digits and '-', "
            "joined by '.')"
        )
    # Labels that are all digits may spell an IPv4 address (an IPv6 one never
    # passes the label check): only then is it worth asking ipaddress.
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            raise InputError(f"{name}: {value!r} is an IP address, not a DNS name")
    return text.rstrip(".").lower()


def check_bool(value, name):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputError(f"{name}: {value!r} is not a boolean (use True or False)")


def check_days(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f"{name}: {value!r} is not a whole number of days")
    if isinstance(value, str) and not _DAYS_RE.fullmatch(value):
        raise InputError(f"{name}: {value!r} is not a whole number of days (digits 0-9 only)")
    days = int(value)
    if days <= 0:
        raise InputError(f"{name}: {value!r} must be a positive number of days")
    if days > 36500:
        raise InputError(f"{name}: {value!r} is more than 100 years")
    return days


def check_key_type(value):
    key_type = str(value).strip().lower() if isinstance(value, str) else value
    if key_type not in KEY_TYPES:
        raise InputError(f"key_type: {value!r} is not one of {', '.join(KEY_TYPES)}")
    return key_type


def split_sans(values, name="extra_sans"):
    """Split a list (or comma-separated string) of names into (dns names, ip addresses)."""
    if values is None or values == "":
        return (), ()
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, (list, tuple)):
        raise InputError(f"{name}: {values!r} is not a list of DNS names and IP addresses")
    dns, ips = [], []
    for value in values:
        text = str(value).strip(" ")  # "a, b": the spaces after commas
        try:
            ipaddress.ip_address(text)
        except ValueError:
            dns.append(check_dns_name(text, name))
        else:
            ips.append(check_ip(text, name))
    return tuple(dns), tuple(ips)


_HOST_KEYS = ("name", "ip")


def check_hosts(value, name, need_ip=True):
    """A list of ``{name: ..., ip: ...}`` entries, checked: ``((name, ip or None), ...)``."""
    if value is None or value == "":
        return ()
    if not isinstance(value, (list, tuple)):
        raise InputError(
            f"{name}: {value!r} is not a list of {{name: ..., ip: ...}} entries "
            f"(on the command line: {name}='[{{name: host1, ip: 192.0.2.11}}]')"
        )
    hosts, seen_names, seen_ips = [], set(), {}
    for index, entry in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: {entry!r} is not a mapping with 'name' and 'ip'")
        unknown = sorted(str(k) for k in entry if k not in _HOST_KEYS)
        if unknown:
            raise InputError(f"{where}: unknown key {unknown[0]!r} (use 'name' and 'ip')")
        if "name" not in entry:
            raise InputError(f"{where}: 'name' is missing")
        host = check_dns_name(entry["name"], f"{where}.name")
        if entry.get("ip") is None:
            if need_ip:
                raise InputError(f"{where}: 'ip' is missing for {host}")
            ip = None
        else:
            ip = check_ip(entry["ip"], f"{where}.ip")
        if host in seen_names:
            raise InputError(f"{where}.name: {host!r} is listed twice")
        seen_names.add(host)
        if ip is not None and ip in seen_ips:
            raise InputError(f"{where}.ip: {ip} is also the address of {seen_ips[ip]!r}")
        if ip is not None:
            seen_ips[ip] = host
        hosts.append((host, ip))
    return tuple(hosts)


def check_endpoint(value, name="control_plane_endpoint"):
    """``host`` or ``host:port`` (``[v6]:port``) -> ``(host, port)``; host a DNS name or IP."""
    text = value if isinstance(value, str) else ""
    with contextlib.suppress(ValueError):  # a bare IPv6 address, no port
        ipaddress.IPv6Address(text)
        return str(check_ip(text, name)), KUBEADM_PORT
    host, port = text, KUBEADM_PORT
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?", text) or re.fullmatch(
        r"([^:\[\]]+)(?::([0-9]{1,5}))?", text
    )
    if match:
        host, port = match.group(1), int(match.group(2) or KUBEADM_PORT)
    if not match or not 0 < port < 65536:
        raise InputError(
            f"{name}: {value!r} is not host[:port] (a DNS name or IP address, port 1-65535)"
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return check_dns_name(host, name), port
    return str(check_ip(host, name)), port
