"""The OpenBao / Vault PKI backend: master config and the client layer.

Plain Python (no Salt dunders), like ``k8s_pki``.  The runner will choose this
backend with ``k8s_helper: {backend: openbao, openbao: {...}}`` in the master
config; wiring it into generate_certs / renew / rotate_ca is the next step
(docs/openbao.md, "Status").  What is here:

- :func:`parse_config`: strict parsing of the ``k8s_helper:openbao`` section;
  every refusal is one :class:`ConfigError` line that starts with the key.
- :class:`OpenBaoPKI`: login (token file or AppRole) and the PKI operations the
  formula needs - one mount per cluster and CA, the root CA generated inside
  OpenBao (``root/generate/internal``: the key never leaves it), one role per
  certificate the profile makes, leaves signed from a CSR we make (the role
  decides subject, SANs, usages and TTL; the CSR only brings the public key),
  the CA chain, several issuers in one mount for CA rotation, revocation and
  the CRL.
- every failure is one :class:`BackendError` line naming what is wrong and how
  to fix it; no token, secret id or key is ever part of a message.

hvac is the client library (plain Python, usable from ``_utils``; see
docs/openbao.md for why not saltext-vault).  It is imported lazily so that the
module loads, and the config can be checked, where hvac is not installed.
"""

import contextlib
import datetime
import ipaddress
import math
import os
import re
import stat
import time
import urllib.parse
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

BACKENDS = ("local", "openbao")
DEFAULT_BACKEND = "local"
DEFAULT_MOUNT_PREFIX = "k8s-pki"
DEFAULT_TIMEOUT = 10
DEFAULT_RETRY_SECONDS = 30
DEFAULT_APPROLE_MOUNT = "approle"

# Hosts where plain http is accepted: the traffic never leaves the machine, so
# the token is not exposed on a network (the dev server and the tests use it).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

CONFIG_KEYS = ("url", "auth", "mount_prefix", "ca_bundle", "timeout", "retry_seconds")
TOKEN_AUTH_KEYS = ("method", "token_file")
APPROLE_AUTH_KEYS = ("method", "role_id", "secret_id_file", "mount")

# key_type names of k8s_pki -> OpenBao's key_type / key_bits
KEY_TYPES = {
    "rsa-2048": ("rsa", 2048),
    "rsa-3072": ("rsa", 3072),
    "rsa-4096": ("rsa", 4096),
    "ecdsa-p256": ("ec", 256),
    "ecdsa-p384": ("ec", 384),
}

# A mount path or role name component: what OpenBao accepts in a path and what
# a policy glob can name without ambiguity.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# Answers of a standby node that could not hand the request to an active node
# (an election is under way): the request was not processed, so it can be sent
# again whatever it does.
_HA_TRANSITION_MARKERS = (
    "local node not active but active cluster node not found",
    "node not active",
    "no active node",
    "standby",
)


class BackendError(Exception):
    """An OpenBao failure, one line for the operator (what is wrong, how to fix it)."""


class ConfigError(BackendError, ValueError):
    """A bad ``k8s_helper`` setting; the message starts with the key's path."""


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAuth:
    token_file: str


@dataclass(frozen=True)
class AppRoleAuth:
    role_id: str
    secret_id_file: str
    mount: str = DEFAULT_APPROLE_MOUNT


@dataclass(frozen=True)
class OpenBaoConfig:
    urls: tuple
    auth: object  # TokenAuth | AppRoleAuth
    mount_prefix: str = DEFAULT_MOUNT_PREFIX
    ca_bundle: str = None
    timeout: float = DEFAULT_TIMEOUT
    retry_seconds: float = DEFAULT_RETRY_SECONDS


def _section(opts):
    """``opts["k8s_helper"]`` or {}.  (Not ``opts or {}``: the truth of Salt's opts
    mapping counts its ~400 keys one by one, ~0.6 ms on every run.)"""
    return (opts.get("k8s_helper") if opts is not None else None) or {}


def backend(opts):
    """``k8s_helper:backend`` of the master config: "local" (the default) or "openbao"."""
    section = _section(opts)
    if not isinstance(section, dict):
        raise ConfigError("k8s_helper: must be a mapping")
    value = section.get("backend", DEFAULT_BACKEND)
    if value not in BACKENDS:
        raise ConfigError(f"k8s_helper:backend: {value!r} is not one of {', '.join(BACKENDS)}")
    return value


def parse_config(opts):
    """The :class:`OpenBaoConfig` of ``k8s_helper:openbao`` in the master config ``opts``.

    Strict: unknown keys, wrong types, plain http to anything but loopback,
    secret files that are missing, unreadable, not regular files, not owned by
    this user or open to group/others are refused.  The secrets are read here
    only to check them; :meth:`OpenBaoPKI.login` reads them again (a rotated
    token on disk is picked up by the next run).
    """
    section = _section(opts)
    if not isinstance(section, dict):
        raise ConfigError("k8s_helper: must be a mapping")
    raw = section.get("openbao")
    key = "k8s_helper:openbao"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: missing or not a mapping (url, auth, ...); see docs/openbao.md")
    _refuse_unknown(raw, CONFIG_KEYS, key)
    urls = _parse_urls(raw.get("url"), f"{key}:url")
    ca_bundle = raw.get("ca_bundle")
    if ca_bundle is not None:
        ca_bundle = _check_ca_bundle(ca_bundle, f"{key}:ca_bundle")
        if not any(u.startswith("https://") for u in urls):
            raise ConfigError(f"{key}:ca_bundle: only used with https urls; remove it")
    return OpenBaoConfig(
        urls=urls,
        auth=_parse_auth(raw.get("auth"), f"{key}:auth"),
        mount_prefix=_parse_name(
            raw.get("mount_prefix", DEFAULT_MOUNT_PREFIX), f"{key}:mount_prefix"
        ),
        ca_bundle=ca_bundle,
        timeout=_parse_seconds(raw.get("timeout", DEFAULT_TIMEOUT), f"{key}:timeout", 0.1, 300),
        retry_seconds=_parse_seconds(
            raw.get("retry_seconds", DEFAULT_RETRY_SECONDS), f"{key}:retry_seconds", 0, 600
        ),
    )


