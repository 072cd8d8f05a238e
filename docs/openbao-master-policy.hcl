# The least a salt master needs in OpenBao to run the formula's PKI backend
# (docs/openbao.md).  Mounts are <mount_prefix>/<cluster_tag>/<ca>; this file
# is written for the default mount_prefix "k8s-pki": replace that word if you
# change it.  Write it with:  bao policy write k8s-helper-master openbao-master-policy.hcl
#
# Not granted, on purpose: sign-verbatim (it copies a CSR's subject and
# extensions: a host's CSR would decide what is signed), issue/* (OpenBao would
# make the leaf key and send it over the wire; keys are made where they live),
# root/generate/exported and keys/import (a CA key must never leave OpenBao),
# sys/mounts listing, deleting a mount, and every other path.

# Check the token at login (and tell an expired token from a missing policy).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# One PKI mount per cluster and CA: read it, enable it, tune its max TTL.
path "sys/mounts/k8s-pki/+/+" {
  capabilities = ["create", "read", "update"]
}
path "sys/mounts/k8s-pki/+/+/tune" {
  capabilities = ["read", "update"]
}

# CAs: generated inside OpenBao ("internal": the key never leaves it); several
# issuers in one mount for a CA rotation; the default issuer switched at
# reissue; a retired one revoked, then deleted.
path "k8s-pki/+/+/issuers/generate/root/internal" {
  capabilities = ["create", "update"]
}
path "k8s-pki/+/+/issuers" {
  capabilities = ["list"]
}
path "k8s-pki/+/+/issuer/+" {
  capabilities = ["read", "delete"]
}
path "k8s-pki/+/+/issuer/+/revoke" {
  capabilities = ["create", "update"]
}
path "k8s-pki/+/+/issuer/+/crl/*" {
  capabilities = ["read"]
}
path "k8s-pki/+/+/config/issuers" {
  capabilities = ["read", "create", "update"]
}

# One role per certificate of the profile, then signing a CSR through it.
path "k8s-pki/+/+/roles/*" {
  capabilities = ["create", "read", "update"]
}
path "k8s-pki/+/+/sign/*" {
  capabilities = ["create", "update"]
}

# Revocation of a removed host's certificates, and the CRL.
path "k8s-pki/+/+/revoke" {
  capabilities = ["create", "update"]
}
path "k8s-pki/+/+/crl/*" {
  capabilities = ["read"]
}
