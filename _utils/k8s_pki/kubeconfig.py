"""Render and parse kubeconfigs (one parser for the set and for expiry)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import yaml

from .crypto import load_certs
from .errors import PKIError

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    certificate-authority-data: {ca}
    server: {server}
contexts:
- name: {context}
  context:
    cluster: {cluster}
    user: {user}
current-context: {context}
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
"""


def render_kubeconfig(spec, ca_pem, cert_bytes, key_bytes):
    """A kubeconfig (YAML) for ``spec``'s user, embedding its certificate, key and CA.

    Written from a template (every text value as a JSON string, which YAML
    reads as the same string): a hundred kubeconfigs through the YAML emitter
    would cost more than making their keys.
    """

    def b64(data):
        return base64.b64encode(data).decode("ascii")

    user = spec.common_name
    return _KUBECONFIG.format(
        cluster=json.dumps(spec.cluster_name),
        server=json.dumps(spec.server),
        context=json.dumps(f"{user}@{spec.cluster_name}"),
        user=json.dumps(user),
        ca=b64(ca_pem),
        cert=b64(cert_bytes),
        key=b64(key_bytes),
    ).encode()


@dataclass
class Kubeconfig:
    """What a kubeconfig's current context says (the PEMs decoded, nothing parsed yet)."""

    server: str
    ca_bytes: bytes
    cert_bytes: bytes
    key_bytes: bytes


def parse_kubeconfig(data, what="kubeconfig"):
    """The current context's server, CA, client certificate and key of a kubeconfig.

    Only embedded credentials (``*-data``) are understood: a kubeconfig that
    points to files elsewhere is not one this module wrote or can check.
    """

    def bad(why):
        return PKIError(f"{what}: {why}")

    try:
        doc = yaml.load(data, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        raise bad("not a YAML kubeconfig") from None
    if not isinstance(doc, dict):
        raise bad("not a YAML kubeconfig")

    def named(section, name):
        for entry in doc.get(section) or ():
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise bad(f"no {section[:-1]} named {name!r}")

    context = named("contexts", doc.get("current-context")).get("context") or {}
    cluster = named("clusters", context.get("cluster")).get("cluster") or {}
    user = named("users", context.get("user")).get("user") or {}

    def decoded(section, key):
        value = section.get(key)
        if not isinstance(value, str):
            raise bad(f"no embedded {key}")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise bad(f"{key} is not base64") from None

    server = cluster.get("server")
    if not isinstance(server, str):
        raise bad("no server")
    return Kubeconfig(
        server=server,
        ca_bytes=decoded(cluster, "certificate-authority-data"),
        cert_bytes=decoded(user, "client-certificate-data"),
        key_bytes=decoded(user, "client-key-data"),
    )


def kubeconfig_certs(data, what):
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError:
        raise PKIError(f"{what}: not a YAML kubeconfig") from None
    if not isinstance(config, dict):
        raise PKIError(f"{what}: not a kubeconfig")
    found = []
    for section, entry, field_name in (
        ("clusters", "cluster", "certificate-authority-data"),
        ("users", "user", "client-certificate-data"),
    ):
        for named in config.get(section) or []:
            body = (named or {}).get(entry) or {}
            if not body.get(field_name):
                continue
            label = f"{entry} {named.get('name', '?')}"
            try:
                pem = base64.b64decode(body[field_name], validate=True)
            except ValueError:
                raise PKIError(f"{what}: {label}: {field_name} is not base64") from None
            for index, cert in enumerate(load_certs(pem, f"{what} ({label})")):
                found.append((label if index == 0 else f"{label} #{index + 1}", cert))
    return found
