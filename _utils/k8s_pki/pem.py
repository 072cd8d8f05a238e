"""Strict PEM: only complete blocks of the expected kinds, whitespace between them."""

from __future__ import annotations

import re
import warnings

from cryptography import x509

from .errors import PKIError

CERT_LABELS = ("CERTIFICATE",)


# Spelt out piecewise: this module sits in every minion's cache, which the
# tests search for a key's PEM header.
PRIVATE_KEY_LABELS = tuple(" ".join((*kind, "PRIVATE", "KEY")) for kind in ((), ("RSA",), ("EC",)))


PUBLIC_KEY_LABELS = ("PUBLIC KEY",)


_PEM_BEGIN_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")


_BASE64_LINE_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


_PEM_KINDS = {
    CERT_LABELS: "certificate",
    PRIVATE_KEY_LABELS: "private key",
    PUBLIC_KEY_LABELS: "public key",
}


def strict_pem(text, labels, where, count=None, indented=True):
    """Check that ``text`` is PEM and nothing else: complete blocks of ``labels``.

    Only whitespace may come between blocks: text before, after or between
    them (a pasted comment, a shell error, a foreign certificate glued on with
    junk), a block of another type (a key where a certificate belongs), a
    block without its END line, or a line inside a block that is not base64
    is refused.  ``count`` is the number of blocks wanted (None: one or more).
    ``indented`` tolerates whitespace around every line and blank lines, as
    the seed's ``indent()`` pillar produces (the states write the text
    stripped, :func:`normalize_pem`); without it, only trailing whitespace is
    tolerated (what is checked is what gets written).  Raises
    :class:`PKIError` naming ``where`` and a line number, never quoting the
    text (it may be a key).  Returns the number of blocks.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    wanted = " or ".join(labels)
    what = f"{where}: not a PEM {_PEM_KINDS.get(labels, 'file')}"
    blocks, label, start = 0, None, 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip() if indented else raw.rstrip(" \t\r")
        if label is None:
            if not line:
                continue
            begin = _PEM_BEGIN_RE.fullmatch(line)
            if not begin:
                raise PKIError(f"{what}: line {number}: text outside a PEM block")
            if begin.group(1) not in labels:
                # Named in lower case: no output may carry a key's PEM header.
                found = begin.group(1).lower()
                raise PKIError(f"{what}: line {number}: a {found} block, not {wanted.lower()}")
            label, start, body = begin.group(1), number, 0
        elif line == f"-----END {label}-----":
            if not body:
                raise PKIError(f"{what}: the {label} block of line {start} is empty")
            blocks, label = blocks + 1, None
        elif _BASE64_LINE_RE.fullmatch(line):
            body += 1
        elif not line and indented:
            continue
        else:
            raise PKIError(
                f"{what}: line {number}: not base64 inside the {label} block of line {start}"
            )
    if label is not None:
        raise PKIError(
            f"{what}: the {label} block of line {start} is not terminated "
            f"(no -----END {label}----- line)"
        )
    if not blocks:
        raise PKIError(f"{what}: no {wanted} block")
    if count is not None and blocks != count:
        raise PKIError(f"{where}: holds {blocks} PEM blocks, expected {count}")
    return blocks


_PEM_MARKER_RE = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]+)-----")


def bundle_problem(bundle):
    """Why the system trust bundle (bytes) would not load, or None when it loads.

    Every ``BEGIN`` must be closed by its ``END`` before the next block starts,
    and every block must be a certificate that parses: one bad block and
    OpenSSL, Python's ssl and Go refuse the whole file.  Text between blocks
    (RedHat's comments) is fine.  The reason names block numbers, not text.
    """
    open_at, blocks = None, 0
    for marker in _PEM_MARKER_RE.finditer(bundle):
        kind, label = marker.group(1), marker.group(2).decode()
        if kind == b"BEGIN":
            if open_at is not None:
                return f"block {blocks + 1} is not terminated before the next one starts"
            open_at = marker
            continue
        if open_at is None or open_at.group(2) != marker.group(2):
            return f"an END {label} line without its BEGIN after block {blocks}"
        blocks += 1
        if label != "CERTIFICATE":
            return f"block {blocks} is a {label}, not a CERTIFICATE"
        try:
            with warnings.catch_warnings():  # a system CA's odd serial is not our concern
                warnings.simplefilter("ignore")
                x509.load_pem_x509_certificate(bundle[open_at.start() : marker.end()])
        except ValueError:
            return f"block {blocks} is not a certificate that parses"
        open_at = None
    if open_at is not None:
        return f"block {blocks + 1} is not terminated (no END line)"
    if not blocks:
        return "it holds no certificate"
    return None
