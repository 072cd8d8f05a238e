"""What the master's user alone controls: folders and files checked before they are trusted."""

from __future__ import annotations

import errno
import os
import stat

from .defaults import KUBECONFIG_SUFFIXES
from .errors import SetError


def is_secret(rel):
    """A file of a set that holds a private key (backups included)."""
    return rel.endswith(".key") or rel.endswith(KUBECONFIG_SUFFIXES)


def _owner_fix(path):
    return f"chown {os.geteuid()} {path} (the master's user) or move it away"


def check_entry(path, st, secret=False):
    """Refuse ``path`` (its lstat ``st``) unless the master's user alone controls it."""
    if stat.S_ISLNK(st.st_mode):
        raise SetError(
            f"{path}: is a symbolic link; k8s-helper never follows links in its store. "
            "Replace it with the real folder or file"
        )
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise SetError(f"{path}: is neither a folder nor a regular file; move it away")
    if st.st_uid != os.geteuid():
        raise SetError(
            f"{path}: owned by uid {st.st_uid}, not by the master's user "
            f"(uid {os.geteuid()}); fix: {_owner_fix(path)}"
        )
    if st.st_mode & 0o022:
        raise SetError(
            f"{path}: writable by group or others (mode {st.st_mode & 0o7777:04o}); "
            f"fix: chmod go-w {path}"
        )
    if secret and st.st_mode & 0o077:
        raise SetError(
            f"{path}: a private key readable by group or others (mode "
            f"{st.st_mode & 0o7777:04o}); fix: chmod 600 {path}, and consider the key exposed"
        )


def check_ancestors(path):
    """Refuse a folder above ``path`` that someone else could use to swap it."""
    seen = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        folder = os.path.dirname(start)
        while True:
            if folder not in seen:
                seen.add(folder)
                try:
                    link = os.lstat(folder)
                    st = os.stat(folder)
                except FileNotFoundError:
                    st = None
                if st is not None:
                    for who in (link, st):
                        if who.st_uid not in (0, os.geteuid()):
                            raise SetError(
                                f"{folder}: above pki_root, owned by uid {who.st_uid}, neither "
                                f"root nor the master's user; fix: chown root {folder}, or "
                                "choose another k8s_helper:pki_root"
                            )
                    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                        raise SetError(
                            f"{folder}: above pki_root, writable by group or others (mode "
                            f"{st.st_mode & 0o7777:04o}), so they could swap the folders below; "
                            f"fix: chmod go-w {folder}"
                        )
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent


def lstat_or_none(path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def check_set_folder(directory):
    """Refuse the set folder, its pki_root or a folder above them unless only we control it.

    The cheap part of :func:`check_store` (no walk of the set): for readers of
    a few files, such as the ext_pillars.  Returns whether the set folder exists.
    """
    directory = os.path.normpath(directory)
    root, tag = os.path.split(directory)
    check_ancestors(root)
    st = lstat_or_none(root)
    if st is None:
        return False
    check_entry(root, st)
    if not stat.S_ISDIR(st.st_mode):
        raise SetError(f"{root}: pki_root is not a folder; move it away")
    for name in (f".{tag}.lock", f".{tag}.created", f".{tag}.verified"):
        path = os.path.join(root, name)
        st = lstat_or_none(path)
        if st is not None:
            check_entry(path, st)
    st = lstat_or_none(directory)
    if st is None:
        return False
    check_entry(directory, st)
    if not stat.S_ISDIR(st.st_mode):
        raise SetError(f"{directory}: is not a folder; move it away")
    return True


def read_set_file(directory, rel):
    """The bytes of ``<directory>/<rel>`` (a path inside a checked set folder), or None.

    Every folder between the set folder and the file is checked like the file
    itself (no symlink, ours alone), so a swapped ``hosts/<name>`` cannot
    redirect the read.
    """
    parts = rel.split("/")
    path = directory
    for part in parts[:-1]:
        path = os.path.join(path, part)
        st = lstat_or_none(path)
        if st is None:
            return None
        check_entry(path, st)
        if not stat.S_ISDIR(st.st_mode):
            raise SetError(f"{path}: is not a folder; move it away")
    return read_store_file(os.path.join(path, parts[-1]), secret=is_secret(parts[-1]))


def check_store(directory):
    """Refuse a set folder (``<pki_root>/<tag>``), its pki_root or anything in them not ours.

    Checks the folders above pki_root, pki_root itself, the set's lock and
    record of made CAs, and every folder and file of the set (backups too).
    A missing pki_root or set is fine: nothing to trust yet.

    Returns what the walk saw of each file, ``{path: lstat result}``: the
    identities the record of verified files compares (record.py), so that a
    large set is not stat'ed twice.
    """
    directory = os.path.normpath(directory)
    seen = {}
    if check_set_folder(directory):
        _check_tree(directory, seen)
    return seen


def _check_tree(folder, seen):
    """check_entry on everything under ``folder``, never following a link."""
    with os.scandir(folder) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            check_entry(entry.path, st, secret=not is_dir and is_secret(entry.name))
            if is_dir:
                _check_tree(entry.path, seen)
            else:
                seen[entry.path] = st


def read_store_file(path, secret=False):
    """The bytes of a file of the store, or None; refused unless only we control it.

    Opened without following a symlink, and checked on the open file, so what
    is checked is what is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SetError(
                f"{path}: is a symbolic link; k8s-helper never follows links in its store. "
                "Replace it with the real file"
            ) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        check_entry(path, os.fstat(fd), secret=secret)
        return handle.read()
