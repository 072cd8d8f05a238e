"""
Minion-side check of the kubeadm-profile files pillar hands a host.

``k8s_kubeadm.validated``
    Checks ``kubernetes:kubeadm_pki:files`` before any file is written: every
    certificate parses and is signed by its CA, every key belongs to its
    certificate, every kubeconfig embeds a matching pair signed by and holding
    ``pki/ca.crt``, nothing is expired. The formula's kubeadm file states
    ``require`` it, so a bad pillar changes nothing on disk.

Comments name paths, subjects and fingerprints, never PEM text.
"""

import logging

try:
    import k8s_pki

    HAS_PKI = True
except ImportError as _err:  # cryptography missing, or _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s_kubeadm"


def __virtual__():
    if not HAS_PKI:
        return (
            False,
            f"k8s_kubeadm needs the formula's _utils/k8s_pki package and python3-cryptography "
            f"({_IMPORT_ERROR}); run saltutil.sync_all",
        )
    return __virtualname__


def validated(name="kubernetes:kubeadm_pki:files"):
    """
    Check the kubeadm files pillar hands this host; changes nothing.

    name : kubernetes:kubeadm_pki:files
        The pillar path of the mapping (paths under /etc/kubernetes to text).
        Its sibling ``role`` (``kubernetes:kubeadm_pki:role``) is the host's
        role: a ``node`` handed more than ``pki/ca.crt`` and ``kubelet.conf``
        is refused.

    PEM is checked strictly (complete blocks of the right type, nothing else),
    exactly as ``file.managed`` will write it.

    .. code-block:: yaml

        kubernetes-kubeadm-pillar-validated:
          k8s_kubeadm.validated:
            - name: kubernetes:kubeadm_pki:files
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    files = __salt__["pillar.get"](name, None, unmask=True)
    # The role the ext_pillar decided from the accepted minion id, beside the files.
    role = __salt__["pillar.get"](f"{name.rpartition(':')[0]}:role", None, unmask=True)
    # What the host enrolls itself (the ext_pillar's enrolled mode) is not needed here.
    enrolled = __salt__["pillar.get"](f"{name.rpartition(':')[0]}:enrolled", [], unmask=True)
    if not isinstance(enrolled, list):
        ret["comment"] = f"{name.rpartition(':')[0]}:enrolled: not a list of files"
        return ret
    enrolled = [rel for rel in enrolled if rel in k8s_pki.ENROLLED_KUBEADM_FILES]
    try:
        report = k8s_pki.check_kubeadm_host(files, where=name, role=role, enrolled=enrolled)
    except k8s_pki.PKIError as err:
        ret["comment"] = f"Refusing to lay down the kubeadm files: {err}"
        return ret
    lines = [f"{name}: {len(files)} files valid"]
    for path, info in sorted(report.items()):
        lines.append(
            f"  {path}: {info['subject']} sha256 {info['sha256']} until {info['not_after']}"
        )
    ret["result"] = True
    ret["comment"] = "\n".join(lines)
    return ret
