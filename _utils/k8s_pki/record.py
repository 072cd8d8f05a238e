"""What the last writer of a set verified, by file identity: a large unchanged set checks fast.

After every write, the writer records for each issued member (a certificate or a
kubeconfig) the identity of its files - device, inode, size, mtime and ctime in
nanoseconds - with the spec it satisfies, the fingerprint of the CA that signed
it, its dates and its description.  A later run that finds a member's files with
exactly those identities, asked for the same spec under the same CA, knows they
hold the bytes that were verified: any write to a file moves its ctime (even one
that puts the mtime back, which user space cannot do for the ctime), and a
replaced file is another inode.  Such a member is taken as it is without parsing
its files or checking its signature again; anything else is read and checked in
full, as before, so a changed or tampered file is still caught and reissued.

The record lives beside the set (``<pki_root>/.<tag>.verified``), belongs to the
master's user like the rest of the store and is read with the same checks; it
grants nothing the store's own files do not (whoever can rewrite it can rewrite
the certificates).  A record that is missing, unreadable or of another version is
ignored: the set is then checked in full.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import stat

from .crypto import fingerprint, renewal_due_by_dates
from .defaults import CERT_MODE, MANIFEST_FILE
from .files import write_new
from .guard import check_entry, lstat_or_none, read_store_file
from .profiles import host_of
from .store import Item

# 2: one line a member (``<name>\t<JSON entry>``) after a header line, so that a
# rewrite after a change to a few hosts copies the other members' lines as they were.
RECORD_VERSION = 2


def record_path(directory):
    directory = os.path.normpath(directory)
    return os.path.join(os.path.dirname(directory), f".{os.path.basename(directory)}.verified")


def spec_digest(spec):
    """A short digest of everything a spec asks (its repr lists every field)."""
    return hashlib.sha256(f"{type(spec).__name__}{spec!r}".encode()).hexdigest()[:32]


def file_identity(path, secret, seen=None):
    """``[dev, ino, size, mtime_ns, ctime_ns]`` of a regular file of ours, or None.

    A file someone else controls is refused (:func:`check_entry`), as when it is read.
    ``seen``: what the check of the whole set just saw (``check_store``), used
    instead of a second lstat of the same file.
    """
    st = seen.get(path) if seen else None
    if st is None:
        st = lstat_or_none(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    check_entry(path, st, secret=secret)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


# The last record read, by its file's identity: a run reads it twice (the
# manifest's settings, then the members), and 5,000 members are ~2 MB of JSON.
_LAST = {}


def _parse(data):
    """A record's bytes -> its header (a dict) with ``members``: ``{name: entry line}``.

    The members' JSON is parsed one entry at a time, when it is used
    (:func:`recall`); a record that is not of this version is ``{}``.
    """
    try:
        lines = data.decode("utf-8").split("\n")
        header = json.loads(lines[0])
    except (UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(header, dict) or header.get("version") != RECORD_VERSION:
        return {}
    members = {}
    for line in lines[1:]:
        name, tab, entry = line.partition("\t")
        if tab:
            members[name] = entry
    header["members"] = members
    return header


def _load(directory):
    """The set's whole record (see :func:`_parse`); {} when there is none or it is unusable."""
    path = record_path(directory)
    identity = file_identity(path, False)
    if identity is None:
        return {}
    key = (path, *identity)
    if key not in _LAST:
        data = read_store_file(path)  # checked like every file of the store
        _LAST.clear()
        _LAST[key] = _parse(data or b"")
    return _LAST[key]


def load_record(directory):
    """The entries of the set's record: ``{member name: its line}``; empty when there is none."""
    return _load(directory).get("members", {})


def recorded_settings(directory):
    """The settings of the set's ``cluster.yaml`` as the record holds them, or None.

    Only while the manifest is the very file the record was written with
    (same identity): the settings a writer rendered it from, without parsing
    it again.  Any other manifest is read and checked in full.
    """
    entry = _load(directory).get("manifest")
    if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
        return None
    if entry.get("identity") != file_identity(os.path.join(directory, MANIFEST_FILE), False):
        return None
    # A copy the caller may change: the values are scalars and lists of
    # scalars or of one-level host mappings (a deep copy costs ~10x more).
    return {
        key: [dict(v) if isinstance(v, dict) else v for v in value]
        if isinstance(value, list)
        else value
        for key, value in entry["settings"].items()
    }


