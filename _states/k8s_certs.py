"""
Minion-side checks for the Kubernetes certificates this formula lays down.

``k8s_certs.validated``
    Checks the certificates pillar hands this minion (``kubernetes:certs``)
    before any file is written: every PEM parses, every key matches its
    certificate, every leaf is signed by ``ca.crt``, nothing is expired. The
    formula's file states ``require`` it, so a bad pillar changes nothing on disk.

``k8s_certs.pem_managed``
    ``file.managed`` for one PEM text from pillar, written as
    ``k8s_pki.normalize_pem`` makes it (lines stripped): read from pillar at
    apply time, so no PEM text lands in the rendered SLS, and never shown in
    changes.

``k8s_certs.trusted``
    Makes sure the system trust bundle holds the CA certificate(s) of an anchor
    file, and nothing the anchor held before: runs the OS's refresh command
    (``update-ca-certificates``, ``update-ca-trust extract``) when a CA is
    missing from the bundle or the anchor changed after the bundle was last
    built, and checks the bundle again afterwards.

The PKI logic lives in the formula's ``_utils/k8s_pki/`` package; run
``saltutil.sync_all`` (or ``sync_states`` + ``sync_utils``) so minions have both.
Returns, changes and comments name items, paths and fingerprints, never PEM text.
"""

import contextlib
import grp
import hashlib
import logging
import os
import pwd
import shlex
import stat

try:
    import k8s_pki

    HAS_PKI = True
except ImportError as _err:  # cryptography missing, or _utils not synced
    HAS_PKI = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "k8s_certs"


def __virtual__():
    if not HAS_PKI:
        return (
            False,
            f"k8s_certs needs the formula's _utils/k8s_pki package and python3-cryptography "
            f"({_IMPORT_ERROR}); run saltutil.sync_all",
        )
    return __virtualname__


def _short(info):
    return f"{info['subject']} sha256 {info['sha256']} until {info['not_after']}"


def validated(
    name="kubernetes:certs",
    role="kubernetes:role",
    service_account="kubernetes:service_account",
):
    """
    Check the certificates pillar hands this minion; changes nothing.

    name : kubernetes:certs
        The pillar path of the mapping (``ca.crt``, ``kubecfg.crt``,
        ``kubecfg.key`` and, on masters, ``server.cert``/``server.key``).
    role : kubernetes:role
        The pillar path of the minion's role (``master`` or ``node``).
    service_account : kubernetes:service_account
        The pillar path of the optional ``sa.key``/``sa.pub`` pair.

    Fails, naming each bad item, when a value is not strictly PEM of the right
    type (only complete blocks, whitespace between them), a PEM does not
    parse, a key does not match its certificate, a leaf is not signed by
    ``ca.crt``, or a certificate is expired or not yet valid. Also fails when
    the role is ``node`` and pillar gives it a key no node may hold
    (``server.key``, ``sa.key``: ``k8s_pki.ROLE_FORBIDDEN``), whatever the
    rest of its pillar says.

    .. code-block:: yaml

        kubernetes-certs-pillar-validated:
          k8s_certs.validated:
            - name: kubernetes:certs
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    certs = __salt__["pillar.get"](name, None, unmask=True)
    problems = []
    try:
        report = k8s_pki.check_distribution(certs, where=name)
    except k8s_pki.PKIError as err:
        problems.append(str(err))
    problems += _role_problems(name, certs, role, service_account)
    if problems:
        ret["comment"] = f"Refusing to lay down the certificates: {'; '.join(problems)}"
        return ret
    lines = [f"{name}: {len(certs)} items valid"]
    reflowed = sorted(k for k, v in certs.items() if k8s_pki.normalize_pem(v) != v)
    if reflowed:
        lines.append(
            f"  note: {', '.join(reflowed)} carry indented or blank lines in pillar; "
            "they are written without them"
        )
    for item, info in report.items():
        if item == k8s_pki.DIST_CA:
            lines += [f"  {item}: {_short(ca)}" for ca in info]
        elif "sha256" in info:
            lines.append(f"  {item}: {_short(info)}")
        else:
            lines.append(f"  {item}: matches, public key sha256 {info['public_key_sha256']}")
    ret["result"] = True
    ret["comment"] = "\n".join(lines)
    return ret


def _role_problems(name, certs, role, service_account):
    """What pillar gives this minion that its role must never hold."""
    host_role = __salt__["pillar.get"](role, None, unmask=True)
    pair = __salt__["pillar.get"](service_account, None, unmask=True)
    held = {}
    for where, given in ((name, certs), (service_account, pair)):
        held.update({f"{where}:{key}": key for key in (given if isinstance(given, dict) else ())})
    wrong = k8s_pki.role_forbidden(host_role, set(held.values()))
    return [
        f"{where}: {role} is {host_role}, and a {host_role} must never hold {key}, whatever "
        "its pillar says; take it out of this minion's pillar (a seed `cmd.run cat` pillar "
        "left beside the k8s_certs ext_pillar does this: see docs/certs-states.md)"
        for where, key in sorted(held.items())
        if key in wrong
    ]


def no_symlinks(name, paths):
    """
    Fail, naming each one, when any of ``paths`` is a symbolic link; changes nothing.

    name
        A label for the group of destinations (shown in the comment).
    paths
        The files the following states write. A link already at one of them
        would make the write land wherever it points (a key written outside,
        a file elsewhere overwritten), so the states that write them require
        this check and nothing is written while a link is there.

    .. code-block:: yaml

        kubernetes-kubeadm-destinations-no-symlinks:
          k8s_certs.no_symlinks:
            - name: kubeadm files
            - paths: [/etc/kubernetes/pki/ca.key, /etc/kubernetes/admin.conf]
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    links = k8s_pki.symlinked(paths)
    if links:
        ret["result"] = False
        ret["comment"] = "Refusing to write through a symbolic link: " + "; ".join(
            f"{path} is a symlink to {target} (remove it, then apply again)"
            for path, target in links
        )
        return ret
    ret["comment"] = f"{name}: none of the {len(paths)} destinations is a symbolic link"
    return ret


