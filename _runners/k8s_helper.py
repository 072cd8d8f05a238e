"""
Mint and inspect the TLS certificates of Kubernetes clusters on the salt master.

The certificates are written to ``<pki_root>/<cluster_tag>/``; ``pki_root`` is
``/var/salt/k8s-helper/pki`` unless the master config sets::

    k8s_helper:
      pki_root: /some/other/path

Pillar then reads the files from there and hands them to minions (see the
formula's ``pillar.example``).

The certificate logic lives in the package ``_utils/k8s_pki/``; this module only checks
arguments, reads the master's options and shapes what ``salt-run`` prints.
"""

import functools
import inspect
import logging
import os

try:
    import k8s_openbao
    import k8s_pki
    import k8s_report

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
            f"k8s-helper needs the formula's _utils/k8s_pki package and python3-cryptography "
            f"({_IMPORT_ERROR}); run saltutil.sync_utils or set utils_dirs",
        )
    return __virtualname__


def _pki_root():
    return k8s_pki.pki_root(__opts__)


def _backup_keep():
    return k8s_pki.backup_keep(__opts__)


def _signer(tag):
    """Who makes the cluster's CAs and signs its leaves, as the master config chooses.

    ``k8s_helper:backend``: ``local`` (keys in the set folder) or ``openbao``
    (CAs inside OpenBao; docs/openbao.md).  Chosen here, once per run.
    """
    if k8s_openbao.backend(__opts__) == "local":
        return k8s_pki.LOCAL
    return k8s_openbao.OpenBaoSigner(k8s_openbao.parse_config(__opts__), tag)


def _backend_facts(signer):
    """What a run says about the OpenBao side: each CA's mount and whether it was made."""
    if not signer.keeps_ca_keys:
        return {}
    return {
        "backend": signer.backend,
        "openbao": {
            "cas": {
                name: {"mount": signer.mount(name), "action": action}
                for name, action in signer.cas.items()
            },
            "signed": len(signer.issued),
        },
    }


def _reject_unknown(kwargs):
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    if unknown:
        raise k8s_pki.InputError(f"{unknown[0]}: unknown argument")


