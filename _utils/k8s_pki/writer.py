"""Bytes to disk: the lock, staging, flush and the atomic swap of a set."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat

from .backups import BACKUP_NAME_RE, backups, private_copy
from .defaults import (
    ANCESTOR_MODE,
    BACKUP_DIR,
    CERT_MODE,
    DEFAULT_BACKUP_KEEP,
    DIR_MODE,
    KEY_MODE,
    MANIFEST_FILE,
)
from .errors import SetError
from .files import exchange_dirs, flush_to_disk, fsync_dir, hard_link, make_parents, write_new
from .guard import (
    check_ancestors,
    check_entry,
    check_set_folder,
    check_store,
    is_secret,
    lstat_or_none,
    read_store_file,
)
from .profiles import KUBEADM_HOSTS_DIR
from .store import created_path


def record_created(directory, cas):
    """Add ``{fingerprint: name}`` to the record of CAs made here (atomic rewrite)."""
    path = created_path(directory)
    old = (read_store_file(path) or b"").decode("ascii", "replace")
    lines = [line for line in old.splitlines() if line.strip()]
    lines += [f"{fp} {name}" for fp, name in cas.items()]
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    write_new(tmp, ("\n".join(lines) + "\n").encode("ascii"), CERT_MODE)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def _outputs(item, spec):
    """(relative path, bytes, mode, kept) for each file of ``item``; kept = linked as it is."""
    rows = [
        (item.name + f.suffix, getattr(item, f.field), f.mode, f.action(item.action) == "reused")
        for f in spec.kind.files
    ]
    # A CA whose key was never here (an external CA) has no key file to carry
    # along; a member taken from the record has all its files, unread.
    return [row for row in rows if row[1] is not None or (row[3] and item.recorded)]


def scratch_dirs(pki_root, cluster_tag):
    """The two scratch folders a writer of ``cluster_tag`` may leave behind."""
    return (
        os.path.join(pki_root, f".{cluster_tag}.staging"),
        os.path.join(pki_root, f".{cluster_tag}.old"),
    )


def make_pki_root(pki_root):
    """Create pki_root (0700) and its missing ancestors (0755), whatever the umask.

    The folders made here belong to the master's user (the process's); then
    the whole way down is checked, for folders that were already there.
    """
    pki_root = os.path.abspath(pki_root)
    missing = []
    folder = pki_root
    while lstat_or_none(folder) is None:
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        mode = DIR_MODE if folder == pki_root else ANCESTOR_MODE
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            os.mkdir(folder, mode)
            os.chmod(folder, mode)  # mkdir's mode went through the umask
    check_ancestors(pki_root)
    st = os.lstat(pki_root)
    check_entry(pki_root, st)
    if not stat.S_ISDIR(st.st_mode):
        raise SetError(f"{pki_root}: pki_root is not a folder; move it away")


def _is_ours(st):
    """A scratch folder a writer of ours made: a real folder, the master's user's, 0700."""
    return (
        stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o7777 == DIR_MODE
    )


def _clear_scratch(path):
    """Remove a scratch folder a killed writer left; refuse one that is not ours."""
    st = lstat_or_none(path)
    if st is None:
        return
    if not _is_ours(st):
        raise SetError(
            f"{path}: left in pki_root, but not a scratch folder k8s-helper made (a real "
            f"folder of the master's user, mode 0700); look at it and remove it yourself"
        )
    shutil.rmtree(path)  # does not follow symlinks inside


@contextlib.contextmanager
def hold_lock(pki_root, cluster_tag):
    """Hold ``<pki_root>/.<cluster_tag>.lock``, the one lock every writer of the set takes.

    Opened without following a link, and checked on the open file.
    """
    lock = os.path.join(pki_root, f".{cluster_tag}.lock")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(lock, flags, KEY_MODE)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SetError(f"{lock}: is a symbolic link; remove it") from None
        raise
    try:
        check_entry(lock, os.fstat(fd))
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(pki_root, cluster_tag):
    """Serialise writers of one cluster's set, and clear what a killed writer left.

    Yields what the check of the whole set saw of its files (:func:`check_store`).
    """
    make_pki_root(pki_root)
    target = os.path.join(pki_root, cluster_tag)
    check_set_folder(target)  # the whole set is checked once the lock is held
    with hold_lock(pki_root, cluster_tag):
        staging, old = scratch_dirs(pki_root, cluster_tag)
        st = lstat_or_none(old)
        if st is not None and _is_ours(st) and lstat_or_none(target) is None:
            os.rename(old, target)  # a writer died between the fallback's two renames
        _clear_scratch(staging)
        _clear_scratch(old)
        with contextlib.suppress(FileNotFoundError):  # a record of made CAs half written
            os.unlink(created_path(target) + ".tmp")
        yield check_store(target)  # what a killed writer left is ours too


def set_files(directory):
    """The set's files under ``directory`` (relative paths), leaving out backups."""
    for dirpath, dirnames, filenames in os.walk(directory):
        if dirpath == directory and BACKUP_DIR in dirnames:
            dirnames.remove(BACKUP_DIR)
        for name in filenames:
            yield os.path.relpath(os.path.join(dirpath, name), directory)


