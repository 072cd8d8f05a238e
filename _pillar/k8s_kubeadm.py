"""
Hand each host of a kubeadm-profile cluster its own files, as
``salt-run k8s-helper.generate_certs profile=kubeadm`` wrote them:
``kubernetes:kubeadm_pki`` = ``{host, role, cluster_tag, files: {path under /etc/kubernetes:
text}}``,
plus ``masters: [{name, ip}]`` (every master of the set) on masters.

A master gets what kubeadm keeps on a control-plane host (the CAs and their
keys, the shared client certificates, ``sa.key``/``sa.pub``, the four
kubeconfigs, and its own apiserver, etcd server/peer and kubelet files); a node
gets ``pki/ca.crt`` and its own ``kubelet.conf``, no other key. A minion that is
not a host of the set gets nothing from here. Configure it in the master config
(one entry per cluster)::

    ext_pillar:
      - k8s_kubeadm:
          cluster_tag: prod             # <pki_root>/<cluster_tag>/ holds the set
          # pki_root: /var/salt/k8s-helper/pki   (default: k8s_helper:pki_root)
          # names: {minion-id: host-name}        (default: the minion id is the name)
          # enrolled: true     (hosts enroll their own pairs: docs/enrollment.md)

With ``enrolled: true`` a host gets only what it cannot enroll: a node
``pki/ca.crt`` and no key at all; a master the CAs and their keys,
``sa.key``/``sa.pub`` and the control-plane kubeconfigs. ``enrolled`` lists
the files the host enrolls itself (the states leave them alone).

Which files a minion gets follows from its minion id (bound to its accepted
key), matched exactly (no case folding, no trailing dot dropped: ``M1`` and
``m1.`` are not host ``m1``; map such ids with ``names``), and from the set
recorded in its ``cluster.yaml`` (its ``masters`` and ``nodes``; a set made
before manifests: ``hosts/<name>/apiserver.crt`` on disk makes a master),
never from grains a minion could set itself. A set made with
``generate_certs ... enrolled=True`` is handed out as with ``enrolled: true``
whatever this option says (it holds no pair its hosts enroll). A file of the
host's share that is missing or unreadable fails the minion's pillar with a
message naming it.
"""

import logging
import os

try:
    import k8s_pki

    HAS_PKI = True
except ImportError as _err:  # _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s_kubeadm"

PILLAR_KEY = "kubeadm_pki"


def __virtual__():
    if not HAS_PKI:
        return (
            False,
            f"k8s_kubeadm ext_pillar needs the formula's _utils/k8s_pki package ({_IMPORT_ERROR}); "
            "run salt-run saltutil.sync_all or set utils_dirs",
        )
    return __virtualname__


def ext_pillar(minion_id, pillar, cluster_tag="default", **kwargs):
    """The kubeadm files of ``minion_id``'s host, or nothing when it is not a host of the set."""
    pki_root = kwargs.pop("pki_root", None) or k8s_pki.pki_root(__opts__)
    names = kwargs.pop("names", None) or {}
    enrolled = k8s_pki.check_bool(kwargs.pop("enrolled", False), "k8s_kubeadm: enrolled")
    if kwargs:
        raise k8s_pki.InputError(f"k8s_kubeadm: {sorted(kwargs)[0]}: unknown option")
    if not isinstance(names, dict):
        raise k8s_pki.InputError("k8s_kubeadm: names: expected a mapping of minion id to host")
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    directory = os.path.join(pki_root, tag)
    host = names.get(minion_id, minion_id)
    try:
        checked = k8s_pki.check_dns_name(host, "host")
    except k8s_pki.InputError:
        return {}  # a minion id that cannot be a host name is no host of the set
    if checked != host:
        # Exactly the host's name or nothing: minion ids 'M1' and 'm1.' are other
        # minions (other accepted keys) than 'm1', and must not get its keys.
        return {}
    # Only what the master's user alone controls is handed out (no symlink, no
    # file or folder someone else could have swapped in).
    if not k8s_pki.check_set_folder(directory):
        return {}
    recorded = k8s_pki.read_manifest(directory)
    if recorded is not None:
        role = _recorded_role(recorded, host)
        if role is None:
            return {}
        master = role == "master"
        # A set recorded enrolled holds no pair its hosts enroll: hand it out as enrolled,
        # whatever this option says (the option alone serves a set still being moved).
        enrolled = enrolled or recorded.get("enrolled", False)
    else:  # a set made before manifests: its files say who is a host
        own = f"{k8s_pki.KUBEADM_HOSTS_DIR}/{host}"
        host_conf = k8s_pki.read_set_file(directory, f"{own}/kubelet.conf")
        if host_conf is None:
            return {}
        master = os.path.isfile(os.path.join(directory, own, "apiserver.crt"))
    files = {}
    share = k8s_pki.kubeadm_host_files(host, master)
    if enrolled:
        share = k8s_pki.pillar_share(share)
    elsewhere = k8s_pki.ca_keys_elsewhere(directory) if master else ()
    for dest, src in share.items():
        try:
            data = k8s_pki.read_set_file(directory, src)
        except OSError as err:
            data, why = None, err.strerror
        else:
            why = "missing"
        if data is None and src in elsewhere:
            continue  # a CA key kept in OpenBao: masters run in kubeadm's external CA mode
        if data is None:
            raise k8s_pki.SetError(
                f"k8s_kubeadm: {os.path.join(directory, src)}: {why}; the set of {tag} is "
                "incomplete (run salt-run k8s-helper.generate_certs profile=kubeadm)"
            )
        files[dest] = data.decode("utf-8")
    log.debug("k8s_kubeadm: %s gets %d files of %s as %s", minion_id, len(files), tag, host)
    role = "master" if master else "node"
    # cluster_tag: the orchestrations find a set's hosts by it (kubernetes.orch.*)
    share = {"host": host, "role": role, "cluster_tag": tag, "files": files}
    if enrolled:
        own = k8s_pki.kubeadm_host_files(host, master)
        share["enrolled"] = sorted(dest for dest in own if dest not in files)
    if master:
        share["masters"] = _masters(directory)
    return {"kubernetes": {PILLAR_KEY: share}}


def _recorded_role(recorded, host):
    """The role of ``host`` in the set's manifest (exact name), or None (no host of a kubeadm
    set)."""
    if recorded["profile"] != "kubeadm":
        return None
    return k8s_pki.host_role(recorded, host)[0]


def _masters(directory):
    """Every master of the set as ``[{name, ip}]``, from its manifest (or, for a set made
    before manifests, its apiserver certificates): a master's etcd static pod lists its
    peers, and its own address is where its components reach their apiserver."""
    _, recorded = k8s_pki.set_profile(directory)
    settings = recorded or k8s_pki.infer_settings(directory, "kubeadm")
    return [{"name": m["name"], "ip": str(m["ip"])} for m in settings.get("masters", [])]
