"""
Enrolled certificates: the key is made on this host and never leaves it.

``k8s_enroll.certificate_enrolled``
    Makes a key here, sends a CSR to the master (``publish.runner`` to
    ``k8s-helper.sign_csr``, which the master's ``peer_run`` must allow) and
    lays down the key (0600), the certificate it gets back and the CA
    certificate that signed it. Run again, it does nothing while the
    certificate is valid, matches its key, is signed by the CA file and is
    not in its renewal window; then it enrolls again with a new key (like
    x509_v2's ``certificate_managed``). What the certificate says is decided
    by the master, from the set's record and this minion's authenticated id.

No key text is ever in a return, ``changes``, comment, event or log: only
paths, subjects, fingerprints and dates.
"""

import logging

try:
    import k8s_pki

    HAS_PKI = True
except ImportError as _err:  # cryptography missing, or _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s_enroll"

SIGN_FUNCTION = "k8s-helper.sign_csr"


def __virtual__():
    if not HAS_PKI:
        return (
            False,
            f"k8s_enroll needs the formula's _utils/k8s_pki package and python3-cryptography "
            f"({_IMPORT_ERROR}); run saltutil.sync_all",
        )
    return __virtualname__


def certificate_enrolled(
    name,
    member,
    key,
    ca,
    cluster_tag="default",
    key_type="ecdsa-p256",
    renew_before_days=k8s_pki.DEFAULT_RENEW_BEFORE_DAYS if HAS_PKI else 90,
    timeout=60,
):
    """
    Hold a certificate the master signed for a key made here; enroll again when it is due.

    name
        Where the certificate goes.

    member
        What to enroll (``kubelet-client``, ``kubelet-serving``, on masters
        ``apiserver``, ``etcd/server``...): see ``salt-run -d k8s-helper.sign_csr``.

    key
        Where the key goes (mode 0600).

    ca
        Where the CA certificate that signs it goes (mode 0644).

    cluster_tag : default
        Which set of the master signs.

    key_type : ecdsa-p256
        The kind of key made here: ``ecdsa-p256``, ``ecdsa-p384``, ``rsa-2048``,
        ``rsa-3072``, ``rsa-4096``.

    renew_before_days : 90
        Enroll again (new key) this many days before the certificate ends
        (a short-lived certificate: once the last third of its life begins).

    timeout : 60
        Seconds to wait for the master.

    .. code-block:: yaml

        kubernetes-enrolled-kubelet-client:
          k8s_enroll.certificate_enrolled:
            - name: /var/lib/kubelet/pki/kubelet-client.crt
            - key: /var/lib/kubelet/pki/kubelet-client.key
            - ca: /etc/kubernetes/pki/ca.crt
            - member: kubelet-client
            - cluster_tag: prod
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        key_type = k8s_pki.check_key_type(key_type)
        renew_before = k8s_pki.check_days(renew_before_days, "renew_before_days")
        tag = k8s_pki.check_cluster_tag(cluster_tag)
        problem = k8s_pki.enrolled_problem(name, key, ca, renew_before)
    except k8s_pki.PKIError as err:
        ret["comment"] = str(err)
        return ret
    if not problem:
        info = k8s_pki.describe_cert(k8s_pki.load_cert(_read(name), name))
        ret["result"] = True
        ret["comment"] = (
            f"{name}: {info['subject']} sha256 {info['sha256']} until {info['not_after']}: "
            "valid, not due for renewal"
        )
        return ret
    if __opts__.get("test"):
        ret["result"] = None
        ret["comment"] = f"{problem}: would make a new {key_type} key and enroll {member}"
        ret["changes"] = {"enroll": member, "reason": problem}
        return ret
    new_key = k8s_pki.new_key(key_type)
    csr = k8s_pki.csr_for(new_key, __opts__["id"]).decode("ascii")
    request = {"__kwarg__": True, "csr": csr, "member": member, "cluster_tag": tag}
    try:
        reply = __salt__["publish.runner"](SIGN_FUNCTION, arg=[request], timeout=timeout)
        cert, ca_bytes = k8s_pki.check_reply(reply, new_key, member)
        written = k8s_pki.install_enrolled(name, key, ca, cert, new_key, ca_bytes)
    except k8s_pki.PKIError as err:
        ret["comment"] = f"{member}: {err}"
        log.error("k8s_enroll: %s", ret["comment"])
        return ret
    except OSError as err:
        ret["comment"] = f"{member}: {err.strerror}: {err.filename}"
        return ret
    info = k8s_pki.describe_cert(cert)
    ret["result"] = True
    ret["changes"] = {
        "certificate": {k: info[k] for k in ("subject", "sha256", "not_after", "issuer")},
        "key": f"{key}: new {key_type} key made here (mode 0600)",
        "written": written,
        "reason": problem,
    }
    ret["comment"] = f"{member} enrolled: {info['subject']} until {info['not_after']}"
    return ret


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()