def stage_plan(plan, staging, now, keep=DEFAULT_BACKUP_KEEP):
    """Build the complete new cluster folder at ``staging``; returns the backup's path.

    Of the earlier backups, only the newest are carried along, so that the
    set holds at most ``keep`` of them, the new one included.
    """
    os.mkdir(staging, DIR_MODE)
    os.chmod(staging, DIR_MODE)
    target = plan.directory
    earlier = backups(target)
    keep_earlier = set(earlier[max(len(earlier) - (keep - 1 if plan.backup else keep), 0) :])
    backup_dir = os.path.join(target, BACKUP_DIR)
    if os.path.isdir(backup_dir):
        # Earlier backups travel along as hard links (they are copies already,
        # shared with no live file); those beyond ``keep`` are left behind.
        def dropped(folder, names):
            return [
                n
                for n in names
                if folder == backup_dir and BACKUP_NAME_RE.match(n) and n not in keep_earlier
            ]

        shutil.copytree(
            backup_dir,
            os.path.join(staging, BACKUP_DIR),
            symlinks=True,
            copy_function=hard_link,
            ignore=dropped,
        )
    backup, written = None, []
    if plan.backup:
        backup = _backup_name(staging, now)
        # Real copies, not links: a later edit of a live file must not reach
        # its backup, and a backup key is 0600 whatever the live file's mode.
        for rel in set_files(target):
            path = os.path.join(staging, backup, rel)
            private_copy(os.path.join(target, rel), path, is_secret(rel))
            written.append(path)
    planned = set()
    for item in plan.items.values():
        for rel, data, mode, kept in _outputs(item, plan.specs.get(item.name)):
            planned.add(rel)
            path = os.path.join(staging, rel)
            if kept:
                hard_link(os.path.join(target, rel), path)
            else:
                make_parents(path)
                write_new(path, data, mode)
                written.append(path)
    if plan.manifest is not None:  # the manifest goes with the files, in the same swap
        planned.add(MANIFEST_FILE)
        path = os.path.join(staging, MANIFEST_FILE)
        write_new(path, plan.manifest, CERT_MODE)
        written.append(path)
    if os.path.isdir(target):  # files the set does not name (yet) are the user's: keep them
        for rel in set_files(target):
            if rel not in planned and rel not in plan.drop:
                hard_link(os.path.join(target, rel), os.path.join(staging, rel))
    flush_to_disk(staging, written)
    return backup and os.path.join(target, backup)


def commit_staging(staging, old, target):
    """Put the staged folder in place of the target in one step."""
    if not os.path.isdir(target):
        os.rename(staging, target)
    elif exchange_dirs(staging, target):
        shutil.rmtree(staging)  # it now holds the previous folder
    else:
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old)
    fsync_dir(os.path.dirname(target))


class HostSwapUnsupported(Exception):
    """The file system cannot swap two folders in one step: write the whole set instead."""


def _backup_name(directory, now):
    """A new backup folder's path relative to ``directory``: when it was made, unique there."""
    backup = os.path.join(BACKUP_DIR, now.strftime("%Y%m%dT%H%M%S.%fZ"))
    taken = backup
    for n in range(1, 1000):  # two writes at the same instant (a caller's fixed now=)
        if lstat_or_none(os.path.join(directory, taken)) is None:
            break
        taken = f"{backup}-{n}"
    return taken