def pem_managed(
    name,
    source,
    user="root",
    group="root",
    mode="0644",
    makedirs=True,
    dir_mode="0755",
):
    """
    Write the PEM text at pillar path ``source`` to ``name`` (``file.managed``).

    name
        The file to write.
    source
        Pillar path of the PEM text, e.g. ``kubernetes:certs:server.key``.
    user, group, mode : root, root, 0644
        Owner and mode of the file (keys: ``'0600'``).
    makedirs, dir_mode : True, 0755
        Create missing parent folders, with this mode.

    The text is written with every line stripped and blank lines dropped
    (``k8s_pki.normalize_pem``), so a pillar template that indents lines
    still yields a file OpenSSL and Go accept. Changes never show the text.

    .. code-block:: yaml

        kubernetes-certs-server-key-pem-managed:
          k8s_certs.pem_managed:
            - name: /srv/kubernetes/server.key
            - source: kubernetes:certs:server.key
            - mode: '0600'
    """
    text = __salt__["pillar.get"](source, None, unmask=True)
    if not isinstance(text, str):
        return {
            "name": name,
            "result": False,
            "changes": {},
            "comment": f"{source}: no PEM text in pillar",
        }
    links = k8s_pki.symlinked([name])
    if links:
        return {
            "name": name,
            "result": False,
            "changes": {},
            "comment": f"Refusing to write through a symbolic link: {name} is a symlink "
            f"to {links[0][1]} (remove it, then apply again)",
        }
    contents = k8s_pki.normalize_pem(text)
    if _in_place(name, contents.encode(), user, group, mode):
        # What file.managed would conclude too, for a fraction of its cost.
        return {
            "name": name,
            "result": True,
            "changes": {},
            "comment": f"File {name} is in the correct state",
        }
    return __states__["file.managed"](
        name=name,
        contents=contents,
        user=user,
        group=group,
        mode=mode,
        makedirs=makedirs,
        dir_mode=dir_mode,
        show_changes=False,
    )


def _in_place(path, data, user, group, mode):
    """Is ``path`` already a regular file with these bytes, owner, group and mode?"""
    try:
        st = os.lstat(path)
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except (OSError, KeyError):
        return False
    if not stat.S_ISREG(st.st_mode) or (st.st_uid, st.st_gid) != (uid, gid):
        return False
    if stat.S_IMODE(st.st_mode) != int(str(mode), 8) or st.st_size != len(data):
        return False
    return k8s_pki.read_file(path) == data


