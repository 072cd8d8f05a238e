"""Who makes a set's CAs and signs its leaves: the seam between a plan and a backend.

A plan (plan.py) decides what to make; a *signer* makes it.  The local signer
is what k8s-helper always did: a CA's key is made here and kept in the set
folder, leaves are signed with it.  Another backend (the OpenBao one,
``k8s_openbao.OpenBaoSigner``) keeps the CA keys elsewhere: the folder then
holds ``ca.crt`` only, the way it does for a CA created outside k8s-helper,
but the signer can still issue from that CA.

A signer is chosen once per run (the runner, from the master config) and
handed down to :func:`plan.plan_set` and :func:`plan.fill_plan`.  What it
must offer:

- ``backend``: its name, recorded in the set's manifest;
- ``keeps_ca_keys``: True when CA keys never are in the folder;
- ``ready()``: check that it can work (log in), before anything is written;
- ``adopt_ca(directory, name, item)``: True when the CA ``item`` (found in the
  folder without its key) is one this signer can sign with; it may refuse
  (SetError) a CA it should hold but does not;
- ``make_ca(name, spec, key_type, ca_days, now)``: ``(key or None, cert)``;
- ``sign(name, leaf, key, ca, leaf_days, now)``: the certificate for the
  private ``key``, saying what ``leaf`` asks, signed by the CA item ``ca``;
- a CA rotation's steps where the CA lives (rotation.py): ``switch_default(ca,
  cert)`` at reissue, ``retire(ca, certs)`` at finish, ``drop_next(ca, cert)``
  at abort.  Nothing to do for the local signer: the folder is the CA.
"""

from __future__ import annotations

import os

from .crypto import build_ca, issue_leaf, load_key, new_key
from .errors import SetError
from .manifest import DEFAULT_BACKEND, set_profile
from .profiles import KUBEADM_CAS


class LocalSigner:
    """CA keys made here and kept in the set folder (the default backend)."""

    backend = "local"
    keeps_ca_keys = False

    def ready(self):
        """Nothing to reach: the keys are in the folder."""

    def adopt_ca(self, directory, name, item):
        """A CA without its key here is someone else's (external): never signed with."""
        return False

    def make_ca(self, name, spec, key_type, ca_days, now):
        key = new_key(key_type)
        return key, build_ca(key, spec.common_name, ca_days, spec.organizations, now)

    def switch_default(self, ca_name, cert):
        """The folder's <ca>.key is the signing key: the writer switches it."""

    def retire(self, ca_name, certs):
        """The old CA leaves <ca>.crt: nothing else to do."""

    def drop_next(self, ca_name, cert):
        """<ca>.next.crt/.key leave the folder: nothing else to do."""

    def sign(self, name, leaf, key, ca, leaf_days, now):
        if not ca.key_checked:  # read from disk with the quick parse: check before signing
            ca.key, ca.key_checked = load_key(ca.key_bytes, f"{ca.name}.key"), True
        return issue_leaf(leaf, key, ca.cert, ca.key, leaf_days, now=now)


LOCAL = LocalSigner()


def check_backend(directory, recorded, backend):
    """Refuse a run with another backend than the one the set was made with.

    ``recorded`` is the set's manifest (None for a set without one).  Running
    the other backend would make or look for a second CA: refused, with the
    remedy.
    """
    if not recorded:
        return
    made_with = recorded.get("backend", DEFAULT_BACKEND)
    if made_with != backend:
        tag = os.path.basename(os.path.normpath(directory))
        raise SetError(
            f"{directory}: this set was made with the {made_with} backend, and the master "
            f"config now says k8s_helper:backend: {backend}; set it back to {made_with} for "
            f"cluster {tag}, or give the cluster a new cluster_tag (a {backend} set of its own; "
            'moving a local CA into OpenBao: docs/openbao.md, "Migrating an existing local CA")'
        )


def ca_keys_elsewhere(directory):
    """The CA key files (set paths) a kubeadm set does not hold because its CAs live in
    OpenBao (its manifest says so): masters then run in kubeadm's external CA mode, and
    pillar, states and verify leave those keys out.  () for any other set.
    """
    _, recorded = set_profile(directory)
    return ca_key_files_elsewhere(recorded)


def ca_key_files_elsewhere(recorded):
    """:func:`ca_keys_elsewhere` of a set whose manifest's settings are ``recorded``."""
    if (recorded or {}).get("backend", DEFAULT_BACKEND) == DEFAULT_BACKEND:
        return ()
    return tuple(f"{ca}.key" for ca in KUBEADM_CAS)