def _refuse_unknown(mapping, allowed, key):
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise ConfigError(f"{key}:{unknown[0]}: unknown key; known: {', '.join(allowed)}")


def _parse_urls(value, key):
    """One URL or a list of them (the nodes of a cluster, tried in turn)."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{key}: missing; give https://<host>:<port> (or a list of them)")
    return tuple(_parse_url(v, key) for v in values)


def _parse_url(value, key):
    if not isinstance(value, str):
        raise ConfigError(f"{key}: {value!r} is not a URL string")
    try:
        parts = urllib.parse.urlsplit(value.strip())
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise ConfigError(f"{key}: {value!r} is not a valid URL ({err})") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{key}: {value!r} is not an https://<host>[:<port>] URL")
    if parts.username is not None or parts.password is not None:
        # Never echo the URL here: it holds a credential.
        raise ConfigError(f"{key}: holds a user or password; put credentials under auth instead")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{key}: {value!r} has a path, query or fragment; give only the origin")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{key}: {value!r} uses plain http to a non-loopback host; the token would cross "
            "the network unencrypted: use https (http is accepted for 127.0.0.1, localhost, [::1])"
        )
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


def _parse_auth(value, key):
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: missing or not a mapping; give method: token or approle")
    method = value.get("method")
    if method == "token":
        _refuse_unknown(value, TOKEN_AUTH_KEYS, key)
        path = _check_path(value.get("token_file"), f"{key}:token_file")
        read_secret_file(path, f"{key}:token_file")
        return TokenAuth(token_file=path)
    if method == "approle":
        _refuse_unknown(value, APPROLE_AUTH_KEYS, key)
        role_id = value.get("role_id")
        if not isinstance(role_id, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", role_id):
            raise ConfigError(f"{key}:role_id: missing or not a role id (letters, digits, -_.:)")
        path = _check_path(value.get("secret_id_file"), f"{key}:secret_id_file")
        read_secret_file(path, f"{key}:secret_id_file")
        mount = _parse_name(value.get("mount", DEFAULT_APPROLE_MOUNT), f"{key}:mount")
        return AppRoleAuth(role_id=role_id, secret_id_file=path, mount=mount)
    raise ConfigError(f"{key}:method: {method!r} is not one of token, approle")


def _check_path(value, key):
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ConfigError(f"{key}: missing or not an absolute path")
    return value


def _parse_name(value, key):
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise ConfigError(
            f"{key}: {value!r} is not a safe name; use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _parse_seconds(value, key, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} is not a number of seconds from {low} to {high}")
    return value


def _check_ca_bundle(value, key):
    path = _check_path(value, key)
    try:
        with open(path, "rb") as handle:
            certs = x509.load_pem_x509_certificates(handle.read())
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {err.strerror}") from None
    except ValueError:
        raise ConfigError(f"{key}: {path} holds no PEM certificate") from None
    if not certs:
        raise ConfigError(f"{key}: {path} holds no PEM certificate")
    return path


def read_secret_file(path, key):
    """The one-line secret in ``path`` (a token or secret id), checked like the set's keys.

    Refused: a symlink, not a regular file, owned by another user, readable or
    writable by group or others, empty, more than one line.  The message names
    the key and the path, never the content.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        reason = "is a symlink" if err.errno == 40 else f"cannot be read: {err.strerror}"
        raise ConfigError(f"{key}: {path} {reason}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"{key}: {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_uid != os.geteuid():
            raise ConfigError(f"{key}: {path} is not owned by this user; chown it")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"{key}: {path} is open to group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
            )
        data = handle.read(8192)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not a one-line ASCII secret") from None
    if not text or "\n" in text or not text.isprintable():
        raise ConfigError(f"{key}: {path} is empty or not a one-line secret")
    return text


def mount_path(config, cluster_tag, ca_name):
    """The PKI mount of one CA of one cluster: ``<mount_prefix>/<cluster_tag>/<ca_name>``.

    Path segments rather than dashes: an OpenBao policy can then name "every
    CA of every cluster of the formula" as ``<mount_prefix>/+/+/...`` (its
    globs only match whole segments, or a trailing ``*``).
    """
    _parse_name(cluster_tag, "cluster_tag")
    _parse_name(ca_name, "ca")
    return f"{config.mount_prefix}/{cluster_tag}/{ca_name}"


# --------------------------------------------------------------------------
# What a role and a leaf say
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LeafRequest:
    """What a leaf certificate must say; the fields match ``k8s_pki.LeafSpec``.

    Anything with these attributes (a ``LeafSpec``) can be given instead.
    """

    common_name: str
    organizations: tuple = ()
    usages: tuple = ()  # "server", "client"
    dns_names: tuple = ()
    ip_addresses: tuple = ()


def role_settings(spec, ttl_seconds, key_type):
    """The OpenBao role that allows exactly ``spec`` and nothing else.

    The role, not the CSR, decides the subject, the SANs and the usages
    (``use_csr_common_name``/``use_csr_sans`` off): a CSR only brings its public
    key.  Names: the CN and the DNS SANs as bare domains, no subdomains, globs or
    wildcards; IP SANs limited to the requested addresses (``allowed_ip_sans_cidr``).
    ``enforce_hostnames`` is off because Kubernetes CNs (``system:node:<name>``)
    are not host names; ``cn_validations`` stays "hostname" because "disabled"
    also turns off the check of the CN against the allow-list (measured on
    OpenBao 2.7: a role with it signs any CN).
    """
    usages = set(spec.usages)
    unknown = usages - {"server", "client"}
    if unknown:
        raise BackendError(f"usages: {sorted(unknown)[0]!r} is not one of server, client")
    # None: a key made on a host (enrollment), whose type the enrollment policy
    # has checked already; the role then accepts any (its own check is coarser).
    kind, bits = ("any", 0) if key_type is None else _key_type(key_type)
    ips = [str(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    key_usage = ["DigitalSignature"] + (["KeyEncipherment"] if kind == "rsa" else [])
    return {
        "allowed_domains": [spec.common_name, *spec.dns_names],
        "allow_bare_domains": True,
        "allow_subdomains": False,
        "allow_glob_domains": False,
        "allow_wildcard_certificates": False,
        "allow_localhost": "localhost" in spec.dns_names,
        "allow_any_name": False,
        "enforce_hostnames": False,
        "cn_validations": ["hostname"],
        "allow_ip_sans": bool(ips),
        "allowed_ip_sans_cidr": [f"{ip}/{32 if '.' in ip else 128}" for ip in ips],
        "allowed_uri_sans": [],
        "allowed_other_sans": [],
        "organization": list(spec.organizations),
        "ou": [],
        "server_flag": "server" in usages,
        "client_flag": "client" in usages,
        "code_signing_flag": False,
        "email_protection_flag": False,
        "key_usage": key_usage,
        "ext_key_usage": [],
        "basic_constraints_valid_for_non_ca": True,
        "key_type": kind,
        "key_bits": bits,
        "ttl": int(ttl_seconds),
        "max_ttl": int(ttl_seconds),
        "use_csr_common_name": False,
        "use_csr_sans": False,
        "require_cn": True,
        "no_store": False,
        "issuer_ref": "default",
    }


def _key_type(key_type):
    if key_type not in KEY_TYPES:
        raise BackendError(f"key_type: {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    return KEY_TYPES[key_type]


def new_private_key(key_type):
    kind, bits = _key_type(key_type)
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key({256: ec.SECP256R1(), 384: ec.SECP384R1()}[bits])


def make_csr(spec, private_key):
    """A CSR for ``spec`` (the subject is informative: the role decides what is signed)."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    return builder.sign(private_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def serial_text(serial):
    """An integer serial number in OpenBao's form (``aa:bb:...``)."""
    if isinstance(serial, str):
        return serial.lower()
    digits = f"{serial:x}"
    digits = ("0" if len(digits) % 2 else "") + digits
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------


class _NotSent(Exception):
    """The request surely did not reach an active node: it can be sent again.

    ``args[0]`` is the BackendError to raise if no attempt succeeds;
    ``waiting`` says whether waiting may help (an election, a restarting node)
    or only another URL may (a sealed node stays sealed until someone acts).
    """

    def __init__(self, error, waiting=True):
        super().__init__(error)
        self.waiting = waiting


class OpenBaoPKI:
    """The PKI operations the formula needs, over hvac, with one-line errors.

    Retries (up to ``retry_seconds``, trying each URL in turn):

    - any request when it surely was not processed: the connection was refused
      or not established, or a standby answered that it has no active node to
      forward to (an election is under way), or the node is sealed while
      another URL may not be;
    - only idempotent requests (reads, role and tune writes, default issuer,
      revocation) after an answer was lost (read timeout, connection dropped):
      signing and generating a CA again could make a second certificate or CA.
    """

    def __init__(self, config):
        self.config = config
        self._token = None
        self._expire_time = None
        self._clients = {}

    # -- transport -----------------------------------------------------------

    def _client(self, url):
        hvac = _hvac()

        if url not in self._clients:
            verify = self.config.ca_bundle if self.config.ca_bundle else True
            self._clients[url] = hvac.Client(url=url, verify=verify, timeout=self.config.timeout)
        client = self._clients[url]
        client.token = self._token
        return client

    def _request(self, method, path, json=None, idempotent=True, what=None):
        """One API call, retried as the class docstring says; returns dict, str or None."""
        deadline = time.monotonic() + self.config.retry_seconds
        delay = 0.2
        while True:
            errors = []
            for url in self.config.urls:
                try:
                    return self._once(url, method, path, json, idempotent, what)
                except _NotSent as err:
                    errors.append(err)
            if not any(e.waiting for e in errors) or time.monotonic() + delay > deadline:
                raise errors[-1].args[0]
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _once(self, url, method, path, json, idempotent, what):
        hexc = _hvac().exceptions
        import requests.exceptions as rexc

        what = what or f"{method} {path}"
        try:
            response = self._client(url).adapter.request(method, f"v1/{path}", json=json)
        except rexc.SSLError as err:
            raise BackendError(
                f"TLS to OpenBao at {url} failed ({_tls_reason(err)}); check url and that "
                "k8s_helper:openbao:ca_bundle holds the CA of OpenBao's server certificate"
            ) from None
        except (rexc.ConnectTimeout, rexc.ConnectionError, rexc.ReadTimeout) as err:
            sent = isinstance(err, rexc.ReadTimeout) or not _not_connected(err)
            error = BackendError(
                f"OpenBao at {url} is unreachable ({_net_reason(err, self.config.timeout)}) "
                f"during {what}; check k8s_helper:openbao:url and that the server runs"
            )
            if sent and not idempotent:
                raise BackendError(
                    f"OpenBao at {url} stopped answering during {what} "
                    f"({_net_reason(err, self.config.timeout)}): it may or may not have been "
                    "done; re-run (the run checks what exists before it creates anything)"
                ) from None
            raise _NotSent(error) from None
        except hexc.VaultDown as err:
            text = _server_text(err)
            if "sealed" in text.lower():
                raise _NotSent(
                    BackendError(
                        f"OpenBao at {url} is sealed; unseal it (bao operator unseal) and re-run"
                    ),
                    waiting=False,
                ) from None
            raise _NotSent(
                BackendError(f"OpenBao at {url} is unavailable during {what}: {text}")
            ) from None
        except hexc.Forbidden:
            raise self._forbidden(url, path, what) from None
        except hexc.InvalidPath as err:
            raise self._not_found(url, path, what, _server_text(err)) from None
        except hexc.VaultError as err:
            text = _server_text(err)
            if any(marker in text.lower() for marker in _HA_TRANSITION_MARKERS):
                raise _NotSent(
                    BackendError(f"OpenBao at {url} has no active node during {what}: {text}")
                ) from None
            raise BackendError(f"OpenBao at {url} refused {what}: {text}") from None
        if isinstance(response, dict) or response is None:
            return response
        if response.status_code == 204:
            return None
        return response.content

    def _forbidden(self, url, path, what):
        """403: the token is invalid or expired, or the policy lacks this path."""
        if path != "auth/token/lookup-self":
            try:
                self._client(url).adapter.request("GET", "v1/auth/token/lookup-self")
            except Exception:  # noqa: S110 - any failure: the token is not usable
                pass
            else:
                return BackendError(
                    f"permission denied for {what} at {url}: the token's policy does not "
                    f"allow {path}; apply docs/openbao-master-policy.hcl (see docs/openbao.md)"
                )
        if self._expire_time and datetime.datetime.now(datetime.timezone.utc) >= (
            self._expire_time
        ):
            return BackendError(
                f"the OpenBao token expired at {self._expire_time:%Y-%m-%dT%H:%M:%SZ}; "
                f"{self._renew_hint()} and re-run"
            )
        return BackendError(
            f"OpenBao at {url} refused the token (permission denied: wrong, revoked or "
            f"expired); {self._renew_hint()}"
        )

    def _renew_hint(self):
        if isinstance(self.config.auth, TokenAuth):
            return f"put a valid token in {self.config.auth.token_file}"
        return f"check role_id and the secret id in {self.config.auth.secret_id_file}"

    def _not_found(self, url, path, what, text):
        mount = "/".join(path.split("/")[:3])  # <mount_prefix>/<cluster_tag>/<ca>
        if "no handler for route" in text:
            return BackendError(
                f"OpenBao at {url} has no mount {mount}/ ({what}); run generate_certs to "
                "create it, or check k8s_helper:openbao:mount_prefix"
            )
        return BackendError(f"OpenBao at {url}: {what} found nothing ({text})")

    # -- login -----------------------------------------------------------------

    def login(self):
        """Log in (token file or AppRole) and check the token; returns its expiry or None."""
        auth = self.config.auth
        if isinstance(auth, TokenAuth):
            self._token = read_secret_file(auth.token_file, "k8s_helper:openbao:auth:token_file")
        else:
            secret_id = read_secret_file(
                auth.secret_id_file, "k8s_helper:openbao:auth:secret_id_file"
            )
            self._token = None
            answer = self._request(
                "POST",
                f"auth/{auth.mount}/login",
                json={"role_id": auth.role_id, "secret_id": secret_id},
                idempotent=False,
                what="the AppRole login",
            )
            self._token = answer["auth"]["client_token"]
        info = self._request("GET", "auth/token/lookup-self", what="the token check")["data"]
        expire = info.get("expire_time")
        self._expire_time = _parse_time(expire) if expire else None
        return self._expire_time

    # -- mounts ---------------------------------------------------------------

    def ensure_mount(self, mount, max_ttl_seconds):
        """The PKI engine at ``mount`` with a max TTL of at least ``max_ttl_seconds``.

        Returns "created" or "existing".
        """
        try:
            info = self._request("GET", f"sys/mounts/{mount}", what=f"reading mount {mount}")
        except BackendError as err:
            if "No secret engine mount" not in str(err):
                raise
            try:
                self._request(
                    "POST",
                    f"sys/mounts/{mount}",
                    json={
                        "type": "pki",
                        "config": {"max_lease_ttl": f"{int(max_ttl_seconds)}s"},
                    },
                    what=f"enabling the pki engine at {mount}",
                )
                return "created"
            except BackendError as race:
                # Another master enabled it between our read and our write: use it.
                if "already in use" not in str(race):
                    raise
                info = self._request("GET", f"sys/mounts/{mount}", what=f"reading mount {mount}")
        data = info.get("data", info)
        if data.get("type") != "pki":
            raise BackendError(
                f"OpenBao mount {mount}/ is a {data.get('type')!r} engine, not pki; "
                "choose another k8s_helper:openbao:mount_prefix"
            )
        if int((data.get("config") or {}).get("max_lease_ttl") or 0) < max_ttl_seconds:
            self._request(
                "POST",
                f"sys/mounts/{mount}/tune",
                json={"max_lease_ttl": f"{int(max_ttl_seconds)}s"},
                what=f"tuning {mount}",
            )
        return "existing"

    # -- CAs (issuers) ------------------------------------------------------------

    def ensure_root_ca(self, mount, common_name, ttl_seconds, key_type, issuer_name="ca"):
        """The mount's default issuer: adopted when it exists (its CN must match), else made.

        Returns ``{"action": "created"|"adopted", "issuer_id", "certificate"}``.
        The key is generated inside OpenBao (``type=internal``) and never leaves it.

        Two masters making the same cluster's CA at once: the issuer name is
        fixed, so OpenBao lets only the first generation through (a name is
        unique in a mount); the other is refused, and adopts that CA.
        """
        current = self.read_issuer(mount, "default", missing_ok=True)
        if current is None:
            try:
                made = self.generate_issuer(mount, common_name, ttl_seconds, key_type, issuer_name)
                return {"action": "created", **made}
            except BackendError as race:
                if "already in use" not in str(race) and "already exists" not in str(race):
                    raise
            current = self._wait_default_issuer(mount, issuer_name)
        if current is not None:
            cn = _common_name(current["certificate"])
            if cn != common_name:
                raise BackendError(
                    f"OpenBao mount {mount}/ already holds a CA named {cn!r}, not "
                    f"{common_name!r}; use another mount_prefix or cluster_tag"
                )
            return {"action": "adopted", **current}
        raise BackendError(f"OpenBao mount {mount}/ has no default CA; run generate_certs again")

    def _wait_default_issuer(self, mount, issuer_name, seconds=10):
        """The default issuer another writer is making right now (named ``issuer_name``)."""
        deadline = time.monotonic() + seconds
        while True:
            current = self.read_issuer(mount, "default", missing_ok=True)
            if current is not None or time.monotonic() > deadline:
                return current
            if self.find_issuer(mount, issuer_name) is not None:
                return self.read_issuer(mount, issuer_name)
            time.sleep(0.2)

    def generate_issuer(self, mount, common_name, ttl_seconds, key_type, issuer_name):
        """A new self-signed issuer in ``mount`` (a CA rotation's next CA, or the first one).

        Not retried after a lost answer (a second CA could be made); a re-run
        finds the issuer by name (:meth:`find_issuer`) before generating again.
        """
        kind, bits = _key_type(key_type)
        answer = self._request(
            "POST",
            f"{mount}/issuers/generate/root/internal",
            json={
                "common_name": common_name,
                "issuer_name": _parse_name(issuer_name, "issuer_name"),
                "key_name": issuer_name,
                "key_type": kind,
                "key_bits": bits,
                "ttl": f"{int(ttl_seconds)}s",
                "exclude_cn_from_sans": True,
            },
            idempotent=False,
            what=f"generating CA {issuer_name} in {mount}",
        )
        data = answer["data"]
        return {"issuer_id": data["issuer_id"], "certificate": data["certificate"].strip() + "\n"}

    def read_issuer(self, mount, ref, missing_ok=False):
        """``{"issuer_id", "issuer_name", "certificate", "ca_chain"}`` of issuer ``ref``."""
        try:
            answer = self._request("GET", f"{mount}/issuer/{ref}", what=f"reading {mount} CA")
        except BackendError as err:
            if missing_ok and ("no default issuer" in str(err) or "unable to find" in str(err)):
                return None
            raise
        data = answer["data"]
        return {
            "issuer_id": data["issuer_id"],
            "issuer_name": data.get("issuer_name", ""),
            "certificate": data["certificate"].strip() + "\n",
            "ca_chain": [c.strip() + "\n" for c in data.get("ca_chain") or []],
            "revoked": bool(data.get("revoked")),
        }

    def list_issuers(self, mount):
        """``{issuer_id: {"issuer_name", "is_default"}}`` of the mount."""
        answer = self._request("LIST", f"{mount}/issuers", what=f"listing {mount} CAs")
        info = (answer or {}).get("data", {}).get("key_info", {})
        return {
            issuer_id: {"issuer_name": v.get("issuer_name", ""), "is_default": v.get("is_default")}
            for issuer_id, v in info.items()
        }

    def find_issuer(self, mount, issuer_name):
        """The id of the issuer named ``issuer_name`` in ``mount``, or None."""
        for issuer_id, info in self.list_issuers(mount).items():
            if info["issuer_name"] == issuer_name:
                return issuer_id
        return None

    def set_default_issuer(self, mount, ref):
        self._request(
            "POST",
            f"{mount}/config/issuers",
            json={"default": ref},
            what=f"switching the default CA of {mount}",
        )

    def ca_chain(self, mount, ref="default"):
        """The PEM certificates of issuer ``ref`` and what signed it."""
        issuer = self.read_issuer(mount, ref)
        return issuer["ca_chain"] or [issuer["certificate"]]

    def revoke_issuer(self, mount, ref):
        """Revoke a retired CA (its leaves stop being trusted by CRL users)."""
        self._request("POST", f"{mount}/issuer/{ref}/revoke", what=f"revoking CA {ref}")

    def delete_issuer(self, mount, ref):
        """Delete an issuer and forget it (its key stays until ``tidy``)."""
        self._request("DELETE", f"{mount}/issuer/{ref}", what=f"deleting CA {ref}")

    # -- roles and leaves ----------------------------------------------------------

    def ensure_role(self, mount, role, spec, ttl_seconds, key_type):
        """Create or update the role ``role`` so it allows exactly ``spec`` (idempotent)."""
        self._request(
            "POST",
            f"{mount}/roles/{_parse_name(role, 'role')}",
            json=role_settings(spec, ttl_seconds, key_type),
            what=f"writing role {role} in {mount}",
        )

    def sign_leaf(self, mount, role, spec, csr_pem, ttl_seconds):
        """Sign ``csr_pem`` through ``sign/<role>``; returns cert PEM, chain and serial.

        The CN and SANs are passed explicitly (the role refuses anything it does
        not list); the CN is not copied into the SANs.  Not retried after a lost
        answer: that could issue two certificates.
        """
        answer = self._request(
            "POST",
            f"{mount}/sign/{role}",
            json={**self._leaf_params(spec, ttl_seconds), "csr": csr_pem.decode()},
            idempotent=False,
            what=f"signing {spec.common_name} with role {role}",
        )
        return _leaf_answer(answer["data"])

    def issue_leaf(self, mount, role, spec, ttl_seconds):
        """Issue through ``issue/<role>``: OpenBao makes the key and returns it.

        The formula's policy does not grant this (keys are made where they
        live and only CSRs travel); it is here for layouts that want it.
        """
        answer = self._request(
            "POST",
            f"{mount}/issue/{role}",
            json={**self._leaf_params(spec, ttl_seconds), "private_key_format": "pkcs8"},
            idempotent=False,
            what=f"issuing {spec.common_name} with role {role}",
        )
        leaf = _leaf_answer(answer["data"])
        leaf["key"] = answer["data"]["private_key"].strip() + "\n"
        return leaf

    def new_leaf(self, mount, role, spec, ttl_seconds, key_type):
        """A key made here and its certificate signed by OpenBao: (key PEM, leaf dict)."""
        key = new_private_key(key_type)
        leaf = self.sign_leaf(mount, role, spec, make_csr(spec, key), ttl_seconds)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, leaf

    @staticmethod
    def _leaf_params(spec, ttl_seconds):
        return {
            "common_name": spec.common_name,
            "alt_names": ",".join(spec.dns_names),
            "ip_sans": ",".join(str(ipaddress.ip_address(ip)) for ip in spec.ip_addresses),
            "ttl": f"{int(ttl_seconds)}s",
            "exclude_cn_from_sans": True,
            "format": "pem",
        }

    # -- revocation ----------------------------------------------------------------

    def revoke(self, mount, serial):
        """Revoke the leaf with ``serial`` (int or ``aa:bb:..``); revoking twice is harmless."""
        self._request(
            "POST",
            f"{mount}/revoke",
            json={"serial_number": serial_text(serial)},
            what=f"revoking {serial_text(serial)}",
        )

    def crl(self, mount, ref="default", der=False):
        """The CRL of issuer ``ref``: PEM text, or DER bytes."""
        body = self._request(
            "GET", f"{mount}/issuer/{ref}/crl/{'der' if der else 'pem'}", what=f"the {mount} CRL"
        )
        if isinstance(body, dict):  # some versions answer JSON: {"data": {"crl": ...}}
            body = body["data"]["crl"].encode()
        return body if der else body.decode()


def _hvac():
    """The hvac package (imported lazily: see the module docstring), or one line saying so."""
    try:
        import hvac
        import hvac.exceptions
    except ImportError:
        raise BackendError(
            "k8s_helper:backend: openbao needs the Python package hvac in Salt's Python: "
            "pip install 'kubernetes-formula[openbao]' (or hvac) there"
        ) from None
    return hvac


def _leaf_answer(data):
    return {
        "certificate": data["certificate"].strip() + "\n",
        "ca_chain": [c.strip() + "\n" for c in data.get("ca_chain") or [data["issuing_ca"]]],
        "serial_number": data["serial_number"],
    }


def _common_name(pem):
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names[0].value if names else ""


def _parse_time(text):
    # OpenBao gives nanoseconds ("2026-12-03T07:35:23.292601538Z"); keep microseconds.
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        return None
    frac = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.datetime.fromisoformat(match.group(1) + frac + zone)


def _server_text(err):
    """OpenBao's error text, one line, without hvac's ", on GET <url>" suffix."""
    errors = getattr(err, "errors", None) or [str(err)]
    text = "; ".join(str(e) for e in errors)
    text = re.sub(r"\d+ errors? occurred:\s*", "", text)
    text = " ".join(text.replace("*", " ").split())
    return text.split(", on ")[0][:300]


def _not_connected(err):
    """True when the connection was never made (the request was not sent)."""
    import requests.exceptions as rexc

    if isinstance(err, rexc.ConnectTimeout):
        return True
    text = str(err)
    return "NewConnectionError" in text or "Connection refused" in text


def _net_reason(err, timeout):
    import requests.exceptions as rexc

    text = str(err)
    if isinstance(err, (rexc.ConnectTimeout, rexc.ReadTimeout)) or "timed out" in text:
        return f"timed out after {timeout} s"
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "NameResolutionError" in text:
        return "host name not found"
    return "connection lost"


def _tls_reason(err):
    text = str(err)
    match = re.search(r"certificate verify failed: ([^()'\"]+)", text)
    if match:
        return "certificate verify failed: " + match.group(1).strip()
    match = re.search(r"(hostname '[^']+' doesn't match[^'\"]*)", text)
    return match.group(1) if match else "handshake failed"


# --------------------------------------------------------------------------
# The signer: how a set's plan (k8s_pki) makes CAs and leaves through OpenBao
# --------------------------------------------------------------------------


def ca_label(ca_name):
    """A CA's name in a mount path: ``etcd/ca`` -> ``etcd-ca`` (one path segment)."""
    return ca_name.replace("/", "-")


def enrolled_role(minion_id, member):
    """The role of one host's enrolled ``member``: ``enrolled-<minion>-<member>-<digest>``.

    The digest of the pair keeps two hosts apart whose names would otherwise
    read the same once "/" is replaced (minion ``a-apiserver`` + ``kubelet-client``
    and minion ``a`` + ``apiserver-kubelet-client``).
    """
    import hashlib

    digest = hashlib.sha256(f"{minion_id}\0{member}".encode()).hexdigest()[:10]
    return role_name(f"enrolled/{minion_id}/{member}")[:52] + "-" + digest


def role_name(member):
    """The role of one member of a set: ``hosts/m1/etcd/peer`` -> ``hosts-m1-etcd-peer``.

    A name longer than a role name may be keeps its start and gets a digest
    of the whole, so two members never share a role.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", member).lstrip("-_.") or "member"
    if len(name) > 63:
        import hashlib

        name = name[:50] + "-" + hashlib.sha256(member.encode()).hexdigest()[:12]
    return name


class OpenBaoSigner:
    """The signer of ``k8s_pki`` (see k8s_pki/signer.py) whose CAs live in OpenBao.

    One mount per CA of the cluster (:func:`mount_path`); the CA is generated
    inside (or adopted when the mount already has it: a second master, a
    re-made folder); each leaf's key is made here (the set folder hands it
    out) and its certificate signed through the member's role from a CSR.
    Logs in at the first request, so a run that needs nothing from OpenBao
    (a dry run of a new set) never reaches it.
    """

    backend = "openbao"
    keeps_ca_keys = True

    def __init__(self, config, cluster_tag, client=None):
        _parse_name(cluster_tag, "cluster_tag")
        self.config = config
        self.cluster_tag = cluster_tag
        self.client = client or OpenBaoPKI(config)
        self._logged_in = False
        self.cas = {}  # CA name -> "created" | "adopted"
        self.issued = {}  # member name -> serial number ("aa:bb:...") signed in this run

    def ready(self):
        """Log in now: a wrong token, a sealed or unreachable server fails before any write."""
        self.pki()

    def pki(self):
        if not self._logged_in:
            self.client.login()
            self._logged_in = True
        return self.client

    def mount(self, ca_name):
        """The CA's mount; a rotation's next CA (``<ca>.next``) is an issuer of its CA's mount."""
        return mount_path(self.config, self.cluster_tag, ca_label(_rotating(ca_name)))

    def _issuer_of(self, mount, cert):
        """The id of the issuer of ``mount`` whose certificate is ``cert``, or None."""
        pki = self.pki()
        for issuer_id in pki.list_issuers(mount):
            if _load_cert(pki.read_issuer(mount, issuer_id)["certificate"]) == cert:
                return issuer_id
        return None

    def default_ca(self, ca_name):
        """The certificate of the default issuer at the CA's mount, or None (no mount, no CA)."""
        mount = self.mount(ca_name)
        try:
            issuer = self.pki().read_issuer(mount, "default", missing_ok=True)
        except BackendError as err:
            if "has no mount" in str(err):
                return None
            raise
        return None if issuer is None else _load_cert(issuer["certificate"])

    def adopt_ca(self, directory, name, item):
        """True when ``item`` (a CA of the folder) is the CA OpenBao holds; else refused."""
        from k8s_pki.crypto import fingerprint
        from k8s_pki.errors import SetError

        mount = self.mount(name)
        if name != _rotating(name):  # a rotation's next CA: one of the mount's issuers
            if item.key is None and self._issuer_of(mount, item.cert) is not None:
                return True
            raise SetError(
                f"{directory}: {name}.crt is not an issuer of {mount}/ in OpenBao; remove "
                f"{name}.crt and run rotate_ca stage=prepare again"
            )
        if item.key is not None:
            raise SetError(
                f"{directory}: {name}.key is in the folder, so this set's CA is a local one; "
                "the openbao backend signs only with CAs kept inside OpenBao: set "
                "k8s_helper:backend: local for this set, or move its CA into OpenBao "
                '(docs/openbao.md, "Migrating an existing local CA")'
            )
        held = self.default_ca(name)
        if held is None:
            raise SetError(
                f"{directory}: {name}.crt is here but OpenBao has no CA at {mount}/: the CA this "
                "set was made with is not there (another OpenBao, or another mount_prefix?); "
                "check k8s_helper:openbao, or move the folder away to start a new set"
            )
        if held != item.cert and held not in item.bundle:
            raise SetError(
                f"{directory}: {name}.crt (sha256 {fingerprint(item.cert)}) is not the CA OpenBao "
                f"holds at {mount}/ (sha256 {fingerprint(held)}); check k8s_helper:openbao, or "
                "move the folder away so the next run takes OpenBao's CA"
            )
        self.cas.setdefault(name, "adopted")
        return True

    def make_ca(self, name, spec, key_type, ca_days, now):
        """The CA made inside OpenBao (or adopted if there already): ``(None, cert)``."""
        mount = self.mount(name)
        ttl = int(ca_days) * 86400
        pki = self.pki()
        if name != _rotating(name):
            return None, self._next_issuer(mount, spec, ttl, key_type)
        pki.ensure_mount(mount, ttl)
        made = pki.ensure_root_ca(mount, spec.common_name, ttl, key_type)
        self.cas[name] = made["action"]
        return None, _load_cert(made["certificate"])

    def _next_issuer(self, mount, spec, ttl, key_type):
        """A rotation's next CA: a second issuer in the same mount, named after its CN.

        A re-run after a lost answer finds it by that name instead of making another.
        """
        pki = self.pki()
        issuer_name = role_name(spec.common_name)
        found = pki.find_issuer(mount, issuer_name)
        if found is not None:
            return _load_cert(pki.read_issuer(mount, found)["certificate"])
        pki.ensure_mount(mount, ttl)  # its max TTL covers the new CA's lifetime
        made = pki.generate_issuer(mount, spec.common_name, ttl, key_type, issuer_name)
        return _load_cert(made["certificate"])

    # -- the CA rotation's steps inside OpenBao (k8s_pki.rotation calls them) ------

    def switch_default(self, ca_name, cert):
        """stage=reissue: the next CA becomes the mount's default issuer (roles follow it)."""
        mount = self.mount(ca_name)
        issuer_id = self._issuer_of(mount, cert)
        if issuer_id is None:
            raise BackendError(f"the new CA of {ca_name} is not an issuer of {mount}/ in OpenBao")
        self.pki().set_default_issuer(mount, issuer_id)

    def retire(self, ca_name, certs):
        """stage=finish: revoke the old CA(s) in OpenBao (their CRL stays readable)."""
        mount = self.mount(ca_name)
        for cert in certs:
            issuer_id = self._issuer_of(mount, cert)
            if issuer_id is not None and not self.pki().read_issuer(mount, issuer_id)["revoked"]:
                self.pki().revoke_issuer(mount, issuer_id)

    def drop_next(self, ca_name, cert):
        """stage=abort: delete the next CA's issuer (none there: nothing to do)."""
        mount = self.mount(ca_name)
        issuer_id = self._issuer_of(mount, cert)
        if issuer_id is not None:
            self.pki().delete_issuer(mount, issuer_id)

    def sign(self, name, leaf, key, ca, leaf_days, now):
        """``key``'s certificate for ``leaf``, signed through the member's role in OpenBao."""
        from k8s_pki.crypto import key_type_of

        csr = make_csr(leaf, key)
        cert = self._sign(
            name, role_name(name), leaf, csr, key.public_key(), key_type_of(key), ca, leaf_days, now
        )
        return cert

    def sign_request(self, minion_id, member, leaf, csr_pem, ca, leaf_days, now):
        """Enrollment: a host's own CSR signed through a role of its own for ``member``.

        The CSR goes to OpenBao as the host sent it (its key never leaves the
        host); the role allows exactly ``leaf`` (the set's identity for that
        host and member, never the CSR's subject), and the answer is checked
        like any other: for the CSR's key, signed by the set's CA, saying
        exactly ``leaf``.
        """
        public = x509.load_pem_x509_csr(csr_pem).public_key()
        role = enrolled_role(minion_id, member)
        name = f"{member} of {minion_id}"
        return self._sign(name, role, leaf, csr_pem, public, None, ca, leaf_days, now)

    def _sign(self, name, role, leaf, csr_pem, public, key_type, ca, leaf_days, now):
        from k8s_pki.crypto import capped_end, public_key_fingerprint, satisfies, signed_by

        mount = self.mount(ca.name)
        not_after, requested = capped_end(ca.cert, leaf_days, now)
        # OpenBao counts from its own clock; a leaf capped by its CA ends a
        # minute before the CA rather than be refused for outliving it.
        real_now = datetime.datetime.now(datetime.timezone.utc)
        ttl = int((not_after - real_now).total_seconds()) - (60 if requested else 0)
        if ttl <= 0:
            raise BackendError(
                f"{ca.name} in OpenBao ({mount}/) has expired: no leaf can be signed"
            )
        pki = self.pki()
        pki.ensure_role(mount, role, leaf, ttl, key_type)
        answer = pki.sign_leaf(mount, role, leaf, csr_pem, ttl)
        cert = _load_cert(answer["certificate"])
        # What OpenBao sends back is checked like anything read from disk.
        ours = public_key_fingerprint(cert.public_key()) == public_key_fingerprint(public)
        if not ours or not signed_by(cert, ca.cert):
            raise BackendError(
                f"OpenBao ({mount}/) returned a certificate for {name} that is not for our key "
                "or not signed by the set's CA; nothing was written"
            )
        if not satisfies(cert, leaf):
            raise BackendError(
                f"OpenBao ({mount}/, role {role}) signed {name} with other names or usages than "
                "asked; check the role's settings (another writer?); nothing was written"
            )
        self.issued[name] = serial_text(cert.serial_number)
        return cert


def _rotating(ca_name):
    """The CA a name belongs to: ``ca.next`` (a rotation's next CA) -> ``ca``."""
    return ca_name.removesuffix(".next")


def _load_cert(pem):
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def issuers_report(signer, ca_names, renew_before_days, now=None):
    """OpenBao's own view of the set's CAs: every issuer of each CA's mount and its expiry.

    One row per issuer: ``ca``, ``mount``, ``issuer_id``, ``issuer_name``,
    ``default``, ``subject``, ``not_after``, ``days_left``, ``status`` (the
    report's statuses; ``missing`` when the mount or its CA is gone).
    """
    from k8s_pki.crypto import days_left, iso_utc
    from k8s_pki.expiry import expiry_status

    now = now or datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for ca in ca_names:
        mount = signer.mount(ca)
        try:
            listed = signer.pki().list_issuers(mount)
        except BackendError as err:
            if "has no mount" not in str(err):
                raise
            listed = {}
        if not listed:
            rows.append({"ca": ca, "mount": mount, "status": "missing", "error": "no CA here"})
        for issuer_id, info in sorted(listed.items(), key=lambda i: not i[1]["is_default"]):
            cert = _load_cert(signer.pki().read_issuer(mount, issuer_id)["certificate"])
            rows.append(
                {
                    "ca": ca,
                    "mount": mount,
                    "issuer_id": issuer_id,
                    "issuer_name": info["issuer_name"],
                    "default": bool(info["is_default"]),
                    "subject": cert.subject.rfc4514_string(),
                    "not_after": iso_utc(cert.not_valid_after_utc),
                    "days_left": math.floor(days_left(cert, now)),
                    "status": expiry_status(cert, renew_before_days, now),
                }
            )
    return rows


# --------------------------------------------------------------------------
# Revocation: the certificates of hosts a kubeadm set no longer has
# --------------------------------------------------------------------------


def removed_host_certs(directory, hosts, ca_certs):
    """``[(host, rel path, ca name, cert)]`` left in ``hosts/<host>/`` for hosts not in ``hosts``.

    The writer keeps a removed host's folder (files the set does not name are
    left alone); its certificates are still valid until revoked.  Only leaves
    signed by one of ``ca_certs`` (``{ca name: cert}``) are listed.
    """
    from k8s_pki import (
        KUBEADM_HOSTS_DIR,
        KUBECONFIG_SUFFIXES,
        PKIError,
        certificates_in_file,
        is_ca,
        signed_by,
    )

    root = os.path.join(directory, KUBEADM_HOSTS_DIR)
    if not os.path.isdir(root):
        return []
    found = []
    for host in sorted(set(os.listdir(root)) - set(hosts)):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, host)):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith((".crt", *KUBECONFIG_SUFFIXES)):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    certs = [c for _, c in certificates_in_file(path) if not is_ca(c)]
                except PKIError:
                    continue  # not a certificate we issued: nothing to revoke
                for cert in certs:
                    ca = next((n for n, c in ca_certs.items() if signed_by(cert, c)), None)
                    if ca is not None:
                        found.append((host, os.path.relpath(path, directory), ca, cert))
    return found


def revoke_removed(signer, found, dry_run=False):
    """Revoke what ``found`` lists (:func:`removed_host_certs`) unless its CRL already has it.

    Returns ``(revoked, crls)``: one entry per newly revoked certificate
    (host, file, CA, serial), and the new CRL (PEM) of each CA that revoked one.
    With ``dry_run`` nothing is revoked: the entries say what would be.
    """
    pki = signer.pki()
    listed, revoked = {}, []
    for host, rel, ca, cert in found:
        mount = signer.mount(ca)
        if ca not in listed:
            listed[ca] = x509.load_pem_x509_crl(pki.crl(mount).encode())
        if listed[ca].get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            continue
        if not dry_run:
            pki.revoke(mount, cert.serial_number)
        revoked.append(
            {"host": host, "file": rel, "ca": ca, "serial": serial_text(cert.serial_number)}
        )
    cas = [] if dry_run else sorted({entry["ca"] for entry in revoked})
    return revoked, {ca: pki.crl(signer.mount(ca)) for ca in cas}


def write_crls(pki_root, cluster_tag, crls):
    """Put ``<ca>.crl`` (PEM, 0644) in the set folder, each in one rename, under the set's lock.

    Returns the paths written.  The writer carries these files along (it
    keeps the files a set does not name).
    """
    from k8s_pki import CERT_MODE, locked
    from k8s_pki.files import fsync_dir, write_new

    directory = os.path.join(pki_root, cluster_tag)
    written = []
    with locked(pki_root, cluster_tag):
        for ca, pem in sorted(crls.items()):
            path = os.path.join(directory, f"{ca}.crl")
            tmp = f"{path}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            write_new(tmp, pem.encode(), CERT_MODE)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            fsync_dir(os.path.dirname(path))
            written.append(path)
    return written
