"""The set's manifest, ``cluster.yaml``: which profile made the set, with which settings.

A re-run of ``generate_certs`` with fewer arguments takes the missing ones
from here, so forgetting an argument never reissues a certificate; a setting
given explicitly that differs from the record changes it, and the caller says
which files that reissues.  Sets made before the manifest existed have none:
their profile is inferred once from the files, their settings from the
certificates where they say it, and the manifest is written at the next write.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re

import yaml

from .checks import (
    check_bool,
    check_days,
    check_dns_name,
    check_endpoint,
    check_hosts,
    check_ip,
    check_key_type,
    split_sans,
)
from .crypto import cert_sans, key_type_of
from .defaults import (
    DEFAULT_CA_DAYS,
    DEFAULT_KEY_TYPE,
    DEFAULT_LEAF_DAYS,
    KUBEADM_PORT,
    MANIFEST_FILE,
)
from .errors import InputError, PKIError, SetError
from .guard import check_set_folder, lstat_or_none, read_store_file
from .kubeconfig import parse_kubeconfig
from .profiles import KUBEADM_HOSTS_DIR, host_of, kubeadm_specs_of_hosts, seed_specs
from .record import recorded_settings
from .store import read_pair

MANIFEST_FORMAT = 1

#: where the set's CA keys live (signer.py); only a non-default one is written
BACKENDS = ("local", "openbao")
DEFAULT_BACKEND = "local"

PROFILES = ("seed", "kubeadm")

#: every profile's settings and their defaults (what generate_certs uses when neither
#: the arguments nor the record say otherwise)
COMMON_DEFAULTS = {
    "api_server_fqdn": "kubernetes.api",
    "api_service_address": "10.254.0.1",
    "cluster_domain": "cluster.local",
    "extra_sans": [],
    "key_type": DEFAULT_KEY_TYPE,
    "ca_days": DEFAULT_CA_DAYS,
    "days": DEFAULT_LEAF_DAYS,
}

PROFILE_DEFAULTS = {
    "seed": {**COMMON_DEFAULTS, "service_account_key": False, "masters": [], "nodes": []},
    "kubeadm": {
        **COMMON_DEFAULTS,
        "masters": [],
        "nodes": [],
        "control_plane_endpoint": None,
        "cluster_name": "kubernetes",
        # the hosts enroll their own pairs (docs/enrollment.md): the set leaves them out
        "enrolled": False,
    },
}

#: settings a manifest may leave out (then: the default), and leaves out when they hold
#: the default: a seed set's hosts, recorded only for enrollment, so that the manifest
#: of a seed set without hosts is the one earlier formulas wrote and read
_OPTIONAL = {"seed": ("masters", "nodes"), "kubeadm": ("enrolled",)}

# Settings that only change what new keys and certificates will be like: a
# change is recorded, but reissues nothing by itself.
_NO_REISSUE = ("key_type", "ca_days", "days")


def _endpoint_text(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _hosts(value, name, need_ip):
    return [
        {"name": host, "ip": str(ip)} if ip is not None else {"name": host}
        for host, ip in check_hosts(value, name, need_ip=need_ip)
    ]


def _cluster_name(value, name):
    if not isinstance(value, str) or not value or value != value.strip() or "\n" in value:
        raise InputError(f"{name}: {value!r} is not a cluster name")
    return value


def canonical(name, value, where=None):
    """``value`` of the setting ``name``, checked, in the form the manifest records."""
    where = where or name
    if name in ("api_server_fqdn", "cluster_domain"):
        return check_dns_name(value, where)
    if name == "api_service_address":
        return str(check_ip(value, where))
    if name == "extra_sans":
        dns, ips = split_sans(value, where)
        return [*dns, *(str(ip) for ip in ips)]
    if name == "key_type":
        return check_key_type(value)
    if name in ("ca_days", "days"):
        return check_days(value, where)
    if name in ("service_account_key", "enrolled"):
        return check_bool(value, where)
    if name == "masters":
        return _hosts(value, where, need_ip=True)
    if name == "nodes":
        return _hosts(value, where, need_ip=False)
    if name == "control_plane_endpoint":
        return None if value in (None, "") else _endpoint_text(*check_endpoint(value, where))
    if name == "cluster_name":
        return _cluster_name(value, where)
    raise InputError(f"{where}: unknown setting")


# libyaml's safe loader and dumper where PyYAML has them: a kubeadm set's
# manifest lists every host (thousands), and the pure-Python ones are ~10x slower.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def manifest_path(directory):
    return os.path.join(directory, MANIFEST_FILE)


def _bad(path, why):
    return SetError(
        f'{path}: {why}; fix it (see docs/lifecycle.md, "The set\'s manifest") or move it '
        "away, and k8s-helper infers the settings from the certificates again"
    )


def parse_manifest(data, path):
    """The settings a manifest's bytes record, checked strictly; SetError naming ``path``."""
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except (UnicodeDecodeError, yaml.YAMLError):
        raise _bad(path, "not a YAML manifest") from None
    if not isinstance(doc, dict):
        raise _bad(path, "not a mapping of settings")
    version = doc.get("format")
    if version != MANIFEST_FORMAT or isinstance(version, bool):
        raise SetError(
            f"{path}: format {version!r} is not one this k8s-helper reads (format "
            f"{MANIFEST_FORMAT}); a newer formula wrote it: upgrade the formula on the master"
        )
    profile = doc.get("profile")
    if profile not in PROFILES:
        raise _bad(path, f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    defaults = PROFILE_DEFAULTS[profile]
    unknown = sorted(
        str(key) for key in doc if key not in ("format", "profile", "backend", *defaults)
    )
    if unknown:
        raise _bad(path, f"unknown key {unknown[0]!r} for profile {profile}")
    missing = [key for key in defaults if key not in doc and key not in _OPTIONAL[profile]]
    if missing:
        raise _bad(path, f"{missing[0]!r} is missing")
    settings = {"profile": profile}
    if "backend" in doc:
        if doc["backend"] not in BACKENDS:
            raise _bad(path, f"backend {doc['backend']!r} is not one of {', '.join(BACKENDS)}")
        settings["backend"] = doc["backend"]
    for key in defaults:
        value = doc.get(key, defaults[key])
        if key == "extra_sans" and not isinstance(value, list):
            raise _bad(path, f"extra_sans: {value!r} is not a list")
        if key in ("ca_days", "days") and (isinstance(value, bool) or not isinstance(value, int)):
            raise _bad(path, f"{key}: {value!r} is not a whole number")
        if key in ("service_account_key", "enrolled") and not isinstance(value, bool):
            raise _bad(path, f"{key}: {value!r} is not true or false")
        try:
            settings[key] = canonical(key, value)
        except InputError as err:
            raise _bad(path, str(err)) from None
    return settings


def read_manifest(directory):
    """The settings ``<directory>/cluster.yaml`` records, or None when there is none."""
    cached = recorded_settings(directory)
    if cached is not None:  # the very file a writer rendered from these settings
        return cached
    path = manifest_path(directory)
    data = read_store_file(path)  # refused unless the master's user alone controls it
    if data is None:
        return None
    return parse_manifest(data, path)


def render_manifest(settings):
    """The bytes of a manifest recording ``settings`` (which hold ``profile``)."""
    profile = settings["profile"]
    doc = {"format": MANIFEST_FORMAT, "profile": profile}
    if settings.get("backend", DEFAULT_BACKEND) != DEFAULT_BACKEND:
        doc["backend"] = settings["backend"]
    doc.update(
        {
            key: settings[key]
            for key, default in PROFILE_DEFAULTS[profile].items()
            if key not in _OPTIONAL[profile] or settings.get(key, default) != default
        }
    )
    header = (
        "# Written by salt-run k8s-helper.generate_certs: the profile and settings this set\n"
        "# was made with. A re-run without an argument uses the value recorded here.\n"
    )
    hosts = {key: doc.pop(key) for key in _HOST_LISTS if key in doc}
    body = yaml.dump(doc, Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False)
    return (header + body + "".join(_host_lines(k, v) for k, v in hosts.items())).encode()


# The settings that list hosts: a kubeadm set may have thousands of them.
_HOST_LISTS = ("masters", "nodes")


# What a checked host name or address is made of: nothing a double-quoted YAML
# scalar would need to escape.
_PLAIN = re.compile(r"[A-Za-z0-9_.:-]+")


def _host_lines(key, entries):
    """``key:`` and one host a line, as a flow mapping of double-quoted strings.

    A kubeadm set lists thousands of hosts: PyYAML's representer takes ~20 us a
    host, this ~1 us (and reads as well).  Anything not plainly a checked name or
    address is quoted by json.dumps (JSON strings are YAML double-quoted scalars).
    """
    if not entries:
        return f"{key}: []\n"

    def scalar(value):
        return f'"{value}"' if _PLAIN.fullmatch(value) else json.dumps(value)

    lines = (
        "- {" + ", ".join(f"{scalar(k)}: {scalar(v)}" for k, v in entry.items()) + "}\n"
        for entry in entries
    )
    return f"{key}:\n" + "".join(lines)


def files_profile(directory):
    """The profile the files of a set belong to, or None (no set, or only a CA).

    Seed: ``server`` or ``kubecfg`` at the top.  kubeadm: ``hosts/``,
    ``front-proxy-ca`` or ``etcd/``.  Both at once is a mixed folder: refused.
    """

    def here(rel):
        return lstat_or_none(os.path.join(directory, rel)) is not None

    seed = [rel for rel in ("server.crt", "server.key", "kubecfg.crt", "kubecfg.key") if here(rel)]
    kubeadm = [rel for rel in (KUBEADM_HOSTS_DIR, "front-proxy-ca.crt", "etcd") if here(rel)]
    if seed and kubeadm:
        raise SetError(
            f"{directory}: holds files of both profiles ({seed[0]}: seed, {kubeadm[0]}: "
            "kubeadm); move the files of the wrong profile away (keep a copy), then run again"
        )
    return "seed" if seed else "kubeadm" if kubeadm else None


def set_profile(directory):
    """``(profile, recorded settings or None)`` of the set in ``directory``.

    The manifest's profile must agree with the files: a manifest that says
    kubeadm over seed files (or the other way round) is refused.
    """
    if not check_set_folder(directory):
        return None, None
    recorded = read_manifest(directory)
    found = files_profile(directory)
    if recorded is None:
        return found, None
    if found is not None and found != recorded["profile"]:
        raise SetError(
            f"{manifest_path(directory)}: says profile {recorded['profile']}, but the files "
            f"are those of a {found} set; move the wrong one away (the manifest, or the "
            "files) so that they agree"
        )
    return recorded["profile"], recorded


def require_profile(directory, profile, operation):
    """Refuse ``operation`` (which knows only ``profile``) on a set of another profile."""
    found, _ = set_profile(directory)
    if found is not None and found != profile:
        raise InputError(
            f"profile: this set is {found}; {operation} handles {profile} sets only "
            f"(see docs/kubeadm-profile.md for what applies to a {found} set)"
        )


def _split_sans_of(cert):
    dns, ips = cert_sans(cert)
    return list(dns), [str(ip) for ip in ips]


def _domain_of(dns):
    prefix = "kubernetes.default.svc."
    return next((name[len(prefix) :] for name in dns if name.startswith(prefix)), None)


_SERVICE_DNS = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")


def _infer_seed(directory):
    found = {}
    server = read_pair(directory, "server").cert
    if server is not None:
        dns, ips = _split_sans_of(server)
        domain = _domain_of(dns)
        if dns and ips and domain:
            service = {*_SERVICE_DNS, f"kubernetes.default.svc.{domain}"}
            found["api_server_fqdn"] = dns[0]
            found["api_service_address"] = ips[0]
            found["cluster_domain"] = domain
            found["extra_sans"] = [n for n in dns[1:] if n not in service] + ips[1:]
    found["service_account_key"] = lstat_or_none(os.path.join(directory, "sa.key")) is not None
    return found


def _infer_kubeadm(directory):
    hosts = os.path.join(directory, KUBEADM_HOSTS_DIR)
    names = sorted(os.listdir(hosts)) if os.path.isdir(hosts) else []
    masters, nodes, found = [], [], {}
    for host in names:
        apiserver = read_pair(directory, f"{KUBEADM_HOSTS_DIR}/{host}/apiserver").cert
        if apiserver is None:
            nodes.append({"name": host})
            continue
        dns, ips = _split_sans_of(apiserver)
        if len(ips) < 2 or len(dns) < 2:
            continue
        masters.append({"name": host, "ip": ips[1]})
        if "api_server_fqdn" in found:
            continue
        found["api_server_fqdn"], found["api_service_address"] = dns[1], ips[0]
        found["cluster_domain"] = _domain_of(dns) or COMMON_DEFAULTS["cluster_domain"]
        endpoint = None
        data = read_store_file(os.path.join(directory, "admin.conf"), secret=True)
        if data is not None:
            try:
                server = parse_kubeconfig(data, "admin.conf").server
                endpoint = _endpoint_text(*check_endpoint(server.removeprefix("https://")))
            except PKIError:
                endpoint = None
        if endpoint == _endpoint_text(dns[1], KUBEADM_PORT):
            endpoint = None
        found["control_plane_endpoint"] = endpoint
        skip = {host, dns[1], *_SERVICE_DNS, f"kubernetes.default.svc.{found['cluster_domain']}"}
        skip_ips = {ips[0], ips[1]}
        if endpoint is not None:
            skip.add(check_endpoint(endpoint)[0])
            skip_ips.add(check_endpoint(endpoint)[0])
        found["extra_sans"] = [n for n in dns if n not in skip] + [
            ip for ip in ips if ip not in skip_ips
        ]
    if masters:
        found["masters"], found["nodes"] = masters, nodes
    if _looks_enrolled(directory, names):
        found["enrolled"] = True
    return found


def _looks_enrolled(directory, hosts):
    """Whether a kubeadm folder without its manifest is an enrolled set's: copies of enrolled
    certificates, and no host's ``kubelet.conf`` (which every set without enrollment holds).

    So that a lost manifest never brings the hosts' keys back onto the master.
    """
    if lstat_or_none(os.path.join(directory, "enrolled")) is None:
        return False
    return not any(
        lstat_or_none(os.path.join(directory, KUBEADM_HOSTS_DIR, host, "kubelet.conf"))
        for host in hosts
    )


def infer_settings(directory, profile):
    """What a set made before the manifest says about its settings (only what it says)."""
    found = _infer_seed(directory) if profile == "seed" else _infer_kubeadm(directory)
    ca = read_pair(directory, "ca")
    key_type = key_type_of(ca.key) if ca.key is not None else None
    if key_type:
        found["key_type"] = key_type
    checked = {}
    for key, value in found.items():
        try:
            checked[key] = canonical(key, value)
        except InputError:
            continue  # a value the set does not state plainly: the arguments decide
    return checked


def resolve_settings(directory, given, profile=None):
    """Decide a run's settings: ``(profile, settings, recorded, changed)``.

    ``given`` holds only the settings given explicitly (already canonical).
    Each other setting comes from the manifest (or, for a set made before it,
    from the certificates), else from the defaults.  ``changed`` maps each
    explicit setting that differs from the record to ``{"from", "to"}``.
    A profile other than the set's is refused, naming the remedy; so is a
    kubeadm set with the profile left out (the seed is the default only for a
    new set).
    """
    tag = os.path.basename(os.path.normpath(directory))
    found, recorded = set_profile(directory)
    if found is not None and profile not in (None, found):
        raise InputError(
            f"profile: this set is {found}; run salt-run k8s-helper.generate_certs "
            f"profile={found} cluster_tag={tag} (a {profile} set needs a cluster_tag of its own)"
        )
    if found == "kubeadm" and profile is None:
        raise InputError(
            f"profile: this set is kubeadm; run salt-run k8s-helper.generate_certs "
            f"profile=kubeadm cluster_tag={tag}"
        )
    profile = profile or found or "seed"
    defaults = PROFILE_DEFAULTS[profile]
    for key in given:
        if key not in defaults:
            other = next(p for p in PROFILES if p != profile)
            raise InputError(f"{key}: only used with profile={other}, not {profile}")
    if recorded is None and found is not None:
        recorded = {"profile": profile, **infer_settings(directory, profile)}
    recorded = recorded or {}
    settings = {"profile": profile}
    for key, default in defaults.items():
        settings[key] = given.get(key, recorded.get(key, default))
    changed = {
        key: {"from": recorded[key], "to": value}
        for key, value in given.items()
        if key in recorded and recorded[key] != value
    }
    return profile, settings, recorded, changed


def _checked_hosts(entries):
    """Canonical host entries (checked when they became settings) as ``check_hosts`` gives them."""
    return tuple((e["name"], ipaddress.ip_address(e["ip"]) if "ip" in e else None) for e in entries)


def specs_for(settings, only_nodes=None, include_enrolled=False):
    """The members of a set with these canonical settings (its profile's specs).

    An enrolled kubeadm set (``enrolled: true``) leaves out the members its hosts
    enroll (``profiles.host_enrolls``), unless ``include_enrolled`` (the signer,
    which issues them to the hosts).

    ``only_nodes`` (names) leaves out every other node's members: what the
    others are does not change the members of these nodes or of the masters
    (a member's spec depends only on its own host and the cluster's settings,
    ``profiles._spec``), and a set of thousands of nodes need not be specified
    in full to explain a change to a few of them.
    """
    if settings["profile"] == "seed":
        return seed_specs(
            api_server_fqdn=settings["api_server_fqdn"],
            api_service_address=settings["api_service_address"],
            cluster_domain=settings["cluster_domain"],
            extra_sans=settings["extra_sans"],
            service_account_key=settings["service_account_key"],
            masters=settings.get("masters", ()),
            nodes=settings.get("nodes", ()),
        )
    if not settings["masters"]:
        raise InputError(
            "masters: the kubeadm profile needs the control-plane hosts, e.g. "
            "masters='[{name: m1, ip: 192.0.2.11}]', or pillar_minion=<id>"
        )
    nodes = settings["nodes"]
    if only_nodes is not None:
        nodes = [entry for entry in nodes if entry["name"] in only_nodes]
    return kubeadm_specs_of_hosts(
        _checked_hosts(settings["masters"]),
        _checked_hosts(nodes),
        api_server_fqdn=settings["api_server_fqdn"],
        api_service_address=settings["api_service_address"],
        cluster_domain=settings["cluster_domain"],
        extra_sans=settings["extra_sans"],
        control_plane_endpoint=settings["control_plane_endpoint"],
        cluster_name=settings["cluster_name"],
        enrolled=settings.get("enrolled", False) and not include_enrolled,
    )


def enrolled_leftovers(directory, settings, kept):
    """The files of an enrolled kubeadm set's folder its hosts enroll instead (relative paths).

    What a set made before it was enrolled still holds for its hosts: each is
    left out of the set by the next write (kept in its backup).  Empty for any
    other set.  ``kept``: the set's specs (``specs_for(settings)``, which the
    caller has already built).
    """
    if settings.get("profile") != "kubeadm" or not settings.get("enrolled"):
        return ()
    found = []
    for name, spec in specs_for(settings, include_enrolled=True).items():
        if name in kept:
            continue
        for f in spec.kind.files:
            if lstat_or_none(os.path.join(directory, name + f.suffix)) is not None:
                found.append(name + f.suffix)
    return tuple(found)


def host_role(settings, minion_id):
    """``(role, ip)`` of the host named exactly ``minion_id`` in the set, or ``(None, None)``."""
    for role, key in (("master", "masters"), ("node", "nodes")):
        for host in settings.get(key) or ():
            if host["name"] == minion_id:  # exactly: 'M1' and 'm1.' are other minions
                return role, host.get("ip")
    return None, None


def describe_change(key, change):
    """``<key> changed ...`` in a few words: a list names what it gained and lost, not itself.

    (A kubeadm set's ``nodes`` may hold thousands of hosts; a reason repeats on
    every file it reissues.)
    """
    before, after = change["from"], change["to"]
    if not (isinstance(before, list) and isinstance(after, list)):
        return f"{key} changed from {before!r} to {after!r}"

    def label(entry):
        return entry.get("name", repr(entry)) if isinstance(entry, dict) else str(entry)

    old = {label(e): e for e in before}
    new = {label(e): e for e in after}
    parts = []
    for verb, names in (
        ("added", [n for n in new if n not in old]),
        ("removed", [n for n in old if n not in new]),
        ("changed", [n for n in new if n in old and new[n] != old[n]]),
    ):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{verb} {shown}")
    return f"{key} changed ({'; '.join(parts) or 'reordered'})"


def explain_changes(plan, settings, recorded, changed):
    """Name, in each reissued file's reason and in ``changed``, the setting that caused it.

    For each changed setting, the specs made with the record but that one
    setting are compared with the record's own: the members that differ are
    the ones that setting reissues.
    """
    if not changed:
        return
    # Only the members the plan issues can owe their reason to a setting.
    if all(item.action == "reused" for item in plan.items.values()):
        for change in changed.values():
            change["reissues"] = []
        return
    base = {**settings, **{k: v for k, v in recorded.items() if k in settings}}
    # Only the members the plan issues are compared: the nodes they belong to suffice.
    issued_on = {host_of(name) for name, item in plan.items.items() if item.action != "reused"}
    try:
        before = specs_for(base, only_nodes=issued_on)
    except InputError:
        before = {}
    for key, change in changed.items():
        affected = []
        if key not in _NO_REISSUE:
            try:
                # With one setting changed, the variant is the run's own specs.
                variant = (
                    plan.specs if len(changed) == 1 else specs_for({**base, key: change["to"]})
                )
            except InputError:
                variant = {}
            for name, spec in variant.items():
                item = plan.items.get(name)
                if before.get(name) == spec or item is None or item.action == "reused":
                    continue
                affected.append(spec.kind.main_file(name))
                why = describe_change(key, change)
                item.reason = f"{why}: {item.reason}" if item.reason else why
        change["reissues"] = affected