def trusted(name, bundle, refresh):
    """
    Make sure the system trust bundle holds the CA certificate(s) in ``name``.

    name
        The anchor file in the trust store's source folder, e.g.
        ``/usr/local/share/ca-certificates/kubernetes-ca.crt``.
    bundle
        The bundle the refresh command builds, e.g.
        ``/etc/ssl/certs/ca-certificates.crt``.
    refresh
        The command that rebuilds the bundle, e.g. ``update-ca-certificates``.

    Nothing runs when the bundle already holds every certificate of the
    anchor and was built after the anchor was last written. Otherwise the
    command runs once and the bundle is checked again. The second condition
    matters when a CA leaves the anchor (the end of a CA rotation): every CA
    still in it is already in the bundle, but so is the one that left.

    .. code-block:: yaml

        kubernetes-certs-trust-store-trusted:
          k8s_certs.trusted:
            - name: /usr/local/share/ca-certificates/kubernetes-ca.crt
            - bundle: /etc/ssl/certs/ca-certificates.crt
            - refresh: update-ca-certificates
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    anchor = k8s_pki.read_file(name)
    if anchor is None:
        if __opts__.get("test"):
            ret["result"] = None
            ret["comment"] = f"{name} does not exist yet; {refresh} would run once it does"
            return ret
        ret["comment"] = f"{name} does not exist"
        return ret
    try:
        cas = k8s_pki.load_certs(anchor, name)
    except k8s_pki.PKIError as err:
        ret["comment"] = str(err)
        return ret
    fingerprints = [k8s_pki.fingerprint(ca) for ca in cas]

    def missing():
        data = k8s_pki.read_file(bundle) or b""
        return [k8s_pki.fingerprint(ca) for ca in cas if not k8s_pki.bundle_has(data, ca)]

    def older():
        """Was the bundle built before the anchor's current content was written?"""
        try:
            return os.stat(bundle).st_mtime_ns < os.stat(name).st_mtime_ns
        except FileNotFoundError:
            return False  # no bundle: missing() says so

    absent = missing()
    stale = not absent and older()
    if not absent and not stale:
        if not __opts__.get("test"):
            _remember_anchor(name, anchor)
        ret["result"] = True
        ret["comment"] = f"{bundle} holds the CA of {name} (sha256 {', '.join(fingerprints)})"
        return ret
    why = (
        f"{bundle} lacks sha256 {', '.join(absent)}"
        if absent
        else f"{name} changed after {bundle} was built (a CA may have left it)"
    )
    if __opts__.get("test"):
        ret["result"] = None
        ret["changes"] = {"refresh": refresh, "bundle": bundle, "adds": absent}
        ret["comment"] = f"{refresh} would run: {why}"
        return ret
    failed = _refresh(refresh)
    if failed:
        ret["comment"] = failed
        return ret
    broken = k8s_pki.bundle_problem(k8s_pki.read_file(bundle) or b"")
    if broken:
        ret["changes"] = {"refresh": refresh, "bundle": bundle}
        ret["comment"] = _put_back_anchor(name, bundle, refresh, broken, ret["changes"])
        return ret
    still = missing()
    if still:
        ret["comment"] = f"{refresh} ran, yet {bundle} still lacks sha256 {', '.join(still)}"
        return ret
    if older():
        ret["comment"] = f"{refresh} ran, yet {bundle} is still older than {name}"
        return ret
    _remember_anchor(name, anchor)
    ret["result"] = True
    ret["changes"] = {"refresh": refresh, "bundle": bundle, "added": absent}
    ret["comment"] = f"Ran {refresh} ({why}); {bundle} now holds the CA of {name}"
    return ret


def _refresh(refresh):
    """Run the trust store's refresh command: None, or why it failed."""
    result = __salt__["cmd.run_all"](shlex.split(refresh), python_shell=False)
    log.debug("k8s_certs.trusted: %s exited %s", refresh, result["retcode"])
    if result["retcode"] == 0:
        return None
    output = (result.get("stderr") or result.get("stdout") or "").strip()
    return f"{refresh} failed with exit status {result['retcode']}: {output}"


def _remembered_path(anchor_path):
    """Where the minion keeps the last anchor that gave a bundle that loads."""
    digest = hashlib.sha256(anchor_path.encode()).hexdigest()[:16]
    return os.path.join(__opts__["cachedir"], "k8s_certs", "trusted", f"{digest}.crt")


def _remember_anchor(anchor_path, data):
    """Keep ``data`` (public CA certificates) as the anchor to put back if a later
    refresh breaks the bundle."""
    try:  # only a clean anchor is worth putting back
        k8s_pki.strict_pem(data, k8s_pki.CERT_LABELS, anchor_path, indented=False)
    except k8s_pki.PKIError:
        return
    path = _remembered_path(anchor_path)
    if k8s_pki.read_file(path) == data:
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    _replace_file(path, data)


def _replace_file(path, data, mode=0o644):
    """Write ``path`` whole, by a rename: a reader sees the old or the new bytes."""
    staging = f"{path}.k8s-certs-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(staging, mode)
    os.replace(staging, path)


def _put_back_anchor(name, bundle, refresh, broken, changes):
    """The refresh left a bundle that no longer loads: restore the last anchor that
    gave one that does (or take the anchor away when none is known), refresh
    again, and say what happened. The state fails either way."""
    previous = k8s_pki.read_file(_remembered_path(name))
    if previous is not None:
        _replace_file(name, previous)
        done = f"put the previous {name} back"
        changes["anchor"] = "previous put back"
    else:
        os.unlink(name)
        done = f"removed {name} (no earlier anchor known)"
        changes["anchor"] = "removed"
    what = f"after {refresh}, {bundle} no longer loads ({broken}): {done}"
    failed = _refresh(refresh)
    if failed:
        return f"{what}; then {failed}"
    still = k8s_pki.bundle_problem(k8s_pki.read_file(bundle) or b"")
    if still:
        return f"{what} and ran {refresh} again, yet {bundle} still does not load ({still})"
    return (
        f"{what} and ran {refresh} again: {bundle} loads again. Fix the CA certificate "
        f"{name} is made from (pillar), then apply again"
    )