def _check_call(func, args, kwargs):
    """Refuse a call ``func`` cannot take (too many positional arguments, one
    given twice) with a message naming the problem: Python's TypeError would
    surface as an internal error."""
    signature = inspect.signature(func)
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        named = [p.name for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        if len(args) > len(named):
            raise k8s_pki.InputError(
                f"too many positional arguments: {func.__name__} takes at most {len(named)} "
                f"({', '.join(named)}), got {len(args)}; name them, e.g. {named[0]}=..."
            ) from None
        raise k8s_pki.InputError(f"{func.__name__}: {err}") from None


def _dry_run(test):
    """Whether to only plan: ``test=True`` on the command line, or the master's ``test`` option.

    ``salt-run fn test=True`` hands ``test`` to the function; ``__opts__["test"]``
    is the master's (config or an orchestration run with test=True).
    """
    return k8s_pki.check_bool(test, "test") or __opts__.get("test") is True


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
            _check_call(func, args, kwargs)
            ret = func(*args, **kwargs)
        except (k8s_pki.PKIError, k8s_openbao.BackendError) as err:
            ret = _failed(str(err))
        except OSError as err:
            ret = _failed(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "))
        except Exception as err:  # noqa: BLE001 - a bug must not look like success
            log.exception("k8s-helper: %s failed", func.__name__)
            ret = _failed(f"internal error in {func.__name__}: {type(err).__name__}: {err}")
        # salt-run takes its exit status from the returned retcode; an
        # orchestration step (salt.runner) takes success from __context__.
        data = ret.get("data", ret) if isinstance(ret, dict) else {}
        __context__["retcode"] = data.get("retcode", 0) if isinstance(data, dict) else 0
        return ret

    return wrapper


@_refusals_exit_nonzero
def generate_certs(
    cluster_tag="default",
    api_service_address=None,
    api_server_fqdn=None,
    force_regen=False,
    extra_sans=None,
    cluster_domain=None,
    key_type=None,
    ca_days=None,
    days=None,
    service_account_key=None,
    profile=None,
    masters=None,
    nodes=None,
    control_plane_endpoint=None,
    pillar_minion=None,
    *,
    test=False,
    enrolled=None,
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
    CA, or that expires within 90 days is reissued (with a new key, but for
    ``server.key`` when it signs the service-account tokens: see
    ``service_account_key``); the return says why (``reason``). No leaf
    outlives its CA: one that would ends with the CA (``capped`` says so). The
    CA is only replaced with ``force_regen=True``.
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
    service_account_key : False
        Also make ``sa.key``/``sa.pub``, a key pair of its own for signing
        service-account tokens (the seed signs them with ``server.key``, which
        drift and renewal therefore keep; only ``force_regen`` and ``renew
        rotate_token_key=True`` replace it, invalidating every token). Kept
        across renewals and drift; only ``force_regen`` replaces it.
    profile : seed
        ``seed``: the set above. ``kubeadm``: kubeadm's layout and identities:
        ``ca``, ``front-proxy-ca``, ``etcd/ca``, ``apiserver-kubelet-client``,
        ``front-proxy-client``, ``etcd/healthcheck-client``,
        ``apiserver-etcd-client``, ``sa.key``/``sa.pub``, the kubeconfigs
        ``admin.conf``, ``super-admin.conf``; per master ``hosts/<name>/apiserver``,
        ``hosts/<name>/etcd/server``, ``hosts/<name>/etcd/peer`` and its own
        ``controller-manager.conf``/``scheduler.conf`` (pointing at its own
        apiserver, https://<its ip>:6443, as kubeadm's do); per master
        and node ``hosts/<name>/kubelet.conf`` (``system:node:<name>``). A CA
        placed in the folder beforehand (``ca.crt`` + ``ca.key``, or only
        ``ca.crt`` with every certificate it signs) is used, never replaced.
    masters : None
        kubeadm profile: the control-plane hosts, a list of ``{name, ip}``
        (required, unless ``pillar_minion`` provides it). Seed profile
        (optional): the masters that may enroll their own keys
        (docs/enrollment.md); recorded in ``cluster.yaml``, they add no file.
    nodes : None
        The worker hosts, a list of ``{name, ip}``; ``ip`` is optional.
        Seed profile: as ``masters``, the nodes that may enroll.
    control_plane_endpoint : None
        kubeadm profile: ``host[:port]`` the kubeconfigs point to (a load
        balancer); defaults to ``<api_server_fqdn>:6443``.
    pillar_minion : None
        kubeadm profile: read ``masters`` and ``nodes`` (when not given as
        arguments) from this minion's pillar, ``kubernetes:kubeadm:masters``
        and ``kubernetes:kubeadm:nodes``.
    test : False
        Dry run: return the plan (each file: create, keep, reissue or remove,
        with the reason) and write nothing, not even pki_root or the lock.
    enrolled : False
        kubeadm profile: the hosts enroll their own pairs (docs/enrollment.md):
        the set leaves out every ``hosts/<name>/kubelet.conf``, the masters'
        ``apiserver``, ``etcd/server``, ``etcd/peer`` and the shared client
        certificates, so no key of theirs is made or kept on the master.
        Recorded in ``cluster.yaml``; a re-run without it keeps the record.
        Switching an existing set to ``True`` removes those files (kept in
        the backup); back to ``False`` issues them again.

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.generate_certs
        salt-run k8s-helper.generate_certs cluster_tag=prod api_service_address=10.96.0.1 \\
            api_server_fqdn=api.prod.example.com extra_sans='[k8s-master-1, 192.0.2.11]'
        salt-run k8s-helper.generate_certs cluster_tag=prod force_regen=True
        salt-run k8s-helper.generate_certs cluster_tag=prod force_regen=True test=True
        salt-run k8s-helper.generate_certs cluster_tag=prod profile=kubeadm \\
            api_service_address=10.96.0.1 control_plane_endpoint=lb.prod.example.com:6443 \\
            masters='[{name: m1, ip: 192.0.2.11}, {name: m2, ip: 192.0.2.12}]' \\
            nodes='[{name: n1, ip: 192.0.2.21}]'
        salt-run k8s-helper.generate_certs cluster_tag=prod profile=kubeadm pillar_minion=m1
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    force = k8s_pki.check_bool(force_regen, "force_regen")
    dry = _dry_run(test)
    if profile not in (None, "seed", "kubeadm"):
        raise k8s_pki.InputError(f"profile: {profile!r} is not one of seed, kubeadm")
    arguments = {
        "api_server_fqdn": api_server_fqdn,
        "api_service_address": api_service_address,
        "cluster_domain": cluster_domain,
        "extra_sans": extra_sans,
        "key_type": key_type,
        "ca_days": ca_days,
        "days": days,
        "service_account_key": service_account_key,
        "masters": masters,
        "nodes": nodes,
        "control_plane_endpoint": control_plane_endpoint,
        "enrolled": enrolled,
    }
    if pillar_minion not in (None, ""):
        if profile != "kubeadm":
            raise k8s_pki.InputError("pillar_minion: only used with profile=kubeadm")
        from_pillar = _hosts_from_pillar(pillar_minion)
        arguments["masters"] = from_pillar[0] if masters in (None, "") else masters
        arguments["nodes"] = from_pillar[1] if nodes in (None, "") else nodes
    # Only what the caller gave counts as a change; the rest comes from the set's manifest.
    given = {
        name: k8s_pki.canonical(name, value)
        for name, value in arguments.items()
        if value is not None
    }
    directory = os.path.join(_pki_root(), tag)
    profile, settings, recorded, changed = k8s_pki.resolve_settings(directory, given, profile)
    signer = _signer(tag)
    k8s_pki.check_backend(directory, recorded, signer.backend)
    signer.ready()
    if signer.keeps_ca_keys:
        if force:
            raise k8s_pki.InputError(
                f"force_regen: not supported on the {signer.backend} backend: the CA lives "
                "there and a new run adopts it; rotate it with rotate_ca, or use a new "
                "cluster_tag for a new CA"
            )
        settings["backend"] = signer.backend
    specs = k8s_pki.specs_for(settings)
    options = {
        "key_type": settings["key_type"],
        "ca_days": settings["ca_days"],
        "leaf_days": settings["days"],
        "backup_keep": _backup_keep(),
        "manifest": k8s_pki.render_manifest(settings),
        "settings": settings,
        "leave_out": (
            *k8s_pki.enrolled_leftovers(directory, settings, specs),
            *k8s_pki.copies_of_removed_hosts(directory, settings),
        ),
    }
    plan, backup = k8s_pki.ensure_set(
        _pki_root(), tag, specs, force_regen=force, dry_run=dry, signer=signer, **options
    )
    k8s_pki.explain_changes(plan, settings, recorded, changed)
    ret = {"cluster_tag": tag, **_described(plan, backup, dry), **_backend_facts(signer)}
    if changed:
        ret["settings_changed"] = changed
    if profile != "seed":
        ret["profile"] = profile
    if signer.keeps_ca_keys and profile == "kubeadm" and os.path.isdir(directory):
        ret.update(_revoke_removed_hosts(signer, tag, directory, settings, specs, dry))
    log.info(
        "k8s-helper: cluster %s: %s",
        tag,
        ", ".join(f"{name} {info['action']}" for name, info in ret["files"].items()),
    )
    return ret


def _revoke_removed_hosts(signer, tag, directory, settings, specs, dry):
    """Revoke, in OpenBao, the certificates of hosts the kubeadm set no longer has.

    Their folders stay (the writer keeps what the set does not name); the
    CRL of each CA that revoked something is written as ``<ca>.crl``.
    """
    hosts = [host["name"] for host in settings["masters"] + settings["nodes"]]
    ca_certs = {
        name: k8s_pki.read_pair(directory, name).cert
        for name, spec in specs.items()
        if spec.kind.is_ca
    }
    found = k8s_openbao.removed_host_certs(directory, hosts, ca_certs)
    if not found:
        return {}
    revoked, crls = k8s_openbao.revoke_removed(signer, found, dry_run=dry)
    if not revoked:  # revoked by an earlier run already
        return {}
    out = {"would_revoke" if dry else "revoked": revoked}
    if crls:
        out["crl"] = k8s_openbao.write_crls(_pki_root(), tag, crls)
        log.warning(
            "k8s-helper: cluster %s: revoked %s certificates of removed hosts", tag, len(revoked)
        )
    return out


def _described(plan, backup, dry):
    """The plan as a dry run shows it, or what the real run wrote."""
    return k8s_pki.describe_dry_run(plan) if dry else k8s_pki.describe_plan(plan, backup)


# --------------------------------------------------------------------------
# The kubeadm profile's hosts: from arguments, or from a minion's pillar
# --------------------------------------------------------------------------

KUBEADM_PILLAR_KEY = "kubernetes:kubeadm"


def _hosts_from_pillar(minion):
    """``(masters, nodes)`` as the pillar of ``minion`` has them (checked)."""
    if not isinstance(minion, str) or not minion.strip() or minion != minion.strip():
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


# --------------------------------------------------------------------------
# Lifecycle: expiry report, renewal
# --------------------------------------------------------------------------

# The formula's outputter (_output/k8s_table.py) prints reports as tables;
# --out=json (or yaml...) prints the same data plainly.
_TABLE = "k8s_table"
EXPIRY_EVENT_TAG = "k8s-helper/expiry/{cluster_tag}"


def _fire_master_event(data, tag):
    import salt.utils.event  # noqa: PLC0415 - only when asked to fire

    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as event:
        return bool(event.fire_event(data, tag))


def _event_why(alert, sent):
    """Why the expiry event was or was not fired, in words (the two cases differ)."""
    if alert is None:
        return "not fired: nothing is due (every certificate is ok)"
    if not sent:
        return (
            f"not fired: no master event bus answered at {__opts__['sock_dir']} "
            "(is the salt-master running?)"
        )
    return "fired: " + ", ".join(alert["renew"] + alert["cas"]) + " need attention"


@_refusals_exit_nonzero
def check_expiration(
    cluster_tag="default", threshold_days=90, fire_event=False, table=True, html=None, **kwargs
):
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

    On a kubeadm set the report is kubeadm's: two tables, certificates and
    CAs, with kubeadm's columns (EXPIRES, RESIDUAL TIME, CERTIFICATE
    AUTHORITY, EXTERNALLY MANAGED) plus the status, rows named as kubeadm
    names them (``apiserver (m1)``, ``admin.conf``, ``kubelet.conf (n1)``);
    the CA a kubeconfig embeds is not repeated. The data holds
    ``certificates`` and ``certificate_authorities``.

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
    table : True
        Print a table. ``False`` returns the report as plain data: what an
        orchestration's ``salt.runner`` step needs (Salt judges a tabled
        return by the rules of state results and would call it failed).
    html : None
        Also write the report as one self-contained HTML page (a timeline of
        every certificate against today and its renewal window, by status) to
        this absolute path; its folder must exist, a symbolic link there is
        refused. Written atomically, mode 0644 (names and dates, no key).

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.check_expiration
        salt-run k8s-helper.check_expiration cluster_tag=prod threshold_days=30 --out=json
        salt-run k8s-helper.check_expiration cluster_tag=prod fire_event=True
        salt-run k8s-helper.check_expiration cluster_tag=prod html=/var/tmp/prod-certs.html
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    threshold = k8s_pki.check_days(threshold_days, "threshold_days")
    fire = k8s_pki.check_bool(fire_event, "fire_event")
    tabled = k8s_pki.check_bool(table, "table")
    page = None if html is None else k8s_report.check_html_path(html)
    directory = os.path.join(_pki_root(), tag)
    profile, recorded = k8s_pki.set_profile(directory)
    specs = k8s_pki.seed_specs() if profile != "kubeadm" else None
    report = k8s_pki.expiry_report(directory, specs, renew_before_days=threshold)
    if profile == "kubeadm":
        report = k8s_pki.kubeadm_expiry(report)
    summary = report["summary"]
    data = {"cluster_tag": tag, **report}
    issuers = _backend_issuers(tag, directory, profile, recorded, threshold)
    if issuers is not None:
        data["openbao_issuers"] = issuers
    if fire:
        alert = k8s_pki.expiry_alert(report)
        event_tag = EXPIRY_EVENT_TAG.format(cluster_tag=tag)
        sent = alert is not None and _fire_master_event({"cluster_tag": tag, **alert}, event_tag)
        data["event"] = {"tag": event_tag, "fired": sent, "why": _event_why(alert, sent)}
        if alert is not None and not sent:
            log.warning("k8s-helper: could not fire %s (is the master running?)", event_tag)
    if page:
        # the page draws CAs and leaves from one list
        every = data["certificates"] + data.get("certificate_authorities", [])
        page_data = {**data, "certificates": every}
        data["html"] = k8s_report.write_html(page, k8s_report.render_html([page_data]))
    data["retcode"] = 1 if summary["expired"] or summary["unreadable"] else 0
    if any(
        row["status"] in ("expired", "missing") for row in issuers or () if row.get("default", 1)
    ):
        data["retcode"] = 1
    log.info(
        "k8s-helper: cluster %s: %s",
        tag,
        ", ".join(f"{count} {status}" for status, count in summary.items()),
    )
    return {"outputter": _TABLE, "data": data} if tabled else data


def _backend_issuers(tag, directory, profile, recorded, threshold):
    """OpenBao's view of the set's CAs (each issuer's expiry), or None on the local backend."""
    signer = _signer(tag)
    made_with = (recorded or {}).get("backend", "local")
    if not signer.keeps_ca_keys or made_with != signer.backend:
        return None  # the report of the folder alone: monitoring keeps working either way
    signer.ready()
    _, settings, _, _ = k8s_pki.resolve_settings(directory, {}, profile)
    cas = [name for name, spec in k8s_pki.specs_for(settings).items() if spec.kind.is_ca]
    return k8s_openbao.issuers_report(signer, cas, threshold)


@_refusals_exit_nonzero
def renew(
    cluster_tag="default",
    certs=None,
    keep_keys=False,
    key_type=None,
    days=365,
    threshold_days=None,
    rotate_token_key=False,
    *,
    hosts=None,
    test=False,
    **kwargs,
):
    """
    Reissue leaf certificates of a cluster from its own CA; the CA is never touched.

    Each renewed certificate says exactly what the one it replaces says
    (subject, SANs, usages) with new dates and serial, and a new key unless
    ``keep_keys=True`` - but for ``server.key`` when the set has no ``sa.key``:
    it also signs the cluster's service-account tokens, so it is kept unless
    ``rotate_token_key=True``. The previous files are first kept under
    ``<pki_root>/<cluster_tag>/backup/<timestamp>/``. Leaves not named are kept,
    except any that are already unusable (expired, or not signed by the CA):
    those are reissued too, and the return says why. Naming a CA, or a
    certificate the set does not have, is refused with nothing changed; so is
    a set with a missing leaf (``generate_certs`` issues it) or an expired CA.

    After a renewal, refresh pillar and apply ``kubernetes.running`` so the
    hosts get the new files and the kubelet and the static pods restart. The
    return ends with ``restart``, the components that read a renewed file
    (from the apiserver's pair: kube-apiserver, and kube-controller-manager
    when a new ``server.key`` signs service-account tokens; from ``kubecfg``:
    the kubelet, kube-proxy, kube-controller-manager, kube-scheduler), and
    ``next``, that advice in one line.

    On a kubeadm set (see the formula's docs/kubeadm-profile.md) the
    certificates go by kubeadm's names, and by default only those that are due
    (``threshold_days``, default 90) are renewed, as ``kubeadm certs renew``
    would be run for them; ``sa.key`` is never touched. A certificate whose CA
    key is not in the folder (an externally managed CA) cannot be renewed: with
    no ``certs`` or ``certs=all`` it is left as it is and listed under
    ``skipped``; named explicitly, it is refused and nothing is written. The
    return's ``restart`` names each component and the hosts it must restart on
    (the static pods kube-apiserver, etcd, kube-controller-manager,
    kube-scheduler on the masters concerned; the kubelet for kubelet.conf).

    cluster_tag : default
        Which cluster's set to renew.
    certs : None
        The leaves to renew, as a list or a comma-separated string
        (``server``, ``kubecfg``; ``server.crt`` works too). Default: every leaf.
        kubeadm set: ``all``, or ``apiserver``, ``apiserver-kubelet-client``,
        ``front-proxy-client``, ``etcd-server``, ``etcd-peer``,
        ``etcd-healthcheck-client``, ``apiserver-etcd-client``, ``admin.conf``,
        ``super-admin.conf``, ``controller-manager.conf``, ``scheduler.conf``,
        ``kubelet.conf``; default: those that are due.
    keep_keys : False
        Reissue with the existing keys instead of making new ones.
    key_type : None
        The type of new keys (rsa-2048, rsa-3072, rsa-4096, ecdsa-p256,
        ecdsa-p384). Default: the type of the key being replaced.
    days : 365
        How long the renewed certificates are valid, in days.
    threshold_days : None
        Renew only those of ``certs`` that are due: fewer than this many days
        left (``check_expiration``'s ``renew-soon`` or ``expired``). A second
        run then changes nothing; this is what the expiry reactor uses.
    rotate_token_key : False
        Give ``server`` a new key although it signs the service-account tokens
        (sets without ``sa.key``). Every token then fails once kube-apiserver
        restarts with it: the return's ``warnings`` say so; reissue them.
    hosts : None
        kubeadm set: the per-host certificates (``apiserver``, ``etcd-server``,
        ``etcd-peer``, ``kubelet.conf``) of these hosts only, as a list or a
        comma-separated string; the shared ones follow ``certs``.
        Default: every host.
    test : False
        Dry run: return the plan (each file: keep or reissue, with the
        reason) and write nothing.

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.renew
        salt-run k8s-helper.renew cluster_tag=prod certs=server
        salt-run k8s-helper.renew cluster_tag=prod certs='[server, kubecfg]' keep_keys=True
        salt-run k8s-helper.renew cluster_tag=prod threshold_days=90
        salt-run k8s-helper.renew cluster_tag=prod threshold_days=90 test=True
        salt-run k8s-helper.renew cluster_tag=prod certs=server rotate_token_key=True
        salt-run k8s-helper.renew cluster_tag=kprod
        salt-run k8s-helper.renew cluster_tag=kprod certs=all
        salt-run k8s-helper.renew cluster_tag=kprod certs=apiserver,kubelet.conf hosts=m1
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    keep = k8s_pki.check_bool(keep_keys, "keep_keys")
    rotate_token = k8s_pki.check_bool(rotate_token_key, "rotate_token_key")
    dry = _dry_run(test)
    new_key_type = None if key_type in (None, "") else k8s_pki.check_key_type(key_type)
    leaf_days = k8s_pki.check_days(days, "days")
    due_within = (
        None
        if threshold_days in (None, "")
        else k8s_pki.check_days(threshold_days, "threshold_days")
    )
    directory = os.path.join(_pki_root(), tag)
    profile, recorded = k8s_pki.set_profile(directory)
    signer = _signer(tag)
    k8s_pki.check_backend(directory, recorded, signer.backend)
    signer.ready()
    options = {
        "signer": signer,
        "keep_keys": keep,
        "rotate_token_key": rotate_token,
        "key_type": new_key_type,
        "leaf_days": leaf_days,
        "due_within": due_within,
        "backup_keep": _backup_keep(),
        "dry_run": dry,
    }
    if profile == "kubeadm":
        return {**_renew_kubeadm(tag, directory, certs, hosts, options), **_backend_facts(signer)}
    if hosts not in (None, ""):
        raise k8s_pki.InputError("hosts: only used with a kubeadm set")
    k8s_pki.require_profile(directory, "seed", "renew")
    plan, backup = k8s_pki.renew_set(
        _pki_root(),
        tag,
        k8s_pki.seed_specs(),
        certs,
        keep_keys=keep,
        rotate_token_key=rotate_token,
        key_type=new_key_type,
        leaf_days=leaf_days,
        due_within=due_within,
        backup_keep=_backup_keep(),
        dry_run=dry,
        signer=signer,
    )
    renewed = [item.name for item in plan.items.values() if item.action != "reused"]
    ret = {"cluster_tag": tag, "renewed": renewed, **_described(plan, backup, dry)}
    ret.update(_backend_facts(signer))
    ret["restart"] = _must_restart(plan, renewed)
    ret["next"] = _after_renewal(ret["restart"])
    log.info("k8s-helper: cluster %s renewed: %s (backup %s)", tag, ", ".join(renewed), backup)
    return ret


def _renew_kubeadm(tag, directory, certs, hosts, options):
    """renew on a kubeadm set: kubeadm's names, what restarts where."""
    _, settings, _, _ = k8s_pki.resolve_settings(directory, {}, "kubeadm")
    specs = k8s_pki.specs_for(settings)
    if settings.get("enrolled"):
        options["enrolling"] = [h["name"] for h in settings["masters"] + settings["nodes"]]
    plan, backup, skipped = k8s_pki.renew_kubeadm_set(
        _pki_root(), tag, specs, certs, hosts, **options
    )
    ret = {"cluster_tag": tag, "profile": "kubeadm"}
    members = []
    if plan is None:
        ret.update(directory=directory, changed=False, backup=None, files={})
    else:
        members = [i.name for i in plan.items.values() if i.action not in ("reused", "rebundled")]
        ret.update(_described(plan, backup, options["dry_run"]))
    ret["renewed"] = [k8s_pki.kubeadm_label(member) for member in members]
    if skipped:
        ret["skipped"] = skipped
    ret["restart"] = k8s_pki.kubeadm_restarts(members, specs)
    ret["next"] = _after_kubeadm_renewal(ret["renewed"], ret["restart"])
    log.info("k8s-helper: cluster %s renewed: %s (backup %s)", tag, ", ".join(members), backup)
    return ret


def _after_kubeadm_renewal(renewed, restart):
    """The one line that ends a kubeadm renewal: hand out, restart, give out admin files."""
    if not renewed:
        return "nothing renewed: nothing to hand out or restart"
    text = (
        "hand the renewed files out: saltutil.refresh_pillar, then state.apply "
        "kubernetes.kubeadm.present on the hosts"
    )
    if restart:
        text += (
            "; then restart: "
            + "; ".join(restart)
            + " (a static pod restarts when its manifest leaves /etc/kubernetes/manifests "
            "and comes back, or when its container is stopped)"
        )
    admin = [name for name in renewed if name in ("admin.conf", "super-admin.conf")]
    if admin:
        text += f"; give the new {' and '.join(admin)} to whoever uses it"
    return text


@_refusals_exit_nonzero
def prune_backups(cluster_tag="default", **kwargs):
    """
    Remove a cluster's oldest backups, keeping the newest ``k8s_helper:backup_keep``.

    Every write of a set (``generate_certs``, ``renew``, ``rotate_ca``) keeps
    the files it replaces under ``<pki_root>/<cluster_tag>/backup/<timestamp>/``
    and already applies the same limit; this applies it now, for instance
    after lowering ``backup_keep`` in the master config. The live set is not
    touched. Returns the folders removed and those kept. A missing set is
    refused with a non-zero exit status.

    cluster_tag : default
        Which cluster's set.

    The number kept is the master option ``k8s_helper:backup_keep`` (a whole
    number, at least 1; default 5).

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.prune_backups cluster_tag=prod
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    keep = _backup_keep()
    removed = k8s_pki.prune_backups(_pki_root(), tag, keep)
    directory = os.path.join(_pki_root(), tag)
    kept = [os.path.join(directory, k8s_pki.BACKUP_DIR, n) for n in k8s_pki.backups(directory)]
    log.info("k8s-helper: cluster %s: removed %d backup(s)", tag, len(removed))
    return {"cluster_tag": tag, "backup_keep": keep, "removed": removed, "kept": kept}


_SA_SIGNER = "kube-controller-manager (masters: server.key signs service-account tokens)"


def _must_restart(plan, renewed):
    """The components that read a renewed file, each once, in a stable order."""
    restart = []
    for name in renewed:
        restart += k8s_pki.readers("seed", name) or [f"whatever reads {name}.crt"]
    item = plan.items.get("server")
    signs_tokens = "sa" not in plan.items and not os.path.exists(
        os.path.join(plan.directory, "sa.key")
    )
    if "server" in renewed and item is not None and item.action == "generated" and signs_tokens:
        restart.append(_SA_SIGNER)
    return list(dict.fromkeys(restart))


def _after_renewal(restart):
    """The one line that ends a renewal: how to hand the files out, and what must restart."""
    if not restart:
        return "nothing renewed: nothing to hand out or restart"
    text = (
        "hand the renewed files out: saltutil.refresh_pillar, then state.apply "
        "kubernetes.running (it restarts the kubelet and rolls the control plane's static "
        "pods; kubernetes.certs.present alone restarts nothing); these must restart: "
        + "; ".join(restart)
    )
    if any(reader.startswith("kube-proxy") for reader in restart):
        text += "; kube-proxy is not run by the formula: restart it yourself"
    return text


# --------------------------------------------------------------------------
# CA rotation
# --------------------------------------------------------------------------

_ROTATION_NEXT = {
    "idle": "nothing to do on the hosts",
    "prepared": "nothing to hand out yet; next: stage=trust",
    "trusted": "hand the new ca.crt out to every host and restart what reads it "
    "(kubernetes.orch.rotate_ca does both); next: stage=reissue",
    "reissued": "hand the reissued certificates out to every host and restart what reads "
    "them (kubernetes.orch.rotate_ca); next: stage=finish",
}
# finish, and abort after trust, leave the rotation idle with another ca.crt:
# every host still holds the bundle until it gets the new file.
_CA_CRT_CHANGED = (
    "ca.crt changed ({what}): hand it out to every host and restart what reads it "
    "(kubernetes.orch.rotate_ca does both)"
)


@_refusals_exit_nonzero
def rotate_ca(
    cluster_tag="default",
    stage="status",
    keep_keys=True,
    key_type=None,
    ca_days=3650,
    days=365,
    *,
    ca="ca",
    test=False,
    **kwargs,
):
    """
    Replace a cluster's CA in stages, without a moment in which hosts disagree.

    ``stage=status`` (the default) only reports where the rotation stands.
    The stages, in order; each one is safe to run again, and one asked for
    too early is refused (exit status 2) saying what must come first:

    prepare
        Make the new CA beside the current one: ``ca.next.crt``/``ca.next.key``.
        No host sees it yet.
    trust
        ``ca.crt`` becomes a bundle: the current CA, then the new one. The
        current CA still signs. Hand it out to every host before going on.
    reissue
        The new CA takes over ``ca.key``; ``ca.crt`` becomes new + old; every
        leaf is issued again by the new CA (same keys unless
        ``keep_keys=False``). Hand them out; hosts still trust the old CA.
    finish
        ``ca.crt`` holds the new CA alone. Refused while a leaf is still
        signed by the old CA.
    abort
        Before ``reissue`` only: drop the new CA, ``ca.crt`` back to the
        current CA alone.

    Every change keeps the previous files under
    ``<cluster_tag>/backup/<timestamp>/`` and swaps the folder atomically.
    A kubeadm set rotates each of its three CAs, one at a time (``ca=``):
    the same stages, the file ``<ca>.crt`` becoming the bundle, only that
    CA's leaves reissued, and the kubeconfigs it signs embedding the bundle
    while it lasts. Only a CA k8s-helper created is rotated. See the
    formula's docs/ca-rotation.md.

    cluster_tag : default
        Which cluster's set.
    stage : status
        status, prepare, trust, reissue, finish or abort.
    keep_keys : True
        reissue: keep each leaf's key (the apiserver's key also verifies
        service-account tokens unless a dedicated pair is used: a new one
        would invalidate every token). ``False`` makes new keys.
    key_type : the current CA's
        prepare: the new CA's key type (rsa-2048, rsa-3072, rsa-4096,
        ecdsa-p256, ecdsa-p384).
    ca_days : 3650
        prepare: how long the new CA is valid.
    days : 365
        reissue: how long the reissued leaves are valid.
    ca : ca
        Which CA: ``ca`` (the cluster CA; the only one of a seed set),
        ``etcd-ca`` or ``front-proxy-ca`` (kubeadm sets). Refused while
        another CA of the set is being rotated.
    test : False
        Dry run: return what the stage would do to each file (or why it is
        refused) and write nothing.

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.rotate_ca cluster_tag=prod
        salt-run k8s-helper.rotate_ca cluster_tag=prod stage=prepare
        salt-run k8s-helper.rotate_ca cluster_tag=prod stage=reissue test=True
        salt-run k8s-helper.rotate_ca cluster_tag=prod stage=trust
        salt-run k8s-helper.rotate_ca cluster_tag=prod stage=reissue
        salt-run k8s-helper.rotate_ca cluster_tag=prod stage=finish
        salt-run k8s-helper.rotate_ca cluster_tag=prod ca=etcd-ca stage=prepare
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    stage = k8s_pki.check_rotation_stage(stage, ("status", *k8s_pki.ROTATION_STAGES))
    keep = k8s_pki.check_bool(keep_keys, "keep_keys")
    new_key_type = None if key_type in (None, "") else k8s_pki.check_key_type(key_type)
    ca_validity = k8s_pki.check_days(ca_days, "ca_days")
    leaf_days = k8s_pki.check_days(days, "days")
    dry = _dry_run(test)
    directory = os.path.join(_pki_root(), tag)
    profile, recorded = k8s_pki.set_profile(directory)
    signer = _signer(tag)
    k8s_pki.check_backend(directory, recorded, signer.backend)
    signer.ready()
    ca_name = k8s_pki.check_rotation_ca(ca, profile)
    specs = _rotation_specs(directory, profile)
    ret = {"cluster_tag": tag, "stage": stage}
    if profile == "kubeadm":
        ret.update(profile=profile, ca=ca_name)
    if stage == "status":
        status = k8s_pki.rotation_status(k8s_pki.read_rotation(directory, specs, ca_name, signer))
        ret.update(changed=False, state=status["state"], status=status)
        ret["message"] = f"rotation {status['state']}: {status['explain']}"
        return ret
    before, after, plan, backup = k8s_pki.rotate_ca(
        _pki_root(),
        tag,
        specs,
        stage,
        ca=ca_name,
        key_type=new_key_type,
        ca_days=ca_validity,
        leaf_days=leaf_days,
        keep_keys=keep,
        backup_keep=_backup_keep(),
        dry_run=dry,
        signer=signer,
    )
    status = k8s_pki.rotation_status(k8s_pki.read_rotation(directory, specs, ca_name, signer))
    ret.update(state_before=before, state=after, changed=plan is not None)
    if plan is None:
        ret["message"] = f"stage={stage}: nothing to do, the rotation is {after}"
    else:
        hosts = _ROTATION_NEXT[after]
        changed_ca = after == "idle" and plan.items[ca_name].action in k8s_pki.CA_FILE_ACTIONS
        what = "the new CA alone" if stage == "finish" else "the current CA alone"
        if changed_ca:
            hosts = _CA_CRT_CHANGED.format(what=f"it now holds {what}")
        if profile == "kubeadm":
            hosts = _kubeadm_rollout(after, ca_name, what if changed_ca else None)
        ret["message"] = f"stage={stage}: {before} -> {after}; {hosts}"
        ret.update(_described(plan, backup, dry))
    if dry:
        ret.update(test=True, comment="dry run: nothing written")
        ret["message"] = f"dry run, nothing written: {ret['message']}"
    ret["status"] = status
    log.info("k8s-helper: cluster %s rotate_ca %s: %s -> %s", tag, stage, before, after)
    return ret


