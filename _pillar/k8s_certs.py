"""
Hand a cluster's certificates, as ``salt-run k8s-helper.generate_certs`` wrote
them, to the cluster's minions: ``kubernetes:k8s_env`` and ``kubernetes:certs``.

Masters get ``ca.crt``, ``kubecfg.crt``, ``kubecfg.key``, ``server.cert`` and
``server.key``; nodes get the same without the apiserver's pair. Other minions
get nothing from here. Configure it in the master config (one entry per
cluster)::

    ext_pillar:
      - k8s_certs:
          cluster_tag: default          # <pki_root>/<cluster_tag>/ holds the files
          masters: ['k8s-master-*']     # minion-id globs: the full set
          nodes: ['k8s-node-*']         # minion-id globs: no server.cert/server.key
          # pki_root: /var/salt/k8s-helper/pki   (default: k8s_helper:pki_root)
          # enrolled: true     (hosts enroll their own pairs: docs/enrollment.md)

With ``enrolled: true`` a host gets only what it cannot enroll: a node
``ca.crt`` and no key at all (it enrolls its kubelet and kube-proxy
identities); a master ``ca.crt``, the admin ``kubecfg`` pair and the
service-account key pair every master must share (it enrolls its own
apiserver certificate; a set without ``sa.key`` is refused, since its
``server.key`` signs the tokens).

Targets are minion-id globs on purpose: a minion's id is bound to its accepted
key, whereas a minion can set its own grains, so grain targeting would let any
minion claim the apiserver's private key. Globs match the id exactly as Salt
accepted it (case-sensitive, nothing stripped). Each minion also gets
``kubernetes:role`` (``master`` or ``node``) from the same match, so
``k8s_certs.validated`` refuses a ``server.key`` another pillar source still
hands a node.

The files are read directly (no process per file, no template, no YAML), which
makes this the cheapest way to get them into pillar; see docs/certs-states.md.
A missing file or a bad option fails the minion's pillar with a message that
names it, so states refuse to run instead of laying down half a set.
"""

import fnmatch
import logging
import os

try:
    import k8s_pki

    HAS_PKI = True
except ImportError as _err:  # _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s_certs"


def __virtual__():
    if not HAS_PKI:
        return (
            False,
            f"k8s_certs ext_pillar needs the formula's _utils/k8s_pki package ({_IMPORT_ERROR}); "
            "run salt-run saltutil.sync_all or set utils_dirs",
        )
    return __virtualname__


def _globs(value, name):
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise k8s_pki.InputError(f"k8s_certs: {name}: expected a minion-id glob or a list of them")
    return value


def _matches(minion_id, globs):
    # fnmatchcase: the id as Salt accepted it, never case-folded (fnmatch folds
    # case where the OS's paths do).
    return any(fnmatch.fnmatchcase(minion_id, glob) for glob in globs)


def ext_pillar(minion_id, pillar, cluster_tag="default", masters=None, nodes=None, **kwargs):
    """The cluster's certificates for ``minion_id``: all for masters, no server pair for nodes."""
    pki_root = kwargs.pop("pki_root", None)
    enrolled = k8s_pki.check_bool(kwargs.pop("enrolled", False), "k8s_certs: enrolled")
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    if unknown:
        raise k8s_pki.InputError(
            f"k8s_certs: unknown option(s) {', '.join(unknown)} "
            "(known: cluster_tag, masters, nodes, pki_root, enrolled)"
        )
    tag = k8s_pki.check_cluster_tag(cluster_tag)
    master_globs = _globs(masters, "masters")
    node_globs = _globs(nodes, "nodes")
    if not master_globs and not node_globs:
        raise k8s_pki.InputError("k8s_certs: give masters and/or nodes (minion-id globs)")
    if _matches(minion_id, master_globs):
        master = True
    elif _matches(minion_id, node_globs):
        master = False
    else:
        return {}
    files = {
        k: v for k, v in k8s_pki.PILLAR_FILES.items() if master or k not in k8s_pki.MASTERS_ONLY
    }
    if enrolled:
        files = k8s_pki.seed_pillar_share(files, master)
    if pki_root is None:
        pki_root = k8s_pki.pki_root(__opts__)
    directory = os.path.join(pki_root, tag)
    # Only what the master's user alone controls is handed out (no symlink, no
    # file or folder someone else could have swapped in).
    k8s_pki.check_set_folder(directory)
    certs = {}
    for key, filename in files.items():
        try:
            data = k8s_pki.read_set_file(directory, filename)
        except OSError as err:
            data, why = None, err.strerror
        else:
            why = "missing"
        if data is None:
            raise k8s_pki.PKIError(
                f"k8s_certs: cannot read {os.path.join(directory, filename)} for {minion_id} "
                f"({why}); run salt-run k8s-helper.generate_certs cluster_tag={tag}"
            )
        certs[key] = data.decode("utf-8")
    # The role too, decided here from the accepted minion id: the states refuse
    # a key the role must not hold even if another pillar source adds one.
    ret = {"k8s_env": tag, "role": "master" if master else "node", "certs": certs}
    if master:  # and the service-account pair, when the set has one
        pair = {n: k8s_pki.read_set_file(directory, n) for n in k8s_pki.SERVICE_ACCOUNT_FILES}
        if all(data is not None for data in pair.values()):
            ret["service_account"] = {n: data.decode() for n, data in pair.items()}
        elif enrolled:
            raise k8s_pki.PKIError(
                f"k8s_certs: enrolled: the set {tag} has no sa.key: its server.key signs "
                "service-account tokens and every master must share it, so masters cannot "
                f"enroll their own; run salt-run k8s-helper.generate_certs cluster_tag={tag} "
                "service_account_key=True first"
            )
    log.debug("k8s_certs: %s gets %s of cluster %s", minion_id, ", ".join(certs), tag)
    return {"kubernetes": ret}
