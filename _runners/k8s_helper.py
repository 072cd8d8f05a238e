"""
Mint and inspect the TLS certificates of Kubernetes clusters on the salt master.

The certificates are written to ``<pki_root>/<cluster_tag>/``; ``pki_root`` is
``/var/salt/k8s-helper/pki`` unless the master config sets::

    k8s_helper:
      pki_root: /some/other/path

Pillar then reads the files from there and hands them to minions (see the
formula's ``pillar.example``).

The certificate logic lives in ``_utils/k8s_pki.py``; this module only checks
arguments, reads the master's options and shapes what ``salt-run`` prints.
"""

import functools
import logging
import os

try:
    import k8s_pki

    HAS_PKI = True
except ImportError as _err:  # cryptography missing, or _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s-helper"


def __virtual__():
    if not HAS_PKI:
        return (
            False,
            f"k8s-helper needs the formula's _utils/k8s_pki.py and python3-cryptography "
            f"({_IMPORT_ERROR}); run saltutil.sync_utils or set utils_dirs",
        )
    return __virtualname__


class _BadInput(Exception):
    pass


def _pki_root():
    return (__opts__.get("k8s_helper") or {}).get("pki_root", k8s_pki.DEFAULT_PKI_ROOT)


def _reject_unknown(kwargs):
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    if unknown:
        raise k8s_pki.InputError(f"{unknown[0]}: unknown argument")


def _failed(message):
    """What salt-run prints, and exits non-zero on, for a request it refused."""
    log.error("k8s-helper: %s", message)
    return {"result": False, "error": message, "retcode": 2}