def _timestamp(when):
    return int(when.timestamp())


@functools.lru_cache(maxsize=4096)
def _datetime(seconds):
    # Cached: the members of a set issued in one run share their dates.
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def recall(entry, directory, name, spec, ca, ca_print, renew_before_days, now, seen=None):
    """The member ``name`` as verified before, or None when it must be read and checked.

    ``ca`` is the item of the CA that must have signed it, as found now (the
    caller knows it can still sign: its key is here, or the signer keeps it),
    and ``ca_print`` its certificate's fingerprint; ``seen`` as for
    :func:`file_identity`.
    """
    try:
        entry = json.loads(entry)
    except (TypeError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("spec") != spec_digest(spec):
        return None
    if not isinstance(entry.get("shows"), dict):
        return None
    if ca.action != "reused" or entry.get("ca") != ca_print:
        return None
    files = entry.get("files")
    if not isinstance(files, dict) or len(files) != len(spec.kind.files):
        return None
    for f in spec.kind.files:
        rel = name + f.suffix
        if files.get(rel) != file_identity(os.path.join(directory, rel), f.secret, seen):
            return None
    try:
        not_before, not_after = (_datetime(s) for s in entry["dates"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    ca_end = ca.cert.not_valid_after_utc
    if renewal_due_by_dates(not_before, not_after, renew_before_days, now, ca_end):
        return None
    return Item(name, action="reused", recorded=entry)


def remember(directory, plan, shows, hosts=None, settings=None):
    """Write the record of a set just written: every issued member the plan left valid.

    ``shows(item, spec)`` gives the description of each of a member's files
    (what :func:`recall` hands back).  Called under the set's lock, after the
    new files are in place; identities are taken now, from the files on disk,
    but for the members taken from the record outside ``hosts`` (the only
    folders written, when not None): their files were not touched.
    ``settings`` (those ``cluster.yaml`` was just rendered from) are kept with
    the manifest's identity; without them, what the record held is kept.
    """
    lines = []
    previous = load_record(directory)  # under the lock: the record this run recalled from
    for name, item in plan.items.items():
        spec = plan.specs[name]
        if not spec.kind.signed:
            continue
        if item.recorded is not None and hosts is not None and host_of(name) not in hosts:
            # As it was: its files were not touched (copied as text where the record still has it).
            line = previous.get(name) or json.dumps(item.recorded, separators=(",", ":"))
            lines.append(f"{name}\t{line}")
            continue
        ca = plan.items[spec.issuer]
        if ca.cert is None or (ca.key is None and not ca.remote):
            continue  # an external CA whose key is nowhere we sign with: checked in full
        files = {}
        for f in spec.kind.files:
            rel = name + f.suffix
            files[rel] = file_identity(os.path.join(directory, rel), f.secret)
        if None in files.values():
            continue
        if item.recorded is not None:
            entry_shows, dates = item.recorded["shows"], item.recorded["dates"]
        else:
            entry_shows = shows(item, spec)
            dates = [
                _timestamp(item.cert.not_valid_before_utc),
                _timestamp(item.cert.not_valid_after_utc),
            ]
        entry = {
            "spec": spec_digest(spec),
            "ca": fingerprint(ca.cert),
            "files": files,
            "dates": dates,
            "shows": entry_shows,
        }
        lines.append(f"{name}\t{json.dumps(entry, separators=(',', ':'))}")
    record = {"version": RECORD_VERSION}
    manifest = file_identity(os.path.join(directory, MANIFEST_FILE), False)
    if settings is not None and manifest is not None:
        record["manifest"] = {"identity": manifest, "settings": settings}
    elif isinstance(_load(directory).get("manifest"), dict):
        record["manifest"] = _load(directory)["manifest"]  # still checked by its identity
    path = record_path(directory)
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    data = "\n".join([json.dumps(record, separators=(",", ":")), *lines]) + "\n"
    write_new(tmp, data.encode(), CERT_MODE)
    # Not flushed: a record lost or cut short by a crash is ignored, and one
    # left stale no longer matches the files' identities (a full check, once).
    os.replace(tmp, path)


def forget(directory):
    """Drop the record (a writer about to change the set without writing a new one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(directory))