def _rotation_specs(directory, profile):
    """The members of the set a rotation reads: the seed's, or the kubeadm set's as
    its manifest (or, made before it, its files) describes them."""
    if profile != "kubeadm":
        return k8s_pki.seed_specs()
    _, settings, _, _ = k8s_pki.resolve_settings(directory, {}, profile)
    return k8s_pki.specs_for(settings)


# Who reads each kubeadm CA's files, as kubeadm wires a control plane: what
# must restart once they are laid down (the files alone restart nothing).
_KUBEADM_CA_READERS = {
    "ca": "the static pods and the kubelet",
    "etcd/ca": "the etcd and kube-apiserver static pods, one master at a time, each etcd "
    "member healthy again before the next: the etcd cluster keeps its quorum",
    "front-proxy-ca": "the kube-apiserver static pod",
}


def _kubeadm_rollout(after, ca_name, changed_to=None):
    """What the hosts of a kubeadm set need after a stage: which files reach which hosts.

    Nodes hold only pki/ca.crt and kubelet.conf: the front-proxy and etcd
    CAs concern the masters alone.
    """
    if after in ("idle", "prepared") and changed_to is None:
        return _ROTATION_NEXT[after]
    ca_file = f"pki/{ca_name}.crt"
    files = [ca_file, *(["the kubeconfigs"] if ca_name == "ca" else [])]
    if after == "reissued":
        files.append("the reissued certificates")
    what = ", ".join(files[:-1]) + f" and {files[-1]}" if len(files) > 1 else files[0]
    who = "every host" if ca_name == "ca" else "every master"
    hand = (
        f"hand {what} out to {who} (kubernetes.kubeadm.present) and restart what reads "
        f"them ({_KUBEADM_CA_READERS[ca_name]})"
    )
    if changed_to is not None:
        return f"{ca_file} changed (it now holds {changed_to}): {hand}"
    return f"{hand}; next: stage={k8s_pki.NEXT_STAGE[after]}"