def commit_hosts(pki_root, cluster_tag, plan, hosts, now, keep=DEFAULT_BACKUP_KEEP):
    """Write what ``plan`` changes in ``hosts`` only: one folder swap per host, then the manifest.

    For a plan whose every change lies in ``hosts/<host>/`` folders (a node
    added, a master moved): each such folder is staged whole (its unchanged
    files linked, its new ones written), made durable, and swapped in for the
    live one in one rename; ``cluster.yaml`` follows in one rename.  A reader
    or a crash sees each host's folder old or new, never mixed, and the
    manifest names the new hosts only once their files are in place.  The rest
    of the set is not touched.  The files replaced are backed up first (the
    hosts' folders and the manifest).  Returns the backup's path, or None.

    Raises :class:`HostSwapUnsupported`, having changed nothing, where folders
    cannot be swapped in one step.
    """
    directory = plan.directory
    staging, _ = scratch_dirs(pki_root, cluster_tag)
    os.mkdir(staging, DIR_MODE)
    os.chmod(staging, DIR_MODE)
    try:
        written, staged = [], {}
        for host in hosts:
            staged[host] = _stage_host(plan, staging, host, written)
        backup = None
        if plan.backup:
            backup = _back_up_hosts(directory, hosts, now, written)
        if plan.manifest is not None:
            new_manifest = os.path.join(staging, MANIFEST_FILE)
            write_new(new_manifest, plan.manifest, CERT_MODE)
            written.append(new_manifest)
        flush_to_disk(staging, written)
        hosts_dir = os.path.join(directory, KUBEADM_HOSTS_DIR)
        for index, host in enumerate(hosts):
            live = os.path.join(hosts_dir, host)
            if lstat_or_none(live) is None:
                make_parents(live)
                os.rename(staged[host], live)
            elif not exchange_dirs(staged[host], live):
                if index == 0:  # nothing changed yet but the new backup
                    if backup is not None:
                        shutil.rmtree(os.path.join(directory, backup))
                    raise HostSwapUnsupported(live)
                raise SetError(f"{live}: could not swap the folder in one step; run again")
        fsync_dir(hosts_dir)
        if plan.manifest is not None:
            os.replace(new_manifest, os.path.join(directory, MANIFEST_FILE))
            fsync_dir(directory)
        prune_old_backups(directory, keep)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)  # after the swaps: the hosts' previous folders
    return backup and os.path.join(directory, backup)


def _stage_host(plan, staging, host, written):
    """Build the new ``hosts/<host>`` folder under ``staging``; returns its path."""
    prefix = f"{KUBEADM_HOSTS_DIR}/{host}/"
    folder = os.path.join(staging, KUBEADM_HOSTS_DIR, host)
    make_parents(os.path.join(folder, "."))
    planned = set()
    for name, item in plan.items.items():
        if not name.startswith(prefix):
            continue
        for rel, data, mode, kept in _outputs(item, plan.specs[name]):
            planned.add(rel)
            path = os.path.join(staging, rel)
            make_parents(path)
            if kept:
                hard_link(os.path.join(plan.directory, rel), path)
            else:
                write_new(path, data, mode)
                written.append(path)
    live = os.path.join(plan.directory, KUBEADM_HOSTS_DIR, host)
    if os.path.isdir(live):  # files the set does not name are the user's: keep them
        for rel in set_files(live):
            if prefix + rel not in planned:
                hard_link(os.path.join(live, rel), os.path.join(folder, rel))
    return folder


def _back_up_hosts(directory, hosts, now, written):
    """Private copies of the hosts' live folders and the manifest under a new backup folder."""
    backup = _backup_name(directory, now)
    sources = [os.path.join(KUBEADM_HOSTS_DIR, host) for host in hosts]
    for source in sources:
        live = os.path.join(directory, source)
        if os.path.isdir(live):
            for rel in set_files(live):
                path = os.path.join(directory, backup, source, rel)
                private_copy(os.path.join(live, rel), path, is_secret(rel))
                written.append(path)
    manifest = os.path.join(directory, MANIFEST_FILE)
    if lstat_or_none(manifest) is not None:
        path = os.path.join(directory, backup, MANIFEST_FILE)
        private_copy(manifest, path, False)
        written.append(path)
    return backup


def prune_old_backups(directory, keep):
    """Remove all but the newest ``keep`` backups of the set; returns the removed folders.

    The caller holds the set's lock.
    """
    names = backups(directory)
    removed = [os.path.join(directory, BACKUP_DIR, n) for n in names[: max(len(names) - keep, 0)]]
    for path in removed:
        shutil.rmtree(path)
    if removed:
        fsync_dir(os.path.join(directory, BACKUP_DIR))
    return removed
