"""Defaults, modes and the pki_root lookup shared by every part of the library."""

from __future__ import annotations

import datetime

from .errors import InputError

DEFAULT_PKI_ROOT = "/var/salt/k8s-helper/pki"


KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384")


DEFAULT_KEY_TYPE = "rsa-2048"


DEFAULT_CA_DAYS = 3650


DEFAULT_LEAF_DAYS = 365


DEFAULT_RENEW_BEFORE_DAYS = 90


BACKUP_DIR = "backup"


# The set's manifest: its profile and settings (see manifest.py).
MANIFEST_FILE = "cluster.yaml"


# Certificates are back-dated a little so that hosts with a slightly slow clock
# accept them at once.
BACKDATE = datetime.timedelta(minutes=5)


# Actions of a CA item whose files a rotation rewrites from certificates and
# keys it already has (nothing to generate): "rebundled" rewrites <name>.crt
# (another trust bundle, same CA and key); "rotated" puts the next CA and its
# key in place of the current ones.
CA_FILE_ACTIONS = ("rebundled", "rotated")


CERT_MODE = 0o644


KEY_MODE = 0o600


DIR_MODE = 0o700


# Folders above pki_root that k8s-helper creates itself (/var/salt,
# /var/salt/k8s-helper): anyone may look, only the master's user may write.
ANCESTOR_MODE = 0o755


DEFAULT_BACKUP_KEEP = 5


def pki_root(opts):
    """Where the sets live on the master: ``k8s_helper:pki_root`` in its config, or the default."""
    return (opts.get("k8s_helper") or {}).get("pki_root", DEFAULT_PKI_ROOT)


def backup_keep(opts):
    """How many backups a set keeps: ``k8s_helper:backup_keep`` (a whole number >= 1), or 5."""
    value = (opts.get("k8s_helper") or {}).get("backup_keep", DEFAULT_BACKUP_KEEP)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(
            f"k8s_helper:backup_keep: must be a whole number of at least 1, not {value!r}; "
            "fix it in the master config"
        )
    return value


KUBEADM_PORT = 6443


NEXT_CA = "ca.next"


# Files an expiry report reads: PEM certificates (one or a bundle) and
# kubeconfigs with embedded certificates.  Keys and anything else are skipped.
PEM_SUFFIXES = (".crt", ".cert", ".pem")


KUBECONFIG_SUFFIXES = (".conf", ".kubeconfig")