# --------------------------------------------------------------------------
# verify: the certificates on the minions against the master's set
# --------------------------------------------------------------------------

FORMULA = "kubernetes"
# What each minion renders (slsutil.renderer) to report what it holds: a Jinja
# file of the SLS tree, which minions always get from file_roots or gitfs.
_PROBE = f"salt://{FORMULA}/files/verify-probe.json.jinja"
TGT_TYPES = (
    "glob",
    "pcre",
    "list",
    "grain",
    "grain_pcre",
    "pillar",
    "pillar_pcre",
    "pillar_exact",
    "nodegroup",
    "range",
    "compound",
    "ipcidr",
)


def _seconds(value, name):
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = 0
    if isinstance(value, bool) or seconds <= 0 or str(seconds) != str(value):
        raise k8s_pki.InputError(f"{name}: {value!r} is not a positive whole number of seconds")
    return seconds


def _local_client():
    import salt.client  # noqa: PLC0415 - runners load without a master's client

    return salt.client.get_local_client(mopts=__opts__)


def _targeted(tgt, tgt_type):
    import salt.utils.minions  # noqa: PLC0415

    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)
    return sorted(found.get("minions") or [])


def _answer(reply):
    """The return of one minion from a full_return reply, or (None, error text)."""
    if not isinstance(reply, dict) or "ret" not in reply or reply.get("out") == "no_return":
        # Salt's own reason, "[No response]" or "[Not connected]", when it gives one.
        reason = str(reply.get("ret", "")) if isinstance(reply, dict) else ""
        why = reason[reason.find("[") : reason.find("]") + 1] if "[" in reason else ""
        return None, f"no answer {why}".strip()
    ret = reply["ret"]
    if reply.get("retcode", 0) != 0 or not isinstance(ret, dict | str):
        return None, str(ret)
    return ret, ""