def _refusals_exit_nonzero(func):
    """Turn every refusal into a one-line error and a non-zero exit status.

    salt-run exits 0 when a runner raises a TypeError (it takes it for a bad
    call), so nothing may escape as an exception.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except k8s_pki.PKIError as err:
            return _failed(str(err))
        except OSError as err:
            return _failed(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "))
        except Exception as err:  # noqa: BLE001 - a bug must not look like success
            log.exception("k8s-helper: %s failed", func.__name__)
            return _failed(f"internal error in {func.__name__}: {type(err).__name__}: {err}")

    return wrapper


@_refusals_exit_nonzero
def generate_certs(
    cluster_tag="default",
    api_service_address="10.254.0.1",
    api_server_fqdn="kubernetes.api",
    force_regen=False,
    extra_sans=None,
    cluster_domain="cluster.local",
    key_type="rsa-2048",
    ca_days=3650,
    days=365,
    profile="seed",
    masters=None,
    nodes=None,
    control_plane_endpoint=None,
    pillar_minion=None,
    **kwargs,
):
    """
    Generate a cluster's CA, apiserver certificate and admin client certificate.

    With ``profile=kubeadm``, generate kubeadm's whole control-plane PKI
    instead (see below and the formula's docs/kubeadm-profile.md).

    Writes ``ca.crt``/``ca.key``, ``server.crt``/``server.key`` (kube-apiserver's
    serving certificate) and ``kubecfg.crt``/``kubecfg.key`` (the admin client,
    ``O=system:masters``) to ``<pki_root>/<cluster_tag>/``. A complete, valid set
    is left exactly as it is; missing leaves are issued from the existing CA, and
    a leaf whose names no longer match the arguments, that is not signed by the
    CA, or that expires within 90 days is reissued (with a new key); the return
    says why (``reason``). The CA is only replaced with ``force_regen=True``.
    Whenever existing files are replaced, the previous set is first kept under
    ``<cluster_tag>/backup/<timestamp>/``.

    Returns paths, SHA-256 fingerprints, subjects, SANs and expiry dates of
    the files, and for each whether it was ``generated`` or ``reused``. Bad
    input is refused with a message naming the argument, a non-zero exit
    status, and nothing written.

    cluster_tag : default
        Which cluster the set belongs to; the name of its folder.
    api_service_address : 10.254.0.1
        The apiserver's service (cluster) IP, put in the serving certificate.
    api_server_fqdn : kubernetes.api
        The apiserver's DNS name, put in the serving certificate.
    force_regen : False
        Make a whole new set (new CA) even when a valid one exists.
    extra_sans : None
        More names and addresses for the serving certificate (each master's
        name and address, a load balancer): a list or a comma-separated string.
    cluster_domain : cluster.local
        The cluster's DNS domain (``kubernetes.default.svc.<cluster_domain>``).
    key_type : rsa-2048
        One of rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384.
    ca_days : 3650
        How long the CA is valid, in days.
    days : 365
        How long the leaf certificates are valid, in days.
    profile : seed
        ``seed``: the set above. ``kubeadm``: kubeadm's layout and identities:
        ``ca``, ``front-proxy-ca``, ``etcd/ca``, ``apiserver-kubelet-client``,
        ``front-proxy-client``, ``etcd/healthcheck-client``,
        ``apiserver-etcd-client``, ``sa.key``/``sa.pub``, the kubeconfigs
        ``admin.conf``, ``super-admin.conf``, ``controller-manager.conf``,
        ``scheduler.conf``; per master ``hosts/<name>/apiserver``,
        ``hosts/<name>/etcd/server`` and ``hosts/<name>/etcd/peer``; per master
        and node ``hosts/<name>/kubelet.conf`` (``system:node:<name>``). A CA
        placed in the folder beforehand (``ca.crt`` + ``ca.key``, or only
        ``ca.crt`` with every certificate it signs) is used, never replaced.
    masters : None
        kubeadm profile: the control-plane hosts, a list of ``{name, ip}``
        (required, unless ``pillar_minion`` provides it).
    nodes : None
        kubeadm profile: the worker hosts, a list of ``{name, ip}``; ``ip``
        is optional.
    control_plane_endpoint : None
        kubeadm profile: ``host[:port]`` the kubeconfigs point to (a load
        balancer); defaults to ``<api_server_fqdn>:6443``.
    pillar_minion : None
        kubeadm profile: read ``masters`` and ``nodes`` (when not given as
        arguments) from this minion's pillar, ``kubernetes:kubeadm:masters``
        and ``kubernetes:kubeadm:nodes``.

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.generate_certs
        salt-run k8s-helper.generate_certs cluster_tag=prod api_service_address=10.96.0.1 \\
            api_server_fqdn=api.prod.example.com extra_sans='[k8s-master-1, 192.0.2.11]'
        salt-run k8s-helper.generate_certs cluster_tag=prod force_regen=True
        salt-run k8s-helper.generate_certs cluster_tag=prod profile=kubeadm \\
            api_service_address=10.96.0.1 control_plane_endpoint=lb.prod.example.com:6443 \\
            masters='[{name: m1, ip: 192.0.2.11}, {name: m2, ip: 192.0.2.12}]' \\
            nodes='[{name: n1, ip: 192.0.2.21}]'
        salt-run k8s-helper.generate_certs cluster_tag=prod profile=kubeadm pillar_minion=m1
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    force = k8s_pki.check_bool(force_regen, "force_regen")
    common = {
        "api_server_fqdn": api_server_fqdn,
        "api_service_address": api_service_address,
        "cluster_domain": cluster_domain,
        "extra_sans": extra_sans,
    }
    kubeadm_args = {
        "masters": masters,
        "nodes": nodes,
        "control_plane_endpoint": control_plane_endpoint,
        "pillar_minion": pillar_minion,
    }
    if profile == "kubeadm":
        specs = _kubeadm_specs(common, **kubeadm_args)
    elif profile == "seed":
        given = [name for name, value in kubeadm_args.items() if value not in (None, "")]
        if given:
            raise k8s_pki.InputError(f"{given[0]}: only used with profile=kubeadm")
        specs = k8s_pki.seed_specs(**common)
    else:
        raise k8s_pki.InputError(f"profile: {profile!r} is not one of seed, kubeadm")
    options = {
        "key_type": k8s_pki.check_key_type(key_type),
        "ca_days": k8s_pki.check_days(ca_days, "ca_days"),
        "leaf_days": k8s_pki.check_days(days, "days"),
    }
    plan, backup = k8s_pki.ensure_set(_pki_root(), tag, specs, force_regen=force, **options)
    ret = {"cluster_tag": tag, **k8s_pki.describe_plan(plan, backup)}
    if profile != "seed":
        ret["profile"] = profile
    log.info(
        "k8s-helper: cluster %s: %s",
        tag,
        ", ".join(f"{name} {info['action']}" for name, info in ret["files"].items()),
    )
    return ret


# --------------------------------------------------------------------------
# The kubeadm profile's hosts: from arguments, or from a minion's pillar
# --------------------------------------------------------------------------

KUBEADM_PILLAR_KEY = "kubernetes:kubeadm"


def _hosts_from_pillar(minion):
    """``(masters, nodes)`` as the pillar of ``minion`` has them (checked)."""
    if not isinstance(minion, str) or not minion.strip():
        raise k8s_pki.InputError(f"pillar_minion: {minion!r} is not a minion id")
    pillar = __salt__["pillar.show_pillar"](minion)
    data = pillar
    for key in KUBEADM_PILLAR_KEY.split(":"):
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, dict) or not data.get("masters"):
        raise k8s_pki.InputError(
            f"pillar_minion: the pillar of {minion!r} has no {KUBEADM_PILLAR_KEY}:masters"
        )
    where = f"{KUBEADM_PILLAR_KEY}:%s (pillar of {minion})"
    k8s_pki.check_hosts(data["masters"], where % "masters")
    k8s_pki.check_hosts(data.get("nodes"), where % "nodes", need_ip=False)
    return data["masters"], data.get("nodes")


