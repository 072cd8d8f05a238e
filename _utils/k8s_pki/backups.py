"""Backups of replaced files: private copies, and which backups a set has."""

from __future__ import annotations

import os
import re
import stat

from .defaults import BACKUP_DIR, CERT_MODE, KEY_MODE
from .files import make_parents, write_new


def private_copy(src, dst, secret):
    """A real copy of ``src`` (never through a symlink) at ``dst``.

    A key gets 0600; any other file at most 0644, never more open than ``src``.
    """
    make_parents(dst)
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        mode = KEY_MODE if secret else stat.S_IMODE(os.fstat(fd).st_mode) & CERT_MODE
        write_new(dst, handle.read(), mode)


# A backup's folder name: when it was made (UTC), "-<n>" for a second one in
# the same microsecond.  Anything else in backup/ is left alone.
BACKUP_NAME_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z(?:-(\d+))?$")


def backups(directory):
    """The backup folders of a set (names under ``backup/``), oldest first."""
    try:
        names = os.listdir(os.path.join(directory, BACKUP_DIR))
    except FileNotFoundError:
        return []
    found = [
        (name.split("-")[0], int(m.group(1) or 0), name)
        for name in names
        if (m := BACKUP_NAME_RE.match(name))
    ]
    return [name for *_, name in sorted(found)]