def _public_keys(client, observed, reference, timeout):
    """Ask minions for the public key of each key file that is not the master's."""
    wanted = {}  # path -> [(minion, ident)]
    for minion, seen in observed.items():
        given = set(seen.get("given") or ())
        for ident, info in (seen.get("files") or {}).items():
            pillar_key = info.get("pillar")
            if (
                pillar_key in k8s_pki.KEY_PAIRS
                and (pillar_key in given or info.get("masters_only") is False)
                and info.get("exists")
                and info.get("sha256") != reference[pillar_key]["file_sha256"]
            ):
                wanted.setdefault(info["path"], []).append((minion, ident))
    for path, who in sorted(wanted.items()):
        replies = client.cmd(
            sorted({minion for minion, _ in who}),
            "x509.get_public_key",
            [path],
            tgt_type="list",
            timeout=timeout,
            full_return=True,
        )
        for minion, ident in who:
            ret, error = _answer(replies.get(minion))
            info = observed[minion]["files"][ident]
            if isinstance(ret, str) and "PUBLIC KEY" in ret and "PRIVATE" not in ret:
                info["public_key"] = ret
            else:
                # The minion's message is not repeated: it could quote the file.
                info["public_key_error"] = (
                    "no answer" if error.startswith("no answer") else "x509.get_public_key failed"
                )