def _kubeadm_specs(common, masters, nodes, control_plane_endpoint, pillar_minion):
    if pillar_minion not in (None, ""):
        from_pillar = _hosts_from_pillar(pillar_minion)
        masters = from_pillar[0] if masters in (None, "") else masters
        nodes = from_pillar[1] if nodes in (None, "") else nodes
    if masters in (None, ""):
        raise k8s_pki.InputError(
            "masters: the kubeadm profile needs the control-plane hosts, e.g. "
            "masters='[{name: m1, ip: 192.0.2.11}]', or pillar_minion=<id>"
        )
    return k8s_pki.kubeadm_specs(
        masters, nodes, control_plane_endpoint=control_plane_endpoint, **common
    )


# --------------------------------------------------------------------------
# Lifecycle: expiry report, renewal (issue 5)
# --------------------------------------------------------------------------

# The formula's outputter (_output/k8s_table.py) prints reports as tables;
# --out=json (or yaml...) prints the same data plainly.
_TABLE = "k8s_table"
EXPIRY_EVENT_TAG = "k8s-helper/expiry/{cluster_tag}"


def _fire_master_event(data, tag):
    import salt.utils.event  # noqa: PLC0415 - only when asked to fire

    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as event:
        return bool(event.fire_event(data, tag))


@_refusals_exit_nonzero
def check_expiration(cluster_tag="default", threshold_days=90, fire_event=False, **kwargs):
    """
    Report when each certificate of a cluster's set expires.

    Reads every certificate under ``<pki_root>/<cluster_tag>/`` (backups left
    out; a ``ca.crt`` holding several CAs gives one line per CA) and gives for
    each its subject, issuer, not-after date, whole days left and a status:
    ``ok``, ``renew-soon`` (fewer than ``threshold_days`` left - the window in
    which ``generate_certs`` reissues a leaf) or ``expired``; a file that does
    not parse is ``unreadable``. Prints a table, or plain data with
    ``--out=json``. The exit status is 1 when anything is expired or
    unreadable, else 0, so cron jobs and monitoring can use it.

    cluster_tag : default
        Which cluster's set to read.
    threshold_days : 90
        How many days before its end a certificate is reported ``renew-soon``.
        For a certificate that does not live longer than that, the last third
        of its lifetime.
    fire_event : False
        Also fire ``k8s-helper/expiry/<cluster_tag>`` on the master's event bus
        when anything is ``renew-soon``, ``expired`` or ``unreadable``; its data
        names the leaves to renew (``renew``) and the CAs that need attention
        (``cas``). Meant for a master schedule and a reactor (see
        ``docs/lifecycle.md``).

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.check_expiration
        salt-run k8s-helper.check_expiration cluster_tag=prod threshold_days=30 --out=json
        salt-run k8s-helper.check_expiration cluster_tag=prod fire_event=True
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    threshold = k8s_pki.check_days(threshold_days, "threshold_days")
    fire = k8s_pki.check_bool(fire_event, "fire_event")
    report = k8s_pki.expiry_report(
        os.path.join(_pki_root(), tag), k8s_pki.seed_specs(), renew_before_days=threshold
    )
    summary = report["summary"]
    data = {"cluster_tag": tag, **report}
    if fire:
        alert = k8s_pki.expiry_alert(report)
        event_tag = EXPIRY_EVENT_TAG.format(cluster_tag=tag)
        sent = alert is not None and _fire_master_event({"cluster_tag": tag, **alert}, event_tag)
        data["event"] = {"tag": event_tag, "fired": sent}
        if alert is not None and not sent:
            log.warning("k8s-helper: could not fire %s (is the master running?)", event_tag)
    data["retcode"] = 1 if summary["expired"] or summary["unreadable"] else 0
    log.info(
        "k8s-helper: cluster %s: %s",
        tag,
        ", ".join(f"{count} {status}" for status, count in summary.items()),
    )
    return {"outputter": _TABLE, "data": data}


@_refusals_exit_nonzero
def renew(cluster_tag="default", certs=None, keep_keys=False, key_type=None, days=365, **kwargs):
    """
    Reissue leaf certificates of a cluster from its own CA; the CA is never touched.

    Each renewed certificate says exactly what the one it replaces says
    (subject, SANs, usages) with new dates and serial, and a new key unless
    ``keep_keys=True``. The previous files are first kept under
    ``<pki_root>/<cluster_tag>/backup/<timestamp>/``. Leaves not named are kept,
    except any that are already unusable (expired, or not signed by the CA):
    those are reissued too, and the return says why. Naming a CA, or a
    certificate the set does not have, is refused with nothing changed; so is
    a set with a missing leaf (``generate_certs`` issues it) or an expired CA.

    After a renewal, refresh pillar and apply ``kubernetes.certs.present`` so
    the hosts get the new files.

    cluster_tag : default
        Which cluster's set to renew.
    certs : None
        The leaves to renew, as a list or a comma-separated string
        (``server``, ``kubecfg``; ``server.crt`` works too). Default: every leaf.
    keep_keys : False
        Reissue with the existing keys instead of making new ones.
    key_type : None
        The type of new keys (rsa-2048, rsa-3072, rsa-4096, ecdsa-p256,
        ecdsa-p384). Default: the type of the key being replaced.
    days : 365
        How long the renewed certificates are valid, in days.

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.renew
        salt-run k8s-helper.renew cluster_tag=prod certs=server
        salt-run k8s-helper.renew cluster_tag=prod certs='[server, kubecfg]' keep_keys=True
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    keep = k8s_pki.check_bool(keep_keys, "keep_keys")
    new_key_type = None if key_type in (None, "") else k8s_pki.check_key_type(key_type)
    leaf_days = k8s_pki.check_days(days, "days")
    plan, backup = k8s_pki.renew_set(
        _pki_root(),
        tag,
        k8s_pki.seed_specs(),
        certs,
        keep_keys=keep,
        key_type=new_key_type,
        leaf_days=leaf_days,
    )
    renewed = [item.name for item in plan.items.values() if item.action != "reused"]
    ret = {"cluster_tag": tag, "renewed": renewed, **k8s_pki.describe_plan(plan, backup)}
    log.info("k8s-helper: cluster %s renewed: %s (backup %s)", tag, ", ".join(renewed), backup)
    return ret
