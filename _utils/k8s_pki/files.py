"""Durable file primitives: write with a mode, flush, fsync, swap two folders."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

from .defaults import DIR_MODE


def write_new(path, data, mode):
    """Create ``path`` (it must not exist) with exactly ``mode``, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)
        handle.write(data)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def flush_to_disk(directory, files=()):
    """Make what was written under ``directory`` durable before it is renamed into place.

    One ``syncfs`` of the file system where Linux has it (much cheaper than a
    ``fsync`` per file); otherwise ``fsync`` on each file and the folder.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is not None and syncfs(fd) == 0:
            return
        for path in files:
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def exchange_dirs(a, b):
    """Swap two directories in one step (Linux renameat2); False where unsupported."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a)


def make_parents(path):
    """Create the sub-folders a set file lives in (``hosts/m1/etcd/peer.crt``), each 0700.

    (os.makedirs gives only the last folder the mode; the ones above it would
    get the umask's.)
    """
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        make_parents(parent)
        os.mkdir(parent, DIR_MODE)


def hard_link(src, dst):
    make_parents(dst)
    os.link(src, dst, follow_symlinks=False)