def _bad_answer(problem):
    return {"status": "bad answer", "error": f"malformed answer to the probe ({problem})"}


@_refusals_exit_nonzero
def verify(cluster_tag="default", tgt=None, tgt_type="glob", timeout=None, table=True, **kwargs):
    """
    Compare the certificates on the targeted minions with the master's set, path by path.

    Each minion renders the formula's ``map.jinja`` with its own grains and
    pillar (so ``kubernetes:lookup`` overrides count) and reports, through
    Salt's own execution modules (``file.get_hash``, ``hashutil``,
    ``file.readlink``, ``file.search``, ``x509.get_public_key``), what it holds
    at each path: the files under ``/srv/kubernetes``, the trust-store copy and
    its symlink, the system bundle and ``/var/lib/kubelet/ca.crt``. No private
    key leaves a minion: only file hashes and public keys travel.

    Per minion and path the status is ``match``, ``differs`` (with both
    fingerprints), ``missing``, ``expired``, ``key does not match cert``,
    ``unreadable``, ``unexpected`` (a file the minion's pillar does not give,
    e.g. the apiserver key on a node), ``forbidden`` (a key its
    ``kubernetes:role`` must never hold, ``server.key`` or ``sa.key`` on a
    node, whether its pillar gives it or it is on disk) or ``absent`` (not
    given and not there: fine). A minion without certificates in pillar is
    ``no pillar``; one that does not answer is listed as ``no answer``; one
    whose answer does not have the probe's shape is a ``bad answer`` (the
    others are still verified). Minions are the ids Salt accepted, exactly.
    A summary line ends the table; the exit status is 1 when any minion has a
    problem or does not answer.

    On a kubeadm set, each minion is the host of the set its minion id names
    (or the k8s_kubeadm ext_pillar's ``names`` map to), and every file of the
    profile under kubeadm's folder (``kubernetes:lookup:kubeadm:dir``, default
    ``/etc/kubernetes``) is judged against that host's share: ``match``,
    ``differs``, ``missing``, ``expired``, ``unreadable``, ``absent`` (not in
    the share, not there: fine), ``unexpected`` (a certificate not in the
    share) or ``forbidden`` (a key or kubeconfig not in the share, e.g. a CA
    key on a node). A minion that is no host of the set is ``not in set``.
    Certificates travel as base64; of keys and kubeconfigs only hashes.

    cluster_tag : default
        Which cluster's set on the master to compare with.
    tgt : None
        The minions to check (required), e.g. ``'k8s-*'``.
    tgt_type : glob
        How ``tgt`` is read: glob, pcre, list, grain, grain_pcre, pillar,
        pillar_pcre, pillar_exact, nodegroup, range, compound, ipcidr.
    timeout : the master's ``timeout`` option
        Seconds to wait for the minions.
    table : True
        Print a table. ``False`` returns the report as plain data (for an
        orchestration's ``salt.runner`` step, see ``check_expiration``).

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.verify tgt='k8s-*'
        salt-run k8s-helper.verify cluster_tag=prod tgt='G@role:k8s' tgt_type=compound
        salt-run k8s-helper.verify tgt='k8s-*' --out=json
    """
    _reject_unknown(kwargs)
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    tabled = k8s_pki.check_bool(table, "table")
    if not isinstance(tgt, str | list) or not tgt:
        raise k8s_pki.InputError("tgt: give the minions to check, e.g. tgt='k8s-*'")
    if tgt_type not in TGT_TYPES:
        raise k8s_pki.InputError(f"tgt_type: {tgt_type!r} is not one of {', '.join(TGT_TYPES)}")
    wait = __opts__.get("timeout", 5) if timeout in (None, "") else _seconds(timeout, "timeout")
    directory = os.path.join(_pki_root(), tag)
    profile, _ = k8s_pki.set_profile(directory)
    if profile == "kubeadm":
        data = _verify_kubeadm(tag, directory, tgt, tgt_type, wait)
        return {"outputter": _TABLE, "data": data} if tabled else data
    reference = k8s_pki.verify_reference(directory)
    expected = _targeted(tgt, tgt_type)
    if not expected:
        raise k8s_pki.InputError(f"tgt: no minion matches {tgt!r} ({tgt_type})")

    client = _local_client()
    replies = client.cmd(
        tgt,
        "slsutil.renderer",
        kwarg={
            "path": _PROBE,
            "default_renderer": "jinja|json",
            "formula": FORMULA,
            "patterns": reference["ca.crt"]["patterns"],
        },
        tgt_type=tgt_type,
        timeout=wait,
        full_return=True,
    )
    hosts, observed = {}, {}
    for minion in sorted(set(expected) | set(replies)):
        ret, error = _answer(replies.get(minion))
        if ret is None and error.startswith("no answer"):
            hosts[minion] = {"status": "no answer", "error": f"did not answer{error[9:]}"}
        elif not isinstance(ret, dict):
            hosts[minion] = {"status": "error", "error": f"the probe failed: {error or ret}"}
        elif k8s_pki.probe_answer_problem(ret):
            hosts[minion] = _bad_answer(k8s_pki.probe_answer_problem(ret))
        else:
            observed[minion] = ret
    _public_keys(client, observed, reference, wait)
    for minion, seen in list(observed.items()):
        # a host that enrolls: what pillar does not give it is not expected
        seen["enrolled"] = bool(k8s_pki.enrolled_copies(directory, minion))
        try:
            checks = k8s_pki.verify_host(seen, reference)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            # A shape the answer check let through: this host's answer is bad,
            # the others are still verified.
            log.warning("k8s-helper: verify: %s answered %s", minion, type(err).__name__)
            hosts[minion] = _bad_answer(f"{type(err).__name__} while comparing it")
            continue
        bad = any(check["status"] not in k8s_pki.VERIFY_OK for check in checks)
        hosts[minion] = {
            "status": "problems" if bad else "ok",
            "k8s_env": seen.get("k8s_env"),
            "checks": checks,
        }
    _verify_enrolled(directory, hosts, wait)
    data = _verify_data(tag, tgt, tgt_type, directory, hosts)
    return {"outputter": _TABLE, "data": data} if tabled else data


_PROBE_ENROLLED = f"salt://{FORMULA}/files/verify-probe-enrolled.json.jinja"


def _not_enrolled_yet(directory, minion):
    """The check of a host of an enrolled kubeadm set the master issued nothing to yet."""
    return {
        "id": "enrolled",
        "path": os.path.join(directory, "enrolled", minion),
        "status": "not enrolled",
        "detail": "this set is enrolled (cluster.yaml): the host makes its own pairs, and "
        "has enrolled none yet; apply kubernetes.certs.enrolled on it",
    }


def _verify_enrolled(directory, hosts, wait):
    """Judge what each answering minion enrolled against the master's copies of what it issued.

    One more probe, only to minions the master issued certificates to: each
    sends its enrolled certificates and the public keys of their key files.
    Their files' checks by the profile's probe (which compares with pillar's
    share, or the set's own files) give way to these.
    """
    copies = {
        minion: k8s_pki.enrolled_copies(directory, minion)
        for minion, info in hosts.items()
        if "checks" in info
    }
    copies = {minion: found for minion, found in copies.items() if found}
    if not copies:
        return
    replies = _local_client().cmd(
        sorted(copies),
        "slsutil.renderer",
        kwarg={"path": _PROBE_ENROLLED, "default_renderer": "jinja|json", "formula": FORMULA},
        tgt_type="list",
        timeout=wait,
        full_return=True,
    )
    for minion, found in sorted(copies.items()):
        info = hosts[minion]
        ret, error = _answer(replies.get(minion))
        # The minion's own error text is not repeated: it could quote a file.
        problem = ("no answer" if error else "") or k8s_pki.enrolled_probe_problem(ret)
        if problem:
            info["checks"].append(
                {
                    "id": "enrolled",
                    "path": os.path.join(directory, "enrolled", minion),
                    "status": "error",
                    "detail": f"the enrolled probe failed: {problem}",
                }
            )
        else:
            mine = k8s_pki.enrolled_paths(ret)
            info["checks"] = [c for c in info["checks"] if c.get("path") not in mine]
            info["checks"] += k8s_pki.verify_enrolled_host(ret, directory, found)
        bad = any(c["status"] not in k8s_pki.VERIFY_OK for c in info["checks"])
        info["status"] = "problems" if bad else "ok"


def _verify_data(tag, tgt, tgt_type, directory, hosts):
    """verify's report: every minion's checks, the counts, the exit status."""
    summary, line = k8s_pki.verify_summary(hosts)
    log.info("k8s-helper: verify %s: %s", tag, line)
    return {
        "cluster_tag": tag,
        "tgt": tgt,
        "tgt_type": tgt_type,
        "directory": directory,
        "hosts": dict(sorted(hosts.items())),
        "summary": summary,
        "summary_line": line,
        "retcode": 1 if summary["problems"] else 0,
    }


_PROBE_KUBEADM = f"salt://{FORMULA}/files/verify-probe-kubeadm.json.jinja"


def _kubeadm_names(tag):
    """The k8s_kubeadm ext_pillar's ``names`` (minion id -> host) for this cluster, or {}.

    verify must judge a minion by the share that ext_pillar hands it, so it
    reads the same master config.
    """
    for entry in __opts__.get("ext_pillar") or ():
        options = entry.get("k8s_kubeadm") if isinstance(entry, dict) else None
        if isinstance(options, dict) and options.get("cluster_tag", "default") == tag:
            names = options.get("names") or {}
            return names if isinstance(names, dict) else {}
    return {}


def _kubeadm_role(share):
    """A host's role by its share: ``front-proxy-ca.crt`` is a master's in every set
    (``apiserver.crt`` is not in an enrolled set's); None for no host of the set."""
    if share is None:
        return None
    return "master" if "pki/front-proxy-ca.crt" in share else "node"


def _verify_kubeadm(tag, directory, tgt, tgt_type, wait):
    """verify on a kubeadm set: each minion's files under kubeadm's folder against its share."""
    k8s_pki.check_store(directory)
    if not os.path.isdir(directory):
        raise k8s_pki.SetError(f"{directory}: no certificate set here; run generate_certs first")
    expected = _targeted(tgt, tgt_type)
    if not expected:
        raise k8s_pki.InputError(f"tgt: no minion matches {tgt!r} ({tgt_type})")
    replies = _local_client().cmd(
        tgt,
        "slsutil.renderer",
        kwarg={"path": _PROBE_KUBEADM, "default_renderer": "jinja|json", "formula": FORMULA},
        tgt_type=tgt_type,
        timeout=wait,
        full_return=True,
    )
    names = _kubeadm_names(tag)
    references = functools.lru_cache(maxsize=None)(
        functools.partial(k8s_pki.kubeadm_reference, directory)
    )
    recorded = k8s_pki.read_manifest(directory) or {}
    hosts = {}
    for minion in sorted(set(expected) | set(replies)):
        ret, error = _answer(replies.get(minion))
        if ret is None and error.startswith("no answer"):
            hosts[minion] = {"status": "no answer", "error": f"did not answer{error[9:]}"}
            continue
        if not isinstance(ret, dict):
            hosts[minion] = {"status": "error", "error": f"the probe failed: {error or ret}"}
            continue
        problem = k8s_pki.kubeadm_probe_problem(ret, k8s_pki.KUBEADM_HOST_FILES)
        if problem:
            hosts[minion] = _bad_answer(problem)
            continue
        host = names.get(minion, minion)
        share = k8s_pki.kubeadm_share(directory, host)
        checks = k8s_pki.verify_kubeadm_host(ret, share, references)
        if share is None:
            checks.insert(
                0,
                {
                    "id": "host",
                    "path": directory,
                    "status": "not in set",
                    "detail": f"minion {minion} is no host of this set (map its id with the "
                    "k8s_kubeadm ext_pillar's names if it is one)",
                },
            )
        elif recorded.get("enrolled") and not k8s_pki.enrolled_copies(directory, minion):
            checks.append(_not_enrolled_yet(directory, minion))
        bad = any(check["status"] not in k8s_pki.VERIFY_OK for check in checks)
        hosts[minion] = {
            "status": "problems" if bad else "ok",
            "host": host if share is not None else None,
            "role": _kubeadm_role(share),
            "checks": checks,
        }
    _verify_enrolled(directory, hosts, wait)
    return _verify_data(tag, tgt, tgt_type, directory, hosts)


# --------------------------------------------------------------------------
# The formula's orchestrations, printed as a short summary by default
# --------------------------------------------------------------------------

_ORCHESTRATIONS = ("replace_certs", "rotate_ca", "renew")


@_refusals_exit_nonzero
def orchestrate(name, pillar=None, test=False, **kwargs):
    """
    Run one of the formula's orchestrations; print it as a short per-step summary.

    The same run as ``salt-run state.orchestrate kubernetes.orch.<name>
    pillar=...``, with the ``k8s_orch`` outputter as its default (Salt's
    orchestrate runner always asks for ``highstate``, which prints every state
    of every host). ``--out=json`` or ``--out=highstate`` still print the whole
    return; the exit status is the orchestration's.

    name
        ``replace_certs``, ``rotate_ca`` or ``renew``.

    pillar : None
        The orchestration's pillar, e.g. ``{k8s_replace: {masters: [...], nodes: [...]}}``
        (docs/replace-certs.md, docs/ca-rotation.md).

    test : False
        Show what would run, and the runner step's plan, without changing anything.

    CLI Example:

    .. code-block:: bash

        salt-run k8s-helper.orchestrate replace_certs pillar='{k8s_replace: {masters: [m1]}}'
    """
    _reject_unknown(kwargs)
    if name not in _ORCHESTRATIONS:
        raise k8s_pki.InputError(f"name: {name!r} is not one of {', '.join(_ORCHESTRATIONS)}")
    if pillar is not None and not isinstance(pillar, dict):
        raise k8s_pki.InputError(
            "pillar: expected a mapping, e.g. pillar='{k8s_replace: {masters: [m1]}}'"
        )
    ret = __salt__["state.orchestrate"](
        f"kubernetes.orch.{name}", pillar=pillar, test=True if _dry_run(test) else None
    )
    if isinstance(ret, dict) and "data" in ret:
        ret["outputter"] = "k8s_orch"
    return ret


# --------------------------------------------------------------------------
# Enrollment: a host's CSR, signed under the set's policy (peer_run)
# --------------------------------------------------------------------------

# Below protocol version 3 a minion's request is not bound to its own key
# (the id in it is whatever the minion wrote): never sign for such a caller.
_MIN_AUTH_VERSION = 3


def _authenticated_caller():
    """The minion id Salt authenticated for this call: ``__opts__["id"]``.

    A minion reaches a runner only through ``publish.runner`` and the master's
    ``peer_run`` setting; ``salt.daemons.masterapi.RemoteFuncs.minion_runner``
    then runs it with the master's options and ``id`` set to the id of the
    request, which the request channel checked: decrypted with that minion's
    session key, the same id as the one it authenticated with, and a token
    only that minion's accepted key makes.  Anything the minion passes as an
    argument (``__pub_id=...`` included) is never read here.
    """
    version = __opts__.get("minimum_auth_version", 0)
    if not isinstance(version, int) or version < _MIN_AUTH_VERSION:
        raise k8s_pki.EnrollRefused(
            f"the master accepts minion requests of protocol version {version!r} "
            f"(minimum_auth_version), whose minion id is not bound to the minion's key; set "
            f"minimum_auth_version: {_MIN_AUTH_VERSION} (the default) in the master config"
        )
    return __opts__.get("id")


@_refusals_exit_nonzero
def sign_csr(csr=None, member=None, cluster_tag="default", **kwargs):
    """
    Sign a host's certificate request under the set's policy: called by minions through peer_run.

    A minion makes its key itself (the state ``kubernetes.certs.enrolled``),
    and sends only the CSR. Who it is comes from Salt, not from the request:
    the minion id the master authenticated. What its certificate says (CN, O,
    SANs, usages, validity, which CA signs it) comes from the set's
    ``cluster.yaml`` (its masters and nodes) and that id; the CSR's subject,
    SANs and extensions are never used. A minion that is not a host of the
    set, a member its role does not have, a garbage CSR, a wrong signature,
    a key that is not ECDSA P-256/P-384 or RSA of at least 2048 bits, or a key
    already certified for another host or member: refused, logged on the
    master, nothing written. The master keeps a copy of each certificate it
    signs under ``<pki_root>/<cluster_tag>/enrolled/<minion>/<member>.crt``.

    The master config must let minions call this one function and nothing else::

        peer_run:
          '.*':
            - k8s-helper.sign_csr

    csr
        The PEM text of the certificate request.

    member
        What to enroll: ``kubelet-client`` or ``kubelet-serving`` (every host);
        on masters also ``apiserver``, ``etcd/server``, ``etcd/peer``,
        ``apiserver-kubelet-client``, ``apiserver-etcd-client``,
        ``front-proxy-client``, ``etcd/healthcheck-client``.

    cluster_tag : default
        Which set signs (a kubeadm set: it records its hosts).

    Returns the certificate and the CA certificate that signed it (PEM, both
    public), the master's copy and what the certificate says.

    CLI Example (on a minion):

    .. code-block:: bash

        salt-call publish.runner k8s-helper.sign_csr \\
            arg='[{__kwarg__: true, member: kubelet-client, cluster_tag: prod, csr: "..."}]'
    """
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    minion = __opts__.get("id")
    try:
        if unknown:
            raise k8s_pki.InputError(f"{unknown[0]}: unknown argument")
        minion = _authenticated_caller()
        tag = k8s_pki.check_cluster_tag(cluster_tag)
        if not isinstance(member, str) or not member:
            raise k8s_pki.InputError("member: which certificate to enroll, e.g. kubelet-client")
        directory = os.path.join(_pki_root(), tag)
        ret = k8s_pki.sign_request(directory, minion, member, csr, signer=_signer(tag))
    except (k8s_pki.PKIError, k8s_openbao.BackendError) as err:
        # The refusal is logged on the master (by _failed) with who asked.
        raise type(err)(f"sign_csr refused for minion {minion!r}: {err}") from None
    log.info(
        "k8s-helper: signed %s of %s in %s: %s, sha256 %s, until %s",
        member,
        minion,
        tag,
        ret["subject"],
        ret["sha256"],
        ret["not_after"],
    )
    return ret
